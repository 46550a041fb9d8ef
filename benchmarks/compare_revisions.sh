#!/usr/bin/env bash
# Side by side: a Google Benchmark suite built from another revision's headers against this
# checkout's build, run alternately (A B A B ...) on the same machine in one call, so that
# drift and noise fall on both. Prints each round's real time per case and the ratio of medians.
#
#   benchmarks/compare_revisions.sh REV [SUITE] [FILTER] [ROUNDS]
#   benchmarks/compare_revisions.sh HEAD~1 bench_ops 'BM_teacher_train_step' 6
#   SAME_SUITE=1 benchmarks/compare_revisions.sh HEAD~1 bench_ops 'BM_linear_backward' 6
# (valgrind's instruction counts are no way out here: it stops at the first AVX-512
# instruction of a -march=native build on this machine.)
#
# TIME=cpu compares the main thread's CPU time instead of the real time: on a shared virtual
# machine the time the host takes the CPU away (steal) is in the real time and not in the CPU
# time, so the CPU time moves less between rounds (OpenMP's waiting threads spin, so with
# OMP_NUM_THREADS=2 it still counts the other thread's imbalance).
#
# REV's suite is compiled with the flags of this checkout's release build (compile_commands.json)
# into a temporary folder; this checkout's suite must be built (make build).
set -euo pipefail
rev=${1:?usage: compare_revisions.sh REV [SUITE] [FILTER] [ROUNDS]}
suite=${2:-bench_ops}
filter=${3:-BM_teacher_train_step}
rounds=${4:-6}
top=$(git rev-parse --show-toplevel)
build="$top/build/release"
new="$build/benchmarks/$suite"
[ -x "$new" ] || { echo "compare_revisions: $new is not built (run make build)" >&2; exit 2; }
work=$(mktemp -d)
trap 'git -C "$top" worktree remove --force "$work/src" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$top" worktree add --detach "$work/src" "$rev" >/dev/null 2>&1 || { echo "compare_revisions: no revision $rev" >&2; exit 2; }
cmd=$(python3 - "$build/compile_commands.json" "$suite" <<'PY'
import json, sys
for e in json.load(open(sys.argv[1])):
    if e["file"].endswith("/benchmarks/" + sys.argv[2] + ".cpp"):
        print(e["command"]); break
PY
)
[ -n "$cmd" ] || { echo "compare_revisions: no compile command for $suite" >&2; exit 2; }
cmd=${cmd//"$top/include"/"$work/src/include"}
# SAME_SUITE=1: compile this checkout's suite source against REV's headers, so that cases the
# old suite lacks (or whose setup changed) are measured on both sides.
if [ "${SAME_SUITE:-0}" != 1 ]; then
  cmd=${cmd//"$top/benchmarks/$suite.cpp"/"$work/src/benchmarks/$suite.cpp"}
fi
cmd=$(sed -E "s# -o [^ ]+ # -o $work/$suite.o #" <<<"$cmd")
echo "compiling $suite at $rev ..." >&2
(cd "$build/benchmarks" && eval "$cmd")
link=$(cat "$build/benchmarks/CMakeFiles/$suite.dir/link.txt")
link=$(sed -E "s#CMakeFiles/$suite.dir/$suite.cpp.o#$work/$suite.o#; s# -o $suite # -o $work/$suite #" <<<"$link")
(cd "$build/benchmarks" && eval "$link")
old="$work/$suite"
echo "# $(date -u +%FT%TZ), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), OMP_NUM_THREADS=${OMP_NUM_THREADS:-all}"
field=real_time; [ "${TIME:-real}" = cpu ] && field=cpu_time
echo "# A = $rev ($(git -C "$top" rev-parse --short "$rev")$([ "${SAME_SUITE:-0}" = 1 ] && echo ", this checkout's $suite.cpp")), B = this checkout; filter '$filter'; ${field/_/ }, ms"
for ((i = 1; i <= rounds; i++)); do
  for side in A B; do
    bin=$old; [ "$side" = B ] && bin=$new
    "$bin" --benchmark_filter="$filter" --benchmark_format=json 2>/dev/null |
      python3 -c "
import json,sys
for b in json.load(sys.stdin)['benchmarks']:
    t=b['$field']*{'ns':1e-6,'us':1e-3,'ms':1,'s':1e3}[b['time_unit']]
    print('$side', $i, b['name'], '%.3f' % t)"
  done
done | tee "$work/rows.txt"
python3 - "$work/rows.txt" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(lambda: {"A": [], "B": []})
for line in open(sys.argv[1]):
    side, _, name, t = line.split()
    rows[name][side].append(float(t))
print("# case  median A  median B  B/A  (per-round B/A)")
for name, v in rows.items():
    a, b = statistics.median(v["A"]), statistics.median(v["B"])
    per = " ".join("%.3f" % (y / x) for x, y in zip(v["A"], v["B"]))
    print(f"{name}  {a:.3f}  {b:.3f}  {b / a:.3f}  ({per})")
PY
