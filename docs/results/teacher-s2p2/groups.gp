set terminal pngcairo size 900,520 noenhanced
set output 'groups.png'
set title 'Group replacement at a fixed budget: accuracy drop after stage 2 (mean, std over seeds)'
set style data histogram
set style histogram errorbars gap 1 lw 1
set style fill solid 0.6 border -1
set ylabel 'accuracy drop'
set yrange [*<0:*]
set xzeroaxis
set key outside
set xtics rotate by -20
plot 'groups.dat' using 2:3:xtic(1) title 'sparsest', '' using 4:5 title 'random', '' using 6:7 title 'densest'
