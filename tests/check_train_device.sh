#!/usr/bin/env bash
# train_teacher --device cuda end to end, on the CUDA backend emulated on the CPU (the driver's
# device path: state uploaded, steps on the device model, weights and moments copied back at each
# epoch's end, evaluation and files on the host), against the CPU run with the same options:
# the same test accuracy within 0.02 and the same training loss within 2%; --resume leaves the
# device run unchanged and a second call resumes from its state file; --tf32 reaches the device
# path and is refused without it. The CPU build refuses --device cuda, naming the CUDA binary.
#   check_train_device.sh TRAIN_TEACHER TRAIN_TEACHER_EMULATED WORK
set -euo pipefail
cpu=$1 emu=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
fail() { echo "check_train_device: $*"; exit 1; }
opts=(--train-limit 512 --test-limit 256 --width 16 --depth 2 --heads 2 --batch 64 --seed 1 --warmup-epochs 0.5 --quiet)
OMP_NUM_THREADS=1 "$cpu" "${opts[@]}" --epochs 2 --out "$work/cpu.safetensors" >"$work/cpu.out" 2>"$work/cpu.err"
OMP_NUM_THREADS=1 "$emu" "${opts[@]}" --epochs 2 --device cuda --out "$work/dev.safetensors" >"$work/dev.out" 2>"$work/dev.err"
grep -q "training on the CUDA device" "$work/dev.err" || fail "the device path did not run: $(cat "$work/dev.err")"
/usr/bin/python3 - "$work" <<'PY' || fail "the device run differs from the CPU run"
import csv, sys
w = sys.argv[1]
acc = lambda f: float(open(f"{w}/{f}.out").read().split("accuracy:")[1].split()[0])
rows = lambda f: list(csv.DictReader(open(f"{w}/{f}.csv")))
a, b = acc("cpu"), acc("dev")
print(f"test accuracy: CPU {a:.4f}, device path {b:.4f}")
assert abs(a - b) <= 0.02, (a, b)
for r, s in zip(rows("cpu"), rows("dev")):
    l, m = float(r["train_loss"]), float(s["train_loss"])
    print(f"epoch {r['epoch']}: train loss CPU {l:.5f}, device path {m:.5f}")
    assert abs(l - m) <= 0.02 * l, (l, m)
assert len(rows("dev")) == 2
PY
# --resume on the device path: the state written after each epoch (weights and moments copied
# back from the device) leaves the run unchanged, and running the command again resumes from it.
OMP_NUM_THREADS=1 "$emu" "${opts[@]}" --epochs 2 --device cuda --resume --out "$work/res.safetensors" \
  >"$work/res1.out" 2>"$work/res1.err"
[ "$(grep accuracy: "$work/res1.out")" = "$(grep accuracy: "$work/dev.out")" ] ||
  fail "--resume changed the device run: $(grep accuracy: "$work/res1.out") vs $(grep accuracy: "$work/dev.out")"
OMP_NUM_THREADS=1 "$emu" "${opts[@]}" --epochs 2 --device cuda --resume --out "$work/res.safetensors" >"$work/res2.out" \
  2>"$work/res2.err"
grep -q "resuming after epoch 2 of 2" "$work/res2.err" || fail "resume: $(cat "$work/res2.err")"
# The CPU build refuses --device cuda and names the CUDA binary.
if "$cpu" --device cuda --epochs 1 --out "$work/x.safetensors" 2>"$work/refuse.err"; then
  fail "the CPU train_teacher accepted --device cuda"
fi
grep -q "train_teacher_cuda" "$work/refuse.err" || fail "the refusal does not name train_teacher_cuda: $(cat "$work/refuse.err")"
# --tf32 reaches the device path (the emulation records it; its arithmetic stays fp32), and any
# build refuses it without --device cuda.
OMP_NUM_THREADS=1 "$emu" "${opts[@]}" --epochs 1 --device cuda --tf32 --out "$work/tf32.safetensors" >"$work/tf32.out" \
  2>"$work/tf32.err"
grep -q "training on the CUDA device (linear maps on TF32 tensor cores)" "$work/tf32.err" ||
  fail "--tf32 did not reach the device path: $(cat "$work/tf32.err")"
if "$cpu" --tf32 --epochs 1 --out "$work/y.safetensors" 2>"$work/tf32-refuse.err"; then
  fail "train_teacher accepted --tf32 without --device cuda"
fi
grep -q -- "--tf32: expected --device cuda" "$work/tf32-refuse.err" || fail "the --tf32 refusal: $(cat "$work/tf32-refuse.err")"
echo "check_train_device: passed"
