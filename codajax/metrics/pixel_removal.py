"""Pixel-removal metric of the CoDA-Net papers (CoDA Nets, CVPR 2021).

Pixels are removed in order of importance (channel-summed attribution), ``direction="least"``
(ascending: most negative first) by default; after every ``stride`` removed pixels, up to
``fraction`` of the image, the sigmoid probability of the true class is recorded. For a 32x32
image and the defaults that is 129 masks with 0, 2, ..., 256 pixels removed.

Tie-breaking: the reference orders with ``np.argsort`` (quicksort, unstable: ties in an
arbitrary, implementation-defined order). Here the order is ``jnp.argsort(..., stable=True)``:
tied pixels are removed in row-major pixel order. This matters for maps with plateaus (Grad-CAM
after nearest upsampling, Occlusion), whose curves can therefore differ slightly from the
reference's.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from codajax._checks import (
    check_callable,
    check_choice,
    check_class_indices,
    check_class_range,
    check_float_array,
    check_images,
    check_int,
    check_optional_int,
    check_real,
    is_traced,
)
from codajax.nn import add_inverse

Array = jax.Array
DIRECTIONS = ("least", "most")
MODES = ("zero_encoded", "black")


def removal_steps(n_pixels: int, fraction: float = 0.25, n_points: int = 128) -> np.ndarray:
  """Numbers of removed pixels per mask: arange(0, int(fraction·n_pixels) + 1, stride), stride = that // n_points.

  32x32, defaults: [0, 2, ..., 256] (129 entries). ``fraction`` must be a number in (0, 1] and
  ``n_points`` a positive int.
  """
  n_pixels = check_int(n_pixels, "n_pixels", where="removal_steps")
  fraction = check_real(fraction, "fraction", where="removal_steps", low=0, high=1, low_open=True)
  n_points = check_int(n_points, "n_points", where="removal_steps")
  max_removed = int(fraction * n_pixels)
  stride = max_removed // n_points
  if stride < 1:
    raise ValueError(
        f"fraction {fraction} of {n_pixels} pixels is fewer than n_points={n_points} pixels"
    )
  return np.arange(0, max_removed + 1, stride)


def removal_fractions(n_pixels: int, fraction: float = 0.25, n_points: int = 128) -> np.ndarray:
  """Removed share of the image per mask (the x-axis of the curves): (n_masks,)."""
  return removal_steps(n_pixels, fraction, n_points) / n_pixels


def removal_rank(importance: Array, direction: str = "least") -> Array:
  """Position of every pixel in the removal order: (N, H, W) -> (N, H·W) ints.

  "least": ascending importance, ties in row-major pixel order (stable sort); "most": the
  reverse of that order.
  """
  check_choice(direction, "direction", DIRECTIONS, where="removal_rank")
  importance = check_float_array(importance, "importance", where="removal_rank")
  flat = importance.reshape(importance.shape[0], math.prod(importance.shape[1:]))
  order = jnp.argsort(flat, axis=1, stable=True)
  if direction == "most":
    order = order[:, ::-1]
  return jnp.argsort(order, axis=1)


def _importance(maps: Array, where: str) -> Array:
  """Channel-summed importance (N, H, W) from (N, H, W) or (N, H, W, C), finite when concrete."""
  maps = check_float_array(maps, "maps", where=where)
  if maps.ndim == 4:
    return maps.sum(axis=-1)
  if maps.ndim != 3:
    raise ValueError(f"need attributions (N, H, W[, C]); got shape {maps.shape}")
  return maps


def removal_masks(
    importance: Array, fraction: float = 0.25, n_points: int = 128, direction: str = "least"
) -> Array:
  """Cumulative keep-masks: importance (N, H, W[, C]) -> (N, n_masks, H, W), 1 = kept, 0 = removed.

  Mask j removes the first ``removal_steps(...)[j]`` pixels of the removal order; mask 0 removes
  none. 32x32 with the defaults: 129 masks, 2 more pixels per mask.
  """
  importance = _importance(importance, "removal_masks")
  num, height, width = importance.shape
  steps = jnp.asarray(removal_steps(height * width, fraction, n_points))
  rank = removal_rank(importance, direction)
  return (
      (rank[:, None, :] >= steps[None, :, None])
      .astype(jnp.float32)
      .reshape(num, len(steps), height, width)
  )


def pixel_removal_probabilities(
    fn: Callable[[Array], Array],
    images: Array,
    targets: Array,
    maps: Array,
    *,
    fraction: float = 0.25,
    n_points: int = 128,
    direction: str = "least",
    mode: str = "zero_encoded",
    items_per_pass: int | None = 8,
) -> Array:
  """Sigmoid probability of the true class after each removal step: (N, n_masks).

  Quantus: ``model, x_batch, y_batch, a_batch`` (the order of its ``PixelFlipping`` call).

  Args:
    fn: logits (N, K) of a masked input. ``mode="zero_encoded"`` (the reference): ``fn`` takes the
      encoded input [x, 1 - x] (N, H, W, 2C) and a removed pixel is 0 in all 2C channels.
      ``mode="black"``: ``fn`` takes images (N, H, W, C) and a removed pixel is 0 (black).
    images: (N, H, W, C) in [0, 1]; targets: true classes (N,);
    maps: attributions (N, H, W[, C]) (channels are summed).
    fraction, n_points: see :func:`removal_steps`.
    items_per_pass: masks per forward pass (None = all at once).

  Bad input is a ``ValueError`` (a ``TypeError`` for a wrong type) naming the argument; concrete
  NaN/Inf images or maps and concrete targets outside ``[0, K)`` included. Under ``jax.jit``
  values are not checked: NaN maps give an arbitrary removal order, and a traced target outside
  ``[0, K)`` gives a row of NaN probabilities (flagged, never another class's curve).
  """
  where = "pixel_removal_probabilities"
  check_callable(fn, "fn", where=where)
  check_choice(mode, "mode", MODES, where=where)
  check_choice(direction, "direction", DIRECTIONS, where=where)
  check_optional_int(items_per_pass, "items_per_pass", where=where)
  images = check_images(images, name=where, allow_empty=True, check_finite=True)
  importance = _importance(maps, where)
  if importance.shape != images.shape[:3]:
    raise ValueError(f"attributions {importance.shape} do not match images {images.shape}")
  num, height, width = importance.shape
  steps = jnp.asarray(removal_steps(height * width, fraction, n_points))
  labels = check_class_indices(targets, where=where, num_images=num).reshape(num, 1)
  model_input = add_inverse(images) if mode == "zero_encoded" else images
  rank = removal_rank(importance, direction).reshape(num, height, width, 1)

  def probability(removed):
    logits = fn(model_input * (rank >= removed).astype(model_input.dtype))
    num_classes = logits.shape[1]
    check_class_range(labels, num_classes, where=where)
    if not is_traced(labels):
      return jax.nn.sigmoid(jnp.take_along_axis(logits, labels, axis=1)[:, 0])
    valid = ((labels >= 0) & (labels < num_classes))[:, 0]
    picked = jnp.take_along_axis(logits, jnp.clip(labels, 0, num_classes - 1), axis=1)[:, 0]
    return jnp.where(valid, jax.nn.sigmoid(picked), jnp.nan)

  batch_size = len(steps) if items_per_pass is None else items_per_pass
  return jax.lax.map(probability, steps, batch_size=batch_size).T


def pixel_removal_curve(
    fn: Callable[[Array], Array], images: Array, targets: Array, maps: Array, **kwargs
) -> Array:
  """Mean over images of :func:`pixel_removal_probabilities`: (n_masks,) (reference: 129 values).

  Quantus: ``model, x_batch, y_batch, a_batch``.

  Raises ``ValueError`` for an empty batch (the mean over no images is undefined).
  """
  if np.shape(images)[:1] == (0,):
    raise ValueError(
        f"pixel_removal_curve needs at least one image; got an empty batch of shape {jnp.shape(images)}"
    )
  return pixel_removal_probabilities(fn, images, targets, maps, **kwargs).mean(axis=0)
