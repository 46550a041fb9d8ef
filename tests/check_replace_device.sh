#!/usr/bin/env bash
# replace_layers --device cuda end to end, on the CUDA backend emulated on the CPU (the driver's
# device path: teacher and student copied to device models, both stages, the layer losses and
# the evaluations on them, the student copied back and saved), against the CPU run with the same
# options: the same teacher accuracy, stage accuracies within 0.02, layer losses and stage
# losses within 2%; the device run writes its student. The CPU build refuses --device cuda,
# naming the CUDA binary; the CUDA build refuses --device cpu; --tf32 is refused without
# --device cuda.
#   check_replace_device.sh REPLACE_LAYERS REPLACE_LAYERS_EMULATED TEACHER WORK
set -euo pipefail
cpu=$1 emu=$2 teacher=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
fail() { echo "check_replace_device: $*"; exit 1; }
opts=(--checkpoint "$teacher" --mixer min_gru --plan layers:1,3 --stage1-steps 6 --stage2-steps 4 --batch 32
      --train-limit 512 --test-limit 256 --kl 0.5 --seed 3 --quiet)
OMP_NUM_THREADS=1 "$cpu" "${opts[@]}" --out "$work/cpu" >"$work/cpu.out" 2>"$work/cpu.err" ||
  fail "the CPU run failed: $(cat "$work/cpu.err")"
OMP_NUM_THREADS=1 "$emu" "${opts[@]}" --device cuda --out "$work/dev" >"$work/dev.out" 2>"$work/dev.err" ||
  fail "the device run failed: $(cat "$work/dev.err")"
grep -q "distilling on the CUDA device" "$work/dev.err" || fail "the device path did not run: $(cat "$work/dev.err")"
/usr/bin/python3 - "$work" <<'PY' || fail "the device run differs from the CPU run"
import json, sys
w = sys.argv[1]
a, b = (json.load(open(f"{w}/{f}/result.json")) for f in ("cpu", "dev"))
close = lambda x, y, r: abs(x - y) <= r * max(abs(x), abs(y), 1e-12)
print(f"teacher: CPU {a['teacher_accuracy']:.4f}, device path {b['teacher_accuracy']:.4f}")
assert a["teacher_accuracy"] == b["teacher_accuracy"]
for s in ("stage1", "stage2"):
    print(f"{s}: accuracy CPU {a[s]['accuracy']:.4f}, device path {b[s]['accuracy']:.4f}; final loss CPU "
          f"{a[s]['final_loss']:.5f}, device path {b[s]['final_loss']:.5f}")
    assert abs(a[s]["accuracy"] - b[s]["accuracy"]) <= 0.02
    assert close(a[s]["final_loss"], b[s]["final_loss"], 0.02)
for x, y in zip(a["stage1"]["layer_loss"], b["stage1"]["layer_loss"]):
    print(f"layer loss: CPU {x:.6f}, device path {y:.6f}")
    assert close(x, y, 0.02)
assert len(b["stage1"]["layer_loss"]) == 2
PY
[ -s "$work/dev/student.safetensors" ] || fail "the device run wrote no student"
if "$cpu" --checkpoint "$teacher" --device cuda --out "$work/x" 2>"$work/refuse.err"; then
  fail "the CPU replace_layers accepted --device cuda"
fi
grep -q "replace_layers_cuda" "$work/refuse.err" || fail "the refusal does not name replace_layers_cuda: $(cat "$work/refuse.err")"
# The CUDA build distils on the device only and says so.
if "$emu" --checkpoint "$teacher" --out "$work/z" 2>"$work/cpu-refuse.err"; then
  fail "replace_layers' CUDA build accepted --device cpu"
fi
grep -q "replace_layers_cuda distils on the GPU only" "$work/cpu-refuse.err" ||
  fail "the CUDA build's refusal of --device cpu: $(cat "$work/cpu-refuse.err")"
if "$cpu" --checkpoint "$teacher" --tf32 --out "$work/y" 2>"$work/tf32-refuse.err"; then
  fail "replace_layers accepted --tf32 without --device cuda"
fi
grep -q -- "--tf32: expected --device cuda" "$work/tf32-refuse.err" || fail "the --tf32 refusal: $(cat "$work/tf32-refuse.err")"
echo "check_replace_device: passed"
