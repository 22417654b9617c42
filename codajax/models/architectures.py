"""Named CoDA-Net architectures of the papers, and small ones for the embedded datasets.

Each is registered with :func:`codajax.registry.get_model` under its name.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

from codajax.models.coda_net import CoDANet, LayerSpec
from codajax.nn import dau
from codajax.registry import register_model


@dataclasses.dataclass(frozen=True)
class Architecture:
  """A named architecture: its layers and the defaults of its paper setting."""

  layers: tuple[LayerSpec, ...]
  temperature: float
  image_channels: int
  image_size: int
  description: str


def _nine_layer_small(ranks: Sequence[int]) -> tuple[LayerSpec, ...]:
  """9L-S (CIFAR-10, 32 px) with the given per-layer ranks."""
  features = (16, 16, 32, 32, 32, 64, 64, 64, 10)
  strides = (1, 1, 2, 1, 1, 2, 1, 1, 1)
  kernels = (3,) * 8 + (1,)
  paddings = (1,) * 8 + (0,)
  return tuple(map(LayerSpec, features, ranks, kernels, strides, paddings))


def _ranks_9ls(low: int, high: int) -> tuple[int, ...]:
  return (low, low) + (high,) * 7


_NINE_LAYER_LARGE = tuple(
    map(
        LayerSpec,
        (16, 32, 32, 64, 64, 64, 64, 64, 100),  # features
        (64, 64, 64, 128, 128, 128, 256, 256, 256),  # ranks
        (7, 3, 3, 3, 3, 3, 3, 3, 3),  # kernels
        (3, 1, 1, 2, 1, 1, 2, 1, 1),  # strides
        (3, 1, 1, 1, 1, 1, 1, 1, 1),  # paddings
    )
)

ARCHITECTURES: dict[str, Architecture] = {
    "9L-S": Architecture(
        _nine_layer_small(_ranks_9ls(32, 64)),
        1000.0,
        3,
        32,
        "CIFAR-10 9L-S of the CVPR paper, 7,782,816 parameters (T=1000: the evaluated model).",
    ),
    "9L-S-rank-4": Architecture(
        _nine_layer_small(_ranks_9ls(4, 8)), 1000.0, 3, 32, "9L-S rank ablation, ranks 4/8."
    ),
    "9L-S-rank-8": Architecture(
        _nine_layer_small(_ranks_9ls(8, 16)), 1000.0, 3, 32, "9L-S rank ablation, ranks 8/16."
    ),
    "9L-S-rank-16": Architecture(
        _nine_layer_small(_ranks_9ls(16, 32)), 1000.0, 3, 32, "9L-S rank ablation, ranks 16/32."
    ),
    "9L-S-rank-144": Architecture(
        _nine_layer_small(_ranks_9ls(144, 288)), 1000.0, 3, 32, "9L-S rank ablation, ranks 144/288."
    ),
    "9L-L": Architecture(
        _NINE_LAYER_LARGE,
        100_000.0,
        3,
        240,
        "ImageNet-100 9L-L of the CVPR paper (240 px), 47,517,408 parameters.",
    ),
    "digits-5L": Architecture(
        (
            LayerSpec(16, 16, 3, 1, 1),
            LayerSpec(32, 16, 3, 2, 1),
            LayerSpec(32, 32, 3, 1, 1),
            LayerSpec(64, 32, 3, 2, 1),
            LayerSpec(10, 32, 1, 1, 0),
        ),
        100.0,
        1,
        16,
        "Small CoDA-Net for the embedded 16x16 digits dataset.",
    ),
    "shapes-7L": Architecture(
        (
            LayerSpec(16, 16, 3, 1, 1),
            LayerSpec(32, 32, 3, 2, 1),
            LayerSpec(32, 32, 3, 1, 1),
            LayerSpec(64, 32, 3, 2, 1),
            LayerSpec(64, 32, 3, 1, 1),
            LayerSpec(64, 32, 3, 1, 1),
            LayerSpec(10, 32, 1, 1, 0),
        ),
        500.0,
        3,
        32,
        "Small CoDA-Net for the embedded 32x32 shapes dataset.",
    ),
    "shapes-5L": Architecture(
        (
            LayerSpec(16, 8, 3, 2, 1),
            LayerSpec(32, 16, 3, 1, 1),
            LayerSpec(32, 16, 3, 2, 1),
            LayerSpec(64, 32, 3, 1, 1),
            LayerSpec(10, 32, 1, 1, 0),
        ),
        100.0,
        3,
        32,
        "Cheaper 32x32 shapes CoDA-Net (stride-2 first layer; ~3.5x less CPU per step than 7L).",
    ),
    "tiny-3L": Architecture(
        (LayerSpec(8, 4, 3, 1, 1), LayerSpec(8, 4, 3, 2, 1), LayerSpec(10, 4, 1, 1, 0)),
        10.0,
        3,
        8,
        "A three-layer toy network for tests.",
    ),
}


def with_num_classes(layers: Sequence[LayerSpec], num_classes: int) -> tuple[LayerSpec, ...]:
  """``layers`` with the last layer's ``features`` set to ``num_classes``."""
  return (*layers[:-1], layers[-1]._replace(features=num_classes))


def coda_net(
    name: str,
    *,
    num_classes: int | None = None,
    temperature: float | None = None,
    norm: dau.Norm = "squash",
    form: dau.Form = "implicit",
    dtype: Any = None,
    image_channels: int | None = None,
    **fields: Any,
) -> CoDANet:
  """The :class:`CoDANet` of the named architecture (``get_model(name, ...)`` calls this).

  Args:
    name: a key of :data:`ARCHITECTURES`.
    num_classes: replace the last layer's number of DAUs (default: the paper's).
    temperature: logit temperature ``T`` (default: the architecture's).
    norm: ``"squash"`` or ``"l2"``.
    form: ``"implicit"`` or ``"explicit"``.
    dtype: computation dtype (Flax's convention; parameters stay float32), e.g.
      ``jnp.bfloat16`` for mixed precision.
    image_channels: channels of the input images (default: the architecture's).
    **fields: further :class:`CoDANet` fields (e.g. ``logit_bias``).
  """
  if norm not in dau.NORMS:
    raise ValueError(f"Unknown norm {norm!r}; known norms: {', '.join(dau.NORMS)}.")
  if form not in dau.FORMS:
    raise ValueError(f"Unknown form {form!r}; known forms: {', '.join(dau.FORMS)}.")
  unknown = set(fields) - {f.name for f in dataclasses.fields(CoDANet)} - {"parent", "name"}
  if unknown:
    raise TypeError(f"{name}: unknown settings {sorted(unknown)}.")
  arch = ARCHITECTURES[name]
  return CoDANet(
      layers=arch.layers if num_classes is None else with_num_classes(arch.layers, num_classes),
      temperature=arch.temperature if temperature is None else temperature,
      norm=norm,
      form=form,
      dtype=dtype,
      image_channels=arch.image_channels if image_channels is None else image_channels,
      **fields,
  )


def count_params(layers: Sequence[LayerSpec], image_channels: int = 3) -> int:
  """Parameter count of a CoDA-Net from its specs (input encoding doubles channels)."""
  total, channels = 0, 2 * image_channels
  for spec in layers:
    total += dau.num_params(channels, spec.features, spec.rank, spec.kernel_size)
    channels = spec.features
  return total


for _name in ARCHITECTURES:
  register_model(_name, functools.partial(coda_net, _name))
