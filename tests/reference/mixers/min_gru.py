#!/usr/bin/python3
"""Reference fixture for seqswap's minGRU mixer (include/seqswap/mixers/min_gru.hpp).

How to run (from the repository root), with Debian's python3 and its torch 1.13:

    /usr/bin/python3 tests/reference/mixers/min_gru.py

Writes tests/reference/mixers/min_gru.safetensors: a bidirectional minGRU
(expand 2, directions summed) scanning a snake order with CLS in the middle,
on B = 2 sequences of N = 10 tokens (CLS + 3x3 grid) of width D = 6 with a
keep-mask, and the gradients of sum(y * dy) w.r.t. x and every parameter.
Deterministic: fixed seed, one thread, float64 maths, float32 file.

Per direction (plain loop over the scan positions):
    u, h~ = split(x W^T + b)        rows [0, E) of W give u, rows [E, 2E) give h~
    h_t = sigmoid(-u_t) * h_{t-1} + sigmoid(u_t) * h~_t   (masked: h_t = h_{t-1})
The backward direction runs the same loop from the last scan position.
pre = keep * (h_fwd + h_bwd), y = keep * (pre W_proj^T + b_proj).
"""

import json
import os
import sys
from collections import OrderedDict

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from make_fixtures import FORMAT, save_safetensors, load_safetensors  # noqa: E402

CONFIG = OrderedDict([("batch", 2), ("tokens", 10), ("width", 6), ("expand", 2),
                      ("bidirectional", True), ("combine", "sum"),
                      ("grid", "snake"), ("cls", "middle")])
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


def scan_direction(xs, ks, w, b, E, reverse):
    """xs [N, D] in scan order -> h [N, E] in scan order."""
    zh = xs @ w.t() + b
    u, hc = zh[:, :E], zh[:, E:]
    N = xs.shape[0]
    h = torch.zeros(E)
    out = [None] * N
    for k in (reversed(range(N)) if reverse else range(N)):
        if ks[k]:
            h = torch.sigmoid(-u[k]) * h + torch.sigmoid(u[k]) * hc[k]
        out[k] = h
    return torch.stack(out)


def min_gru(x, keep, params, E):
    B, N, D = x.shape
    perm = snake_cls_middle(N)
    pres = []
    for s in range(B):
        xs, ks = x[s, perm], keep[s, perm]
        hs = scan_direction(xs, ks, params["attn.fwd.weight"], params["attn.fwd.bias"], E, False)
        hs = hs + scan_direction(xs, ks, params["attn.bwd.weight"], params["attn.bwd.bias"], E, True)
        pre = torch.zeros(N, E)
        pre[perm] = hs  # back to token order
        pres.append(pre)
    row_keep = keep[:, :, None].to(x.dtype)
    pre = torch.stack(pres) * row_keep
    y = (pre @ params["attn.proj.weight"].t() + params["attn.proj.bias"]) * row_keep
    return y, pre


def main():
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(2024)
    B, N, D, E = CONFIG["batch"], CONFIG["tokens"], CONFIG["width"], CONFIG["expand"] * CONFIG["width"]
    params = OrderedDict()
    for d in ("fwd", "bwd"):
        params["attn.%s.weight" % d] = (0.5 * torch.randn(2 * E, D)).requires_grad_()
        params["attn.%s.bias" % d] = (0.3 * torch.randn(2 * E)).requires_grad_()
    params["attn.proj.weight"] = (0.3 * torch.randn(D, E)).requires_grad_()
    params["attn.proj.bias"] = (0.3 * torch.randn(D)).requires_grad_()
    x = torch.randn(B, N, D).requires_grad_()
    keep = torch.tensor(KEEP, dtype=torch.uint8)
    dy = torch.randn(B, N, D)

    y, pre = min_gru(x, keep, params, E)
    names = list(params)
    grads = torch.autograd.grad((y * dy).sum(), [x] + [params[n] for n in names])

    tensors = [("x", "F32", x), ("keep", "U8", keep)]
    tensors += [(n, "F32", params[n]) for n in names]
    tensors += [("dy", "F32", dy), ("y", "F32", y), ("pre", "F32", pre)]
    tensors += [("grad.x", "F32", grads[0])]
    tensors += [("grad." + n, "F32", g) for n, g in zip(names, grads[1:])]
    path = os.path.join(HERE, "min_gru.safetensors")
    save_safetensors(path, tensors, {"format": FORMAT, "config": json.dumps(CONFIG)})

    _, back = load_safetensors(path)
    assert torch.equal(back["y"].to(torch.float64), y.detach().float().double())
    masked = keep == 0
    assert bool((back["y"][masked] == 0).all()) and bool((back["pre"][masked] == 0).all())
    print("%s: %d bytes, %d tensors" % (os.path.basename(path), os.path.getsize(path), len(back)))


if __name__ == "__main__":
    main()
