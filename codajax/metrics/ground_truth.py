"""Localisation against ground-truth object masks (e.g. a synthetic dataset with per-pixel masks).

Arguments: ``maps`` attributions (N, H, W[, C]) (channels are summed), ``masks`` binary masks
(N, H, W) marking the object (bool, or numbers that are all 0 or 1), in Quantus' order
(``a_batch, s_batch``).

Bad input: concrete maps with NaN/Inf values and concrete masks with values other than 0 and 1
(a soft mask such as 0.3) are a ``ValueError``. Under ``jax.jit`` the values are not checked: a
NaN in a map makes :func:`mask_energy` of that image 0 (its positive mass is not > 0) and counts
as the peak in :func:`pointing_game` (``argmax`` returns the first NaN); a soft mask counts as 1
wherever it is not 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from codajax._checks import check_binary_masks, check_float_array

Array = jax.Array


def _maps_and_masks(maps: Array, masks: Array, where: str) -> tuple[Array, Array]:
  """Channel-summed maps (N, H, W) and boolean masks (N, H, W), shape- and value-checked."""
  maps = check_float_array(maps, "maps", where=where)
  masks = check_binary_masks(masks, "masks", where=where)
  if maps.ndim == 4:
    maps = maps.sum(axis=-1)
  if maps.ndim != 3 or maps.shape != masks.shape:
    raise ValueError(
        f"need maps (N, H, W[, C]) and masks (N, H, W) of the same size; got {maps.shape}, {masks.shape}"
    )
  return maps, masks.astype(bool)


def mask_energy(maps: Array, masks: Array) -> Array:
  """Share of positive attribution inside the mask: (N, H, W[, C]), (N, H, W) -> (N,).

  Quantus' relevance mass accuracy on the positive part; 0 for a map without positive mass.
  Quantus: ``a_batch, s_batch`` (of ``RelevanceMassAccuracy``).
  """
  maps, masks = _maps_and_masks(maps, masks, "mask_energy")
  positive = jax.nn.relu(maps)
  inside = jnp.sum(positive * masks, axis=(1, 2))
  total = jnp.sum(positive, axis=(1, 2))
  return jnp.where(total > 0, inside / jnp.where(total > 0, total, 1), 0.0)


def pointing_game(maps: Array, masks: Array) -> Array:
  """1.0 if the maximum of the channel-summed map lies in the mask, else 0.0: -> (N,).

  Ties go to the first maximum in row-major order (``argmax``). Quantus: ``a_batch, s_batch``
  (of ``PointingGame``).
  """
  maps, masks = _maps_and_masks(maps, masks, "pointing_game")
  num, height, width = maps.shape
  peak = jnp.argmax(maps.reshape(num, height * width), axis=1)
  return jnp.take_along_axis(masks.reshape(num, height * width), peak[:, None], axis=1)[
      :, 0
  ].astype(jnp.float32)
