"""The one input check for image batches, shared by explain, attribution and the models.

The same bad input gives the same error type everywhere: ``TypeError`` for images that are not
floating point, ``ValueError`` for a bad shape (rank, channels, empty batch) or bad values.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def check_images(
    images: Any,
    *,
    name: str,
    channels: int | None = None,
    allow_empty: bool = False,
    check_finite: bool = False,
    check_range: bool = False,
) -> jax.Array:
  """Checks a batch of NHWC float images ``(N, H, W, C)``; returns it as a JAX array.

  Args:
    images: the batch (array-like or tracer).
    name: who checks (the function or model), for the messages.
    channels: the required ``C`` (``None``: any).
    allow_empty: accept ``N = 0``.
    check_finite: refuse NaN/Inf pixels (only when the values are concrete, not under ``jit``).
    check_range: refuse values outside [0, 1] (concrete values only).

  Raises:
    ValueError: a rank other than 4, the wrong ``C``, an empty batch, NaN/Inf or out-of-range
      values. TypeError: images that are not floating point.
  """
  shape = tuple(np.shape(images))
  if len(shape) != 4:
    raise ValueError(
        f"{name} expects NHWC images of rank 4, got shape {shape} (need a batch (N, H, W, C))."
    )
  if channels is not None and shape[-1] != channels:
    raise ValueError(
        f"{name} was built for {channels}-channel images, got {shape[-1]} channels "
        f"(shape {shape})."
    )
  if shape[0] == 0 and not allow_empty:
    raise ValueError(f"{name} got an empty batch (shape {shape}); pass at least one image.")
  dtype = jnp.result_type(images)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(
        f"{name} expects float images in [0, 1], got dtype {dtype}; convert e.g. uint8 "
        f"pixels with images.astype(jnp.float32) / 255."
    )
  if (check_finite or check_range) and not isinstance(images, jax.core.Tracer):
    values = np.asarray(images, dtype=np.float32)
    if check_finite and not np.all(np.isfinite(values)):
      raise ValueError(f"{name}: the images contain NaN or Inf values.")
    if check_range and values.size and (values.min() < 0.0 or values.max() > 1.0):
      raise ValueError(
          f"{name} expects images in [0, 1], got values in [{values.min():.4g}, "
          f"{values.max():.4g}]; pass check_range=False to explain other inputs."
      )
  return jnp.asarray(images)
