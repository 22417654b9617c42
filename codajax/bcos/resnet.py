"""B-cos ResNets (B-cos v2's ``bcos.models.resnet``): ImageNet ResNet-18..152, CIFAR ResNets.

The torchvision ResNet with every convolution a B-cos convolution
(:class:`codajax.bcos.layers.BcosConv`, bias-free, ``B = 2``), every
BatchNorm an uncentred, bias-free norm and **no ReLU** (the B-cos
non-linearity replaces it); the classifier is a 1×1 B-cos convolution applied
*before* global average pooling, then the logit layer (``x / T + b``,
``b = −ln(K − 1)``). The input is the 6-channel encoding ``[x, 1 − x]``. The
ImageNet stem is a 7×7 stride-2 convolution, the norm and a 3×3 stride-2
*average* pool (zero padding counted, as ``nn.AvgPool2d(3, 2, 1)``); the
CIFAR stem a 3×3 stride-1 convolution and the norm. The stride of a
bottleneck block sits on its 3×3 convolution (ResNet v1.5).

Submodules (codajax's explainable-layer convention, see :mod:`codajax.bcos.common`):
``layer_0`` the stem (``conv1``, ``bn1``), ``layer_s`` stage ``s``
(``block_i`` with ``conv1, bn1, conv2, bn2[, conv3, bn3][, downsample_conv,
downsample_bn]``), ``layer_{S+1}`` the head (``fc``). The released PyTorch
names map one to one (``layer{s}.{i}.conv1.linear.weight`` ->
``layer_s/block_i/conv1/kernel``; see :mod:`codajax.convert.bcos`).

Explainable layers: ``0`` the encoded image, ``s`` (1..S) the input of stage
``s``, ``S + 1`` the input of the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import numpy as np
from jax import lax

from codajax.bcos.common import ClassMapSegments, default_logit_bias
from codajax.bcos.layers import BcosConv, make_norm
from codajax.bcos.norms import check_norm_kind
from codajax.explain.base import ExplainableModule

Array = jax.Array

EXPANSION = {"basic": 1, "bottleneck": 4}


def avg_pool_3x3_s2(x: Array) -> Array:
  """``nn.AvgPool2d(3, 2, padding=1)`` (padding counted in the divisor): ``(N, H, W, C)``."""
  sums = lax.reduce_window(
      x,
      np.zeros((), x.dtype),
      lax.add,
      (1, 3, 3, 1),
      (1, 2, 2, 1),
      ((0, 0), (1, 1), (1, 1), (0, 0)),
  )
  return sums / 9.0


class Stem(nn.Module):
  """``conv1`` (7×7/2 ImageNet or 3×3/1 CIFAR), ``bn1``, then the 3×3/2 average pool (ImageNet)."""

  width: int
  small_inputs: bool
  norm: str
  b: float
  max_out: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x: Array, explain: bool = False) -> Array:
    k, s, p = (3, 1, 1) if self.small_inputs else (7, 2, 3)
    conv = BcosConv(
        self.width, k, s, p, b=self.b, max_out=self.max_out, dtype=self.dtype, name="conv1"
    )
    x = make_norm(self.norm, self.width, name="bn1")(conv(x, explain), explain)
    return x if self.small_inputs else avg_pool_3x3_s2(x)


class Block(nn.Module):
  """A basic (3×3, 3×3) or bottleneck (1×1, 3×3, 1×1 ×4) B-cos residual block, no ReLU."""

  width: int
  stride: int
  kind: Literal["basic", "bottleneck"]
  norm: str
  b: float
  max_out: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x: Array, explain: bool = False) -> Array:
    out_channels = self.width * EXPANSION[self.kind]

    def conv_norm(h, features, k, stride, conv_name, norm_name):
      conv = BcosConv(
          features,
          k,
          stride,
          (k - 1) // 2,
          b=self.b,
          max_out=self.max_out,
          dtype=self.dtype,
          name=conv_name,
      )
      return make_norm(self.norm, features, name=norm_name)(conv(h, explain), explain)

    if self.kind == "basic":
      y = conv_norm(x, self.width, 3, self.stride, "conv1", "bn1")
      y = conv_norm(y, self.width, 3, 1, "conv2", "bn2")
    else:
      y = conv_norm(x, self.width, 1, 1, "conv1", "bn1")
      y = conv_norm(y, self.width, 3, self.stride, "conv2", "bn2")
      y = conv_norm(y, out_channels, 1, 1, "conv3", "bn3")
    shortcut = x
    if self.stride != 1 or x.shape[-1] != out_channels:
      shortcut = conv_norm(x, out_channels, 1, self.stride, "downsample_conv", "downsample_bn")
    return y + shortcut


class Stage(nn.Module):
  """``num_blocks`` blocks; the first has stride ``stride`` (``block_0 .. block_{n−1}``)."""

  width: int
  num_blocks: int
  stride: int
  kind: Literal["basic", "bottleneck"]
  norm: str
  b: float
  max_out: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x: Array, explain: bool = False) -> Array:
    for i in range(self.num_blocks):
      x = Block(
          self.width,
          self.stride if i == 0 else 1,
          self.kind,
          self.norm,
          self.b,
          self.max_out,
          self.dtype,
          name=f"block_{i}",
      )(x, explain)
    return x


class ClassHead(nn.Module):
  """``fc``: a 1×1 B-cos convolution to ``num_classes`` channels, the class map ``(N, h, w, K)``."""

  num_classes: int
  b: float
  max_out: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x: Array, explain: bool = False) -> Array:
    return BcosConv(
        self.num_classes, 1, 1, 0, b=self.b, max_out=self.max_out, dtype=self.dtype, name="fc"
    )(x, explain)


class BcosResNet(ClassMapSegments, ExplainableModule):
  """A B-cos ResNet; implements :class:`codajax.explain.ExplainableModel`.

  Attributes:
    stage_sizes: blocks per stage (e.g. ``(3, 4, 6, 3)``).
    block: ``"basic"`` or ``"bottleneck"``.
    num_classes: ``K``.
    width: stage-1 width (64 ImageNet, 16 CIFAR); stage ``s`` has ``width·2^(s−1)``.
    small_inputs: CIFAR stem (3×3/1, no pooling) instead of the ImageNet stem.
    norm: ``"bn"`` (frozen uncentred BN, the released ImageNet models), ``"gn"``,
      ``"ln"``, ``"pn"`` (statistics-free, trainable) or ``"none"``.
    b: the B-cos exponent of every convolution (and of the classifier).
    max_out: MaxOut size of every convolution (and of the classifier).
    temperature: logits are divided by it (``None``: not at all, the released models).
    logit_bias: added to every logit (``get_model`` default: ``−ln(K − 1)``).
    dtype: dtype of the convolutions (``None``: float32).
    image_channels: ``C`` of the images (the encoding doubles it).
  """

  stage_sizes: Sequence[int]
  block: Literal["basic", "bottleneck"]
  num_classes: int
  width: int = 64
  small_inputs: bool = False
  norm: str = "bn"
  b: float = 2.0
  max_out: int = 1
  temperature: float | None = None
  logit_bias: float = 0.0
  dtype: Any = None
  image_channels: int = 3

  def __post_init__(self):
    if self.block not in EXPANSION:
      raise ValueError(f"Unknown block {self.block!r}; known: {', '.join(EXPANSION)}.")
    check_norm_kind(self.norm)
    if not self.stage_sizes or min(self.stage_sizes) < 1:
      raise ValueError(f"stage_sizes must be non-empty and >= 1, got {self.stage_sizes}.")
    super().__post_init__()

  @property
  def num_explainable_layers(self) -> int:
    """``S + 2``: the encoded image, the input of every stage, the classifier's input."""
    return len(self.stage_sizes) + 2

  def setup(self):
    args = {"norm": self.norm, "b": self.b, "max_out": self.max_out, "dtype": self.dtype}
    segments = [Stem(self.width, self.small_inputs, name="layer_0", **args)]
    for s, count in enumerate(self.stage_sizes):
      segments.append(
          Stage(
              self.width * 2**s,
              count,
              1 if s == 0 else 2,
              self.block,
              name=f"layer_{s + 1}",
              **args,
          )
      )
    segments.append(
        ClassHead(
            self.num_classes,
            self.b,
            self.max_out,
            self.dtype,
            name=f"layer_{len(self.stage_sizes) + 1}",
        )
    )
    self.segments = segments


# ------------------------------------------------------------------------------ named models

IMAGENET_RESNETS: dict[str, tuple[tuple[int, ...], str]] = {
    "resnet18": ((2, 2, 2, 2), "basic"),
    "resnet34": ((3, 4, 6, 3), "basic"),
    "resnet50": ((3, 4, 6, 3), "bottleneck"),
    "resnet101": ((3, 4, 23, 3), "bottleneck"),
    "resnet152": ((3, 8, 36, 3), "bottleneck"),
}

CIFAR_RESNETS: dict[str, int] = {
    "resnet20": 3,
    "resnet32": 5,
    "resnet44": 7,
    "resnet56": 9,
    "resnet110": 18,
}


def imagenet_resnet(
    depth_name: str, *, num_classes: int = 1000, norm: str = "bn", **kwargs: Any
) -> BcosResNet:
  """The released ImageNet B-cos ResNet ``depth_name`` (``"resnet50"``, ...): B = 2, no MaxOut,
  frozen uncentred BN, logit bias ``−ln(K − 1)``."""
  sizes, block = IMAGENET_RESNETS[depth_name]
  kwargs.setdefault("logit_bias", default_logit_bias(num_classes))
  return BcosResNet(
      stage_sizes=sizes,
      block=block,
      num_classes=num_classes,
      width=64,
      small_inputs=False,
      norm=norm,
      **kwargs,
  )


def cifar_resnet(
    depth_name: str, *, num_classes: int = 10, norm: str = "none", max_out: int = 2, **kwargs: Any
) -> BcosResNet:
  """B-cos v2's CIFAR-10 ResNet ``depth_name`` (``"resnet20"``, ...): widths 16/32/64, the
  3×3 stem, B = 2, MaxOut 2 and no norm (their ``resnet_20`` config)."""
  kwargs.setdefault("logit_bias", default_logit_bias(num_classes))
  return BcosResNet(
      stage_sizes=(CIFAR_RESNETS[depth_name],) * 3,
      block="basic",
      num_classes=num_classes,
      width=16,
      small_inputs=True,
      norm=norm,
      max_out=max_out,
      **kwargs,
  )


def tiny_resnet(*, num_classes: int = 10, norm: str = "ln", **kwargs: Any) -> BcosResNet:
  """A CPU-sized B-cos ResNet for 32 px images (digits, shapes): three one-block stages of
  widths 16/32/64, the CIFAR stem, the statistics-free uncentred layer norm, B = 2."""
  kwargs.setdefault("logit_bias", default_logit_bias(num_classes))
  return BcosResNet(
      stage_sizes=(1, 1, 1),
      block="basic",
      num_classes=num_classes,
      width=16,
      small_inputs=True,
      norm=norm,
      **kwargs,
  )
