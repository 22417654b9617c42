"""Flax Linen B-cos layers over the functional ops (:mod:`codajax.bcos.ops`, :mod:`~.norms`).

Every layer takes ``explain`` (detach its dynamic factor / statistics, computed
in float32 whatever ``dtype``, see :func:`codajax.nn.explanation_dtype`),
``dtype`` (computation; ``None``: the input's) and ``param_dtype`` (float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from codajax.bcos import norms as norm_ops
from codajax.bcos import ops
from codajax.nn.modules import explanation_dtype

Array = jax.Array

#: He-normal over fan-out, as the authors initialise their convolutions. The
#: weights are normalised per unit in the forward pass, so only their
#: directions matter (isotropic for any zero-mean Gaussian).
default_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _dtype(dtype: Any, explain: bool) -> Any:
  return explanation_dtype(dtype) if explain else dtype


def apply_bcos_conv(layer: Any, x: Array, kernel: Array, explain: bool) -> Array:
  """:func:`~codajax.bcos.ops.bcos_conv` of ``x`` with ``kernel`` and the settings of ``layer``.

  ``layer``: a :class:`BcosConv` or its NNX twin (``b``, ``max_out``, ``strides``,
  ``padding``, ``groups``, ``scale``, ``dtype``). ``(N, H, W, C) -> (N, H', W', O)``.
  """
  return ops.bcos_conv(
      x,
      kernel,
      b=layer.b,
      max_out=layer.max_out,
      strides=layer.strides,
      padding=layer.padding,
      groups=layer.groups,
      scale=layer.scale,
      explain=explain,
      dtype=_dtype(layer.dtype, explain),
  )


def apply_bcos_dense(layer: Any, x: Array, kernel: Array, explain: bool) -> Array:
  """:func:`~codajax.bcos.ops.bcos_dense` of ``x`` with ``kernel`` and the settings of ``layer``.

  ``layer``: a :class:`BcosDense` or its NNX twin (``b``, ``max_out``, ``scale``,
  ``dtype``). ``(..., C) -> (..., O)``.
  """
  return ops.bcos_dense(
      x,
      kernel,
      b=layer.b,
      max_out=layer.max_out,
      scale=layer.scale,
      explain=explain,
      dtype=_dtype(layer.dtype, explain),
  )


def _optional_scale(norm: nn.Module, channels: int) -> Array | None:
  """``norm``'s per-channel ``scale`` parameter (ones at init), ``None`` unless ``use_scale``."""
  if not norm.use_scale:
    return None
  return norm.param("scale", nn.initializers.ones, (channels,), norm.param_dtype)


class BcosConv(nn.Module):
  """A B-cos convolution (:func:`codajax.bcos.ops.bcos_conv`), parameter ``kernel``.

  Attributes:
    features: output channels ``O``.
    kernel_size: ``k``.
    strides: ``s``.
    padding: symmetric zero padding (``None``: ``(k − 1) // 2``).
    groups: channel groups.
    b: the exponent ``B``.
    max_out: MaxOut size ``M``; the kernel has ``O·M`` output channels.
    scale: output divisor.
    dtype, param_dtype: computation and parameter dtypes.
    kernel_init: initialiser of ``kernel`` ``(k, k, C / groups, O·M)``.
  """

  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: int | None = None
  groups: int = 1
  b: float = 2.0
  max_out: int = 1
  scale: float = 1.0
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., Array] = default_kernel_init

  @nn.compact
  def __call__(self, x: Array, explain: bool = False) -> Array:
    """``(N, H, W, C) -> (N, H', W', features)``."""
    shape = (
        self.kernel_size,
        self.kernel_size,
        x.shape[-1] // self.groups,
        self.features * self.max_out,
    )
    kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
    return apply_bcos_conv(self, x, kernel, explain)


class BcosDense(nn.Module):
  """A B-cos dense layer (:func:`codajax.bcos.ops.bcos_dense`), ``kernel`` ``(C, O·M)``."""

  features: int
  b: float = 2.0
  max_out: int = 1
  scale: float = 1.0
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., Array] = default_kernel_init

  @nn.compact
  def __call__(self, x: Array, explain: bool = False) -> Array:
    """``(..., C) -> (..., features)``."""
    kernel = self.param(
        "kernel", self.kernel_init, (x.shape[-1], self.features * self.max_out), self.param_dtype
    )
    return apply_bcos_dense(self, x, kernel, explain)


class FrozenBatchNormUncentered(nn.Module):
  """The authors' uncentred batch norm in eval mode: ``x · scale``, ``scale = γ/√(var + eps)``.

  One parameter ``scale`` ``(C,)`` (ones at init); the converter writes
  :func:`codajax.bcos.norms.fold_batch_norm` of the released ``weight`` and
  ``running_var`` into it. Linear, so ``explain`` changes nothing.
  """

  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, explain: bool = False) -> Array:
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return x * scale


class GroupNormUncentered(nn.Module):
  """Uncentred group norm (:func:`codajax.bcos.norms.group_norm_uncentered`), parameter ``scale``.

  Attributes:
    num_groups: ``G`` (``1``: the uncentred layer norm of feature maps).
    eps: added to the variance.
    use_scale: learn a per-channel ``γ`` (``scale``, ones at init).
  """

  num_groups: int = 1
  eps: float = norm_ops.DEFAULT_EPS
  use_scale: bool = True
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, explain: bool = False) -> Array:
    return norm_ops.group_norm_uncentered(
        x, self.num_groups, _optional_scale(self, x.shape[-1]), eps=self.eps, explain=explain
    )


class PositionNormUncentered(nn.Module):
  """Uncentred position norm (statistics over the last axis), parameter ``scale``.

  On ``(N, T, D)`` tokens: an uncentred, bias-free layer norm (B-cos ViTs).
  """

  eps: float = norm_ops.DEFAULT_EPS
  use_scale: bool = True
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, explain: bool = False) -> Array:
    return norm_ops.position_norm_uncentered(
        x, _optional_scale(self, x.shape[-1]), eps=self.eps, explain=explain
    )


class Identity(nn.Module):
  """No normalisation (``norm="none"``)."""

  @nn.compact
  def __call__(self, x: Array, explain: bool = False) -> Array:
    return x


def make_norm(
    kind: str, channels: int, *, name: str | None = None, param_dtype: Any = jnp.float32
) -> nn.Module:
  """The norm layer of ``kind`` for ``channels`` channels.

  ``"bn"``: :class:`FrozenBatchNormUncentered` (imported models);
  ``"gn"``: :class:`GroupNormUncentered` with ``gcd(2, channels)`` groups (the authors'
  CIFAR ablation);
  ``"ln"``: group norm with one group; ``"pn"``: :class:`PositionNormUncentered`;
  ``"none"``: identity.
  """
  if kind == "bn":
    return FrozenBatchNormUncentered(param_dtype, name=name)
  if kind == "gn":
    return GroupNormUncentered(
        math.gcd(norm_ops.GN_GROUPS, channels), param_dtype=param_dtype, name=name
    )
  if kind == "ln":
    return GroupNormUncentered(1, param_dtype=param_dtype, name=name)
  if kind == "pn":
    return PositionNormUncentered(param_dtype=param_dtype, name=name)
  if kind == "none":
    return Identity(name=name)
  raise ValueError(f"Unknown B-cos norm {kind!r}; known: {', '.join(norm_ops.NORM_KINDS)}.")
