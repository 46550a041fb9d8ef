#!/usr/bin/env bash
# avit_finetune --device cuda end to end, on the CUDA backend emulated on the CPU (the driver's
# device path: the teacher uploaded, halting fine-tuning steps on the device model, the weights
# copied back for evaluation and the files), against the CPU run with the same options: the
# same halting accuracy and mean keep ratio within 0.02, and keep ratios per layer within 0.05.
# The CPU build refuses --device cuda, naming the CUDA binary.
#   check_avit_device.sh AVIT_FINETUNE AVIT_FINETUNE_EMULATED TEACHER WORK
set -euo pipefail
cpu=$1 emu=$2 teacher=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
fail() { echo "check_avit_device: $*"; exit 1; }
opts=(--checkpoint "$teacher" --steps 8 --batch 32 --test-limit 256 --beta 8 --gamma 5 --seed 2 --quiet)
OMP_NUM_THREADS=1 "$cpu" "${opts[@]}" --out "$work/cpu.safetensors" >"$work/cpu.out" 2>"$work/cpu.err"
OMP_NUM_THREADS=1 "$emu" "${opts[@]}" --device cuda --out "$work/dev.safetensors" >"$work/dev.out" 2>"$work/dev.err"
grep -q "fine-tuning on the CUDA device" "$work/dev.err" || fail "the device path did not run: $(cat "$work/dev.err")"
/usr/bin/python3 - "$work" <<'PY' || fail "the device run differs from the CPU run"
import json, sys
w = sys.argv[1]
a, b = (json.load(open(f"{w}/{f}.json")) for f in ("cpu", "dev"))
print(f"accuracy: CPU {a['accuracy']:.4f}, device path {b['accuracy']:.4f}; mean keep: CPU {a['mean_keep']:.4f}, "
      f"device path {b['mean_keep']:.4f}")
assert abs(a["accuracy"] - b["accuracy"]) <= 0.02
assert abs(a["mean_keep"] - b["mean_keep"]) <= 0.02
assert a["mean_keep"] < 0.95, "tokens should halt at these options"
assert all(abs(x - y) <= 0.05 for x, y in zip(a["keep_per_layer"], b["keep_per_layer"]))
PY
if "$cpu" --checkpoint "$teacher" --device cuda --out "$work/x.safetensors" 2>"$work/refuse.err"; then
  fail "the CPU avit_finetune accepted --device cuda"
fi
grep -q "avit_finetune_cuda" "$work/refuse.err" || fail "the refusal does not name avit_finetune_cuda: $(cat "$work/refuse.err")"
echo "check_avit_device: passed"
