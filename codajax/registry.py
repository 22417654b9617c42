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

import collections
import difflib
import importlib
from collections.abc import Callable
from typing import Any

from codajax._checks import check_float_dtype, check_int, check_real

# The modules that register model families, imported on the first lookup.
FAMILY_MODULES = (
    "codajax.models.architectures",
    "codajax.models.hybrid",
    "codajax.bcos.models",
    "codajax.bcos.vit",
    "codajax.models.conventional",
    "codajax.bcos.bcosification",
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
  """One clear error for a shared setting that would build a broken model: ``TypeError`` for a
  value of the wrong type (``temperature="10"``, ``num_classes=2.5``), ``ValueError`` for a
  bad value (``num_classes=0``, ``temperature=nan``, ``dtype=jnp.int32``)."""
  where = "get_model"
  if num_classes is not None:
    check_int(num_classes, "num_classes", where=where)
  if image_channels is not None:
    check_int(image_channels, "image_channels", where=where)
  if temperature is not None:
    check_real(temperature, "temperature", where=where, low=0.0, low_open=True)
  if dtype is not None:
    check_float_dtype(dtype, "dtype", where=where)


def unknown_architecture_message(name: Any) -> str:
  """One line for an unknown ``name``: the closest names, the others listed compactly (a
  family with more than 8 names as a count, e.g. "65 hybrid-* models")."""
  names = architecture_names()
  families = collections.Counter(known.split("-")[0] for known in names)
  single = [known for known in names if families[known.split("-")[0]] <= 8]
  counted = [f"{count} {family}-*" for family, count in sorted(families.items()) if count > 8]
  by_lower = {known.lower(): known for known in names}
  close = [
      by_lower[match]
      for match in difflib.get_close_matches(str(name).lower(), list(by_lower), n=3, cutoff=0.6)
  ]
  hint = f" (did you mean {' or '.join(close)}?)" if close else ""
  return (
      f"Unknown architecture {name!r}{hint}; known architectures: {', '.join(single)}, "
      f"{' and '.join(counted)} models (all: codajax.models.architecture_names())."
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
  ``(N, K)``. A bad value (``num_classes=0``, ``temperature=nan``, ``logit_bias=nan``) raises
  one ``ValueError``; a value of the wrong type (``temperature="10"``) or a setting the family
  does not have, ``TypeError``.
  """
  _load_families()
  if not isinstance(name, str):
    raise TypeError(f"get_model: name must be an architecture name (a str), got {name!r}.")
  if name not in _FACTORIES:
    raise ValueError(unknown_architecture_message(name))
  common = {k: settings.get(k) for k in COMMON_SETTINGS}
  check_common_settings(**common)
  if settings.get("logit_bias") is not None:
    check_real(settings["logit_bias"], "logit_bias", where="get_model")
  return _FACTORIES[name](**{k: v for k, v in settings.items() if v is not None})
