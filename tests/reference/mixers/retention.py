#!/usr/bin/python3
"""Reference fixture for seqswap's retention mixer (include/seqswap/mixers/retention.hpp).

How to run (from the repository root), with Debian's python3 and its torch 1.13
(cmake/install-deps.sh --with-torch):

    /usr/bin/python3 tests/reference/mixers/retention.py

Writes tests/reference/mixers/retention.safetensors: bidirectional multi-head
retention (heads 2, decay_offset 1, so gamma = 0.5 and 0.75: strong enough to
matter at N = 10) scanning a snake order with CLS in the middle, on B = 2
sequences of N = 10 tokens (CLS + 3x3 grid) of width D = 6 with a keep-mask,
and the gradients of sum(y * dy) w.r.t. x and every parameter.
Deterministic: fixed seed, one thread, float64 maths, float32 file.

The reference is the PARALLEL (quadratic) form, independent of the two
recurrences the C++ code runs. Per sequence, in scan order, the m kept tokens
are re-indexed 0..m-1 (masked tokens get no row and no column: distances count
kept tokens only). Per head h, with d = D / heads:
    q, k, v = split(x W_qkv^T + b_qkv)   rows [0,D) q, [D,2D) k, [2D,3D) v;
                                         head h: columns h*d..(h+1)*d of each
    q <- q / sqrt(d)
    gamma_h = 1 - 2^-(decay_offset + h)
    Gamma[i, j] = gamma_h^|i - j|,   Gamma_n = Gamma / Gamma.sum(row)
    pre_h = ((q k^T) * Gamma_n) v
scattered back to token order; masked rows of pre are 0;
y = keep * (pre W_proj^T + b_proj).

Tensors: x, keep, attn.qkv.weight, attn.qkv.bias, attn.proj.weight,
attn.proj.bias, dy, y, pre, grad.x, grad.<parameter name>.
"""

import json
import os
import sys
from collections import OrderedDict

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from make_fixtures import FORMAT, save_safetensors, load_safetensors  # noqa: E402
sys.path.insert(0, HERE)
from min_gru import KEEP, snake_cls_middle  # noqa: E402  (the same masks and scan order)

CONFIG = OrderedDict([("batch", 2), ("tokens", 10), ("width", 6), ("heads", 2),
                      ("qkv_bias", True), ("decay_offset", 1.0),
                      ("grid", "snake"), ("cls", "middle")])
def gammas(heads, decay_offset):
    return [1.0 - 2.0 ** (-(decay_offset + h)) for h in range(heads)]


def retention_parallel(q, k, v, gamma):
    """q, k, v [m, d] (the kept tokens, scan order, q already scaled) -> [m, d]."""
    m = q.shape[0]
    i = torch.arange(m, dtype=torch.float64)
    dist = (i[:, None] - i[None, :]).abs()
    decay = torch.full((m, m), gamma, dtype=torch.float64) ** dist
    decay = decay / decay.sum(dim=1, keepdim=True)
    return ((q @ k.t()) * decay) @ v


def retention(x, keep, params, heads, decay_offset):
    B, N, D = x.shape
    d = D // heads
    perm = snake_cls_middle(N)
    qkv = x @ params["attn.qkv.weight"].t() + params["attn.qkv.bias"]  # [B, N, 3D], token order
    q, k, v = qkv[..., :D] / d ** 0.5, qkv[..., D:2 * D], qkv[..., 2 * D:]
    pres = []
    for s in range(B):
        kept = [perm[j] for j in range(N) if keep[s, perm[j]]]  # kept tokens in scan order
        heads_out = []
        for h, g in enumerate(gammas(heads, decay_offset)):
            cols = slice(h * d, (h + 1) * d)
            heads_out.append(retention_parallel(q[s, kept, cols], k[s, kept, cols], v[s, kept, cols], g))
        pre = torch.zeros(N, D)
        if kept:
            pre[kept] = torch.cat(heads_out, dim=1)  # back to token order
        pres.append(pre)
    row_keep = keep[:, :, None].to(x.dtype)
    pre = torch.stack(pres) * row_keep
    y = (pre @ params["attn.proj.weight"].t() + params["attn.proj.bias"]) * row_keep
    return y, pre


def retention_recurrent(x, keep, params, heads, decay_offset):
    """The C++ algorithm (two d x d state recurrences per head, masked = identity step), only
    to cross-check the parallel form above; returns pre."""
    B, N, D = x.shape
    d = D // heads
    perm = snake_cls_middle(N)
    qkv = x @ params["attn.qkv.weight"].t() + params["attn.qkv.bias"]
    q, k, v = qkv[..., :D] / d ** 0.5, qkv[..., D:2 * D], qkv[..., 2 * D:]
    pre = torch.zeros(B, N, D)
    for s in range(B):
        for h, g in enumerate(gammas(heads, decay_offset)):
            cols = slice(h * d, (h + 1) * d)
            acc, cnt = {}, {}
            for order in (perm, perm[::-1]):
                S, n = torch.zeros(d, d), 0.0
                for t in order:
                    if not keep[s, t]:
                        continue
                    S = g * S + torch.outer(k[s, t, cols], v[s, t, cols])
                    n = g * n + 1.0
                    acc[t] = acc.get(t, 0) + q[s, t, cols] @ S
                    cnt[t] = cnt.get(t, 0) + n
            for t in acc:
                diag = (q[s, t, cols] @ k[s, t, cols]) * v[s, t, cols]
                pre[s, t, cols] = (acc[t] - diag) / (cnt[t] - 1.0)
    return pre


def main():
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(2025)
    B, N, D, H = CONFIG["batch"], CONFIG["tokens"], CONFIG["width"], CONFIG["heads"]
    c = CONFIG["decay_offset"]
    params = OrderedDict()
    params["attn.qkv.weight"] = (0.5 * torch.randn(3 * D, D)).requires_grad_()
    params["attn.qkv.bias"] = (0.3 * torch.randn(3 * D)).requires_grad_()
    params["attn.proj.weight"] = (0.4 * torch.randn(D, D)).requires_grad_()
    params["attn.proj.bias"] = (0.3 * torch.randn(D)).requires_grad_()
    x = torch.randn(B, N, D).requires_grad_()
    keep = torch.tensor(KEEP, dtype=torch.uint8)
    dy = torch.randn(B, N, D)

    y, pre = retention(x, keep, params, H, c)
    names = list(params)
    grads = torch.autograd.grad((y * dy).sum(), [x] + [params[n] for n in names])

    # The two forms agree (float64), and the decay matters: a uniform average differs.
    with torch.no_grad():
        rec = retention_recurrent(x, keep, params, H, c)
        assert torch.allclose(rec, pre, rtol=0, atol=1e-12), (rec - pre).abs().max()
        flat, _ = retention(x, keep, params, H, 60.0)  # gamma = 1 - 2^-60 == 1.0: no decay
        assert (flat - y).abs().max() > 1e-2

    tensors = [("x", "F32", x), ("keep", "U8", keep)]
    tensors += [(n, "F32", params[n]) for n in names]
    tensors += [("dy", "F32", dy), ("y", "F32", y), ("pre", "F32", pre)]
    tensors += [("grad.x", "F32", grads[0])]
    tensors += [("grad." + n, "F32", g) for n, g in zip(names, grads[1:])]
    path = os.path.join(HERE, "retention.safetensors")
    save_safetensors(path, tensors, {"format": FORMAT, "config": json.dumps(CONFIG)})

    _, back = load_safetensors(path)
    assert torch.equal(back["y"].to(torch.float64), y.detach().float().double())
    masked = keep == 0
    assert bool((back["y"][masked] == 0).all()) and bool((back["pre"][masked] == 0).all())
    assert bool((back["grad.x"][masked] == 0).all())
    print("%s: %d bytes, %d tensors" % (os.path.basename(path), os.path.getsize(path), len(back)))


if __name__ == "__main__":
    main()
