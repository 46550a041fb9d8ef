#!/usr/bin/python3
"""seqswap vs PyTorch on the same configurations, side by side in one session.

    /usr/bin/python3 benchmarks/compare_torch.py [--build-dir build/release] [--threads 2]
        [--rounds 2] [--reps 5] [--quick] [--groups teacher,vit_tiny,mixers]
        [--torch-pypi PYTHON | --no-torch-pypi] [--out F.md] [--json F.json] [--plot DIR]

Anchors, each measured by benchmarks/torch_worker.py in a process of its own (two PyTorch
versions cannot share one interpreter), alternating with seqswap in the same run:
  torch 1.13    Debian's python3-torch with OpenBLAS, run by /usr/bin/python3, eager mode;
  eager         a current PyTorch from PyPI (MKL, oneDNN), eager mode;
  compile       the same PyTorch with the module under torch.compile (inductor's C++ code);
                compiling happens in the warm-up, is not timed, and its seconds are reported.
The PyPI interpreter is --torch-pypi, else $SEQSWAP_TORCH_PYPI_VENV/bin/python, else
~/.cache/seqswap/torch-pypi/bin/python (filled by `cmake/install-deps.sh --with-torch-pypi`);
when none exists those columns are left out with a note saying so.

Every PyTorch runs at its best thread setting on this machine: intra-op threads = --threads
(torch.set_num_threads) and OPENBLAS_NUM_THREADS=1 for Debian's OpenBLAS; seqswap runs with
OMP_NUM_THREADS=--threads. Within a round every group runs each anchor and then seqswap (in the
second, fourth, ... round seqswap first, then the anchors); the whole sequence repeats --rounds
times. A figure of a round is the median over --reps
repetitions after warm-up; the table gives the median over rounds and, in brackets, every
round's own ratio. Ratios are throughput ratios, seqswap / PyTorch (= PyTorch time / seqswap
time): 3.42x means seqswap does the same work 3.42 times as fast.

The "straightforward PyTorch form" of a scan-based mixer is its recurrence written as a Python
loop over the tokens (batched over sequences and channels), which is how such a mixer is
usually first written; the multi-head LSTM/GRU use nn.LSTM/nn.GRU with the heads folded into
the batch (the same FLOPs; weights shared across heads). Under torch.compile only the teacher,
the ViT-Tiny stack and the two attention mixers run (compiling a Python loop over 1024 tokens
unrolls it token by token).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--build-dir", default="build/release", help="a seqswap release build with benchmarks/")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--rounds", type=int, default=2)
ap.add_argument("--reps", type=int, default=5, help="timed repetitions per figure (after 2 warm-ups)")
ap.add_argument("--quick", action="store_true", help="N up to 1024, fewer rows (a few minutes)")
ap.add_argument("--groups", default="teacher,vit_tiny,mixers", help="comma-separated subset of the groups")
ap.add_argument("--torch-pypi", help="python of the PyPI PyTorch environment")
ap.add_argument("--no-torch-pypi", action="store_true", help="measure Debian's PyTorch only")
ap.add_argument("--out", help="also write the table (markdown) here")
ap.add_argument("--json", help="also write every figure (JSON) here")
ap.add_argument("--plot", help="write latency-vs-N data and a gnuplot PNG into this folder")
args = ap.parse_args()

ALL_GROUPS = ["teacher", "vit_tiny", "mixers"]
groups = args.groups.split(",")
for g in groups:
    if g not in ALL_GROUPS:
        sys.exit(f"compare_torch.py: unknown group '{g}' in --groups (expected a subset of {','.join(ALL_GROUPS)})")
HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "torch_worker.py")
NS = [50, 197, 1024] if args.quick else [50, 197, 1024, 4096]

anchors = [("torch 1.13", "/usr/bin/python3", "eager")]
pypi_note = ""
if not args.no_torch_pypi:
    venv = os.environ.get("SEQSWAP_TORCH_PYPI_VENV", os.path.expanduser("~/.cache/seqswap/torch-pypi"))
    pypi = args.torch_pypi or os.path.join(venv, "bin", "python")
    if os.access(pypi, os.X_OK):
        anchors += [("eager", pypi, "eager"), ("compile", pypi, "compile")]
    elif args.torch_pypi:
        sys.exit(f"compare_torch.py: --torch-pypi {pypi} is not an executable python")
    else:
        pypi_note = (f"No PyPI PyTorch at {pypi} (cmake/install-deps.sh --with-torch-pypi installs one): "
                     "current-PyTorch columns left out.")
        print("compare_torch.py: " + pypi_note, file=sys.stderr)

BENCH_OPS = os.path.join(args.build_dir, "benchmarks", "bench_ops")
BENCH_MIXERS = os.path.join(args.build_dir, "benchmarks", "bench_mixers")
for b in (BENCH_OPS, BENCH_MIXERS):
    if not os.access(b, os.X_OK):
        sys.exit(f"compare_torch.py: expected the benchmark binary {b}; build it with "
                 f"`cmake --build {args.build_dir} --target bench_ops bench_mixers` or pass --build-dir")


def teacher_flops(batch, n=50, d=64, depth=8, hidden=256, patches=49, k=16, classes=10):
    """Multiply-adds x 2 of one forward; forward + backward counts 3x."""
    block = 2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * hidden
    return batch * (2 * patches * k * d + depth * block + 2 * d * classes)


def torch_group(python, mode, group):
    cmd = [python, WORKER, "--mode", mode, "--group", group, "--threads", str(args.threads), "--reps", str(args.reps)]
    if args.quick:
        cmd.append("--quick")
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"compare_torch.py: {' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- seqswap timings
def run_bench(binary, regex):
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run([binary, f"--benchmark_filter={regex}", "--benchmark_format=json",
                          f"--benchmark_repetitions={args.reps}", "--benchmark_report_aggregates_only=true"],
                         env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"compare_torch.py: {binary} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    res = {}
    for b in json.loads(out.stdout)["benchmarks"]:
        # With one repetition Google Benchmark reports the run itself and no aggregates.
        want = "median" if args.reps > 1 else None
        if b.get("aggregate_name") != want or b.get("error_occurred"):
            continue
        unit = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
        res[b["run_name"]] = (b["real_time"] * unit, b)
    return res


def seqswap_group(name):
    r = {}
    if name == "teacher":
        got = run_bench(BENCH_OPS, "BM_teacher|BM_fma_peak|BM_triad|BM_scan|BM_selective_scan|BM_linear_forward")
        r["teacher forward (B 128)"] = got["BM_teacher/B:128/bwd:0/real_time"][0]
        r["teacher forward + backward (B 128)"] = got["BM_teacher/B:128/bwd:1/real_time"][0]
        r["teacher training step (B 128)"] = got["BM_teacher_train_step/128/real_time"][0]
        r["_fma_gflops"] = got["BM_fma_peak/real_time"][1]["GFLOP/s"]
        r["_triad_gbs"] = got["BM_triad/real_time"][1]["bytes_per_second"] / 1e9
        for name, path in (("reference", "T:4096/C:3072/chunk:0/path:0"), ("chunked", "T:4096/C:3072/chunk:256/path:1"),
                           ("channels", "T:4096/C:3072/chunk:256/path:2")):
            r[f"_scan_{name}_gbs"] = got[f"BM_scan/{path}/real_time"][1]["bytes_per_second"] / 1e9
        r["_selective_scan_ktok"] = got["BM_selective_scan/B:8/N:1024/E:384/S:16/real_time"][1]["items_per_second"] / 1e3
        r["_gemm_gflops"] = max(b["GFLOP/s"] for k, (_, b) in got.items() if k.startswith("BM_linear_forward"))
    elif name == "vit_tiny":
        got = run_bench(BENCH_OPS, "BM_vit_tiny_stack")
        r["ViT-Tiny stack forward (B 8, N 197)"] = got["BM_vit_tiny_stack/B:8/N:197/bwd:0/real_time"][0]
        r["ViT-Tiny stack forward + backward"] = got["BM_vit_tiny_stack/B:8/N:197/bwd:1/real_time"][0]
    elif name == "mixers":
        ns = "|".join(str(n) for n in NS)
        got = run_bench(BENCH_MIXERS, f"BM_mixer_forward(_backward)?/(softmax_attention|linear_attention|min_gru|"
                                      f"diagonal_ssm|selective_ssm|multi_head_lstm|multi_head_gru)/B:8/N:({ns})/")
        for run, (ms, _) in got.items():
            parts = run.split("/")
            kind = "forward + backward" if parts[0].endswith("_backward") else "forward"
            r[f"{parts[1]} {kind} N {parts[3].split(':')[1]}"] = ms
    return r



# ---------------------------------------------------------------- run, alternating
sides = [a[0] for a in anchors] + ["seqswap"]
rounds = {s: [] for s in sides}
info, compile_s = {}, {}
t0 = time.time()
for rd in range(args.rounds):
    got = {s: {} for s in sides}
    for g in groups:
        # Odd rounds run seqswap first, even rounds last: whatever a side leaves behind (freed
        # memory, the page cache, a warm or cold core) falls on each side in turn.
        order = [None] + list(anchors) if rd % 2 == 1 else list(anchors) + [None]
        for side in order:
            if side is None:
                print(f"[{time.time() - t0:6.0f}s] round {rd + 1}/{args.rounds}: seqswap {g}", file=sys.stderr, flush=True)
                got["seqswap"].update(seqswap_group(g))
                continue
            name, python, mode = side
            print(f"[{time.time() - t0:6.0f}s] round {rd + 1}/{args.rounds}: {name} {g}", file=sys.stderr, flush=True)
            w = torch_group(python, mode, g)
            got[name].update(w["figures"])
            info[name] = w
            compile_s.setdefault(name, {})[g] = w["compile_s"]
    for s in sides:
        rounds[s].append(got[s])
if info["torch 1.13"]["openblas_missing"]:
    print(f"warning: libblas.so.3 is {info['torch 1.13']['blas']}, not OpenBLAS: Debian's torch then runs its matrix "
          "products in the reference BLAS, far from its best (cmake/install-deps.sh --with-torch installs "
          "libopenblas0-pthread)", file=sys.stderr)


def med(side, key):
    v = [r[key] for r in rounds[side] if key in r]
    return statistics.median(v) if v else float("nan")


def round_ratios(side, key):
    return [t[key] / s[key] for t, s in zip(rounds[side], rounds["seqswap"]) if key in t and key in s]


def cpu_line():
    info = {}
    try:
        for ln in open("/proc/cpuinfo"):
            k, _, v = ln.partition(":")
            info.setdefault(k.strip(), v.strip())
    except OSError:
        return "unknown CPU"
    simd = "AVX-512" if "avx512f" in info.get("flags", "").split() else "AVX2" if "avx2" in info.get("flags", "") else "no AVX2"
    return f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')}, {simd})"



tnames = [a[0] for a in anchors]
ver = {n: info[n]["version"] for n in tnames}
label = {n: (f"PyTorch {ver[n]}" if n == "torch 1.13" else f"PyTorch {ver[n]} {n}") for n in tnames}
fma, triad = med("seqswap", "_fma_gflops"), med("seqswap", "_triad_gbs")
lines = [f"Machine: {cpu_line()}, {os.cpu_count()} logical CPUs; threads {args.threads}. Anchors: "
         + "; ".join(f"{label[n]} (BLAS {info[n]['blas']}, oneDNN {'on' if info[n]['mkldnn'] else 'off'})" for n in tnames)
         + f"; intra-op threads {args.threads}, OPENBLAS_NUM_THREADS=1; seqswap OMP_NUM_THREADS={args.threads}. "
         f"{args.rounds} alternating rounds (seqswap last in odd rounds, first in even ones), medians of {args.reps}; ratio = median over rounds [each round's].",
         f"Measured in the same run: FMA peak {fma:.0f} GFLOP/s ({args.threads} threads), DRAM triad {triad:.1f} GB/s."]
if pypi_note:
    lines.append(pypi_note)
if "compile" in compile_s:
    lines.append("torch.compile's compile time (warm-up, not in the figures), last round: "
                 + ", ".join(f"{g} {s:.0f} s" for g, s in compile_s["compile"].items()) + ".")
lines += ["", "| row | seqswap ms | " + " | ".join(f"{label[n]} ms | ratio" for n in tnames) + " |",
          "|---|---:|" + "---:|---:|" * len(tnames)]
rows = [k for k in rounds["seqswap"][0] if not k.startswith("_") and any(k in rounds[n][0] for n in tnames)]
table = {}
for k in rows:
    s = med("seqswap", k)
    table[k] = {"seqswap_ms": s}
    cells = [f"{s:.3f}"]
    for n in tnames:
        t = med(n, k)
        if t != t:  # not measured by this anchor
            cells += ["-", "-"]
            continue
        rr = round_ratios(n, k)
        table[k][n] = {"ms": t, "ratio": t / s, "round_ratios": rr}
        cells += [f"{t:.3f}", f"{t / s:.2f}x [" + ", ".join(f"{r:.2f}" for r in rr) + "]"]
    lines.append(f"| {k} | " + " | ".join(cells) + " |")

if "teacher" in groups:
    fl = 3 * teacher_flops(128)
    st = med("seqswap", "teacher forward + backward (B 128)")
    gemm = med("seqswap", "_gemm_gflops")
    lines += ["", f"Teacher forward + backward: {fl / 1e9:.2f} GFLOP per batch of 128 -> seqswap {fl / st / 1e6:.1f} GFLOP/s "
              f"= {100 * fl / st / 1e6 / fma:.0f}% of the measured FMA peak; "
              + ", ".join(f"{label[n]} {fl / med(n, 'teacher forward + backward (B 128)') / 1e6:.1f} GFLOP/s" for n in tnames)
              + f". The fastest single GEMM (y = x Wᵀ + b at ViT shapes) ran at {gemm:.1f} GFLOP/s in the same run: "
              f"the teacher's forward + backward reaches {100 * fl / st / 1e6 / gemm:.0f}% of it (ratio of medians)."]
    # The same ratio round by round: in a round both come from one bench_ops process a minute
    # apart, so a change of the machine's phase between rounds falls on both (within one
    # process it still can move). Every round ran the teacher group, so each has both figures.
    fb = [100 * fl / r["teacher forward + backward (B 128)"] / 1e6 / r["_gemm_gflops"] for r in rounds["seqswap"]]
    lines.append("Forward + backward as a share of the same round's fastest GEMM, per round: "
                 + ", ".join(f"{v:.0f}%" for v in fb) + f" (median {statistics.median(fb):.0f}%).")
    table["teacher forward + backward (B 128)"]["gemm_share_rounds"] = fb
    key = "teacher training step (B 128)"
    if len(tnames) > 1:  # against the faster of current eager and compile, round by round
        best = [min(r[k2][key] for k2 in tnames[1:] if key in r[k2]) for r in
                [{n: rounds[n][i] for n in tnames} for i in range(args.rounds)]]
        rr = [b / s[key] for b, s in zip(best, rounds["seqswap"])]
        lines.append(f"Training step against the faster of PyTorch {ver[tnames[1]]} eager and compile, per round: "
                     + ", ".join(f"{r:.2f}x" for r in rr) + ".")
        table[key]["best_current_round_ratios"] = rr
    lines.append(f"Training step against PyTorch {ver['torch 1.13']}, per round: "
                 + ", ".join(f"{r:.2f}x" for r in round_ratios("torch 1.13", key)) + ".")
    lines += ["", f"Plain recurrence h_t = a_t h_(t-1) + b_t over T 4096 x C 3072 floats in memory (bytes: read a, b, write h): "
              + ", ".join(f"{n} {med('seqswap', f'_scan_{n}_gbs'):.1f} GB/s ({100 * med('seqswap', f'_scan_{n}_gbs') / triad:.0f}% "
                          f"of the triad)" for n in ("channels", "chunked", "reference")) + ".",
              f"Fused selective scan alone (one direction, B 8 x N 1024, E 384, S 16): "
              f"{med('seqswap', '_selective_scan_ktok'):.0f}k tokens/s ({args.threads} threads)."]
if "mixers" in groups:
    # Where each mixer's forward overtakes softmax attention's (first N in the table where it is faster).
    cross = []
    for m in ("linear_attention", "min_gru", "diagonal_ssm", "selective_ssm", "multi_head_lstm", "multi_head_gru"):
        prev, hit = None, None
        for n in NS:
            a, k = table.get(f"softmax_attention forward N {n}"), table.get(f"{m} forward N {n}")
            if a and k:
                if k["seqswap_ms"] < a["seqswap_ms"]:
                    hit = n
                    break
                prev = n
        cross.append(f"{m}: " + (f"N <= {hit}" if hit and prev is None else f"between N = {prev} and {hit}" if hit
                                 else f"not up to N = {prev}"))
    lines += ["", "Where each mixer's forward (seqswap) becomes faster than softmax attention's: " + "; ".join(cross) + "."]
text = "\n".join(lines)
print(text)
if args.out:
    with open(args.out + ".tmp", "w") as f:
        f.write(text + "\n")
    os.replace(args.out + ".tmp", args.out)
if args.json:
    with open(args.json + ".tmp", "w") as f:
        json.dump({"rows": table, "anchors": {n: {k: v for k, v in info[n].items() if k != "figures"} for n in tnames},
                   "fma_gflops": fma, "triad_gbs": triad, "rounds": rounds}, f, indent=1)
    os.replace(args.json + ".tmp", args.json)
if args.plot and "mixers" in groups:
    os.makedirs(args.plot, exist_ok=True)
    mixers = ["softmax_attention", "linear_attention", "min_gru", "selective_ssm", "multi_head_gru"]
    with open(os.path.join(args.plot, "latency_vs_n.dat"), "w") as f:
        for m in mixers:
            f.write(f"# {m}: N seqswap_ms torch_ms\n")
            for n in NS:
                k = f"{m} forward N {n}"
                if k in table:
                    f.write(f"{n} {table[k]['seqswap_ms']} {table[k]['torch 1.13']['ms']}\n")
            f.write("\n\n")
    plot = ("set terminal pngcairo size 900,560 noenhanced\nset output 'latency_vs_n.png'\nset logscale xy\n"
            f"set title 'Forward latency vs N (B {B}, D {D}): seqswap (solid) vs PyTorch 1.13 eager (dashed)'\n"
            "set xlabel 'tokens N'\nset ylabel 'ms'\nset key outside\nplot " +
            ", ".join(f"'latency_vs_n.dat' index {i} using 1:2 with linespoints lc {i + 1} title '{m}', "
                      f"'' index {i} using 1:3 with linespoints dt 2 lc {i + 1} title '{m} (torch)'"
                      for i, m in enumerate(mixers)) + "\n")
    with open(os.path.join(args.plot, "latency_vs_n.gp"), "w") as f:
        f.write(plot)
    subprocess.run(["gnuplot", "latency_vs_n.gp"], cwd=args.plot, check=False)
