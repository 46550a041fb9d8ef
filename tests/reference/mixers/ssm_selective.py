#!/usr/bin/python3
"""Reference fixture for seqswap::mixers::SelectiveSsm (Mamba's S6, bidirectional as in Vim).

How to run (from the repository root), with Debian's python3 and its torch 1.13:

    /usr/bin/python3 tests/reference/mixers/ssm_selective.py

Writes tests/reference/mixers/ssm_selective.safetensors (float32 copies of float64 maths;
deterministic: fixed seed, one thread). The code is deliberately a plain token-by-token loop,
independent of the C++ implementation's fused scan:

    [u, z] = x W_in^T
    per direction (forward: scan order over kept tokens; backward: that order reversed,
    parameters under "bwd."):
        u'  = SiLU(causal depthwise conv1d(u) + b_conv)
        [d, B, C] = u' W_x^T
        Delta = softplus(d W_dt^T + b_dt)
        h_k = exp(Delta_k A) * h_{k-1} + Delta_k B_k u'_k,   A = -exp(A_log)
        y_k = C_k . h_k + D u'_k
    pre = (y_fwd + y_bwd) * SiLU(z)        (masked tokens: 0)
    out = pre W_proj^T + b_proj            (masked tokens: 0)

Masked tokens are dropped from the sequence before the conv and the scan (compaction).
The batch is B = 2 sequences of N = 10 tokens (CLS + 3x3 grid) scanned in snake order with
CLS in the middle, with a keep-mask. Gradients are of sum(out * dy).
"""

import json
import math
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from make_fixtures import FORMAT, save_safetensors  # noqa: E402

CFG = dict(B=2, N=10, dim=8, expand=2, state=4, conv=3, dt_rank=2, bidirectional=True,
           grid="snake", cls="middle")


def snake_middle_order(n):
    """ScanOrder{snake, middle}.permutation(n) for n = 1 + G*G (mixers/scan_order.hpp)."""
    G = round(math.sqrt(n - 1))
    assert G * G == n - 1
    patches = []
    for i in range(G):
        for j in range(G):
            c = j if i % 2 == 0 else G - 1 - j
            patches.append(1 + i * G + c)
    cls_at = len(patches) // 2
    return patches[:cls_at] + [0] + patches[cls_at:]


def param_names(bidirectional):
    names = ["attn.in_proj.weight"]
    for p in ["attn."] + (["attn.bwd."] if bidirectional else []):
        names += [p + "conv1d.weight", p + "conv1d.bias", p + "x_proj.weight",
                  p + "dt_proj.weight", p + "dt_proj.bias", p + "A_log", p + "D"]
    return names + ["attn.proj.weight", "attn.proj.bias"]


def make_params(cfg):
    D, E, S, K, R = cfg["dim"], cfg["expand"] * cfg["dim"], cfg["state"], cfg["conv"], cfg["dt_rank"]
    P = {"attn.in_proj.weight": 0.3 * torch.randn(2 * E, D)}
    for p in ["attn."] + (["attn.bwd."] if cfg["bidirectional"] else []):
        P[p + "conv1d.weight"] = 0.4 * torch.randn(E, 1, K)
        P[p + "conv1d.bias"] = 0.1 * torch.randn(E)
        P[p + "x_proj.weight"] = 0.3 * torch.randn(R + 2 * S, E)
        P[p + "dt_proj.weight"] = 0.3 * torch.randn(E, R)
        # inverse-softplus trick, with a wider Delta range than the default init so that the
        # state really decays and every path matters
        dt = torch.exp(torch.rand(E) * (math.log(1.0) - math.log(0.05)) + math.log(0.05))
        P[p + "dt_proj.bias"] = dt + torch.log(-torch.expm1(-dt))
        P[p + "A_log"] = torch.log(torch.arange(1, S + 1, dtype=torch.float64)).repeat(E, 1) \
            + 0.1 * torch.randn(E, S)
        P[p + "D"] = 1.0 + 0.1 * torch.randn(E)
    P["attn.proj.weight"] = 0.3 * torch.randn(D, E)
    P["attn.proj.bias"] = 0.1 * torch.randn(D)
    return {k: v.requires_grad_() for k, v in P.items()}


def direction(us, P, p, cfg):
    """One direction over a compact sequence us (n, E) in its own scan order -> y (n, E)."""
    K, S, R = cfg["conv"], cfg["state"], cfg["dt_rank"]
    n = us.shape[0]
    w, b = P[p + "conv1d.weight"], P[p + "conv1d.bias"]
    v = []
    for k in range(n):
        acc = b
        for j in range(K):
            kk = k - (K - 1) + j
            if kk >= 0:
                acc = acc + w[:, 0, j] * us[kk]
        v.append(acc)
    up = F.silu(torch.stack(v))                                  # (n, E)
    xdbl = up @ P[p + "x_proj.weight"].t()                       # (n, R + 2S)
    low, Bm, Cm = xdbl[:, :R], xdbl[:, R:R + S], xdbl[:, R + S:]
    delta = F.softplus(low @ P[p + "dt_proj.weight"].t() + P[p + "dt_proj.bias"])  # (n, E)
    A = -torch.exp(P[p + "A_log"])                               # (E, S)
    h = torch.zeros(us.shape[1], S, dtype=torch.float64)
    ys = []
    for k in range(n):
        h = torch.exp(delta[k][:, None] * A) * h + delta[k][:, None] * Bm[k][None, :] * up[k][:, None]
        ys.append((h * Cm[k][None, :]).sum(-1) + P[p + "D"] * up[k])
    return torch.stack(ys)


def forward(x, keep, P, cfg):
    Bn, N, D = x.shape
    E = cfg["expand"] * D
    xz = x @ P["attn.in_proj.weight"].t()
    u, z = xz[..., :E], xz[..., E:]
    pre = torch.zeros(Bn, N, E, dtype=torch.float64)
    for b in range(Bn):
        order = [i for i in snake_middle_order(N) if keep[b, i]]
        ysum = torch.zeros(N, E, dtype=torch.float64)
        dirs = [("attn.", order)]
        if cfg["bidirectional"]:
            dirs.append(("attn.bwd.", order[::-1]))
        for p, seq in dirs:
            ysum = ysum.index_add(0, torch.tensor(seq), direction(u[b, seq], P, p, cfg))
        pre[b, order] = ysum[order] * F.silu(z[b, order])
    out = pre @ P["attn.proj.weight"].t() + P["attn.proj.bias"]
    out = out * keep[..., None].to(torch.float64)
    return out, pre


def main():
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(2468)
    cfg = CFG
    B, N, D = cfg["B"], cfg["N"], cfg["dim"]
    P = make_params(cfg)
    x = torch.randn(B, N, D).requires_grad_()
    keep = torch.ones(B, N, dtype=torch.uint8)
    keep[0, 3] = keep[0, 7] = keep[1, 0] = keep[1, 5] = keep[1, 6] = 0
    dy = torch.randn(B, N, D)
    y, pre = forward(x, keep, P, cfg)
    (y * dy).sum().backward()

    names = param_names(cfg["bidirectional"])
    tensors = [("x", "F32", x), ("keep", "U8", keep), ("dy", "F32", dy), ("y", "F32", y),
               ("pre", "F32", pre), ("grad.x", "F32", x.grad)]
    tensors += [(n, "F32", P[n]) for n in names]
    tensors += [("grad." + n, "F32", P[n].grad) for n in names]
    path = os.path.join(HERE, "ssm_selective.safetensors")
    save_safetensors(path, tensors, {"format": FORMAT, "config": json.dumps(cfg)})
    print("wrote", path)


if __name__ == "__main__":
    main()
