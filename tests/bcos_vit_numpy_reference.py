"""Independent float64 numpy port of the B-cos v2 ViT forward pass (B = 2, MaxOut 1).

Works on a state dict in the *released* names and PyTorch layouts (``(out, in)`` weights,
``(O, I, kh, kw)`` kernels, keys without the ``0.`` prefix) and on NCHW feature maps, as the
authors' model does, so it shares no code or layout with :mod:`codajax.bcos.vit`. The
positional embedding is *added* (the authors' way), loops spell out the convolution.
"""

from __future__ import annotations

import numpy as np

LN_EPS = 1e-5


def encode(images_nhwc: np.ndarray) -> np.ndarray:
  """``[x, 1 − x]`` as NCHW float64."""
  x = np.asarray(images_nhwc, np.float64).transpose(0, 3, 1, 2)
  return np.concatenate([x, 1.0 - x], axis=1)


def bcos_linear(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
  """``x (..., I)``, ``weight (O, I)``: ``|ŵ·x| / (‖x‖ + 1e-12) · ŵ·x`` per output."""
  w = weight / np.sqrt((weight**2).sum(axis=1, keepdims=True))
  out = x @ w.T
  norm = np.sqrt((x**2).sum(axis=-1, keepdims=True)) + 1e-12
  return np.abs(out) / norm * out


def bcos_conv(x: np.ndarray, weight: np.ndarray, stride: int, padding: int) -> np.ndarray:
  """NCHW B-cos convolution, ``weight (O, I, k, k)``; patch norm ``√(Σ x² + 1e-6)`` incl. padding."""
  n, c, h, w = x.shape
  o, _, k, _ = weight.shape
  w_hat = weight / np.sqrt((weight**2).sum(axis=(1, 2, 3), keepdims=True))
  xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
  oh = (h + 2 * padding - k) // stride + 1
  ow = (w + 2 * padding - k) // stride + 1
  out = np.zeros((n, o, oh, ow))
  for i in range(oh):
    for j in range(ow):
      patch = xp[:, :, i * stride : i * stride + k, j * stride : j * stride + k]  # (n, c, k, k)
      lin = np.einsum("nckl,ockl->no", patch, w_hat)
      norm = np.sqrt((patch**2).sum(axis=(1, 2, 3)) + 1e-6)[:, None]
      out[:, :, i, j] = np.abs(lin) / norm * lin
  return out


def layer_norm(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
  """Centred layer norm over the last axis, no bias."""
  mean = x.mean(axis=-1, keepdims=True)
  var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
  return (x - mean) / np.sqrt(var + LN_EPS) * weight


def layer_norm_2d(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
  """Group norm with one group on NCHW (statistics over C, H, W per image), no bias."""
  mean = x.mean(axis=(1, 2, 3), keepdims=True)
  var = ((x - mean) ** 2).mean(axis=(1, 2, 3), keepdims=True)
  return (x - mean) / np.sqrt(var + LN_EPS) * weight[None, :, None, None]


def position_embedding(h: int, w: int, dim: int) -> np.ndarray:
  """``(h·w, dim)``, token ``r·w + c``: ``[sin(c ω), cos(c ω), sin(r ω), cos(r ω)]``."""
  q = dim // 4
  omega = np.array([10000.0 ** (-i / (q - 1)) for i in range(q)])
  table = np.zeros((h * w, dim))
  for r in range(h):
    for c in range(w):
      table[r * w + c] = np.concatenate(
          [np.sin(c * omega), np.cos(c * omega), np.sin(r * omega), np.cos(r * omega)]
      )
  return table


def attention_block(t: np.ndarray, sd: dict, prefix: str, heads: int) -> np.ndarray:
  y = layer_norm(t, sd[f"{prefix}.attn.norm.weight"])
  qkv = y @ sd[f"{prefix}.attn.to_qkv.weight"].T  # plain linear, no bias
  inner = qkv.shape[-1] // 3
  q, k, v = qkv[..., :inner], qkv[..., inner : 2 * inner], qkv[..., 2 * inner :]
  d = inner // heads
  n, tokens = t.shape[:2]
  out = np.zeros((n, tokens, inner))
  for head in range(heads):
    sl = slice(head * d, (head + 1) * d)
    dots = q[..., sl] @ k[..., sl].transpose(0, 2, 1) / np.sqrt(d)
    dots = dots - dots.max(axis=-1, keepdims=True)
    attn = np.exp(dots) / np.exp(dots).sum(axis=-1, keepdims=True)
    out[..., sl] = attn @ v[..., sl]
  return bcos_linear(out, sd[f"{prefix}.attn.to_out.linear.weight"])


def mlp_block(t: np.ndarray, sd: dict, prefix: str) -> np.ndarray:
  y = layer_norm(t, sd[f"{prefix}.ff.net.norm.weight"])
  y = bcos_linear(y, sd[f"{prefix}.ff.net.linear1.linear.weight"])
  return bcos_linear(y, sd[f"{prefix}.ff.net.linear2.linear.weight"])


def forward(
    sd: dict,
    images_nhwc: np.ndarray,
    *,
    patch: int,
    depth: int,
    heads: int,
    conv_stem: tuple[int, ...] = (),
    logit_bias: float = 0.0,
) -> np.ndarray:
  """Logits ``(N, K)`` of the B-cos ViT with released-name parameters ``sd`` (float64)."""
  sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
  x = encode(images_nhwc)
  in_c = x.shape[1]
  for j, width in enumerate(conv_stem):
    x = bcos_conv(
        x,
        sd[f"to_patch_embedding.conv_stem.{3 * j}.linear.weight"],
        stride=2 if width > in_c else 1,
        padding=1,
    )
    x = layer_norm_2d(x, sd[f"to_patch_embedding.conv_stem.{3 * j + 1}.weight"])
    in_c = width
  n, c, h, w = x.shape
  gh, gw = h // patch, w // patch
  patches = np.zeros((n, gh * gw, patch * patch * c))
  for r in range(gh):
    for col in range(gw):
      block = x[:, :, r * patch : (r + 1) * patch, col * patch : (col + 1) * patch]  # (n, c, p, p)
      patches[:, r * gw + col] = block.transpose(0, 2, 3, 1).reshape(n, -1)  # (p1 p2 c)
  t = bcos_linear(patches, sd["to_patch_embedding.linear.linear.weight"])
  t = t + position_embedding(gh, gw, t.shape[-1])[None]
  for i in range(depth):
    t = attention_block(t, sd, f"transformer.encoder_{i}", heads) + t
    t = mlp_block(t, sd, f"transformer.encoder_{i}") + t
  pooled = t.mean(axis=1)
  pooled = layer_norm(pooled, sd["linear_head.norm.weight"])
  return bcos_linear(pooled, sd["linear_head.linear.linear.weight"]) + logit_bias
