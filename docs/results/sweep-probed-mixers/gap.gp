set terminal pngcairo size 800,520 noenhanced
set output 'gap_vs_sparsity.png'
set title 'Student-teacher gap vs teacher sparsity (sparsest:4, same budget)'
set xlabel 'teacher sparsity: 1 - mean keep ratio'
set ylabel 'teacher acc - student acc'
set key outside
plot 
