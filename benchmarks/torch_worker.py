#!/usr/bin/env python3
"""One PyTorch anchor's timings for benchmarks/compare_torch.py, in a process of its own.

    PYTHON benchmarks/torch_worker.py --mode eager|compile --group teacher|vit_tiny|mixers
        [--threads 2] [--reps 5] [--quick]

Run by whichever interpreter holds the PyTorch to measure (/usr/bin/python3 for Debian's 1.13,
the PyPI environment's python for a current one). Prints one JSON object on stdout: the
PyTorch version, its BLAS/oneDNN configuration, the figures (ms, medians over --reps after
warm-up) and, under --mode compile, the seconds torch.compile took (warm-up, not timed).
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--mode", choices=["eager", "compile"], required=True)
ap.add_argument("--group", choices=["teacher", "vit_tiny", "mixers"], required=True)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--reps", type=int, default=5)
ap.add_argument("--quick", action="store_true")
args = ap.parse_args()

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # Debian's torch: OpenBLAS single-threaded inside torch's own threads
os.environ["OMP_NUM_THREADS"] = str(args.threads)
import torch  # noqa: E402  (after the environment is set)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(0)
NS = [50, 197, 1024] if args.quick else [50, 197, 1024, 4096]
LOOP_NS = [50, 197, 1024]  # Python-loop forms: longer sequences take minutes in eager mode
B, D, H = 8, 192, 3
compile_s = 0.0


def median_ms(fn, reps=args.reps, warmup=2):
    global compile_s
    a = time.perf_counter()
    fn()  # the first call compiles under --mode compile
    if args.mode == "compile":
        compile_s += time.perf_counter() - a
    for _ in range(warmup - 1):
        fn()
    t = []
    for _ in range(reps):
        a = time.perf_counter()
        fn()
        t.append((time.perf_counter() - a) * 1e3)
    return statistics.median(t)


def prepare(mod):
    return torch.compile(mod) if args.mode == "compile" else mod


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


# ---------------------------------------------------------------- timings
def fwd(mod, x):
    with torch.no_grad():
        return median_ms(lambda: mod(x))


def fwd_bwd(mod, x, reps=args.reps):
    x = x.detach().requires_grad_(True)

    def step():
        mod.zero_grad(set_to_none=True)
        x.grad = None
        mod(x).sum().backward()
    return median_ms(step, reps=reps)


def group(name):
    r = {}
    if name == "teacher":
        vit = Vit()
        run = prepare(vit)
        x = torch.randn(128, 1, 28, 28)
        y = torch.randint(0, 10, (128,))
        opt = torch.optim.AdamW(vit.parameters(), lr=1e-4, weight_decay=0.05)
        with torch.no_grad():
            r["teacher forward (B 128)"] = median_ms(lambda: run(x))

        def fb():
            vit.zero_grad(set_to_none=True)
            F.cross_entropy(run(x), y, label_smoothing=0.1).backward()
        r["teacher forward + backward (B 128)"] = median_ms(fb)

        def step():
            fb()
            opt.step()
        r["teacher training step (B 128)"] = median_ms(step)
    elif name == "vit_tiny":
        stack = nn.Sequential(*[Block(192, 3) for _ in range(12)])
        run = prepare(stack)
        x = torch.randn(8, 197, 192)
        r["ViT-Tiny stack forward (B 8, N 197)"] = fwd(run, x)
        r["ViT-Tiny stack forward + backward"] = fwd_bwd(run, x)
    elif name == "mixers":
        forms = {"softmax_attention": lambda: Attention(D, H), "linear_attention": lambda: LinearAttention(D, H),
                 "min_gru": lambda: MinGruLoop(D), "diagonal_ssm": lambda: DiagSsmLoop(D),
                 "selective_ssm": lambda: SelectiveLoop(D),
                 "multi_head_lstm": lambda: MultiHeadRnn(D, H, nn.LSTM),
                 "multi_head_gru": lambda: MultiHeadRnn(D, H, nn.GRU)}
        if args.mode == "compile":  # the Python-loop forms would be unrolled token by token
            forms = {m: f for m, f in forms.items() if m in ("softmax_attention", "linear_attention")}
        for m, make in forms.items():
            mod = prepare(make())
            loop = m in ("min_gru", "diagonal_ssm", "selective_ssm")
            for n in (LOOP_NS if loop else NS):
                x = torch.randn(B, n, D)
                r[f"{m} forward N {n}"] = fwd(mod, x)
                if m in ("multi_head_lstm", "multi_head_gru", "min_gru", "selective_ssm") and n <= 197:
                    r[f"{m} forward + backward N {n}"] = fwd_bwd(mod, x, reps=3)
    return r


figures = group(args.group)
blas = os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3")
print(json.dumps({"version": torch.__version__, "mode": args.mode, "figures": figures, "compile_s": compile_s,
                  "blas": "MKL" if torch.backends.mkl.is_available() else blas,
                  "mkldnn": torch.backends.mkldnn.is_available(),
                  "openblas_missing": "openblas" not in blas and not torch.backends.mkl.is_available()}))
