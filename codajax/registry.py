"""The model registry: names → factories, below every model family.

A family module registers its names with :func:`register_model` when it is
imported; this module never imports a family by name at import time. The
families are listed in :data:`FAMILY_MODULES` and imported (once) on the first
lookup, so ``get_model("bcos-resnet50")`` works without importing
:mod:`codajax.bcos` first, and there is no import cycle between the families
and the registry.

Every factory takes the settings every family shares (:data:`COMMON_SETTINGS`)
and validates its own family's settings (a CoDA norm or form, a B-cos norm
kind, a hybrid's embedding stage, ...): ``get_model`` passes on exactly what
it was given.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

# The modules that register model families, imported on the first lookup.
FAMILY_MODULES = (
    "codajax.models.architectures",
    "codajax.models.hybrid",
    "codajax.bcos.models",
    "codajax.bcos.vit",
)
# Settings every family's factory accepts (``None``: the model's default).
COMMON_SETTINGS = ("num_classes", "temperature", "dtype", "image_channels")

_FACTORIES: dict[str, Callable[..., Any]] = {}
_FAMILIES_LOADED = False


def register_model(name: str, factory: Callable[..., Any]) -> None:
  """Registers ``factory(**settings) -> nn.Module`` under ``name`` for :func:`get_model`.

  The factory accepts :data:`COMMON_SETTINGS` (each may be absent) and raises
  ``TypeError`` for a setting its family does not have, ``ValueError`` for a bad value.
  """
  if name in _FACTORIES:
    raise ValueError(f"A model named {name!r} is already registered.")
  _FACTORIES[name] = factory


def _load_families() -> None:
  global _FAMILIES_LOADED
  if not _FAMILIES_LOADED:
    _FAMILIES_LOADED = True
    for module in FAMILY_MODULES:
      importlib.import_module(module)


def architecture_names() -> list[str]:
  """Names accepted by :func:`get_model`, sorted."""
  _load_families()
  return sorted(_FACTORIES)


def check_common_settings(
    num_classes: Any = None,
    temperature: Any = None,
    dtype: Any = None,
    image_channels: Any = None,
) -> None:
  """One clear ``ValueError`` for a shared setting that would build a broken model."""

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


def get_model(name: str, **settings: Any):
  """Returns the Linen module registered as ``name``.

  Args:
    name: one of :func:`architecture_names` (e.g. ``"9L-S"``, ``"bcos-resnet50"``).
    **settings: the shared :data:`COMMON_SETTINGS` (``num_classes``, ``temperature``,
      ``dtype`` e.g. ``jnp.bfloat16``, ``image_channels``; ``None`` or absent: the
      model's default) and the settings of the model's family (CoDA-Nets: ``norm``, ``form``,
      :class:`~codajax.models.CoDANet` fields; B-cos: ``norm`` kind, ``b``, ...; hybrids:
      ``embedding_stage``, ...), passed to its factory as given.

  ``model.apply(variables, images)`` takes NHWC images in [0, 1] and returns logits
  ``(N, K)``. A bad value raises one ``ValueError``; a setting the family does not have,
  ``TypeError``.
  """
  _load_families()
  if name not in _FACTORIES:
    raise ValueError(
        f"Unknown architecture {name!r}; known architectures: {', '.join(architecture_names())}."
    )
  common = {k: settings.get(k) for k in COMMON_SETTINGS}
  check_common_settings(**common)
  return _FACTORIES[name](**{k: v for k, v in settings.items() if v is not None})
