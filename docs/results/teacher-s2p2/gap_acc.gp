set terminal pngcairo size 800,520 noenhanced
set output 'gap_vs_accuracy.png'
set title 'Student-teacher gap vs teacher accuracy (sparsest:4, same budget)'
set xlabel 'teacher test accuracy'
set ylabel 'teacher acc - student acc (mean over seeds)'
set key outside
plot 'gap_acc.dat' index 0 using 1:2 with points pt 7 title 'min_gru, halting teachers', '' index 1 using 1:2 with linespoints pt 4 title 'min_gru, dense teachers', 'gap_acc.dat' index 2 using 1:2 with points pt 7 title 'selective_ssm, halting teachers', '' index 3 using 1:2 with linespoints pt 4 title 'selective_ssm, dense teachers'
