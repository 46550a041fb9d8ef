#!/usr/bin/python3
"""Reference fixture for include/seqswap/mixers/rnn.hpp (MultiHeadLstm, MultiHeadGru).

How to run (from the repository root), with Debian's python3 + python3-torch (1.13, CPU):

    /usr/bin/python3 tests/reference/mixers/rnn.py

Writes tests/reference/mixers/rnn.safetensors (float32 copies of float64 maths). The cells are
torch.nn.LSTM / torch.nn.GRU modules themselves, one bidirectional module per head, fed the
seqswap parameter tensors, so the fixture also pins down the gate layout (i, f, g, o and
r, z, n) and the two bias vectors.

For each cell ("lstm", "gru"; used as the mixer's name, so the parameter tensors are
"<cell>.in_proj.weight", "<cell>.fwd.weight_ih" [H, G*d, d], ...):
  <cell>.x [B, N, D], <cell>.keep [B, N] (u8), <cell>.dy [B, N, D],
  <cell>.y, <cell>.pre [B, N, D]: output and pre-projection (merge) output,
  grad.<cell>.x and grad.<tensor> for every parameter tensor: gradients of sum(y * dy).
A masked token is skipped by the recurrence (the state passes through), which is the same as
running the module on the kept tokens only; its rows of pre and y are zero.
"""

import json
import os
import sys
from collections import OrderedDict

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from make_fixtures import FORMAT, load_safetensors, save_safetensors  # noqa: E402

CONFIG = OrderedDict([("batch", 2), ("tokens", 7), ("width", 8), ("heads", 2),
                      ("bidirectional", True)])
# Sequence 0 fully kept (the unmasked path), sequence 1 with masked tokens, the first and
# the last among them (both directions start from a masked token).
KEEP = [[1, 1, 1, 1, 1, 1, 1],
        [1, 0, 1, 1, 0, 1, 0]]
GATES = {"lstm": 4, "gru": 3}


def linear(x, params, prefix):
    return x @ params[prefix + ".weight"].t() + params[prefix + ".bias"]


def rnn_mixer(kind, x, keep, params, heads):
    B, N, D = x.shape
    d = D // heads
    module_type = torch.nn.LSTM if kind == "lstm" else torch.nn.GRU
    u = linear(x, params, kind + ".in_proj")                         # [B, N, D]
    s = torch.zeros(B, N, 2 * D)                                      # [B, N, 2D]
    for h in range(heads):
        cell = module_type(d, d, batch_first=True, bidirectional=True)
        # Replace the module's parameters by head h's slices of ours (plain tensors, so the
        # gradients reach our leaves); RNNBase.__setattr__ keeps its flat weight list in step.
        for suffix, direction in (("", "fwd"), ("_reverse", "bwd")):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                torch_name = name + "_l0" + suffix
                delattr(cell, torch_name)
                setattr(cell, torch_name, params["%s.%s.%s" % (kind, direction, name)][h])
        for b in range(B):
            idx = torch.nonzero(keep[b]).flatten()                    # kept tokens only
            out = cell(u[b:b + 1, idx, h * d:(h + 1) * d])[0]              # [1, n_kept, 2d]
            s = s.index_put((torch.tensor([b]), idx[:, None],
                             torch.arange(2 * h * d, 2 * (h + 1) * d)[None, :]), out[0])
    row_keep = keep[:, :, None].to(x.dtype)
    pre = linear(s, params, kind + ".merge") * row_keep
    y = linear(pre, params, kind + ".proj") * row_keep
    return y, pre


def make(kind, tensors, expect):
    cfg = CONFIG
    B, N, D, H = cfg["batch"], cfg["tokens"], cfg["width"], cfg["heads"]
    d, G = D // H, GATES[kind]
    params = OrderedDict()

    def p(name, *shape):
        params[kind + "." + name] = (0.4 * torch.randn(*shape)).requires_grad_()

    p("in_proj.weight", D, D)
    p("in_proj.bias", D)
    for direction in ("fwd", "bwd"):
        p(direction + ".weight_ih", H, G * d, d)
        p(direction + ".weight_hh", H, G * d, d)
        p(direction + ".bias_ih", H, G * d)
        p(direction + ".bias_hh", H, G * d)
    p("merge.weight", D, 2 * D)
    p("merge.bias", D)
    p("proj.weight", D, D)
    p("proj.bias", D)
    x = torch.randn(B, N, D).requires_grad_()
    keep = torch.tensor(KEEP, dtype=torch.uint8)
    dy = torch.randn(B, N, D)
    y, pre = rnn_mixer(kind, x, keep, params, H)
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
    torch.manual_seed(2024)
    tensors, expect = [], {}
    make("lstm", tensors, expect)
    make("gru", tensors, expect)
    path = os.path.join(HERE, "rnn.safetensors")
    save_safetensors(path, tensors, {"format": FORMAT, "config": json.dumps(CONFIG)})
    _, back = load_safetensors(path)
    for name, ref in expect.items():
        assert torch.equal(back[name].to(torch.float64), ref.detach().float().double()), name
    print("%s: %d bytes, %d tensors" % (os.path.basename(path), os.path.getsize(path), len(back)))


if __name__ == "__main__":
    main()
