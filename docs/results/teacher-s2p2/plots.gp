# Run from this folder: gnuplot plots.gp
set terminal pngcairo size 900,520 noenhanced
set output 's_ent_by_layer.png'
set title 'Attention sparsity per layer: S_ent = 1 - normalised entropy (mean +- std over heads, queries, images)'
set xlabel 'layer'
set ylabel 'S_ent'
set xtics 1
set key top left
set offsets 0.5, 0.5, 0, 0
plot 's_ent_layers.dat' using 1:2:3 with yerrorlines pt 7 title 'all keys', \
     '' using ($1+0.08):4:5 with yerrorlines pt 5 title 'drop CLS key, renormalised'
set output 's_ent_heads.png'
set title 'S_ent per layer and head (mean over queries and images)'
set xlabel 'head'
set ylabel 'layer'
set ytics 1
set offsets 0, 0, 0, 0
set autoscale fix
set palette rgbformulae 21,22,23
set cblabel 'S_ent'
plot 's_ent_heads.dat' matrix with image notitle
