"""Contribution maps at every depth of a CoDA-Net or hybrid, shown over the image.

A hybrid's output decomposes exactly into the contributions of its embedding
(the backbone's features) and, layer-wise, of the input of every CoDA layer
above it. These maps live on the grid of the explained layer (e.g. 8×8 for a
ResNet cut after stage 3 on 32 px images); :func:`upsample_to_image` spreads
them over the input pixels, and :func:`explain_at_depths` does both for every
explainable layer (the interpretable-depth analysis of the evaluation).
"""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from codajax.explain.contributions import Targets, explain

Array = jax.Array
UPSAMPLING = ("nearest", "bilinear")


def _nearest_cells(size: int, cells: int) -> np.ndarray:
  """For each of ``size`` pixels, the index of the cell (of ``cells``) that covers it."""
  return (np.arange(size) * cells) // size


def upsample_to_image(
    contribution_map_sum: Array,
    image_hw: tuple[int, int],
    method: Literal["nearest", "bilinear"] = "nearest",
) -> Array:
  """Spreads per-cell contributions ``(N, h, w)`` over an image grid ``(N, H, W)``.

  ``"nearest"`` (default) gives every pixel the contribution of the cell that
  covers it (cell ``⌊i·h/H⌋``) divided by the number of pixels that cell
  covers: the map keeps its total exactly (it still sums to ``logit −
  bias``) and is piecewise constant, so no contribution moves to a pixel its
  cell does not cover. ``"bilinear"`` interpolates (``jax.image.resize``,
  half-pixel centres, as ``align_corners=False``) and scales by
  ``h·w / (H·W)``: smoother, and the total is kept only approximately.

  Args:
    contribution_map_sum: ``(N, h, w)`` contributions summed over channels.
    image_hw: ``(H, W)``, at least ``(h, w)``.
    method: ``"nearest"`` or ``"bilinear"``.

  Returns:
    ``(N, H, W)`` float32.
  """
  if contribution_map_sum.ndim != 3:
    raise ValueError(
        f"upsample_to_image expects maps of shape (N, h, w), got "
        f"{tuple(contribution_map_sum.shape)}."
    )
  if method not in UPSAMPLING:
    raise ValueError(f"Unknown upsampling {method!r}; known: {', '.join(UPSAMPLING)}.")
  (n, h, w), (height, width) = contribution_map_sum.shape, tuple(image_hw)
  if height < h or width < w:
    raise ValueError(f"image size {(height, width)} is smaller than the map's {(h, w)}.")
  maps = contribution_map_sum.astype(jnp.float32)
  if method == "bilinear":
    return jax.image.resize(maps, (n, height, width), "linear") * (h * w / (height * width))
  rows, cols = _nearest_cells(height, h), _nearest_cells(width, w)
  area = np.outer(np.bincount(rows, minlength=h), np.bincount(cols, minlength=w))
  return (maps / area)[:, rows][:, :, cols]


def num_explainable_layers(model: nn.Module, variables: Any, image_shape: tuple[int, ...]) -> int:
  """How many layers ``explain(..., layer=l)`` accepts for images of ``image_shape`` (H, W, C)."""
  inputs = jax.eval_shape(
      lambda v, x: model.apply(v, x, method="explanation_inputs"),
      variables,
      jax.ShapeDtypeStruct((1, *image_shape), jnp.float32),
  )
  return len(inputs)


def explain_at_depths(
    model: nn.Module,
    variables: Any,
    images: Array,
    targets: Targets = None,
    *,
    method: Literal["nearest", "bilinear"] = "nearest",
) -> dict[int, Array]:
  """Contribution maps of every explainable layer, upsampled to the image.

  Layer ``l = 0`` is the encoded image (CoDA-Net) or the embedding (hybrid);
  layer ``l`` the input of CoDA layer ``l``. The map at ``l`` explains the
  output through ``L − l`` CoDA layers (``L = len(result)``): its
  interpretable depth. Every map sums to ``logit − bias`` of the explained
  class (exactly with ``method="nearest"``).

  Args:
    model: a CoDA-Net or hybrid.
    variables: its variables.
    images: ``(N, H, W, C)`` in [0, 1].
    targets: as in :func:`codajax.explain.explain` (``None``: the predicted
      class; an int or ``(N,)`` class indices). ``"all"`` is not accepted.
    method: upsampling, see :func:`upsample_to_image`.

  Returns:
    ``{l: (N, H, W) float32}`` for ``l = 0 .. L − 1``.
  """
  if isinstance(targets, str):
    raise ValueError(
        "explain_at_depths explains one class per image; got targets="
        f"{targets!r} (use None or class indices)."
    )
  if getattr(images, "ndim", None) != 4:
    raise ValueError(
        f"explain_at_depths expects NHWC images of rank 4, got shape {tuple(jnp.shape(images))}."
    )
  image_hw = tuple(images.shape[1:3])
  depths = num_explainable_layers(model, variables, tuple(images.shape[1:]))
  return {
      layer: upsample_to_image(
          explain(model, variables, images, targets, layer=layer)["contribution_map_sum"],
          image_hw,
          method,
      )
      for layer in range(depths)
  }
