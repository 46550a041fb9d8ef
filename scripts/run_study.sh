#!/usr/bin/env bash
# Runs the study driver as N processes side by side on one folder (one core each), then one
# unsharded pass for the halting and efficiency stages and the report. Resumable: finished
# runs are reused, so rerunning the same command continues an interrupted study.
#   scripts/run_study.sh PRESET OUT_DIR [N] [extra driver flags...]
#   nohup scripts/run_study.sh paper results/paper 2 > results/paper.log 2>&1 &
set -euo pipefail
preset=${1:?usage: run_study.sh PRESET OUT_DIR [N] [driver flags...]}
out=${2:?usage: run_study.sh PRESET OUT_DIR [N] [driver flags...]}
n=${3:-2}
shift $(( $# >= 3 ? 3 : $# ))
driver=${DRIVER:-build/release/examples/sparsity_to_simplicity}
[[ -x $driver ]] || { echo "run_study.sh: $driver not built (cmake --build build/release --target sparsity_to_simplicity)" >&2; exit 1; }
[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "run_study.sh: expected a process count >= 1, found '$n'" >&2; exit 1; }
mkdir -p "$out"
pids=()
for ((k = 0; k < n; ++k)); do
  OMP_NUM_THREADS=1 "$driver" --preset "$preset" --out "$out" --shard "$k/$n" "$@" > "$out/shard-$k.log" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
[[ $rc -eq 0 ]] || { echo "run_study.sh: a shard failed ($rc); see $out/shard-*.log" >&2; exit "$rc"; }
# --force applies to the shards' runs; the final pass reuses what they just finished.
final=()
for a in "$@"; do [[ $a == --force ]] || final+=("$a"); done
OMP_NUM_THREADS=$n "$driver" --preset "$preset" --out "$out" "${final[@]}"
