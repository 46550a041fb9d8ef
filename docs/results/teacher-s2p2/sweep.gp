set terminal pngcairo size 800,520 noenhanced
set output 'sweep.png'
set title 'Single-layer replacement: mean drop after stage 2 vs layer sparsity'
set xlabel 'layer S_ent (teacher)'
set ylabel 'accuracy drop (mean over seeds)'
set key outside
plot 'sweep.dat' index 0 using 2:3 with points pt 7 ps 1.5 title 'min_gru (rho 0.14)', '' index 0 using 2:3:1 with labels offset 1,1 notitle
