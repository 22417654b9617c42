"""Flax NNX B-cos layers: the same functions and parameter names as :mod:`codajax.bcos.layers`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from codajax.bcos import norms as norm_ops
from codajax.bcos.layers import apply_bcos_conv, apply_bcos_dense, default_kernel_init

Array = jax.Array


class NNXBcosConv(nnx.Module):
  """A B-cos convolution (NNX); ``kernel`` ``(k, k, C / groups, O·max_out)``.

  Args: ``in_features`` ``C``, then as :class:`codajax.bcos.layers.BcosConv`; ``rngs``.
  """

  def __init__(
      self,
      in_features: int,
      features: int,
      kernel_size: int = 3,
      strides: int = 1,
      padding: int | None = None,
      groups: int = 1,
      b: float = 2.0,
      max_out: int = 1,
      scale: float = 1.0,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      kernel_init: Callable[..., Array] = default_kernel_init,
      *,
      rngs: nnx.Rngs,
  ):
    if in_features % groups:
      raise ValueError(f"{in_features} input channels cannot be split into {groups} groups.")
    self.features, self.kernel_size, self.strides = features, kernel_size, strides
    self.padding, self.groups, self.b, self.max_out = padding, groups, b, max_out
    self.scale, self.dtype = scale, dtype
    shape = (kernel_size, kernel_size, in_features // groups, features * max_out)
    self.kernel = nnx.Param(kernel_init(rngs.params(), shape, param_dtype))

  def __call__(self, x: Array, explain: bool = False) -> Array:
    """``(N, H, W, C) -> (N, H', W', features)``."""
    return apply_bcos_conv(self, x, self.kernel[...], explain)


class NNXBcosDense(nnx.Module):
  """A B-cos dense layer (NNX); ``kernel`` ``(C, O·max_out)``."""

  def __init__(
      self,
      in_features: int,
      features: int,
      b: float = 2.0,
      max_out: int = 1,
      scale: float = 1.0,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      kernel_init: Callable[..., Array] = default_kernel_init,
      *,
      rngs: nnx.Rngs,
  ):
    self.features, self.b, self.max_out, self.scale, self.dtype = (
        features,
        b,
        max_out,
        scale,
        dtype,
    )
    self.kernel = nnx.Param(
        kernel_init(rngs.params(), (in_features, features * max_out), param_dtype)
    )

  def __call__(self, x: Array, explain: bool = False) -> Array:
    """``(..., C) -> (..., features)``."""
    return apply_bcos_dense(self, x, self.kernel[...], explain)


class NNXFrozenBatchNormUncentered(nnx.Module):
  """``x · scale`` (the authors' batch norm in eval mode, running variance folded in)."""

  def __init__(
      self, num_features: int, param_dtype: Any = jnp.float32, *, rngs: nnx.Rngs | None = None
  ):
    self.scale = nnx.Param(jnp.ones((num_features,), param_dtype))

  def __call__(self, x: Array, explain: bool = False) -> Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32)) * self.scale[...]


class NNXGroupNormUncentered(nnx.Module):
  """Uncentred group norm (NNX); ``num_groups=1``: the uncentred layer norm."""

  def __init__(
      self,
      num_features: int,
      num_groups: int = 1,
      eps: float = norm_ops.DEFAULT_EPS,
      use_scale: bool = True,
      param_dtype: Any = jnp.float32,
      *,
      rngs: nnx.Rngs | None = None,
  ):
    if num_features % num_groups:
      raise ValueError(f"{num_features} channels cannot be split into {num_groups} groups.")
    self.num_groups, self.eps = num_groups, eps
    self.scale = nnx.Param(jnp.ones((num_features,), param_dtype)) if use_scale else None

  def __call__(self, x: Array, explain: bool = False) -> Array:
    weight = None if self.scale is None else self.scale[...]
    return norm_ops.group_norm_uncentered(x, self.num_groups, weight, eps=self.eps, explain=explain)


class NNXPositionNormUncentered(nnx.Module):
  """Uncentred position norm (statistics over the last axis) (NNX)."""

  def __init__(
      self,
      num_features: int,
      eps: float = norm_ops.DEFAULT_EPS,
      use_scale: bool = True,
      param_dtype: Any = jnp.float32,
      *,
      rngs: nnx.Rngs | None = None,
  ):
    self.eps = eps
    self.scale = nnx.Param(jnp.ones((num_features,), param_dtype)) if use_scale else None

  def __call__(self, x: Array, explain: bool = False) -> Array:
    weight = None if self.scale is None else self.scale[...]
    return norm_ops.position_norm_uncentered(x, weight, eps=self.eps, explain=explain)


class NNXIdentity(nnx.Module):
  """No normalisation."""

  def __init__(self, num_features: int = 0, *, rngs: nnx.Rngs | None = None):
    del num_features

  def __call__(self, x: Array, explain: bool = False) -> Array:
    return x


def make_nnx_norm(kind: str, channels: int, param_dtype: Any = jnp.float32) -> nnx.Module:
  """NNX twin of :func:`codajax.bcos.layers.make_norm`."""
  if kind == "bn":
    return NNXFrozenBatchNormUncentered(channels, param_dtype)
  if kind == "gn":
    return NNXGroupNormUncentered(
        channels, math.gcd(norm_ops.GN_GROUPS, channels), param_dtype=param_dtype
    )
  if kind == "ln":
    return NNXGroupNormUncentered(channels, 1, param_dtype=param_dtype)
  if kind == "pn":
    return NNXPositionNormUncentered(channels, param_dtype=param_dtype)
  if kind == "none":
    return NNXIdentity(channels)
  raise ValueError(f"Unknown B-cos norm {kind!r}; known: {', '.join(norm_ops.NORM_KINDS)}.")
