"""An independent float64 numpy port of the B-cos v2 forward pass (NCHW, PyTorch weight layout).

Written from the B-cos papers' layer definition and the authors' released
module semantics (``BcosConv2d``, ``BcosLinear``, ``BatchNormUncentered2d``,
``GroupNormUncentered2d``, ``LogitLayer``, the ResNet of ``bcos.models.resnet``),
sharing no code with codajax, so tests can check the ops, the models and the
converter against it without PyTorch.
"""

import numpy as np


def unfold(x, kh, kw, stride, pad):
  """(B, C, H, W) -> (B, C, kh, kw, H', W') patches of the zero-padded input."""
  bsz, c, h, w = x.shape
  xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  ho, wo = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
  out = np.zeros((bsz, c, kh, kw, ho, wo), x.dtype)
  for i in range(kh):
    for j in range(kw):
      out[:, :, i, j] = xp[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride]
  return out


def bcos_conv2d(x, weight, b=2, max_out=1, stride=1, pad=0, factors=None, replay=False):
  """x (B, C, H, W), weight (O·M, C, kh, kw) -> (B, O, H', W').

  factors: None, or a list: the dynamic factor |cos|^(B−1) computed here is
  appended to it; with ``replay`` its first entry is popped and used instead
  (the layer is then linear in x: its explanation mode at the recorded point).
  """
  x = np.asarray(x, np.float64)
  weight = np.asarray(weight, np.float64)
  om, c, kh, kw = weight.shape
  flat = weight.reshape(om, -1)
  flat = flat / np.linalg.norm(flat, axis=1, keepdims=True)
  patches = unfold(x, kh, kw, stride, pad)  # (B, C, kh, kw, H', W')
  bsz, _, _, _, ho, wo = patches.shape
  patches = patches.reshape(bsz, c * kh * kw, ho, wo)
  lin = np.einsum("op,bphw->bohw", flat, patches)
  if max_out > 1:
    lin = lin.reshape(bsz, om // max_out, max_out, ho, wo).max(axis=2)
  if b == 1:
    return lin
  if replay:
    return factors.pop(0) * lin
  norm = np.sqrt((patches**2).sum(axis=1, keepdims=True) + 1e-6)
  if b == 2:
    factor = np.abs(lin) / norm
  else:
    factor = (np.abs(lin / norm) + 1e-6) ** (b - 1)
  if factors is not None:
    factors.append(factor)
  return factor * lin


def bcos_linear(x, weight, b=2, max_out=1):
  """x (..., C), weight (O·M, C) -> (..., O)."""
  x = np.asarray(x, np.float64)
  weight = np.asarray(weight, np.float64)
  w = weight / np.linalg.norm(weight, axis=1, keepdims=True)
  lin = x @ w.T
  if max_out > 1:
    lin = lin.reshape(*lin.shape[:-1], -1, max_out).max(axis=-1)
  if b == 1:
    return lin
  norm = np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12
  if b == 2:
    return np.abs(lin) / norm * lin
  return (np.abs(lin / norm) + 1e-6) ** (b - 1) * lin


def bn_uncentered_eval(x, weight, running_var, eps=1e-5):
  """(B, C, H, W): x / sqrt(running_var + eps) * weight, no mean, no bias."""
  std = np.sqrt(np.asarray(running_var, np.float64) + eps)
  return x / std[None, :, None, None] * np.asarray(weight, np.float64)[None, :, None, None]


def gn_uncentered(x, groups, weight=None, eps=1e-5):
  """(B, C, H, W) uncentred group norm."""
  bsz, c, h, w = x.shape
  g = x.reshape(bsz, groups, c // groups, h, w)
  var = g.var(axis=(2, 3, 4), keepdims=True)
  y = (g / np.sqrt(var + eps)).reshape(x.shape)
  if weight is not None:
    y = y * np.asarray(weight, np.float64)[None, :, None, None]
  return y


def avg_pool_3x3_s2_p1(x):
  """nn.AvgPool2d(3, 2, 1) with the default count_include_pad=True."""
  p = unfold(x, 3, 3, 2, 1)
  return p.mean(axis=(2, 3))


def resnet_forward(
    images_nhwc,
    sd,
    stages,
    *,
    block="basic",
    small_inputs=True,
    num_classes=10,
    logit_bias=None,
    temperature=None,
    eps=1e-5,
):
  """Logits of a B-cos ResNet from a PyTorch-named state dict (uncentred BN, eval mode).

  stages: blocks per stage; the stride is 2 at the first block of every stage
  after the first; a block has a downsample branch iff its state dict does.
  """
  x = np.transpose(np.asarray(images_nhwc, np.float64), (0, 3, 1, 2))
  x = np.concatenate([x, 1 - x], axis=1)
  evidence = resnet_evidence(
      x, sd, stages, block=block, small_inputs=small_inputs, temperature=temperature, eps=eps
  )
  if logit_bias is None:
    logit_bias = -np.log(num_classes - 1)
  return evidence + logit_bias


def resnet_evidence(
    x,
    sd,
    stages,
    *,
    block="basic",
    small_inputs=True,
    temperature=None,
    eps=1e-5,
    factors=None,
    replay=False,
):
  """Logits without the bias from the encoded input x (B, 2C, H, W).

  ``factors``/``replay`` as in :func:`bcos_conv2d`, for every convolution in
  forward order (a replayed list is consumed from a copy).
  """
  if replay:
    factors = list(factors)

  def conv(x, name, stride=1, pad=0):
    return bcos_conv2d(x, sd[name + ".linear.weight"], 2, 1, stride, pad, factors, replay)

  def bn(x, name):
    return bn_uncentered_eval(x, sd[name + ".weight"], sd[name + ".running_var"], eps)

  x = np.asarray(x, np.float64)
  if small_inputs:
    x = bn(conv(x, "conv1", 1, 1), "bn1")
  else:
    x = avg_pool_3x3_s2_p1(bn(conv(x, "conv1", 2, 3), "bn1"))
  for s, count in enumerate(stages):
    for i in range(count):
      p = f"layer{s + 1}.{i}"
      stride = 2 if (s > 0 and i == 0) else 1
      if block == "basic":
        y = bn(conv(x, p + ".conv1", stride, 1), p + ".bn1")
        y = bn(conv(y, p + ".conv2", 1, 1), p + ".bn2")
      else:
        y = bn(conv(x, p + ".conv1"), p + ".bn1")
        y = bn(conv(y, p + ".conv2", stride, 1), p + ".bn2")
        y = bn(conv(y, p + ".conv3"), p + ".bn3")
      if p + ".downsample.0.linear.weight" in sd:
        x = bn(conv(x, p + ".downsample.0", stride), p + ".downsample.1")
      x = y + x
  x = conv(x, "fc")
  x = x.mean(axis=(2, 3))
  if temperature is not None:
    x = x / temperature
  return x
