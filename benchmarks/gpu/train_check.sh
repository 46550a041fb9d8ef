#!/usr/bin/env bash
# The teacher trained end to end by train_teacher_cuda on a GPU machine: the shipped teacher's
# shape (width 64, depth 8, 4 heads, patch 4) on the first 20000 Fashion-MNIST training images
# staged by benchmarks/gpu/stage.sh, batch 128, seed 1, three epochs
#   - on the device in FP32 (--device cuda),
#   - on the device with the linear maps on TF32 tensor cores (--device cuda --tf32),
#   - on the host (the same binary without --device, every core of that machine),
# then checks that the device runs train (test accuracy after three epochs >= 0.5; chance is 0.1) and agree
# with the host run (accuracy within 0.02 of it, each epoch's training loss within 3% of the
# host's in FP32 and within 5% with TF32), and prints the seconds per epoch of each.
#
#   bash benchmarks/gpu/train_check.sh TRAIN_TEACHER_CUDA DEPS [WORK]
#       TRAIN_TEACHER_CUDA: the driver built with nvcc (CMake target train_teacher_cuda),
#       DEPS: the folder stage.sh filled (its fashion-mnist/ and lib/), WORK: build/gpu-train.
# Without a GPU it prints "no CUDA device: skipped" and exits 0. Logs, CSVs and summary.txt go
# to WORK and, when the caller sets OUT (the device tool's folder that comes back), to OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:?usage: train_check.sh TRAIN_TEACHER_CUDA DEPS [WORK]} deps=${2:?usage: train_check.sh TRAIN_TEACHER_CUDA DEPS [WORK]}
work=${3:-build/gpu-train}
[ -x "$bin" ] || { echo "train_check.sh: expected the driver at $bin (cmake --build build/release --target train_teacher_cuda)" >&2; exit 2; }
[ -f "$deps/fashion-mnist/train-images-idx3-ubyte.gz" ] ||
  { echo "train_check.sh: expected $deps/fashion-mnist/ (bash benchmarks/gpu/stage.sh $deps)" >&2; exit 2; }
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64:$(cd "$deps" && pwd)/lib"
rm -rf "$work" && mkdir -p "$work"
summary=$work/summary.txt
say() { echo "$*" | tee -a "$summary"; }
finish() { if [ -n "${OUT:-}" ]; then cp "$work"/*.csv "$work"/*.err "$summary" "$OUT/" 2>/dev/null || true; fi; }
trap finish EXIT
if ! nvidia-smi -L >/dev/null 2>&1; then say "train_check: no CUDA device: skipped"; exit 0; fi
say "== train_teacher_cuda end to end: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), host $(nproc) cores"
opts=(--data-dir "$deps/fashion-mnist" --batch 128 --seed 1 --epochs 3 --warmup-epochs 0.5 --quiet)
run() {  # NAME ARGS...
  local name=$1 t0 rc
  shift
  t0=$(date +%s%N)
  set +e
  timeout 400 "$bin" "${opts[@]}" "$@" --out "$work/$name.safetensors" --csv "$work/$name.csv" >"$work/$name.out" \
    2>"$work/$name.err"
  rc=$?
  set -e
  if [ $rc -ne 0 ]; then say "$name: FAILED (exit $rc)"; sed 's/^/    /' "$work/$name.err" | tail -20 | tee -a "$summary"; exit 1; fi
  say "$name: $(grep accuracy: "$work/$name.out") in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}
run device --device cuda
grep -q "training on the CUDA device" "$work/device.err" || { say "the device path did not run"; exit 1; }
run device_tf32 --device cuda --tf32
run host
python3 - "$work" <<'PY' 2>&1 | tee -a "$summary"
import csv, sys
w = sys.argv[1]
acc = lambda f: float(open(f"{w}/{f}.out").read().split("accuracy:")[1].split()[0])
rows = lambda f: list(csv.DictReader(open(f"{w}/{f}.csv")))
h = rows("host")
ok = True
for name, tol in (("device", 0.03), ("device_tf32", 0.05)):
    d = rows(name)
    print(f"{name}: test accuracy {acc(name):.4f} (host {acc('host'):.4f})")
    ok &= acc(name) >= 0.5 and abs(acc(name) - acc("host")) <= 0.02 and len(d) == len(h) == 3
    for r, s in zip(h, d):
        l, m = float(r["train_loss"]), float(s["train_loss"])
        print(f"  epoch {r['epoch']}: train loss host {l:.5f}, {name} {m:.5f}; seconds host {float(r['seconds']):.2f}, "
              f"{name} {float(s['seconds']):.2f}")
        ok &= abs(l - m) <= tol * l
print("train_check:", "passed" if ok else "FAILED")
sys.exit(0 if ok else 1)
PY
