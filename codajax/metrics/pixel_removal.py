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

from codajax.nn import add_inverse

Array = jax.Array
DIRECTIONS = ("least", "most")
MODES = ("zero_encoded", "black")


def removal_steps(n_pixels: int, fraction: float = 0.25, n_points: int = 128) -> np.ndarray:
  """Numbers of removed pixels per mask: arange(0, int(fraction·n_pixels) + 1, stride), stride = that // n_points.

  32x32, defaults: [0, 2, ..., 256] (129 entries).
  """
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
  if direction not in DIRECTIONS:
    raise ValueError(f"unknown direction {direction!r}; known: {', '.join(DIRECTIONS)}")
  importance = jnp.asarray(importance)
  flat = importance.reshape(importance.shape[0], math.prod(importance.shape[1:]))
  order = jnp.argsort(flat, axis=1, stable=True)
  if direction == "most":
    order = order[:, ::-1]
  return jnp.argsort(order, axis=1)


def _importance(maps: Array) -> Array:
  """Channel-summed importance (N, H, W) from (N, H, W) or (N, H, W, C)."""
  maps = jnp.asarray(maps)
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
  importance = _importance(importance)
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
    items_per_pass: masks per forward pass (None = all at once).
  """
  if mode not in MODES:
    raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
  images = jnp.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"need images (N, H, W, C); got shape {images.shape}")
  importance = _importance(maps)
  if importance.shape != images.shape[:3]:
    raise ValueError(f"attributions {importance.shape} do not match images {images.shape}")
  num, height, width = importance.shape
  model_input = add_inverse(images) if mode == "zero_encoded" else images
  rank = removal_rank(importance, direction).reshape(num, height, width, 1)
  labels = jnp.asarray(targets).astype(jnp.int32).reshape(num, 1)

  def probability(removed):
    logits = fn(model_input * (rank >= removed).astype(model_input.dtype))
    return jax.nn.sigmoid(jnp.take_along_axis(logits, labels, axis=1)[:, 0])

  steps = jnp.asarray(removal_steps(height * width, fraction, n_points))
  batch_size = len(steps) if items_per_pass is None else items_per_pass
  return jax.lax.map(probability, steps, batch_size=batch_size).T


def pixel_removal_curve(
    fn: Callable[[Array], Array], images: Array, targets: Array, maps: Array, **kwargs
) -> Array:
  """Mean over images of :func:`pixel_removal_probabilities`: (n_masks,) (reference: 129 values).

  Quantus: ``model, x_batch, y_batch, a_batch``.

  Raises ``ValueError`` for an empty batch (the mean over no images is undefined).
  """
  if jnp.shape(images)[:1] == (0,):
    raise ValueError(
        f"pixel_removal_curve needs at least one image; got an empty batch of shape {jnp.shape(images)}"
    )
  return pixel_removal_probabilities(fn, images, targets, maps, **kwargs).mean(axis=0)
