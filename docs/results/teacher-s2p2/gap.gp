set terminal pngcairo size 800,520 noenhanced
set output 'gap_vs_sparsity.png'
set title 'Student-teacher gap vs teacher sparsity (sparsest:4, same budget)'
set xlabel 'teacher sparsity: 1 - mean keep ratio'
set ylabel 'teacher acc - student acc'
set key outside
plot 'gap.dat' index 0 using 1:2 with linespoints pt 7 title 'min_gru (teacher tokens)', '' index 0 using 1:3 with linespoints dt 2 title 'min_gru (own halting)', 'gap.dat' index 1 using 1:2 with linespoints pt 7 title 'selective_ssm (teacher tokens)', '' index 1 using 1:3 with linespoints dt 2 title 'selective_ssm (own halting)'
