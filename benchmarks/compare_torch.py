#!/usr/bin/python3
"""seqswap vs PyTorch eager on the same configurations, side by side in one session.

    /usr/bin/python3 benchmarks/compare_torch.py [--build-dir build/release] [--threads 2]
        [--rounds 2] [--quick] [--out docs/performance-compare.md] [--plot DIR]

Runs with Debian's python3-torch (/usr/bin/python3). PyTorch runs at its best thread setting
on this machine: OPENBLAS_NUM_THREADS=1 (set before torch is imported) and
torch.set_num_threads(--threads); seqswap runs with OMP_NUM_THREADS=--threads. The groups
alternate: PyTorch group, seqswap group, next group, and the whole sequence repeats --rounds
times; each figure is the median over rounds of a median over repetitions after warm-up.
Ratios are throughput ratios, seqswap / PyTorch (= PyTorch time / seqswap time): 3.42x means
seqswap does the same work 3.42 times as fast.

The "straightforward PyTorch form" of a scan-based mixer is its recurrence written as a Python
loop over the tokens (batched over sequences and channels), which is how such a mixer is
usually first written; the multi-head LSTM/GRU use nn.LSTM/nn.GRU with the heads folded into
the batch (the same FLOPs; weights shared across heads).
"""
import argparse
import json
import math
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
ap.add_argument("--out", help="also write the table (markdown) here")
ap.add_argument("--json", help="also write every figure (JSON) here")
ap.add_argument("--plot", help="write latency-vs-N data and a gnuplot PNG into this folder")
args = ap.parse_args()

os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = str(args.threads)
import torch  # noqa: E402  (after the environment is set)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(0)
_blas = os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3")
if "openblas" not in _blas:
    print(f"warning: libblas.so.3 is {_blas}, not OpenBLAS: Debian's torch then runs its matrix products in the "
          "reference BLAS, far from its best (cmake/install-deps.sh --with-torch installs libopenblas0-pthread)",
          file=sys.stderr)

BENCH_OPS = os.path.join(args.build_dir, "benchmarks", "bench_ops")
BENCH_MIXERS = os.path.join(args.build_dir, "benchmarks", "bench_mixers")
for b in (BENCH_OPS, BENCH_MIXERS):
    if not os.access(b, os.X_OK):
        sys.exit(f"compare_torch.py: expected the benchmark binary {b}; build it with "
                 f"`cmake --build {args.build_dir} --target bench_ops bench_mixers` or pass --build-dir")

NS = [50, 197, 1024] if args.quick else [50, 197, 1024, 4096]
LOOP_NS = [50, 197, 1024]  # Python-loop forms: longer sequences take minutes in eager mode
B, D, H = 8, 192, 3


def median_ms(fn, reps=args.reps, warmup=2):
    for _ in range(warmup):
        fn()
    t = []
    for _ in range(reps):
        a = time.perf_counter()
        fn()
        t.append((time.perf_counter() - a) * 1e3)
    return statistics.median(t)


# ---------------------------------------------------------------- PyTorch modules
class Attention(nn.Module):
    def __init__(s, d, h):
        super().__init__()
        s.h, s.qkv, s.proj = h, nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(s, x):
        b, n, d = x.shape
        q, k, v = s.qkv(x).view(b, n, 3, s.h, d // s.h).permute(2, 0, 3, 1, 4)
        a = (q @ k.transpose(-1, -2) * (d // s.h) ** -0.5).softmax(-1)
        return s.proj((a @ v).transpose(1, 2).reshape(b, n, d))


class LinearAttention(Attention):  # elu + 1 features, non-causal
    def forward(s, x):
        b, n, d = x.shape
        q, k, v = s.qkv(x).view(b, n, 3, s.h, d // s.h).permute(2, 0, 3, 1, 4)
        q, k = F.elu(q) + 1, F.elu(k) + 1
        kv = k.transpose(-1, -2) @ v                     # (b, h, d, d)
        z = k.sum(2, keepdim=True)                       # (b, h, 1, d)
        y = (q @ kv) / (q * z).sum(-1, keepdim=True).clamp_min(1e-6)
        return s.proj(y.transpose(1, 2).reshape(b, n, d))


class MinGruLoop(nn.Module):  # bidirectional, expand 1, directions summed
    def __init__(s, d):
        super().__init__()
        s.fwd, s.bwd, s.proj = nn.Linear(d, 2 * d), nn.Linear(d, 2 * d), nn.Linear(d, d)

    def scan(s, lin, x, reverse):
        u, hc = lin(x).chunk(2, -1)
        z = torch.sigmoid(u)
        h = torch.zeros_like(hc[:, 0])
        out = [None] * x.shape[1]
        for t in (reversed(range(x.shape[1])) if reverse else range(x.shape[1])):
            h = (1 - z[:, t]) * h + z[:, t] * hc[:, t]
            out[t] = h
        return torch.stack(out, 1)

    def forward(s, x):
        return s.proj(s.scan(s.fwd, x, False) + s.scan(s.bwd, x, True))


class DiagSsmLoop(nn.Module):  # S4D-real, state 16, ZOH, bidirectional
    def __init__(s, d, ns=16):
        super().__init__()
        s.inp, s.proj = nn.Linear(d, d), nn.Linear(d, d)
        s.A = [-(torch.arange(1, ns + 1).float().repeat(d, 1)) for _ in range(2)]
        s.Bm = [nn.Parameter(torch.randn(d, ns) * 0.1) for _ in range(2)]
        s.C = [nn.Parameter(torch.randn(d, ns) * 0.1) for _ in range(2)]
        s.dt = [nn.Parameter(torch.full((d, 1), 0.01)) for _ in range(2)]
        s.Dskip = nn.Parameter(torch.ones(d))

    def scan(s, u, i, reverse):
        Ab = torch.exp(s.dt[i] * s.A[i])                  # (d, ns)
        Bb = (Ab - 1) / s.A[i] * s.Bm[i]
        h = torch.zeros(u.shape[0], *Ab.shape)
        out = [None] * u.shape[1]
        for t in (reversed(range(u.shape[1])) if reverse else range(u.shape[1])):
            h = Ab * h + Bb * u[:, t, :, None]
            out[t] = (h * s.C[i]).sum(-1)
        return torch.stack(out, 1)

    def forward(s, x):
        u = s.inp(x)
        return s.proj(s.scan(u, 0, False) + s.scan(u, 1, True) + s.Dskip * u)


class SelectiveLoop(nn.Module):  # Mamba S6, expand 1, state 16, conv 4, bidirectional
    def __init__(s, d, ns=16, k=4):
        super().__init__()
        e, s.r, s.ns = d, math.ceil(d / 16), ns
        s.inp, s.proj = nn.Linear(d, 2 * e), nn.Linear(e, d)
        s.conv = nn.ModuleList(nn.Conv1d(e, e, k, padding=k - 1, groups=e) for _ in range(2))
        s.xproj = nn.ModuleList(nn.Linear(e, s.r + 2 * ns, bias=False) for _ in range(2))
        s.dtproj = nn.ModuleList(nn.Linear(s.r, e) for _ in range(2))
        s.A = [-(torch.arange(1, ns + 1).float().repeat(e, 1)) for _ in range(2)]
        s.Dskip = nn.Parameter(torch.ones(e))

    def direction(s, xi, i):
        n = xi.shape[1]
        xc = F.silu(s.conv[i](xi.transpose(1, 2))[..., :n].transpose(1, 2))
        dt, Bm, C = s.xproj[i](xc).split([s.r, s.ns, s.ns], -1)
        dt = F.softplus(s.dtproj[i](dt))                  # (b, n, e)
        h = torch.zeros(xi.shape[0], xi.shape[2], s.ns)
        out = []
        for t in range(n):
            h = torch.exp(dt[:, t, :, None] * s.A[i]) * h + (dt[:, t] * xc[:, t])[..., None] * Bm[:, t, None, :]
            out.append((h * C[:, t, None, :]).sum(-1) + s.Dskip * xc[:, t])
        return torch.stack(out, 1)

    def forward(s, x):
        xi, z = s.inp(x).chunk(2, -1)
        y = s.direction(xi, 0) + s.direction(xi.flip(1), 1).flip(1)
        return s.proj(y * F.silu(z))


class MultiHeadRnn(nn.Module):  # FAR: pre Linear, per-head bidirectional cell, merge Linear(2D, D)
    def __init__(s, d, h, cell):
        super().__init__()
        s.h = h
        s.pre, s.merge, s.proj = nn.Linear(d, d), nn.Linear(2 * d, d), nn.Linear(d, d)
        s.rnn = cell(d // h, d // h, batch_first=True, bidirectional=True)

    def forward(s, x):
        b, n, d = x.shape
        u = s.pre(x).view(b, n, s.h, d // s.h).transpose(1, 2).reshape(b * s.h, n, d // s.h)
        y, _ = s.rnn(u)                                    # (b h, n, 2 d/h)
        y = y.view(b, s.h, n, 2, d // s.h).permute(0, 2, 3, 1, 4).reshape(b, n, 2 * d)
        return s.proj(s.merge(y))


class Block(nn.Module):
    def __init__(s, d, h):
        super().__init__()
        s.n1, s.attn, s.n2 = nn.LayerNorm(d, eps=1e-6), Attention(d, h), nn.LayerNorm(d, eps=1e-6)
        s.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(s, x):
        x = x + s.attn(s.n1(x))
        return x + s.mlp(s.n2(x))


class Vit(nn.Module):  # the shipped teacher's architecture
    def __init__(s, img=28, patch=4, d=64, depth=8, h=4, classes=10):
        super().__init__()
        s.pe = nn.Conv2d(1, d, patch, patch)
        n = (img // patch) ** 2
        s.cls, s.pos = nn.Parameter(torch.zeros(1, 1, d)), nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        s.blocks = nn.Sequential(*[Block(d, h) for _ in range(depth)])
        s.norm, s.head = nn.LayerNorm(d, eps=1e-6), nn.Linear(d, classes)

    def forward(s, x):
        t = s.pe(x).flatten(2).transpose(1, 2)
        t = torch.cat([s.cls.expand(t.shape[0], -1, -1), t], 1) + s.pos
        return s.head(s.norm(s.blocks(t))[:, 0])


def teacher_flops(batch, n=50, d=64, depth=8, hidden=256, patches=49, k=16, classes=10):
    """Multiply-adds x 2 of one forward; forward + backward counts 3x."""
    block = 2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * hidden
    return batch * (2 * patches * k * d + depth * block + 2 * d * classes)


# ---------------------------------------------------------------- PyTorch timings
def torch_fwd(mod, x):
    with torch.no_grad():
        return median_ms(lambda: mod(x))


def torch_fwd_bwd(mod, x, reps=args.reps):
    x = x.detach().requires_grad_(True)

    def step():
        mod.zero_grad(set_to_none=True)
        x.grad = None
        mod(x).sum().backward()
    return median_ms(step, reps=reps)


def torch_group(name):
    r = {}
    if name == "teacher":
        vit = Vit()
        x = torch.randn(128, 1, 28, 28)
        y = torch.randint(0, 10, (128,))
        opt = torch.optim.AdamW(vit.parameters(), lr=1e-4, weight_decay=0.05)
        with torch.no_grad():
            r["teacher forward (B 128)"] = median_ms(lambda: vit(x))

        def fb():
            vit.zero_grad(set_to_none=True)
            F.cross_entropy(vit(x), y, label_smoothing=0.1).backward()
        r["teacher forward + backward (B 128)"] = median_ms(fb)

        def step():
            fb()
            opt.step()
        r["teacher training step (B 128)"] = median_ms(step)
    elif name == "vit_tiny":
        stack = nn.Sequential(*[Block(192, 3) for _ in range(12)])
        x = torch.randn(8, 197, 192)
        r["ViT-Tiny stack forward (B 8, N 197)"] = torch_fwd(stack, x)
        r["ViT-Tiny stack forward + backward"] = torch_fwd_bwd(stack, x)
    elif name == "mixers":
        forms = {"softmax_attention": lambda: Attention(D, H), "linear_attention": lambda: LinearAttention(D, H),
                 "min_gru": lambda: MinGruLoop(D), "diagonal_ssm": lambda: DiagSsmLoop(D),
                 "selective_ssm": lambda: SelectiveLoop(D),
                 "multi_head_lstm": lambda: MultiHeadRnn(D, H, nn.LSTM),
                 "multi_head_gru": lambda: MultiHeadRnn(D, H, nn.GRU)}
        for m, make in forms.items():
            mod = make()
            loop = m in ("min_gru", "diagonal_ssm", "selective_ssm")
            for n in (LOOP_NS if loop else NS):
                x = torch.randn(B, n, D)
                r[f"{m} forward N {n}"] = torch_fwd(mod, x)
                if m in ("multi_head_lstm", "multi_head_gru", "min_gru", "selective_ssm") and n <= 197:
                    r[f"{m} forward + backward N {n}"] = torch_fwd_bwd(mod, x, reps=3)
    return r


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
        if b.get("aggregate_name") != "median" or b.get("error_occurred"):
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
groups = ["teacher", "vit_tiny", "mixers"]
rounds = {"torch": [], "seqswap": []}
t0 = time.time()
for rd in range(args.rounds):
    tr, sr = {}, {}
    for g in groups:
        print(f"[{time.time() - t0:6.0f}s] round {rd + 1}/{args.rounds}: PyTorch {g}", file=sys.stderr, flush=True)
        tr.update(torch_group(g))
        print(f"[{time.time() - t0:6.0f}s] round {rd + 1}/{args.rounds}: seqswap {g}", file=sys.stderr, flush=True)
        sr.update(seqswap_group(g))
    rounds["torch"].append(tr)
    rounds["seqswap"].append(sr)


def med(side, key):
    v = [r[key] for r in rounds[side] if key in r]
    return statistics.median(v) if v else float("nan")


rows = [k for k in rounds["torch"][0] if k in rounds["seqswap"][0]]
fma, triad = med("seqswap", "_fma_gflops"), med("seqswap", "_triad_gbs")
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


lines = [f"Machine: {cpu_line()}, {os.cpu_count()} logical CPUs; threads {args.threads} (PyTorch {torch.__version__}, BLAS {_blas}, "
         f"OPENBLAS_NUM_THREADS=1, torch.set_num_threads({args.threads}); seqswap OMP_NUM_THREADS={args.threads}); "
         f"{args.rounds} alternating rounds, medians of {args.reps}.",
         f"Measured in the same run: FMA peak {fma:.0f} GFLOP/s ({args.threads} threads), DRAM triad {triad:.1f} GB/s.", "",
         "| row | seqswap ms | PyTorch ms | ratio (seqswap throughput / PyTorch) |", "|---|---:|---:|---:|"]
table = {}
for k in rows:
    s, t = med("seqswap", k), med("torch", k)
    table[k] = {"seqswap_ms": s, "torch_ms": t, "ratio": t / s}
    lines.append(f"| {k} | {s:.3f} | {t:.3f} | {t / s:.2f}x |")
fl = 3 * teacher_flops(128)
st = med("seqswap", "teacher forward + backward (B 128)")
lines += ["", f"Teacher forward + backward: {fl / 1e9:.2f} GFLOP per batch of 128 -> seqswap {fl / st / 1e6:.1f} GFLOP/s "
          f"= {100 * fl / st / 1e6 / fma:.0f}% of the measured FMA peak; PyTorch "
          f"{fl / med('torch', 'teacher forward + backward (B 128)') / 1e6:.1f} GFLOP/s."]
gemm = med("seqswap", "_gemm_gflops")
lines[-1] += (f" The fastest single GEMM (y = x Wᵀ + b at ViT shapes) ran at {gemm:.1f} GFLOP/s in the same run: "
              f"the teacher's forward + backward reaches {100 * fl / st / 1e6 / gemm:.0f}% of it.")
lines += ["", f"Plain recurrence h_t = a_t h_(t-1) + b_t over T 4096 x C 3072 floats in memory (bytes: read a, b, write h): "
          + ", ".join(f"{n} {med('seqswap', f'_scan_{n}_gbs'):.1f} GB/s ({100 * med('seqswap', f'_scan_{n}_gbs') / triad:.0f}% "
                      f"of the triad)" for n in ("channels", "chunked", "reference")) + ".",
          f"Fused selective scan alone (one direction, B 8 x N 1024, E 384, S 16): "
          f"{med('seqswap', '_selective_scan_ktok'):.0f}k tokens/s ({args.threads} threads)."]
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
        json.dump({"rows": table, "fma_gflops": fma, "triad_gbs": triad, "gemm_gflops": gemm, "rounds": rounds}, f, indent=1)
    os.replace(args.json + ".tmp", args.json)
if args.plot:
    os.makedirs(args.plot, exist_ok=True)
    mixers = ["softmax_attention", "linear_attention", "min_gru", "selective_ssm", "multi_head_gru"]
    with open(os.path.join(args.plot, "latency_vs_n.dat"), "w") as f:
        for m in mixers:
            f.write(f"# {m}: N seqswap_ms torch_ms\n")
            for n in NS:
                k = f"{m} forward N {n}"
                if k in table:
                    f.write(f"{n} {table[k]['seqswap_ms']} {table[k]['torch_ms']}\n")
            f.write("\n\n")
    plot = ("set terminal pngcairo size 900,560 noenhanced\nset output 'latency_vs_n.png'\nset logscale xy\n"
            f"set title 'Forward latency vs N (B {B}, D {D}): seqswap (solid) vs PyTorch eager (dashed)'\n"
            "set xlabel 'tokens N'\nset ylabel 'ms'\nset key outside\nplot " +
            ", ".join(f"'latency_vs_n.dat' index {i} using 1:2 with linespoints lc {i + 1} title '{m}', "
                      f"'' index {i} using 1:3 with linespoints dt 2 lc {i + 1} title '{m} (torch)'"
                      for i, m in enumerate(mixers)) + "\n")
    with open(os.path.join(args.plot, "latency_vs_n.gp"), "w") as f:
        f.write(plot)
    subprocess.run(["gnuplot", "latency_vs_n.gp"], cwd=args.plot, check=False)
