#!/usr/bin/python3
"""Reference fixture for seqswap's diagonal SSM mixer (include/seqswap/mixers/ssm_diag.hpp).

How to run (from the repository root), with Debian's python3 and its torch 1.13:

    /usr/bin/python3 tests/reference/mixers/ssm_diag.py

Writes tests/reference/mixers/ssm_diag.safetensors: a bidirectional S4D-style
diagonal SSM (state 3) scanning a snake order with CLS in the middle, on B = 2
sequences of N = 10 tokens (CLS + 3x3 grid) of width D = 4 with a keep-mask,
and the gradients of sum(y * dy) w.r.t. x and every parameter.
Deterministic: fixed seed, one thread, float64 maths, float32 file.

    u = x W_in^T + b_in
    A = -exp(A_log), dt = exp(log_dt), Abar = exp(dt A), Bbar = (Abar - 1) / A * B
    h_t = Abar * h_{t-1} + Bbar * u_t          (masked: h_t = h_{t-1}), per (c, n)
    pre_t = keep_t (sum_n C h_fwd_t + sum_n C_bwd h_bwd_t + D * u_t)
    y = keep * (pre W_proj^T + b_proj)
The backward direction runs the same loop from the last scan position.
"""

import json
import math
import os
import sys
from collections import OrderedDict

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from make_fixtures import FORMAT, save_safetensors, load_safetensors  # noqa: E402

CONFIG = OrderedDict([("batch", 2), ("tokens", 10), ("width", 4), ("state", 3),
                      ("bidirectional", True), ("grid", "snake"), ("cls", "middle")])
KEEP = [[1, 1, 0, 1, 1, 0, 1, 1, 1, 0],
        [1, 0, 0, 1, 1, 1, 1, 0, 1, 1]]


def snake_cls_middle(n):
    """perm[k] = token visited k-th: CLS + GxG grid, snake rows, CLS in the middle."""
    g = int(round((n - 1) ** 0.5))
    assert g * g == n - 1
    patches = []
    for i in range(g):
        for j in range(g):
            c = j if i % 2 == 0 else g - 1 - j
            patches.append(1 + i * g + c)
    at = len(patches) // 2
    return patches[:at] + [0] + patches[at:]


def scan_direction(us, ks, params, prefix, reverse):
    """us [N, D] in scan order -> sum_n C h, [N, D] in scan order."""
    A = -torch.exp(params["attn.%sA_log" % prefix])            # [D, Ns]
    dt = torch.exp(params["attn.%slog_dt" % prefix])[:, None]  # [D, 1]
    abar = torch.exp(dt * A)
    bbar = (abar - 1) / A * params["attn.%sB" % prefix]
    C = params["attn.%sC" % prefix]
    N, D = us.shape
    h = torch.zeros_like(A)
    out = [None] * N
    for k in (reversed(range(N)) if reverse else range(N)):
        if ks[k]:
            h = abar * h + bbar * us[k][:, None]
        out[k] = (C * h).sum(-1)
    return torch.stack(out)


def ssm_diag(x, keep, params):
    B, N, D = x.shape
    perm = snake_cls_middle(N)
    u = x @ params["attn.in_proj.weight"].t() + params["attn.in_proj.bias"]
    pres = []
    for s in range(B):
        us, ks = u[s, perm], keep[s, perm]
        ys = scan_direction(us, ks, params, "", False)
        ys = ys + scan_direction(us, ks, params, "bwd_", True)
        ys = ys + params["attn.D"] * us
        pre = torch.zeros(N, D)
        pre[perm] = ys  # back to token order
        pres.append(pre)
    row_keep = keep[:, :, None].to(x.dtype)
    pre = torch.stack(pres) * row_keep
    y = (pre @ params["attn.proj.weight"].t() + params["attn.proj.bias"]) * row_keep
    return y, pre


def main():
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(4242)
    B, N, D, Ns = CONFIG["batch"], CONFIG["tokens"], CONFIG["width"], CONFIG["state"]
    params = OrderedDict()
    params["attn.in_proj.weight"] = (0.5 * torch.randn(D, D)).requires_grad_()
    params["attn.in_proj.bias"] = (0.3 * torch.randn(D)).requires_grad_()

    def kernel(prefix):
        # S4D-Real A_log = log(n + 1), perturbed; log_dt spread over [log 0.05, log 0.5] so that
        # Abar is far from 1 within ten tokens
        a_log = torch.log(torch.arange(1, Ns + 1, dtype=torch.float64)).repeat(D, 1)
        params["attn.%sA_log" % prefix] = (a_log + 0.2 * torch.randn(D, Ns)).requires_grad_()
        params["attn.%sB" % prefix] = (1.0 + 0.3 * torch.randn(D, Ns)).requires_grad_()
        params["attn.%sC" % prefix] = torch.randn(D, Ns).requires_grad_()
        lo, hi = math.log(0.05), math.log(0.5)
        params["attn.%slog_dt" % prefix] = (lo + (hi - lo) * torch.rand(D)).requires_grad_()

    kernel("")
    params["attn.D"] = (1.0 + 0.3 * torch.randn(D)).requires_grad_()
    kernel("bwd_")
    params["attn.proj.weight"] = (0.3 * torch.randn(D, D)).requires_grad_()
    params["attn.proj.bias"] = (0.3 * torch.randn(D)).requires_grad_()
    x = torch.randn(B, N, D).requires_grad_()
    keep = torch.tensor(KEEP, dtype=torch.uint8)
    dy = torch.randn(B, N, D)

    y, pre = ssm_diag(x, keep, params)
    names = list(params)
    grads = torch.autograd.grad((y * dy).sum(), [x] + [params[n] for n in names])

    tensors = [("x", "F32", x), ("keep", "U8", keep)]
    tensors += [(n, "F32", params[n]) for n in names]
    tensors += [("dy", "F32", dy), ("y", "F32", y), ("pre", "F32", pre)]
    tensors += [("grad.x", "F32", grads[0])]
    tensors += [("grad." + n, "F32", g) for n, g in zip(names, grads[1:])]
    path = os.path.join(HERE, "ssm_diag.safetensors")
    save_safetensors(path, tensors, {"format": FORMAT, "config": json.dumps(CONFIG)})

    _, back = load_safetensors(path)
    assert torch.equal(back["y"].to(torch.float64), y.detach().float().double())
    masked = keep == 0
    assert bool((back["y"][masked] == 0).all()) and bool((back["pre"][masked] == 0).all())
    print("%s: %d bytes, %d tensors" % (os.path.basename(path), os.path.getsize(path), len(back)))


if __name__ == "__main__":
    main()
