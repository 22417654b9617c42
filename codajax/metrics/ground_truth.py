"""Localisation against ground-truth object masks (e.g. a synthetic dataset with per-pixel masks).

Quantus-style arguments: ``a_batch`` attributions (N, H, W[, C]) (channels are summed), ``s_batch``
binary masks (N, H, W) marking the object.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def _maps_and_masks(a_batch: Array, s_batch: Array) -> tuple[Array, Array]:
  """Channel-summed maps (N, H, W) and boolean masks (N, H, W), shape-checked."""
  a_batch, s_batch = jnp.asarray(a_batch), jnp.asarray(s_batch)
  if a_batch.ndim == 4:
    a_batch = a_batch.sum(axis=-1)
  if a_batch.ndim != 3 or a_batch.shape != s_batch.shape:
    raise ValueError(
        f"need a_batch (N, H, W[, C]) and s_batch (N, H, W) of the same size; got {a_batch.shape}, {s_batch.shape}"
    )
  return a_batch, s_batch.astype(bool)


def mask_energy(a_batch: Array, s_batch: Array) -> Array:
  """Share of positive attribution inside the mask: (N, H, W[, C]), (N, H, W) -> (N,).

  Quantus' relevance mass accuracy on the positive part; 0 for a map without positive mass.
  """
  maps, masks = _maps_and_masks(a_batch, s_batch)
  positive = jax.nn.relu(maps)
  inside = jnp.sum(positive * masks, axis=(1, 2))
  total = jnp.sum(positive, axis=(1, 2))
  return jnp.where(total > 0, inside / jnp.where(total > 0, total, 1), 0.0)


def pointing_game(a_batch: Array, s_batch: Array) -> Array:
  """1.0 if the maximum of the channel-summed map lies in the mask, else 0.0: -> (N,).

  Ties go to the first maximum in row-major order (``argmax``).
  """
  maps, masks = _maps_and_masks(a_batch, s_batch)
  num, height, width = maps.shape
  peak = jnp.argmax(maps.reshape(num, height * width), axis=1)
  return jnp.take_along_axis(masks.reshape(num, height * width), peak[:, None], axis=1)[
      :, 0
  ].astype(jnp.float32)
