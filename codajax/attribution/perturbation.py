"""Perturbation-based attributions: Occlusion (the reference's variant) and RISE.

Both act on the image given to ``fn`` (for CoDA-Nets the 3-channel [0, 1] image, so an occluded or
masked-out pixel becomes black, i.e. (0,0,0,1,1,1) after the model's input encoding) and return
one channel, (N, H, W, 1). Masks are evaluated ``items_per_pass`` at a time.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from codajax._checks import (
    check_bool,
    check_callable,
    check_int,
    check_int_pair,
    check_optional_int,
    check_real,
)
from codajax.attribution._common import (
    Array,
    ForwardFn,
    as_key,
    as_targets,
    attribution_images,
    select,
    traced_target_validity,
    weighted_sum,
)
from codajax.attribution.gradients import check_baselines


def occlusion_window_bounds(
    size: int, window: int, stride: int, *, reference_window_quirk: bool = True
) -> np.ndarray:
  """Pixel ranges ``[start, stop)`` along one axis of the ``size // stride`` windows: (size//stride, 2).

  Window ``a`` is centred on pixel ``a * stride`` and clipped to ``[0, size)``.
  With ``reference_window_quirk`` (the CoDA authors' evaluation code): odd ``window`` k covers
  ``[a·s − (k−1)/2, a·s + (k−1)/2)``, i.e. only k − 1 pixels (Occ5 -> 4, Occ9 -> 8), so the first
  windows are cut at the top/left border; even k covers ``[(a+1)·s − k, a·s + k)``.
  Without it every window covers the k pixels ``[a·s − (k−1)//2, a·s − (k−1)//2 + k)``.
  """
  where = "occlusion_window_bounds"
  size = check_int(size, "size", where=where)
  window = check_int(window, "window", where=where)
  stride = check_int(stride, "stride", where=where)
  if size // stride < 1:
    raise ValueError(
        f"need window >= 1 and 1 <= stride <= size; got window={window}, stride={stride}, size={size}"
    )
  centres = np.arange(size // stride) * stride
  if not reference_window_quirk:
    start = centres - (window - 1) // 2
    stop = start + window
  elif window % 2:
    start, stop = centres - (window - 1) // 2, centres + (window - 1) // 2
  else:
    start, stop = centres + stride - window, centres + window
  bounds = np.clip(np.stack([start, stop], axis=1), 0, size)
  if np.any(bounds[:, 1] <= bounds[:, 0]):
    raise ValueError(
        f"occlusion window {window} with stride {stride} gives empty masks (the quirk makes k=1 windows empty)"
    )
  return bounds


def occlusion(
    fn: ForwardFn,
    images: Array,
    targets: int | Array,
    *,
    sliding_window_shapes: int | tuple[int, int] = 5,
    strides: int | tuple[int, int] = 2,
    baselines: float | Array = 0.0,
    reference_window_quirk: bool = True,
    items_per_pass: int | None = 8,
    check_range: bool = True,
) -> Array:
  """Occlusion as in the reference: every pixel of window m gets diff_m / |m|, summed over windows.

  ``diff_m = logit_t(x) - logit_t(x occluded by m)`` (logits, signed), so for a linear model
  ``x -> x.reshape(N, -1) @ W`` and baseline 0, diff_m = sum over m of W_t * x (the occluded
  logit changes by minus that). Windows lie on a (H//s_h) x (W//s_w) grid, see
  :func:`occlusion_window_bounds`. Unlike Captum's ``Occlusion`` (windows fully inside the image,
  averaged over the windows covering a pixel), each window's diff is spread over its own pixels.
  Captum: ``Occlusion(fn).attribute(inputs, sliding_window_shapes, strides, baselines, target,
  perturbations_per_eval=...)`` (same arguments, different scoring).

  Args:
    fn: (N,H,W,C) -> (N,K) logits; images: (N,H,W,C); targets: int, (N,) or (N,T) (the T
      classes share the occluded forward passes).
    sliding_window_shapes, strides: window size k and stride, a positive int or a pair
      (rows, columns) of them (reference: Occ5 = 5, 2; Occ9 = 9, 2).
    baselines: value of occluded pixels, a finite scalar or an array broadcastable to the
      images (concrete NaN/Inf: ``ValueError``; under ``jit`` they give NaN maps).
    reference_window_quirk: reproduce the reference's k - 1 windows for odd k.
    items_per_pass: occluded copies per forward pass (None = all at once; Captum's
      ``perturbations_per_eval``).
    check_range: refuse (eager) images outside [0, 1].

  Returns: (N,H,W,1), or (N,T,H,W,1) for (N,T) targets; a traced target outside ``[0, K)``
  gives a zero map.
  """
  where = "occlusion"
  images = attribution_images(fn, images, where, check_range)
  targets = as_targets(targets, images.shape[0], where)
  height, width = images.shape[1:3]
  window_h, window_w = check_int_pair(sliding_window_shapes, "sliding_window_shapes", where=where)
  stride_h, stride_w = check_int_pair(strides, "strides", where=where)
  baselines = check_baselines(baselines, images, where)
  check_bool(reference_window_quirk, "reference_window_quirk", where=where)
  check_optional_int(items_per_pass, "items_per_pass", where=where)
  rows = occlusion_window_bounds(
      height, window_h, stride_h, reference_window_quirk=reference_window_quirk
  )
  cols = occlusion_window_bounds(
      width, window_w, stride_w, reference_window_quirk=reference_window_quirk
  )
  bounds = np.concatenate(
      [np.repeat(rows, len(cols), axis=0), np.tile(cols, (len(rows), 1))], axis=1
  )
  reference = select(fn(images), targets)
  row_index, col_index = jnp.arange(height), jnp.arange(width)

  def spread_diff(window):
    top, bottom, left, right = window[0], window[1], window[2], window[3]
    mask = ((row_index >= top) & (row_index < bottom))[:, None] & (
        (col_index >= left) & (col_index < right)
    )[None, :]
    mask = mask.astype(images.dtype)
    occluded = images * (1 - mask[..., None]) + baselines * mask[..., None]
    diff = reference - select(fn(occluded), targets)
    return diff[..., None, None] * mask / jnp.sum(mask)

  weights = jnp.ones(len(bounds), images.dtype)
  return weighted_sum(spread_diff, jnp.asarray(bounds), weights, items_per_pass)[..., None]


def _bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
  """(size_out, size_in) linear-interpolation matrix of skimage ``resize(order=1, mode="reflect")``.

  Half-pixel centres (input coordinate (o + 0.5) * size_in / size_out - 0.5), no anti-aliasing,
  "reflect" = mirror about the edge pixels (d c b | a b c d | c b a).
  """
  coords = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5
  low = np.floor(coords).astype(int)
  frac = coords - low
  period = max(2 * (size_in - 1), 1)

  def mirror(index):
    index = np.abs(index) % period
    return np.where(index > size_in - 1, period - index, index)

  matrix = np.zeros((size_out, size_in))
  np.add.at(matrix, (np.arange(size_out), mirror(low)), 1 - frac)
  np.add.at(matrix, (np.arange(size_out), mirror(low + 1)), frac)
  return matrix


def rise_masks(
    key: Array | int, n_masks: int, height: int, width: int, *, s: int = 6, p1: float = 0.1
) -> Array:
  """RISE masks (n_masks, H, W) in [0, 1], as the public RISE code with ``jax.random`` draws.

  Each mask: an s x s grid of Bernoulli(p1) cells, bilinearly upsampled (skimage rule, see
  :func:`_bilinear_matrix`) to (s+1)·cell with cell = ceil(size/s), then cropped to H x W at an
  offset drawn uniformly from [0, cell) per axis.
  """
  where = "rise_masks"
  n_masks, s, p1 = check_rise_settings(n_masks, s, p1, where)
  height = check_int(height, "height", where=where)
  width = check_int(width, "width", where=where)
  return jax.vmap(lambda k: _rise_mask(k, height, width, s, p1))(
      jax.random.split(as_key(key, where), n_masks)
  )


def check_rise_settings(n_masks: int, s: int, p1: float, where: str) -> tuple[int, int, float]:
  """``n_masks`` and ``s`` positive ints, ``p1`` a number in (0, 1]."""
  n_masks = check_int(n_masks, "n_masks", where=where)
  s = check_int(s, "s", where=where)
  p1 = check_real(p1, "p1", where=where, low=0.0, high=1.0, low_open=True)
  return n_masks, s, p1


def _rise_mask(key: Array, height: int, width: int, s: int, p1: float) -> Array:
  """One RISE mask (H, W) from one key."""
  cell_h, cell_w = math.ceil(height / s), math.ceil(width / s)
  up_rows = jnp.asarray(_bilinear_matrix(s, (s + 1) * cell_h), jnp.float32)
  up_cols = jnp.asarray(_bilinear_matrix(s, (s + 1) * cell_w), jnp.float32)
  grid_key, shift_key = jax.random.split(key)
  grid = jax.random.bernoulli(grid_key, p1, (s, s)).astype(jnp.float32)
  upsampled = up_rows @ grid @ up_cols.T
  shift = jax.random.randint(shift_key, (2,), 0, jnp.array([cell_h, cell_w]))
  return jax.lax.dynamic_slice(upsampled, (shift[0], shift[1]), (height, width))


def rise(
    fn: ForwardFn,
    images: Array,
    targets: int | Array,
    *,
    key: Array | int,
    n_masks: int = 6000,
    s: int = 6,
    p1: float = 0.1,
    items_per_pass: int | None = 32,
    probabilities=jax.nn.sigmoid,
    check_range: bool = True,
) -> Array:
  """RISE saliency: sum_i p_i(target) * mask_i / (n_masks * p1), (N,H,W,C) -> (N,H,W,1).

  ``targets``: int, (N,) or (N,T); (N,T) targets share the masked forward passes and give
  (N,T,H,W,1). ``n_masks`` and ``s`` must be positive ints and ``p1`` a number in (0, 1]
  (``TypeError`` for another type, ``ValueError`` for another value). A traced target outside
  ``[0, K)`` gives a zero map (its score is 0).

  ``p_i`` = ``probabilities(fn(images * mask_i))`` (sigmoid of the logits, as the reference's
  BCE-trained models). The same masks (drawn from ``key``, see :func:`rise_masks`) serve every
  image of the batch, as the reference caches them per image size. ``items_per_pass``: masked
  copies per forward pass (None = all at once). Captum has no RISE; the arguments follow its
  perturbation methods (``perturbations_per_eval`` there).
  """
  where = "rise"
  n_masks, s, p1 = check_rise_settings(n_masks, s, p1, where)
  check_callable(probabilities, "probabilities", where=where)
  check_optional_int(items_per_pass, "items_per_pass", where=where)
  images = attribution_images(fn, images, where, check_range)
  targets = as_targets(targets, images.shape[0], where)
  height, width = images.shape[1:3]

  def weighted_mask(mask_key):
    mask = _rise_mask(mask_key, height, width, s, p1).astype(images.dtype)
    logits = fn(images * mask[:, :, None])
    score = probabilities(select(logits, targets))
    valid = traced_target_validity(targets, logits.shape[-1])
    if valid is not None:
      score = jnp.where(valid, score, jnp.zeros((), score.dtype))
    return score[..., None, None] * mask

  keys = jax.random.split(as_key(key, where), n_masks)
  weights = jnp.full(n_masks, 1.0 / (n_masks * p1), images.dtype)
  return weighted_sum(weighted_mask, keys, weights, items_per_pass)[..., None]
