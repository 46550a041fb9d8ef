#!/usr/bin/env bash
# replace_layers --plan file:PLAN.json: a mixer per layer, as the planner writes plans (issue 18).
# At a tiny budget: layers 2 and 5 get their own mixers, the rest keep attention, and the outputs
# say so; an unknown mixer in the file is refused, naming it.
#   check_plan_file.sh REPLACE_LAYERS TEACHER WORK
set -euo pipefail
rl=$1 teacher=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
fail() { echo "check_plan_file: $*"; exit 1; }
cat >"$work/plan.json" <<'JSON'
{"budget": 0.01, "objective": "latency",
 "layers": [{"layer": 2, "mixer": "min_gru"}, {"layer": 5, "mixer": "selective_ssm"}]}
JSON
OMP_NUM_THREADS=1 "$rl" --checkpoint "$teacher" --plan "file:$work/plan.json" --stage1-steps 2 --stage2-steps 2 \
  --train-limit 128 --test-limit 128 --quiet --out "$work/out"
grep -qx "2,min_gru,.*" "$work/out/layers.csv" || fail "layer 2 is not min_gru: $(cat "$work/out/layers.csv")"
grep -qx "5,selective_ssm,.*" "$work/out/layers.csv" || fail "layer 5 is not selective_ssm"
[ "$(wc -l <"$work/out/layers.csv")" -eq 3 ] || fail "expected exactly two replaced layers"
/usr/bin/python3 - "$work/out/result.json" <<'PY' || fail "result.json does not record the per-layer plan"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["layers"] == [2, 5], j["layers"]
assert j["mixer_per_layer"][2] == "min_gru" and j["mixer_per_layer"][5] == "selective_ssm"
assert all(m == "attention" for i, m in enumerate(j["mixer_per_layer"]) if i not in (2, 5))
PY
echo '{"layers": [{"layer": 1, "mixer": "mamba9"}]}' >"$work/bad.json"
if "$rl" --checkpoint "$teacher" --plan "file:$work/bad.json" --quiet --out "$work/bad" 2>"$work/bad.err"; then
  fail "an unknown mixer in the plan file was accepted"
fi
grep -q "unknown mixer 'mamba9'" "$work/bad.err" || fail "the refusal does not name the mixer: $(cat "$work/bad.err")"
rm -rf "$work"
echo "check_plan_file: layers 2 (min_gru) and 5 (selective_ssm) replaced from the file, the rest kept; bad names refused"
