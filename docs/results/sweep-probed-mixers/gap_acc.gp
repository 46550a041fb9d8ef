set terminal pngcairo size 800,520 noenhanced
set output 'gap_vs_accuracy.png'
set title 'Student-teacher gap vs teacher accuracy (sparsest:4, same budget)'
set xlabel 'teacher test accuracy'
set ylabel 'teacher acc - student acc (mean over seeds)'
set key outside
plot 
