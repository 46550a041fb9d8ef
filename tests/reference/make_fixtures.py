#!/usr/bin/python3
"""Generate the reference fixtures that the C++ tests compare against.

How to run (from the repository root):

    /usr/bin/python3 tests/reference/make_fixtures.py

Use Debian's python3 with its python3-torch package (tested with torch 1.13,
CPU only), not whichever python3 comes first on PATH.  Nothing else is
needed: the safetensors files are written by hand, without the safetensors
package.

The outputs are committed to the repository, so the tests NEVER need Python:
this script only has to be rerun when a fixture is added or changed.  It is
deterministic (fixed seed, one thread, float64 maths) and rewrites the same
bytes on every run.

Everything is computed in float64; the files hold float32 copies (F32),
int64 labels (I64) and uint8 masks (U8).

Files written next to this script:

  vit_tiny.safetensors
      A tiny timm-style ViT (patch embed, CLS token, position embedding,
      pre-norm blocks, final norm, linear head on the CLS token) with its
      label-smoothed cross-entropy loss and the gradient of that loss with
      respect to every parameter and to the input images.

  attention_masked.safetensors
      One multi-head softmax attention module on a token batch with a
      keep-mask (masked tokens neither contribute as keys nor produce
      output), with gradients of sum(y * dy) for a fixed dy.

safetensors layout: 8-byte little-endian u64 header length N, then N bytes of
JSON (padded with spaces to a multiple of 8), then the raw little-endian
tensor bytes; "data_offsets" are relative to the start of that byte buffer.
"""

import json
import math
import os
import struct
from collections import OrderedDict

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
FORMAT = "seqswap-fixture-1"


# ---------------------------------------------------------------------------
# safetensors writer / reader (hand-written)
# ---------------------------------------------------------------------------

DTYPES = {
    "F32": (torch.float32, 4),
    "I64": (torch.int64, 8),
    "U8": (torch.uint8, 1),
}


def save_safetensors(path, tensors, metadata):
    """tensors: ordered list of (name, dtype_tag, tensor)."""
    header = OrderedDict()
    header["__metadata__"] = OrderedDict(metadata)
    chunks = []
    offset = 0
    for name, tag, t in tensors:
        torch_dtype, _ = DTYPES[tag]
        data = t.detach().to(torch_dtype).contiguous().numpy()
        raw = data.astype(data.dtype.newbyteorder("<")).tobytes()
        header[name] = OrderedDict([
            ("dtype", tag),
            ("shape", list(t.shape)),
            ("data_offsets", [offset, offset + len(raw)]),
        ])
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-len(text)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)


def load_safetensors(path):
    """Returns (metadata dict, OrderedDict name -> tensor)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    assert n % 8 == 0, "header not padded to a multiple of 8"
    header = json.loads(blob[8:8 + n].decode("utf-8"),
                        object_pairs_hook=OrderedDict)
    buf = blob[8 + n:]
    metadata = header.pop("__metadata__", {})
    out = OrderedDict()
    end_max = 0
    for name, info in header.items():
        torch_dtype, size = DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        count = math.prod(info["shape"])
        assert end - begin == count * size, name
        t = torch.frombuffer(bytearray(buf[begin:end]), dtype=torch_dtype)
        out[name] = t.reshape(info["shape"]) if count else t
        end_max = max(end_max, end)
    assert end_max == len(buf), "trailing or missing bytes"
    return metadata, out


# ---------------------------------------------------------------------------
# random parameters (deliberately not default init, so every path matters)
# ---------------------------------------------------------------------------

def weight(*shape):
    return (0.3 * torch.randn(*shape)).requires_grad_()


def ln_weight(n):
    return (1.0 + 0.1 * torch.randn(n)).requires_grad_()


def ln_bias(n):
    return (0.1 * torch.randn(n)).requires_grad_()


def linear(x, params, prefix):
    """y = x W^T + b."""
    return x @ params[prefix + ".weight"].t() + params[prefix + ".bias"]


def layer_norm(x, params, prefix, eps):
    n = x.shape[-1]
    return F.layer_norm(x, (n,), params[prefix + ".weight"],
                        params[prefix + ".bias"], eps)


def gelu(x):
    """Exact erf GELU."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


# ---------------------------------------------------------------------------
# Fixture 1: tiny ViT
# ---------------------------------------------------------------------------

VIT_CONFIG = OrderedDict([
    ("image_size", 8),
    ("channels", 2),
    ("patch", 4),
    ("width", 16),
    ("depth", 2),
    ("heads", 2),
    ("mlp_ratio", 2),
    ("classes", 3),
    ("batch", 3),
    ("eps", 1e-6),
    ("label_smoothing", 0.1),
])


def vit_params(cfg):
    C, p, D = cfg["channels"], cfg["patch"], cfg["width"]
    P = (cfg["image_size"] // p) ** 2
    Hd = cfg["mlp_ratio"] * D
    params = OrderedDict()
    params["patch_embed.proj.weight"] = weight(D, C, p, p)
    params["patch_embed.proj.bias"] = weight(D)
    params["cls_token"] = weight(1, 1, D)
    params["pos_embed"] = weight(1, 1 + P, D)
    for i in range(cfg["depth"]):
        b = "blocks.%d." % i
        params[b + "norm1.weight"] = ln_weight(D)
        params[b + "norm1.bias"] = ln_bias(D)
        params[b + "attn.qkv.weight"] = weight(3 * D, D)
        params[b + "attn.qkv.bias"] = weight(3 * D)
        params[b + "attn.proj.weight"] = weight(D, D)
        params[b + "attn.proj.bias"] = weight(D)
        params[b + "norm2.weight"] = ln_weight(D)
        params[b + "norm2.bias"] = ln_bias(D)
        params[b + "mlp.fc1.weight"] = weight(Hd, D)
        params[b + "mlp.fc1.bias"] = weight(Hd)
        params[b + "mlp.fc2.weight"] = weight(D, Hd)
        params[b + "mlp.fc2.bias"] = weight(D)
    params["norm.weight"] = ln_weight(D)
    params["norm.bias"] = ln_bias(D)
    params["head.weight"] = weight(cfg["classes"], D)
    params["head.bias"] = weight(cfg["classes"])
    return params


def timm_attention(x, params, prefix, heads):
    B, N, D = x.shape
    d = D // heads
    qkv = linear(x, params, prefix + ".qkv")
    qkv = qkv.reshape(B, N, 3, heads, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]                 # [B, H, N, d]
    attn = torch.softmax(q @ k.transpose(-2, -1) * d ** -0.5, dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(B, N, D)
    return linear(out, params, prefix + ".proj")


def vit_forward(images, params, cfg):
    eps = cfg["eps"]
    x = F.conv2d(images, params["patch_embed.proj.weight"],
                 params["patch_embed.proj.bias"], stride=cfg["patch"])
    x = x.flatten(2).transpose(1, 2)                 # [B, P, D], raster order
    cls = params["cls_token"].expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + params["pos_embed"]
    block_out = []
    for i in range(cfg["depth"]):
        b = "blocks.%d." % i
        x = x + timm_attention(layer_norm(x, params, b + "norm1", eps),
                               params, b + "attn", cfg["heads"])
        h = layer_norm(x, params, b + "norm2", eps)
        h = linear(gelu(linear(h, params, b + "mlp.fc1")), params, b + "mlp.fc2")
        x = x + h
        block_out.append(x)
    x = layer_norm(x, params, "norm", eps)
    logits = linear(x[:, 0], params, "head")
    return logits, block_out


def make_vit_tiny():
    cfg = VIT_CONFIG
    torch.manual_seed(1234)
    params = vit_params(cfg)
    B, C, S = cfg["batch"], cfg["channels"], cfg["image_size"]
    images = torch.randn(B, C, S, S).requires_grad_()
    # a random permutation, so that every class appears (a plain randint
    # with this seed gives [1, 1, 1], which would hide label-indexing bugs)
    labels = torch.randperm(B, dtype=torch.int64) % cfg["classes"]

    logits, block_out = vit_forward(images, params, cfg)
    loss = F.cross_entropy(logits, labels,
                           label_smoothing=cfg["label_smoothing"])
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names] + [images])

    tensors = [("input", "F32", images), ("labels", "I64", labels)]
    tensors += [(n, "F32", params[n]) for n in names]
    tensors += [("logits", "F32", logits), ("loss", "F32", loss.reshape(1))]
    tensors += [("grad." + n, "F32", g) for n, g in zip(names, grads[:-1])]
    tensors += [("grad.input", "F32", grads[-1])]
    tensors += [("tokens.block_out.%d" % i, "F32", t)
                for i, t in enumerate(block_out)]
    metadata = {"format": FORMAT, "config": json.dumps(cfg)}
    path = os.path.join(HERE, "vit_tiny.safetensors")
    save_safetensors(path, tensors, metadata)
    return path, logits, loss


# ---------------------------------------------------------------------------
# Fixture 2: masked multi-head attention
# ---------------------------------------------------------------------------

ATTN_CONFIG = OrderedDict([("batch", 2), ("tokens", 7), ("width", 12),
                           ("heads", 3)])

KEEP = [[1, 1, 0, 1, 1, 0, 1],
        [1, 0, 0, 1, 1, 1, 1]]


def masked_attention(x, keep, params, heads):
    """Masked keys are excluded from every softmax; rows of masked query
    tokens are exactly 0 both before (pre) and after (y) the projection."""
    B, N, D = x.shape
    d = D // heads
    qkv = linear(x, params, "qkv")
    qkv = qkv.reshape(B, N, 3, heads, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]                 # [B, H, N, d]
    logits = q @ k.transpose(-2, -1) * d ** -0.5     # [B, H, Nq, Nk]
    key_masked = (keep == 0)[:, None, None, :]
    attn = torch.softmax(logits.masked_fill(key_masked, float("-inf")), dim=-1)
    pre = (attn @ v).transpose(1, 2).reshape(B, N, D)
    row_keep = keep[:, :, None].to(x.dtype)
    pre = pre * row_keep
    y = linear(pre, params, "proj") * row_keep
    return y, pre


def make_attention_masked():
    cfg = ATTN_CONFIG
    torch.manual_seed(5678)
    B, N, D = cfg["batch"], cfg["tokens"], cfg["width"]
    params = OrderedDict()
    params["qkv.weight"] = weight(3 * D, D)
    params["qkv.bias"] = weight(3 * D)
    params["proj.weight"] = weight(D, D)
    params["proj.bias"] = weight(D)
    x = torch.randn(B, N, D).requires_grad_()
    keep = torch.tensor(KEEP, dtype=torch.uint8)
    assert bool((keep[:, 0] == 1).all())
    dy = torch.randn(B, N, D)

    y, pre = masked_attention(x, keep, params, cfg["heads"])
    objective = (y * dy).sum()
    names = list(params)
    grads = torch.autograd.grad(objective, [x] + [params[n] for n in names])

    tensors = [("x", "F32", x), ("keep", "U8", keep)]
    tensors += [(n, "F32", params[n]) for n in names]
    tensors += [("dy", "F32", dy), ("y", "F32", y), ("pre", "F32", pre)]
    tensors += [("grad.x", "F32", grads[0])]
    tensors += [("grad." + n, "F32", g) for n, g in zip(names, grads[1:])]
    metadata = {"format": FORMAT, "config": json.dumps(cfg)}
    path = os.path.join(HERE, "attention_masked.safetensors")
    save_safetensors(path, tensors, metadata)
    return path, y, pre


# ---------------------------------------------------------------------------
# main: generate, then read every file back and check it
# ---------------------------------------------------------------------------

def verify(path, expect):
    """Reload a file and compare against the float64 results it came from."""
    metadata, tensors = load_safetensors(path)
    assert metadata["format"] == FORMAT
    json.loads(metadata["config"])
    for name, ref in expect.items():
        got = tensors[name].to(torch.float64)
        assert got.shape == ref.shape, name
        torch.testing.assert_close(got, ref.detach().to(torch.float32)
                                   .to(torch.float64), rtol=0, atol=0)
    size = os.path.getsize(path)
    assert size < 100 * 1024, "%s is %d bytes" % (path, size)
    print("%s: %d bytes, %d tensors" % (os.path.basename(path), size,
                                         len(tensors)))
    for name, t in tensors.items():
        print("  %-32s %-4s %s" % (name, str(t.dtype).replace("torch.", ""),
                                    list(t.shape)))
    return tensors


def main():
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)

    path, logits, loss = make_vit_tiny()
    verify(path, {"logits": logits, "loss": loss.reshape(1)})

    path, y, pre = make_attention_masked()
    tensors = verify(path, {"y": y, "pre": pre})
    masked = tensors["keep"] == 0
    assert bool((tensors["y"][masked] == 0).all())
    assert bool((tensors["pre"][masked] == 0).all())

    torch.set_printoptions(precision=8)
    print("vit_tiny logits[0] =", [float("%.8g" % v) for v in logits[0].tolist()])
    print("vit_tiny loss      = %.10g" % loss.item())


if __name__ == "__main__":
    main()
