"""B-cos VGG (B-cos v2's ``bcos.models.vgg``): VGG-11/13/16/19 with uncentred batch norm (``_bnu``).

Every 3×3 convolution is a B-cos convolution (padding 1) followed by the
uncentred, bias-free norm, no ReLU; every "M" of the torchvision config is a
2×2 stride-2 *average* pool. The classifier is three B-cos convolutions
(512 -> 4096 7×7 padding 3, 4096 -> 4096 1×1, 4096 -> K 1×1) applied before
global average pooling, then the logit layer (``b = −ln(K − 1)``). Input
``[x, 1 − x]``.

Submodules: ``layer_s`` (s = 0..4) the five pooled stages, holding
``features_{j}`` under the PyTorch ``features`` index ``j`` (a convolution's
``kernel`` or a norm's ``scale``); ``layer_5`` the head with
``classifier_{0,1,2}``. Explainable layers: ``0`` the encoded image, ``1..4``
the input of stages 2..5, ``5`` the input of the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax import lax

from codajax.bcos.common import ClassMapSegments, default_logit_bias
from codajax.bcos.layers import BcosConv, make_norm
from codajax.bcos.norms import check_norm_kind
from codajax.explain.base import ExplainableModule

Array = jax.Array


def _stages(*stages: tuple[int, int]) -> tuple[Any, ...]:
  """A torchvision VGG configuration from ``(convolutions, channels)`` per stage, each then "M"."""
  return tuple(entry for count, channels in stages for entry in (channels,) * count + ("M",))


#: torchvision's VGG configurations (channels, "M" = pool): its ``cfgs`` "A", "B", "D", "E".
CONFIGS: dict[str, tuple[Any, ...]] = {
    "vgg11": _stages((1, 64), (1, 128), (2, 256), (2, 512), (2, 512)),
    "vgg13": _stages((2, 64), (2, 128), (2, 256), (2, 512), (2, 512)),
    "vgg16": _stages((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)),
    "vgg19": _stages((2, 64), (2, 128), (4, 256), (4, 512), (4, 512)),
}


def stage_layout(config: Sequence[Any], with_norm: bool) -> list[list[tuple[str, int, int]]]:
  """Per stage, ``(kind, features index, channels)`` with kind ``conv``/``norm``/``pool``.

  The index is the module's position in the PyTorch ``features`` ``nn.Sequential``.
  """
  stages, current, index = [], [], 0
  for entry in config:
    if entry == "M":
      current.append(("pool", index, 0))
      index += 1
      stages.append(current)
      current = []
    else:
      current.append(("conv", index, int(entry)))
      index += 1
      if with_norm:
        current.append(("norm", index, int(entry)))
        index += 1
  return stages


def avg_pool_2x2(x: Array) -> Array:
  """``nn.AvgPool2d(2, 2)``: ``(N, H, W, C) -> (N, H/2, W/2, C)`` (odd sizes floored)."""
  return (
      lax.reduce_window(x, np.zeros((), x.dtype), lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
      / 4.0
  )


class VGGStage(nn.Module):
  """Convolutions and norms of one stage, then the 2×2 average pool."""

  layout: Sequence[tuple[str, int, int]]
  norm: str
  b: float
  max_out: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x: Array, explain: bool = False) -> Array:
    for kind, index, channels in self.layout:
      if kind == "conv":
        x = BcosConv(
            channels,
            3,
            1,
            1,
            b=self.b,
            max_out=self.max_out,
            dtype=self.dtype,
            name=f"features_{index}",
        )(x, explain)
      elif kind == "norm":
        x = make_norm(self.norm, channels, name=f"features_{index}")(x, explain)
      else:
        x = avg_pool_2x2(x)
    return x


class VGGHead(nn.Module):
  """The three classifier B-cos convolutions: the class map ``(N, h, w, K)``."""

  num_classes: int
  hidden: int
  b: float
  max_out: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x: Array, explain: bool = False) -> Array:
    args = {"b": self.b, "max_out": self.max_out, "dtype": self.dtype}
    x = BcosConv(self.hidden, 7, 1, 3, name="classifier_0", **args)(x, explain)
    x = BcosConv(self.hidden, 1, 1, 0, name="classifier_1", **args)(x, explain)
    return BcosConv(self.num_classes, 1, 1, 0, name="classifier_2", **args)(x, explain)


class BcosVGG(ClassMapSegments, ExplainableModule):
  """A B-cos VGG; implements :class:`codajax.explain.ExplainableModel`.

  Attributes:
    config: a key of :data:`CONFIGS` or a torchvision-style tuple.
    num_classes: ``K``.
    norm: ``"bn"`` (frozen uncentred BN: the released ``vgg11_bnu``), ``"gn"``,
      ``"ln"``, ``"pn"`` or ``"none"`` (no norm modules, as the authors' ``vgg11``).
    hidden: classifier width (4096).
    b, max_out, temperature, logit_bias, dtype, image_channels: as
      :class:`codajax.bcos.resnet.BcosResNet`.
  """

  config: str | Sequence[Any]
  num_classes: int
  norm: str = "bn"
  hidden: int = 4096
  b: float = 2.0
  max_out: int = 1
  temperature: float | None = None
  logit_bias: float = 0.0
  dtype: Any = None
  image_channels: int = 3

  def __post_init__(self):
    if isinstance(self.config, str) and self.config not in CONFIGS:
      raise ValueError(f"Unknown VGG {self.config!r}; known: {', '.join(CONFIGS)}.")
    check_norm_kind(self.norm)
    super().__post_init__()

  def _config(self) -> tuple[Any, ...]:
    return CONFIGS[self.config] if isinstance(self.config, str) else tuple(self.config)

  @property
  def num_explainable_layers(self) -> int:
    """The pooled stages plus the classifier: the input of each."""
    return sum(1 for entry in self._config() if entry == "M") + 1

  def setup(self):
    layout = stage_layout(self._config(), self.norm != "none")
    segments = [
        VGGStage(tuple(stage), self.norm, self.b, self.max_out, self.dtype, name=f"layer_{s}")
        for s, stage in enumerate(layout)
    ]
    segments.append(
        VGGHead(
            self.num_classes,
            self.hidden,
            self.b,
            self.max_out,
            self.dtype,
            name=f"layer_{len(layout)}",
        )
    )
    self.segments = segments


def vgg(name: str, *, num_classes: int = 1000, norm: str = "bn", **kwargs: Any) -> BcosVGG:
  """B-cos ``vgg11`` .. ``vgg19``; ``norm="bn"`` is the released ``*_bnu`` (uncentred BN)."""
  kwargs.setdefault("logit_bias", default_logit_bias(num_classes))
  return BcosVGG(config=name, num_classes=num_classes, norm=norm, **kwargs)
