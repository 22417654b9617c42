"""Uncentred normalisation of B-cos networks (the authors' ``*Uncentered*`` norms), NHWC.

Every norm here divides by a standard deviation and multiplies by a per-channel
weight ``γ``, and *never subtracts the mean and never adds a bias*: the output
stays a (dynamic) linear function of the input, ``y = x · γ / σ(x)``. The
variance itself is the usual (centred, biased) one, ``σ² = mean((x − μ)²)``,
over the axes of each variant:

=====================  ==========================================  ====================
variant                 statistics over                              B-cos v2 name
=====================  ==========================================  ====================
batch                   ``N, H, W`` per channel (or running var.)    ``BatchNormUncentered2d``
group (``G`` groups)    ``H, W, C/G`` per image and group            ``GroupNormUncentered2d``
layer                   ``H, W, C`` per image (group norm, G = 1)    ``GNLayerNormUncentered2d``
position                ``C`` per image and position (last axis)     ``PositionNormUncentered2d``
=====================  ==========================================  ====================

``σ = √(σ² + eps)``. With ``explain=True`` ``σ`` is detached (``stop_gradient``):
the norm is then the linear map ``x ↦ x · γ / σ`` with ``σ`` frozen.

**Running statistics (imported batch-norm models).** In evaluation mode the
authors' batch norm is ``y = x · γ / √(running_var + eps)``: a fixed
per-channel scale. codajax's training loop and evaluators carry
``{"params": ...}`` only (no mutable ``batch_stats``), so the converter folds
the running variance into that scale (:func:`fold_batch_norm`) and B-cos models
with ``norm="bn"`` hold one ``scale`` parameter per channel
(:class:`codajax.bcos.layers.FrozenBatchNormUncentered`): exactly the authors'
inference function, a plain linear map (nothing to detach), usable by
``explain``, every attribution method and ``eval.py``. Batch statistics
(:func:`batch_norm_uncentered` with ``running_var=None``) are available
functionally; trainable codajax configs use the statistics-free group/layer
norms, whose train and eval functions agree.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array

#: PyTorch's default ``eps`` of every norm here.
DEFAULT_EPS = 1e-5


def _scaled(x: Array, var: Array, weight: Array | None, eps: float, explain: bool) -> Array:
  std = jnp.sqrt(var + eps)
  if explain:
    std = lax.stop_gradient(std)
  y = x / std
  return y if weight is None else y * weight


def _acc(x: Array) -> Array:
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def batch_norm_uncentered(
    x: Array,
    weight: Array | None = None,
    running_var: Array | None = None,
    *,
    eps: float = DEFAULT_EPS,
    explain: bool = False,
) -> Array:
  """Uncentred batch norm: ``x · γ / √(σ² + eps)``, ``(..., C) -> (..., C)``.

  Args:
    x: ``(N, ..., C)``.
    weight: ``γ`` ``(C,)`` or ``None``.
    running_var: ``(C,)``: use it (evaluation mode); ``None``: the batch
      variance over every axis but the last (training mode; no running
      statistics are updated here).
    eps: added to the variance.
    explain: detach the statistics.
  """
  x = _acc(x)
  if running_var is None:
    var = jnp.var(x, axis=tuple(range(x.ndim - 1)))
  else:
    var = jnp.asarray(running_var, x.dtype)
  return _scaled(x, var, weight, eps, explain)


def group_norm_uncentered(
    x: Array,
    num_groups: int,
    weight: Array | None = None,
    *,
    eps: float = DEFAULT_EPS,
    explain: bool = False,
) -> Array:
  """Uncentred group norm: per image and channel group, ``(N, ..., C) -> (N, ..., C)``.

  Channel ``c`` is in group ``c // (C / G)`` (PyTorch's order).
  """
  x = _acc(x)
  c = x.shape[-1]
  if num_groups < 1 or c % num_groups:
    raise ValueError(f"{c} channels cannot be split into {num_groups} groups.")
  grouped = x.reshape(*x.shape[:-1], num_groups, c // num_groups)
  axes = tuple(range(1, grouped.ndim - 2)) + (grouped.ndim - 1,)
  var = jnp.var(grouped, axis=axes, keepdims=True)
  y = _scaled(grouped, var, None, eps, explain).reshape(x.shape)
  return y if weight is None else y * weight


def layer_norm_uncentered(
    x: Array, weight: Array | None = None, *, eps: float = DEFAULT_EPS, explain: bool = False
) -> Array:
  """Uncentred layer norm of feature maps: group norm with one group (all of ``H, W, C``)."""
  return group_norm_uncentered(x, 1, weight, eps=eps, explain=explain)


def position_norm_uncentered(
    x: Array, weight: Array | None = None, *, eps: float = DEFAULT_EPS, explain: bool = False
) -> Array:
  """Uncentred position norm: statistics over the last (channel) axis only, any rank.

  On ``(N, T, D)`` tokens this is an uncentred, bias-free layer norm.
  """
  x = _acc(x)
  var = jnp.var(x, axis=-1, keepdims=True)
  return _scaled(x, var, weight, eps, explain)


def fold_batch_norm(weight: Any | None, running_var: Any, eps: float = DEFAULT_EPS):
  """The per-channel scale ``γ / √(running_var + eps)`` of an uncentred BN in eval mode.

  Computed in float64 from numpy (or anything ``np.asarray`` takes) and returned
  as float32 numpy.
  """
  var = np.asarray(running_var, np.float64)
  gamma = np.ones_like(var) if weight is None else np.asarray(weight, np.float64)
  return (gamma / np.sqrt(var + eps)).astype(np.float32)


#: Names of the norm choices of the B-cos models (see :func:`codajax.bcos.layers.make_norm`).
NORM_KINDS: tuple[str, ...] = ("bn", "gn", "ln", "pn", "none")

#: Groups of ``norm="gn"``: 2, as the authors' CIFAR-10 norm ablation (``gnu``).
GN_GROUPS = 2


def check_norm_kind(kind: str) -> None:
  """Raises ``ValueError`` unless ``kind`` is one of :data:`NORM_KINDS`."""
  if kind not in NORM_KINDS:
    raise ValueError(f"Unknown B-cos norm {kind!r}; known: {', '.join(NORM_KINDS)}.")
