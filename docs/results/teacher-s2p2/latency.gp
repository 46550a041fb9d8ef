set terminal pngcairo size 900,560 noenhanced
set output 'latency.png'
set logscale xy
set title 'Forward latency per module (batch 8, D 64), median'
set xlabel 'tokens N'
set ylabel 'ms'
set key outside
plot 'latency.dat' using 1:2 with linespoints title 'softmax_attention', 'latency.dat' using 1:3 with linespoints title 'linear_attention', 'latency.dat' using 1:4 with linespoints title 'min_gru', 'latency.dat' using 1:5 with linespoints title 'multi_head_lstm', 'latency.dat' using 1:6 with linespoints title 'multi_head_gru', 'latency.dat' using 1:7 with linespoints title 'diagonal_ssm', 'latency.dat' using 1:8 with linespoints title 'selective_ssm', 'latency.dat' using 1:9 with linespoints title 'conv_mixer', 'latency.dat' using 1:10 with linespoints title 'conv_mixer_1d', 'latency.dat' using 1:11 with linespoints title 'retention'
