#!/usr/bin/env bash
# plan_replacement end to end at a tiny budget (issue 18): a micro study predicts the drops, the
# planner measures the mixers' latency, plans, distils and measures (at most 3 runs), writes
# plan.json / student.safetensors / result.json / report.md / latency.json; `evaluate` loads the
# student and finds its measured accuracy; a second run resumes from runs/ and latency.json;
# replace_layers distils the written plan again; bad budgets and mixers the study did not measure
# are refused, naming them.
#   check_planner.sh STUDY_DRIVER PLANNER REPLACE_LAYERS EVALUATE TEACHER HALTING_TEACHER WORK
set -euo pipefail
study=$1 planner=$2 rl=$3 evaluate=$4 teacher=$5 halting=$6 work=$7
export OMP_NUM_THREADS=1
rm -rf "$work" && mkdir -p "$work"
fail() { echo "check_planner: $*"; exit 1; }
"$study" --preset micro --checkpoint "$teacher" --halting-teachers "$halting" --quiet --out "$work/study"
plan() {
  "$planner" --checkpoint "$teacher" --study "$work/study" --budget 0.05 --objective latency --tokens 197 \
    --latency-reps 2 --train-limit 256 --test-limit 256 --max-runs 3 --out "$work/plan" >"$work/plan.out" 2>"$work/plan.err"
}
set +e
plan
rc=$?
set -e
[ $rc -eq 0 ] || [ $rc -eq 3 ] || { cat "$work/plan.err"; fail "the planner failed (exit $rc)"; }
for f in plan.json student.safetensors result.json report.md latency.json; do
  [ -s "$work/plan/$f" ] || fail "the planner wrote no $f"
done
grep -q "stage1 .*ETA" "$work/plan.err" || fail "no progress with an ETA: $(head -5 "$work/plan.err")"
grep -q "^| 1 |" "$work/plan/report.md" || fail "report.md lists no measured run"
grep -q "^| planner run 1 |" "$work/plan/report.md" || fail "report.md has no side-by-side table"
/usr/bin/python3 - "$work/plan/result.json" "$work/plan/latency.json" "$rc" <<'PY' || fail "result.json is inconsistent"
import json, sys
r, lat = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert 1 <= len(r["attempts"]) <= 3, r["attempts"]
assert r["met"] == (sys.argv[3] == "0")
assert (r["attempts"][-1]["measured_drop"] <= r["budget"]) == r["met"]
assert set(lat["forward_ms"]) >= {"attention", "min_gru"} and all(v > 0 for v in lat["forward_ms"].values()), lat
assert lat["key"]["tokens"] == 197 and r["objective"] == "latency"
pts = r["attempts"] + r["fixed_plans"]
assert any(p["pareto"] for p in pts) and all(p["forward_ms"] > 0 and p["params"] > 0 for p in pts), pts
PY
# evaluate rebuilds the student from its metadata and finds the accuracy the planner measured.
"$evaluate" --checkpoint "$work/plan/student.safetensors" --limit 256 >"$work/eval.out" 2>&1 ||
  { cat "$work/eval.out"; fail "evaluate could not load the planner's student"; }
grep -q "^student: .*min_gru" "$work/eval.out" || fail "evaluate did not rebuild the student's mixers: $(cat "$work/eval.out")"
/usr/bin/python3 - "$work/plan/result.json" "$work/eval.out" <<'PY' || fail "evaluate's accuracy differs from the planner's"
import json, sys
r = json.load(open(sys.argv[1]))
acc = float(open(sys.argv[2]).read().split("accuracy:")[-1])
want = r["teacher_accuracy"] - r["attempts"][-1]["measured_drop"]
assert abs(acc - want) < 1e-3, (acc, want)
PY
# A second run resumes: the measured plans and the latencies are reused, not redone.
set +e
plan
rc2=$?
set -e
[ $rc2 -eq $rc ] || { cat "$work/plan.err"; fail "the resumed planner exited $rc2, the first run $rc"; }
grep -q "measured before" "$work/plan.err" || fail "the resumed run did not reuse runs/: $(head -5 "$work/plan.err")"
! grep -q "^plan_replacement: latency of" "$work/plan.err" || fail "the resumed run measured the latencies again"
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
echo "check_planner: latencies measured, planned, distilled and measured (exit $rc), student evaluated, run resumed, plan.json distilled again by replace_layers, bad input refused"
