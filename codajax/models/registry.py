"""Named CoDA-Net architectures of the papers, and small ones for the embedded datasets."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from codajax.models.coda_net import CoDANet, LayerSpec
from codajax.nn import dau


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


def architecture_names() -> list[str]:
  """Names accepted by :func:`get_model`, sorted."""
  return sorted(set(ARCHITECTURES) | set(_MODEL_FACTORIES))


# Factories for model families defined elsewhere (e.g. hybrids): name -> callable(**kw).
_MODEL_FACTORIES: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
  """Registers ``factory(**overrides) -> nn.Module`` under ``name`` for :func:`get_model`."""
  if name in ARCHITECTURES or name in _MODEL_FACTORIES:
    raise ValueError(f"A model named {name!r} is already registered.")
  _MODEL_FACTORIES[name] = factory


def _check_settings(num_classes: Any, temperature: Any, dtype: Any, image_channels: Any) -> None:
  """One clear error for a model setting that would build a broken model."""

  def positive_int(value, name):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
      raise ValueError(f"{name} must be a positive integer, got {value!r}.")

  positive_int(num_classes, "num_classes")
  positive_int(image_channels, "image_channels")
  if temperature is not None:
    try:
      value = float(temperature)
    except (TypeError, ValueError):
      value = float("nan")
    if not (math.isfinite(value) and value > 0):
      raise ValueError(f"temperature must be finite and > 0, got {temperature!r}.")
  if dtype is not None:
    try:
      floating = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
    except TypeError:
      floating = False
    if not floating:
      raise ValueError(
          f"dtype must be a float dtype (e.g. jnp.bfloat16) or None, got " f"{dtype!r}."
      )


def get_model(
    name: str,
    *,
    num_classes: int | None = None,
    temperature: float | None = None,
    norm: dau.Norm = "squash",
    form: dau.Form = "implicit",
    dtype: Any = None,
    image_channels: int | None = None,
    **overrides: Any,
) -> nn.Module:
  """Returns the Linen module of a named architecture.

  Args:
    name: one of :func:`architecture_names` (e.g. ``"9L-S"``, ``"9L-L"``).
    num_classes: replace the last layer's number of DAUs (default: the paper's).
    temperature: logit temperature ``T`` (default: the architecture's).
    norm: ``"squash"`` or ``"l2"``.
    form: ``"implicit"`` or ``"explicit"``.
    dtype: computation dtype (Flax's convention; parameters stay float32), e.g.
      ``jnp.bfloat16`` for mixed precision.
    image_channels: channels of the input images (default: the architecture's).
    **overrides: further :class:`CoDANet` fields (e.g. ``logit_bias``), or the
      keyword arguments of a registered model factory.

  ``model.apply(variables, images)`` takes NHWC images in [0, 1] and returns
  logits ``(N, K)``. Invalid settings raise one ``ValueError``.
  """
  _check_settings(num_classes, temperature, dtype, image_channels)
  if name in _MODEL_FACTORIES:
    kwargs = dict(
        num_classes=num_classes,
        temperature=temperature,
        norm=norm,
        form=form,
        dtype=dtype,
        image_channels=image_channels,
        **overrides,
    )
    return _MODEL_FACTORIES[name](**{k: v for k, v in kwargs.items() if v is not None})
  if name not in ARCHITECTURES:
    raise ValueError(
        f"Unknown architecture {name!r}; known architectures: {', '.join(architecture_names())}."
    )
  arch = ARCHITECTURES[name]
  layers = arch.layers if num_classes is None else with_num_classes(arch.layers, num_classes)
  if norm not in dau.NORMS:
    raise ValueError(f"Unknown norm {norm!r}; known norms: {', '.join(dau.NORMS)}.")
  if form not in dau.FORMS:
    raise ValueError(f"Unknown form {form!r}; known forms: {', '.join(dau.FORMS)}.")
  return CoDANet(
      layers=layers,
      temperature=arch.temperature if temperature is None else temperature,
      norm=norm,
      form=form,
      dtype=dtype,
      image_channels=arch.image_channels if image_channels is None else image_channels,
      **overrides,
  )


def count_params(layers: Sequence[LayerSpec], image_channels: int = 3) -> int:
  """Parameter count of a CoDA-Net from its specs (input encoding doubles channels)."""
  total, channels = 0, 2 * image_channels
  for spec in layers:
    total += dau.num_params(channels, spec.features, spec.rank, spec.kernel_size)
    channels = spec.features
  return total
