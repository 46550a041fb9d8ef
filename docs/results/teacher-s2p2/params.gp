set terminal pngcairo size 900,480 noenhanced
set output 'params.png'
set title 'Parameters per module at D = 64 (softmax attention = 1)'
set style data histogram
set style fill solid 0.6 border -1
set xtics rotate by -30
set ylabel 'params / attention params'
plot 'params.dat' using 3:xtic(1) notitle
