#!/usr/bin/python3
"""Reference fixture for include/seqswap/mixers/conv.hpp (ConvMixer, Grid2d and Seq1d).

How to run (from the repository root), with Debian's python3 + python3-torch (1.13, CPU):

    /usr/bin/python3 tests/reference/mixers/conv.py

Writes tests/reference/mixers/conv.safetensors (float32 copies of float64 maths). The filters
are torch's own depthwise F.conv2d / F.conv1d (groups = D), which pins down the weight layout
[D, 1, k, k] / [D, 1, k] and the centring.

For each kind ("grid" = conv::Grid2d, "seq" = conv::Seq1d; used as the mixer's name, so the
parameter tensors are "<kind>.dw.weight", "<kind>.pointwise.weight", ...):
  <kind>.x [B, N, D], <kind>.keep [B, N] (u8), <kind>.dy [B, N, D],
  <kind>.y, <kind>.pre [B, N, D]: output and pre-projection (pointwise) output,
  grad.<kind>.x and grad.<tensor> for every parameter tensor: gradients of sum(y * dy).
N = 1 + 3*3: a CLS token and a 3x3 patch grid. Masked tokens count as zeros in every
neighbourhood and their rows of pre and y are zero.
"""

import json
import os
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from make_fixtures import FORMAT, load_safetensors, save_safetensors  # noqa: E402

CONFIG = OrderedDict([("batch", 2), ("grid", 3), ("width", 6), ("grid_kernel", 3),
                      ("seq_kernel", 5), ("seq_order", "snake, cls middle")])
# Sequence 0 fully kept, sequence 1 with masked patches (CLS kept, as A-ViT never halts it).
KEEP = [[1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, 0, 1, 1, 0, 1, 1, 1, 0, 1]]
# order::ScanOrder{Grid::snake, Cls::middle}.permutation(10) (tests/test_scan_order.cpp)
SEQ_PERM = [1, 2, 3, 6, 0, 5, 4, 7, 8, 9]


def linear(x, params, prefix):
    return x @ params[prefix + ".weight"].t() + params[prefix + ".bias"]


def grid_dw(x, keep, params, G, k):
    B, N, D = x.shape
    row_keep = keep[:, :, None].to(x.dtype)
    xm = x * row_keep                                                     # masked -> 0
    grid = xm[:, 1:].reshape(B, G, G, D).permute(0, 3, 1, 2)              # [B, D, G, G]
    z = F.conv2d(grid, params["grid.dw.weight"], params["grid.dw.bias"], padding=k // 2,
                 groups=D)
    z = z.permute(0, 2, 3, 1).reshape(B, G * G, D)
    count = row_keep[:, 1:].sum(1)                                        # [B, 1]
    mean = xm[:, 1:].sum(1) / count                                       # [B, D]
    cls = params["grid.cls_weight"] * x[:, 0] + params["grid.cls_mix"] * mean
    return torch.cat([cls[:, None], z], 1) * row_keep


def seq_dw(x, keep, params, k):
    B, N, D = x.shape
    row_keep = keep[:, :, None].to(x.dtype)
    xs = (x * row_keep)[:, SEQ_PERM]                                      # scan order
    zs = F.conv1d(xs.transpose(1, 2), params["seq.dw.weight"], params["seq.dw.bias"],
                  padding=k // 2, groups=D).transpose(1, 2)
    z = torch.zeros_like(zs).index_copy(1, torch.tensor(SEQ_PERM), zs)   # z[:, perm] = zs
    return z * row_keep


def make(kind, tensors, expect):
    cfg = CONFIG
    B, G, D = cfg["batch"], cfg["grid"], cfg["width"]
    N = 1 + G * G
    k = cfg["grid_kernel"] if kind == "grid" else cfg["seq_kernel"]
    params = OrderedDict()

    def p(name, *shape):
        params[kind + "." + name] = (0.4 * torch.randn(*shape)).requires_grad_()

    p("dw.weight", *((D, 1, k, k) if kind == "grid" else (D, 1, k)))
    p("dw.bias", D)
    if kind == "grid":
        p("cls_weight", D)
        p("cls_mix", D)
    p("pointwise.weight", D, D)
    p("pointwise.bias", D)
    p("proj.weight", D, D)
    p("proj.bias", D)
    x = torch.randn(B, N, D).requires_grad_()
    keep = torch.tensor(KEEP, dtype=torch.uint8)
    dy = torch.randn(B, N, D)
    z = grid_dw(x, keep, params, G, k) if kind == "grid" else seq_dw(x, keep, params, k)
    row_keep = keep[:, :, None].to(x.dtype)
    pre = linear(z, params, kind + ".pointwise") * row_keep
    y = linear(pre, params, kind + ".proj") * row_keep
    names = list(params)
    grads = torch.autograd.grad((y * dy).sum(), [x] + [params[n] for n in names])
    tensors += [(kind + ".x", "F32", x), (kind + ".keep", "U8", keep)]
    tensors += [(n, "F32", params[n]) for n in names]
    tensors += [(kind + ".dy", "F32", dy), (kind + ".y", "F32", y), (kind + ".pre", "F32", pre)]
    tensors += [("grad." + kind + ".x", "F32", grads[0])]
    tensors += [("grad." + n, "F32", g) for n, g in zip(names, grads[1:])]
    expect[kind + ".y"] = y
    expect[kind + ".pre"] = pre


def main():
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(4242)
    tensors, expect = [], {}
    make("grid", tensors, expect)
    make("seq", tensors, expect)
    path = os.path.join(HERE, "conv.safetensors")
    save_safetensors(path, tensors, {"format": FORMAT, "config": json.dumps(CONFIG)})
    _, back = load_safetensors(path)
    for name, ref in expect.items():
        assert torch.equal(back[name].to(torch.float64), ref.detach().float().double()), name
    print("%s: %d bytes, %d tensors" % (os.path.basename(path), os.path.getsize(path), len(back)))


if __name__ == "__main__":
    main()
