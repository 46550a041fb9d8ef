#!/usr/bin/env bash
# plan_replacement end to end at a tiny budget (issue 18): a micro study predicts the drops, the
# planner measures the mixers' latency, plans, distils and measures (at most 3 runs), writes
# plan.json / student.safetensors / result.json / report.md / latency.json; `evaluate` loads the
# student and finds its measured accuracy; a second run resumes from runs/ and latency.json;
# replace_layers distils the written plan again; --validate-only fits and validates the drop model
# without training; a mixer the study did not sweep is probed (probes/, predictor.json) and the
# probe is reused on a rerun; a halting teacher's keep ratios scale the costs; bad budgets and
# unknown mixers are refused, naming them.
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
for f in plan.json student.safetensors result.json report.md latency.json predictor.json; do
  [ -s "$work/plan/$f" ] || fail "the planner wrote no $f"
done
grep -q "stage1 .*ETA" "$work/plan.err" || fail "no progress with an ETA: $(head -5 "$work/plan.err")"
grep -q "^| 1 |" "$work/plan/report.md" || fail "report.md lists no measured run"
grep -q "^| planner run 1 |" "$work/plan/report.md" || fail "report.md has no side-by-side table"
grep -q "^### Predictions" "$work/plan/report.md" || fail "report.md does not say where the predictions come from"
/usr/bin/python3 - "$work/plan/result.json" "$work/plan/latency.json" "$rc" <<'PY' || fail "result.json is inconsistent"
import json, sys
r, lat = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert 1 <= len(r["attempts"]) <= 3, r["attempts"]
assert r["met"] == (sys.argv[3] == "0")
chosen = r["attempts"][r["chosen_run"] - 1]
assert (chosen["measured_drop"] <= r["budget"] + 1e-9) == r["met"]
met = [a for a in r["attempts"] if a["measured_drop"] <= r["budget"] + 1e-9]
assert not met or chosen["cost"] == min(a["cost"] for a in met), r["attempts"]
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
want = r["teacher_accuracy"] - r["attempts"][r["chosen_run"] - 1]["measured_drop"]
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
# The drop model alone: fitted and validated, nothing trained.
"$planner" --checkpoint "$teacher" --study "$work/study" --validate-only --out "$work/val" >"$work/val.out" 2>&1 ||
  { cat "$work/val.out"; fail "--validate-only failed"; }
grep -q "^predictor: d(l, m) = s_m \* e_l over" "$work/val.out" || fail "--validate-only says: $(cat "$work/val.out")"
[ ! -e "$work/val/student.safetensors" ] || fail "--validate-only trained a student"
/usr/bin/python3 - "$work/val/predictor.json" <<'PY' || fail "predictor.json is inconsistent"
import json, sys
p = json.load(open(sys.argv[1]))
m = p["model"]
assert abs(m["mixer_scale"]["min_gru"] - 1.0) < 1e-9, m  # one mixer: its scale is the normalisation
assert len(m["layer_effect"]) >= 2 and all(e["measured"] for e in m["layer_effect"]), m
assert p["probes"] == [] and p["layer_feature"] == "local_mass", p
PY
# A mixer the study did not sweep: probed in one layer, its scale fitted, planned; the probe is
# reused on a rerun.
probe_plan() {
  "$planner" --checkpoint "$teacher" --study "$work/study" --mixers min_gru,linear_attention --probe-layers 1 \
    --budget 0.05 --objective params --train-limit 256 --test-limit 256 --max-runs 1 --latency-reps 1 \
    --out "$work/probe" >"$work/probe.out" 2>"$work/probe.err"
}
set +e
probe_plan
rc=$?
set -e
[ $rc -eq 0 ] || [ $rc -eq 3 ] || { cat "$work/probe.err"; fail "the planner with a probed mixer failed (exit $rc)"; }
ls "$work/probe/probes/"probe-linear_attention-l*.json >/dev/null 2>&1 || fail "no probe record: $(ls "$work/probe")"
grep -q "^Probes" "$work/probe/report.md" || fail "report.md does not list the probes"
/usr/bin/python3 - "$work/probe/predictor.json" <<'PY' || fail "the probe is not in predictor.json"
import json, sys
p = json.load(open(sys.argv[1]))
assert len(p["probes"]) == 1 and p["probes"][0]["mixer"] == "linear_attention", p["probes"]
assert "linear_attention" in p["model"]["mixer_scale"], p["model"]
PY
set +e
probe_plan
set -e
grep -q "probe 1/1 (linear_attention in layer [0-9]*): measured before" "$work/probe.err" ||
  fail "the rerun did not reuse the probe: $(grep probe "$work/probe.err" | head -3)"
# A halting teacher: its keep ratios scale each layer's costs, its students are distilled with
# guided distillation and measured with their own halting; the dense study's fixed plans are not
# listed beside them. Two seeds per run (the loop judges the mean) and two seed replicates of
# the chosen plan: the first replicate is the run's second seed, reused; the second is distilled.
set +e
"$planner" --checkpoint "$halting" --study "$work/study" --budget 0.05 --objective flops --train-limit 256 \
  --test-limit 256 --max-runs 1 --seeds-per-run 2 --replicate-seeds 2 --out "$work/halting" \
  >"$work/halting.out" 2>"$work/halting.err"
rc=$?
set -e
[ $rc -eq 0 ] || [ $rc -eq 3 ] || { cat "$work/halting.err"; fail "the planner on a halting teacher failed (exit $rc)"; }
grep -q "halting teacher: keeps" "$work/halting.err" || fail "no keep ratios reported: $(head -3 "$work/halting.err")"
grep -q "^\*\*Halting teacher\*\*" "$work/halting/report.md" || fail "report.md does not describe the halting costs"
/usr/bin/python3 - "$work/halting/result.json" <<'PY' || fail "the halting teacher's costs are not scaled"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["halting"] is True and len(r["keep_per_layer"]) == len(r["layer_tokens"]), r
assert r["layer_tokens"][0] == r["tokens"] and min(r["layer_tokens"]) < r["tokens"], r["layer_tokens"]
assert r["fixed_plans"] == [], r["fixed_plans"]
reps = r["replicates"]
assert len(reps) == 3 and len({x["seed"] for x in reps}) == 3, reps
measured = r["attempts"][r["chosen_run"] - 1]["measured_drop"]
assert abs(measured - (reps[0]["drop"] + reps[1]["drop"]) / 2) < 1e-12, (reps, measured)
assert r["seeds_per_run"] == 2, r["seeds_per_run"]
PY
ls "$work/halting/runs/"plan-*-seed1000.json "$work/halting/runs/"plan-*-seed2000.json >/dev/null 2>&1 ||
  fail "no record of the other seeds: $(ls "$work/halting/runs")"
grep -q "seed replicate 1/2 .*measured before" "$work/halting.err" ||
  fail "the first replicate did not reuse the run's second seed: $(grep replicate "$work/halting.err" | head -2)"
grep -q "^### Seed replicates of the chosen plan" "$work/halting/report.md" || fail "report.md has no seed replicates"
# Refusals (a non-zero exit), each naming what it refuses.
! "$planner" --checkpoint "$teacher" --study "$work/study" --budget 1.5 --out "$work/bad" >"$work/bad1" 2>&1 ||
  fail "a budget of 1.5 was accepted"
grep -q -- "--budget: Value 1.5 not in range" "$work/bad1" || fail "the budget refusal says: $(cat "$work/bad1")"
! "$planner" --checkpoint "$teacher" --study "$work/study" --mixers min_gru,transformer_xl --out "$work/bad" \
  >"$work/bad2" 2>&1 || fail "an unknown mixer was accepted"
grep -q "unknown mixer 'transformer_xl'; known: .*min_gru" "$work/bad2" || fail "the mixer refusal says: $(cat "$work/bad2")"
rm -rf "$work"
echo "check_planner: latencies measured, planned, distilled and measured, student evaluated, run resumed, plan.json distilled again by replace_layers, drop model validated, unswept mixer probed and the probe reused, halting teacher planned, bad input refused"
