"""The plumbing of :mod:`codajax.explain.base`: checks and segment loops.

A model is a chain of *segments* (CoDA layers, B-cos stages, ...): callables
``h -> h`` (or ``(h, explain) -> h``) whose inputs are the explainable inputs
``0 .. L − 1``. These helpers take the segments as a plain sequence (a Python
list, Linen submodules, an ``nnx.List``), so Linen and NNX models use the same
code, and every model checks ``layer`` the same way (and its images with
:func:`codajax._checks.check_images`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import numpy as np

Array = jax.Array


def check_layer(layer: Any, count: int) -> None:
  """Raises ``ValueError`` unless ``layer`` is an int (not a bool) in ``0 .. count − 1``."""
  if (
      isinstance(layer, bool)
      or not isinstance(layer, (int, np.integer))
      or not (0 <= layer < count)
  ):
    raise ValueError(
        f"layer must be in 0..{count - 1} (the model has {count} explainable layers), got "
        f"{layer!r}; it must be a Python int (static under jit, see explain_jit)."
    )


def run_segments(
    h: Array, segments: Sequence[Callable[..., Array]], indices: Iterable[int], *args: Any
) -> Array:
  """``h`` through ``segments[i]`` for ``i`` in ``indices`` (e.g. ``range(layer)``), in order.

  Each is called as ``segment(h, *args)``.
  """
  for i in indices:
    h = segments[i](h, *args)
  return h


def segment_inputs(
    h: Array, segments: Sequence[Callable[..., Array]], *args: Any
) -> tuple[Array, ...]:
  """The input of every segment: ``(h, s_0(h), s_1(s_0(h)), ...)``, the last segment not run.

  Each is called as ``segment(h, *args)``.
  """
  inputs = [h]
  for i in range(len(segments) - 1):
    h = segments[i](h, *args)
    inputs.append(h)
  return tuple(inputs)
