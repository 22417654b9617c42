"""Completeness of a contribution map: its sum should equal the explained logit minus the bias."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from codajax._checks import check_float_array

Array = jax.Array


def contribution_sum_error(maps: Array, logits_minus_bias: Array) -> Array:
  """Relative error of ``sum(maps) = logit - bias``: maps (N, ...), (N,) -> (N,).

  ``|sum c - target| / sum |c|``: relative to the sum of absolute contributions (the bound of
  float round-off for a sum), as :func:`codajax.explain.completeness_error` (which takes an
  ``Explanation``), so a class with evidence near zero does not blow the error up. Concrete
  NaN/Inf maps or targets are a ``ValueError``; under ``jit`` they give a NaN error.
  """
  where = "contribution_sum_error"
  maps = check_float_array(maps, "maps", where=where)
  targets = check_float_array(logits_minus_bias, "logits_minus_bias", where=where)
  if targets.ndim != 1 or maps.shape[:1] != targets.shape:
    raise ValueError(
        f"need maps (N, ...) and logits_minus_bias (N,); got {maps.shape}, {targets.shape}"
    )
  flat = maps.reshape(maps.shape[0], math.prod(maps.shape[1:]))
  scale = jnp.sum(jnp.abs(flat), axis=1)
  return jnp.abs(flat.sum(axis=1) - targets) / jnp.maximum(scale, jnp.finfo(scale.dtype).tiny)
