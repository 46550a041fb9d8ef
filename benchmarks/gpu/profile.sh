#!/usr/bin/env bash
# Where the device training step's time goes: Nsight Compute (ncu, on the GPU machine's image)
# times every kernel of bench_cuda_teacher SHAPE 1 (three warm-up steps and one timed step: four
# steps) with one metric, gpu__time_duration, and the clocks left as they are; the table sums
# each kernel's time over the four steps and divides by four. Set beside the step's time with
# CUDA events (check.sh), the sum over kernels says how much of the step is launch gaps.
#   bash benchmarks/gpu/profile.sh [SHAPE ...]   (default fmnist deit_tiny; binary from check.sh)
# Output: build/gpu-profile/ncu-SHAPE.csv and a table on stdout. Without ncu or a device: skipped.
set -uo pipefail
cd "$(dirname "$0")/../.."
work=build/gpu-profile
bin=build/gpu-check/bench_cuda_teacher
mkdir -p "$work"
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ -n "$ncu" ] && nvidia-smi -L >/dev/null 2>&1 || { echo "profile.sh: no ncu or no CUDA device: skipped"; exit 0; }
[ -x "$bin" ] || { echo "profile.sh: expected $bin (bash benchmarks/gpu/check.sh builds it)" >&2; exit 2; }
status=0
for shape in "${@:-fmnist deit_tiny}"; do
  for s in $shape; do
    timeout 240 "$ncu" --clock-control none --metrics gpu__time_duration.sum --csv --print-kernel-base function \
      --log-file "$work/ncu-$s.csv" "$bin" "$s" 1 >"$work/ncu-$s.out" 2>&1 || { echo "profile.sh: ncu on $s failed"; tail -5 "$work/ncu-$s.out"; status=1; continue; }
    python3 - "$work/ncu-$s.csv" "$s" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
head, data = rows[0], rows[1:]
k, u, v = head.index("Kernel Name"), head.index("Metric Unit"), head.index("Metric Value")
scale = {"nsecond": 1e-6, "ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0}
tot, cnt = collections.Counter(), collections.Counter()
for r in data:
    ms = float(r[v].replace(",", "")) * scale[r[u]]
    tot[r[k]] += ms / 4
    cnt[r[k]] += 1
s = sum(tot.values())
print(f"== {sys.argv[2]}: {sum(cnt.values()) // 4} kernels per step, {s:.3f} ms of kernel time per step (ncu, clocks as found)")
for name, ms in tot.most_common(18):
    print(f"{ms:9.3f} ms {100 * ms / s:5.1f}%  {cnt[name] // 4:4d}x  {name[:90]}")
PY
  done
done
exit $status
