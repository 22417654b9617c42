"""Conventional (non-explainable) ResNets: the "pretrained" models that B-cosification starts from.

:class:`ResNetClassifier` is the GroupNorm ResNet of the hybrids' backbone
(:mod:`codajax.models.hybrid`: bias-free convolutions, GroupNorm, ReLU, residual
sums, He init) with a global average pool and a dense classifier, written as a
chain of top-level submodules (``stem``, ``stage_1 .. stage_S``, ``head``)
as a user writes a ResNet with Flax Linen. GroupNorm rather than BatchNorm keeps
the variables ``{"params": ...}`` only, which ``train.py`` trains (it keeps no
mutable ``batch_stats``); :func:`codajax.bcos.bcosify` converts BatchNorm
networks as well.

=====================  ===========================================================  ==========
name                   model                                                         parameters
=====================  ===========================================================  ==========
``resnet-tiny``        3 one-block stages 16/32/64, the CIFAR stem (32 px images)     78,042
``resnet18``           ResNet-18, the ImageNet stem (7×7/2 conv, 3×3/2 max-pool)      11.69M
``resnet50``           ResNet-50 (bottleneck blocks), the ImageNet stem               25.56M
=====================  ===========================================================  ==========

(parameters: ``num_classes`` 10 for ``resnet-tiny``, 1000 for the others, as torchvision's.)
The images enter in [0, 1] as they are (the first GroupNorm removes their scale).
``get_model`` settings: ``num_classes``, ``dtype``, ``image_channels`` (taken from the
first convolution's input); ``temperature`` must be ``None`` or 1 (the logits are the
classifier's output).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from codajax.models.hybrid import (
    BackboneSpec,
    ResidualBlock,
    _conv,
    _group_norm,
    resnet_spec,
)
from codajax.registry import register_model

Array = jax.Array


class Stem(nn.Module):
  """Convolution, GroupNorm, ReLU; the ImageNet stem (7×7/2) adds a 3×3/2 max-pool."""

  width: int
  imagenet: bool
  dtype: Any = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """``(N, H, W, C) -> (N, H', W', width)`` (``H' = H`` CIFAR stem, ``H / 4`` ImageNet)."""
    k, s = (7, 2) if self.imagenet else (3, 1)
    x = nn.relu(_group_norm(self.width, self.dtype)(_conv(self.width, k, s, self.dtype)(x)))
    if self.imagenet:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    return x


class Stage(nn.Module):
  """``num_blocks`` residual blocks; the first has stride ``stride``."""

  width: int
  num_blocks: int
  stride: int
  bottleneck: bool
  dtype: Any = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    for i in range(self.num_blocks):
      x = ResidualBlock(
          self.width, self.stride if i == 0 else 1, self.bottleneck, self.dtype, name=f"block_{i}"
      )(x)
    return x


class ResNetClassifier(nn.Module):
  """A conventional ResNet classifier: ``stem``, ``stage_1 .. stage_S``, mean pool, ``head``.

  Attributes:
    spec: the residual backbone (:class:`codajax.models.hybrid.BackboneSpec`, kind ``resnet``).
    num_classes: ``K``.
    dtype: computation dtype (``None``: float32); parameters are float32.
  """

  spec: BackboneSpec
  num_classes: int
  dtype: Any = None

  @nn.compact
  def __call__(self, images: Array) -> Array:
    """Images ``(N, H, W, C)`` in [0, 1] -> logits ``(N, K)`` (float32)."""
    spec = self.spec
    x = Stem(spec.widths[0], spec.stem == "imagenet", self.dtype, name="stem")(images)
    for s, (blocks, width) in enumerate(zip(spec.stage_sizes, spec.widths)):
      x = Stage(
          width,
          blocks,
          1 if s == 0 else 2,
          spec.block == "bottleneck",
          self.dtype,
          name=f"stage_{s + 1}",
      )(x)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    return nn.Dense(self.num_classes, name="head")(x)


CONVENTIONAL_RESNETS: dict[str, BackboneSpec] = {
    "resnet-tiny": BackboneSpec("resnet", (1, 1, 1), (16, 32, 64), "basic", "cifar"),
    "resnet18": resnet_spec(18, stem="imagenet"),
    "resnet50": resnet_spec(50, stem="imagenet"),
}


def _factory(spec: BackboneSpec):
  def factory(
      *,
      num_classes: int = 10,
      temperature: float | None = None,
      dtype: Any = None,
      image_channels: int | None = None,
  ) -> ResNetClassifier:
    if temperature not in (None, 1, 1.0):
      raise ValueError(
          f"A conventional ResNet has no logit temperature; got temperature={temperature!r} "
          f"(use None or 1)."
      )
    del image_channels  # the first convolution takes whatever channels the images have
    return ResNetClassifier(spec, num_classes, dtype)

  return factory


for _name, _spec in CONVENTIONAL_RESNETS.items():
  register_model(_name, _factory(_spec))
