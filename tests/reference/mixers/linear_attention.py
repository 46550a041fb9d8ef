#!/usr/bin/python3
"""Reference fixture for mixers/linear_attention.hpp (non-causal multi-head linear attention).

How to run (from the repository root):

    /usr/bin/python3 tests/reference/mixers/linear_attention.py

Debian's python3 with python3-torch (torch 1.13, CPU). Deterministic: fixed seed,
one thread, float64 maths, float32 (F32) / uint8 (U8) copies in the file.

Writes linear_attention.safetensors next to this script, holding two cases with
prefixed tensor names:

  elu1.*      feature map elu(x) + 1, no keep-mask
  hedgehog.*  feature map [exp(x W_h), exp(-x W_h)] with a random (non-identity)
              W_h per head, and a keep-mask (masked tokens take part in no sum and
              their pre-projection and output rows are 0)

Per case: <p>.x, <p>.keep (hedgehog only), <p>.dy, the parameters under their
visit_params names with prefix <p> (<p>.attn.qkv.weight, <p>.attn.qkv.bias,
[<p>.attn.feature.weight,] <p>.attn.proj.weight, <p>.attn.proj.bias), <p>.y,
<p>.pre, and gradients of sum(y * dy): <p>.grad.x and <p>.grad.<parameter name
without the case prefix>, e.g. elu1.grad.attn.qkv.weight.

Per head, over each sequence's kept tokens:
    y_i = phi(q_i)^T S / (phi(q_i)^T z + eps),  S = sum_j phi(k_j) v_j^T,  z = sum_j phi(k_j)
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

CONFIG = OrderedDict([("batch", 2), ("tokens", 7), ("width", 12), ("heads", 3),
                      ("eps", 1e-6)])

KEEP = [[1, 1, 0, 1, 1, 0, 1],
        [1, 0, 0, 1, 1, 1, 1]]


def phi(x, kind, w):
    """x [B, H, N, d] -> features [B, H, N, m]."""
    if kind == "elu1":
        return F.elu(x) + 1.0
    if kind == "hedgehog":
        u = torch.einsum("bhnd,hde->bhne", x, w)     # u = x W_h
        return torch.cat([torch.exp(u), torch.exp(-u)], dim=-1)
    raise ValueError(kind)


def linear_attention(x, keep, params, heads, kind, eps):
    B, N, D = x.shape
    d = D // heads
    qkv = x @ params["attn.qkv.weight"].t() + params["attn.qkv.bias"]
    qkv = qkv.reshape(B, N, 3, heads, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]                 # [B, H, N, d]
    w = params.get("attn.feature.weight")
    kept = keep[:, None, :, None].to(x.dtype)        # [B, 1, N, 1]
    fq = phi(q, kind, w) * kept
    fk = phi(k, kind, w) * kept                      # masked keys take part in no sum
    S = fk.transpose(-2, -1) @ v                     # [B, H, m, d]
    z = fk.sum(dim=-2)                               # [B, H, m]
    num = fq @ S                                     # [B, H, N, d]
    den = (fq * z[:, :, None, :]).sum(-1, keepdim=True) + eps
    o = num / den
    pre = o.transpose(1, 2).reshape(B, N, D) * keep[:, :, None].to(x.dtype)
    y = (pre @ params["attn.proj.weight"].t() + params["attn.proj.bias"])
    y = y * keep[:, :, None].to(x.dtype)
    return y, pre


def make_case(kind, masked, seed):
    cfg = CONFIG
    torch.manual_seed(seed)
    B, N, D, H = cfg["batch"], cfg["tokens"], cfg["width"], cfg["heads"]
    d = D // H
    params = OrderedDict()
    params["attn.qkv.weight"] = (0.3 * torch.randn(3 * D, D)).requires_grad_()
    params["attn.qkv.bias"] = (0.3 * torch.randn(3 * D)).requires_grad_()
    if kind == "hedgehog":
        w = torch.eye(d).expand(H, d, d) + 0.3 * torch.randn(H, d, d)
        params["attn.feature.weight"] = w.clone().requires_grad_()
    params["attn.proj.weight"] = (0.3 * torch.randn(D, D)).requires_grad_()
    params["attn.proj.bias"] = (0.3 * torch.randn(D)).requires_grad_()
    x = torch.randn(B, N, D).requires_grad_()
    if masked:
        keep = torch.tensor(KEEP, dtype=torch.uint8)
    else:
        keep = torch.ones(B, N, dtype=torch.uint8)
    dy = torch.randn(B, N, D)

    y, pre = linear_attention(x, keep, params, H, kind, cfg["eps"])
    names = list(params)
    grads = torch.autograd.grad((y * dy).sum(), [x] + [params[n] for n in names])

    p = kind + "."
    tensors = [(p + "x", "F32", x)]
    if masked:
        tensors += [(p + "keep", "U8", keep)]
    tensors += [(p + n, "F32", params[n]) for n in names]
    tensors += [(p + "dy", "F32", dy), (p + "y", "F32", y), (p + "pre", "F32", pre)]
    tensors += [(p + "grad.x", "F32", grads[0])]
    tensors += [(p + "grad." + n, "F32", g) for n, g in zip(names, grads[1:])]
    return tensors, {p + "y": y, p + "pre": pre}


def main():
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    tensors, expect = [], {}
    for kind, masked, seed in [("elu1", False, 2468), ("hedgehog", True, 1357)]:
        t, e = make_case(kind, masked, seed)
        tensors += t
        expect.update(e)
    path = os.path.join(HERE, "linear_attention.safetensors")
    save_safetensors(path, tensors, {"format": FORMAT, "config": json.dumps(CONFIG)})

    metadata, back = load_safetensors(path)
    assert metadata["format"] == FORMAT
    for name, ref in expect.items():
        torch.testing.assert_close(back[name].to(torch.float64),
                                   ref.detach().to(torch.float32).to(torch.float64),
                                   rtol=0, atol=0)
    masked = back["hedgehog.keep"] == 0
    assert bool((back["hedgehog.y"][masked] == 0).all())
    assert bool((back["hedgehog.pre"][masked] == 0).all())
    size = os.path.getsize(path)
    assert size < 100 * 1024, "%s is %d bytes" % (path, size)
    print("%s: %d bytes, %d tensors" % (os.path.basename(path), size, len(back)))
    for name, t in back.items():
        print("  %-40s %-7s %s" % (name, str(t.dtype).replace("torch.", ""), list(t.shape)))


if __name__ == "__main__":
    main()
