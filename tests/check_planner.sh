#!/usr/bin/env bash
# plan_replacement end to end at a tiny budget (issue 18): a micro study predicts the drops, the
# planner plans, distils and measures (at most 3 runs), writes plan.json / student.safetensors /
# result.json / report.md, and replace_layers distils the written plan again; bad budgets and
# mixers the study did not measure are refused, naming them.
#   check_planner.sh STUDY_DRIVER PLANNER REPLACE_LAYERS TEACHER HALTING_TEACHER WORK
set -euo pipefail
study=$1 planner=$2 rl=$3 teacher=$4 halting=$5 work=$6
export OMP_NUM_THREADS=1
rm -rf "$work" && mkdir -p "$work"
fail() { echo "check_planner: $*"; exit 1; }
"$study" --preset micro --checkpoint "$teacher" --halting-teachers "$halting" --quiet --out "$work/study"
set +e
"$planner" --checkpoint "$teacher" --study "$work/study" --budget 0.05 --objective flops --tokens 1024 \
  --train-limit 256 --test-limit 256 --max-runs 3 --quiet --out "$work/plan" >"$work/plan.out" 2>&1
rc=$?
set -e
[ $rc -eq 0 ] || [ $rc -eq 3 ] || { cat "$work/plan.out"; fail "the planner failed (exit $rc)"; }
for f in plan.json student.safetensors result.json report.md; do
  [ -s "$work/plan/$f" ] || fail "the planner wrote no $f"
done
grep -q "^| 1 |" "$work/plan/report.md" || fail "report.md lists no measured run"
/usr/bin/python3 - "$work/plan/result.json" "$rc" <<'PY' || fail "result.json is inconsistent"
import json, sys
r = json.load(open(sys.argv[1]))
assert 1 <= len(r["attempts"]) <= 3, r["attempts"]
assert r["met"] == (sys.argv[2] == "0")
assert (r["attempts"][-1]["measured_drop"] <= r["budget"]) == r["met"]
PY
"$rl" --checkpoint "$teacher" --plan "file:$work/plan/plan.json" --stage1-steps 2 --stage2-steps 2 \
  --train-limit 128 --test-limit 128 --quiet --out "$work/again" >/dev/null 2>&1 || fail "replace_layers could not distil plan.json"
# Refusals (a non-zero exit), each naming what it refuses.
! "$planner" --checkpoint "$teacher" --study "$work/study" --budget 1.5 --out "$work/bad" >"$work/bad1" 2>&1 ||
  fail "a budget of 1.5 was accepted"
grep -q -- "--budget: Value 1.5 not in range" "$work/bad1" || fail "the budget refusal says: $(cat "$work/bad1")"
! "$planner" --checkpoint "$teacher" --study "$work/study" --mixers min_gru,transformer_xl --out "$work/bad" \
  >"$work/bad2" 2>&1 || fail "a mixer the study did not measure was accepted"
grep -q "no single-layer run of 'transformer_xl'" "$work/bad2" || fail "the mixer refusal says: $(cat "$work/bad2")"
rm -rf "$work"
echo "check_planner: planned, distilled and measured (exit $rc), plan.json distilled again by replace_layers, bad input refused"
