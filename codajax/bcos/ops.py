"""Functional B-cos ops (Böhle, Fritz & Schiele, CVPR 2022 / TPAMI 2024), NHWC / HWIO.

A B-cos unit with weight ``w`` maps an input (patch) ``x`` to::

    ŵ       = w / ‖w‖                                   unit-norm weight
    lin     = ŵ · x                                       a plain (unit-norm) linear unit
    cos     = lin / ‖x‖                                   cosine of the angle between ŵ and x
    B-cos_B = |cos|^(B − 1) · lin                         the B-cos transform

``B = 1`` is exactly the unit-norm linear layer (no norm is computed). ``B = 2``
is computed as ``|lin| / ‖x‖ · lin``; any other ``B`` as
``(|lin / ‖x‖| + 1e-6)^(B − 1) · lin`` (the authors' formula, including their
``1e-6``). With ``max_out = M > 1`` a layer has ``M`` weight vectors per output
(consecutive output channels ``o·M .. o·M + M − 1`` of the kernel) and keeps the
largest linear response before the dynamic factor (MaxOut). The result is
divided by ``scale`` (1 for the v2 models; the v1 models used ``k·√C / 100``,
see :func:`default_scale`).

Norms, as the authors compute them:

* convolution: ``‖x‖ = √(Σ_patch x² + 1e-6)``, the sum over the ``k×k×C``
  patch *including the zero padding* (so padded positions count as zeros), per
  channel group for grouped convolutions;
* dense: ``‖x‖ = √(Σ x²) + 1e-12``.

``explain=True`` detaches (``stop_gradient``) the dynamic factor
``|cos|^(B − 1)`` (both the linear response inside it and the norm), so the op
is exactly linear in ``x``: ``out = W(x₀) x`` with ``W`` frozen at the input it
was called with, and the gradient of an output with respect to the input is its
dynamic linear weight.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array

#: Added to the patch sum of squares before the square root (convolutions).
PATCH_NORM_EPS = 1e-6
#: Added to the vector norm (dense layers).
DENSE_NORM_EPS = 1e-12
#: Added to ``|cos|`` before raising it to ``B − 1`` for ``B ∉ {1, 2}``.
COS_EPS = 1e-6

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
  if isinstance(value, int):
    return (value, value)
  value = tuple(int(v) for v in value)
  if len(value) != 2:
    raise ValueError(f"{name} must be an int or a pair, got {value!r}.")
  return value


def _padding(
    padding: int | Sequence[int] | None, kernel_hw: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
  """Explicit symmetric zero padding; ``None``: ``(k − 1) // 2`` per spatial axis."""
  if padding is None:
    return tuple(((k - 1) // 2, (k - 1) // 2) for k in kernel_hw)
  ph, pw = _pair(padding, "padding")
  return ((ph, ph), (pw, pw))


def _accumulation_dtype(dtype: Any) -> Any:
  """float32 for bfloat16/float16/float32, float64 for float64."""
  return jnp.promote_types(dtype, jnp.float32)


def _check_b_and_max_out(b: float, max_out: int) -> None:
  if not (isinstance(b, (int, float)) and math.isfinite(b) and b >= 1):
    raise ValueError(f"b must be a finite number >= 1, got {b!r}.")
  if isinstance(max_out, bool) or not isinstance(max_out, int) or max_out < 1:
    raise ValueError(f"max_out must be a positive integer, got {max_out!r}.")


def unit_norm(kernel: Array, axes: Sequence[int]) -> Array:
  """``kernel / ‖kernel‖`` with the norm over ``axes`` (one unit vector per output unit)."""
  kernel = jnp.asarray(kernel)
  norm = jnp.sqrt(jnp.sum(jnp.square(kernel), axis=tuple(axes), keepdims=True))
  return kernel / norm


def maxout(y: Array, size: int) -> Array:
  """MaxOut over consecutive channels: ``(..., O·M) -> (..., O)``, ``M = size``."""
  if size == 1:
    return y
  if y.shape[-1] % size:
    raise ValueError(f"{y.shape[-1]} channels cannot form MaxOut groups of {size}.")
  return jnp.max(y.reshape(*y.shape[:-1], y.shape[-1] // size, size), axis=-1)


def default_scale(kernel_size: int, in_channels: int, scale_factor: float = 100.0) -> float:
  """The v1 output scale ``k·√C / scale_factor`` (B-cos v2 models use ``scale = 1``)."""
  return kernel_size * math.sqrt(in_channels) / scale_factor


def patch_norms(
    x: Array,
    kernel_size: int | Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding: int | Sequence[int] | None = None,
    groups: int = 1,
    eps: float = PATCH_NORM_EPS,
) -> Array:
  """Norms of the convolution patches, as the authors compute them.

  ``‖x_patch‖ = √(Σ_{i,j ∈ window, c ∈ group} x[i, j, c]² + eps)``; the window
  includes the zero padding.

  Args:
    x: ``(N, H, W, C)``.
    kernel_size: ``k`` or ``(kh, kw)``.
    strides, padding: as the convolution (``padding=None``: ``(k − 1) // 2``).
    groups: channel groups ``G`` (each group's patch has its own norm).
    eps: added under the square root.

  Returns:
    ``(N, H', W', G)`` in the accumulation dtype (float32, float64 for float64).
  """
  kh, kw = _pair(kernel_size, "kernel_size")
  sh, sw = _pair(strides, "strides")
  n, h, w, c = x.shape
  if c % groups:
    raise ValueError(f"{c} input channels cannot be split into {groups} groups.")
  squares = jnp.square(x.astype(_accumulation_dtype(x.dtype)))
  squares = jnp.sum(squares.reshape(n, h, w, groups, c // groups), axis=-1)
  pads = _padding(padding, (kh, kw))
  sums = lax.reduce_window(
      squares,
      np.zeros((), squares.dtype),
      lax.add,
      (1, kh, kw, 1),
      (1, sh, sw, 1),
      ((0, 0), *pads, (0, 0)),
  )
  return jnp.sqrt(sums + eps)


def dynamic_factor(lin: Array, norm: Array, b: float) -> Array:
  """``|cos|^(B − 1)`` with ``cos = lin / norm``; the authors' two formulas (``B > 1``)."""
  if b == 2:
    return jnp.abs(lin) / norm
  return jnp.power(jnp.abs(lin / norm) + COS_EPS, b - 1)


def _bcos_finish(lin: Array, norm_fn, b: float, scale: float, explain: bool) -> Array:
  """The dynamic factor times ``lin``, divided by ``scale``."""
  if b != 1:
    norm = norm_fn()
    factor_in = lax.stop_gradient(lin) if explain else lin
    factor = dynamic_factor(factor_in, norm, b)
    if explain:
      factor = lax.stop_gradient(factor)
    lin = factor * lin
  return lin if scale == 1 else lin / scale


def bcos_conv(
    x: Array,
    kernel: Array,
    *,
    b: float = 2.0,
    max_out: int = 1,
    strides: int | Sequence[int] = 1,
    padding: int | Sequence[int] | None = None,
    groups: int = 1,
    scale: float = 1.0,
    explain: bool = False,
    dtype: Any = None,
) -> Array:
  """A B-cos convolution: ``(N, H, W, C) -> (N, H', W', O)``.

  ``out = |cos(x_patch, ŵ_o)|^(B − 1) · (ŵ_o · x_patch) / scale`` with
  ``ŵ_o = w_o / ‖w_o‖`` (see the module docstring for the norms and MaxOut).

  Args:
    x: ``(N, H, W, C)``.
    kernel: ``(kh, kw, C / groups, O·max_out)`` (HWIO); normalised per output
      channel here, so any scale of the stored weights gives the same layer.
    b: the exponent ``B >= 1`` (``1``: exactly linear).
    max_out: MaxOut group size ``M`` (1: none).
    strides: ``s`` or ``(sh, sw)``.
    padding: symmetric zero padding, ``p`` or ``(ph, pw)``; ``None``: ``(k − 1) // 2``.
    groups: channel groups of the convolution (``feature_group_count``).
    scale: the output is divided by it.
    explain: detach the dynamic factor (exactly linear in ``x``).
    dtype: dtype of the convolution's operands (``None``: ``x``'s);
      it accumulates in float32 (float64 for float64 inputs).

  Returns:
    ``(N, H', W', O)`` in the accumulation dtype.
  """
  _check_b_and_max_out(b, max_out)
  if x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(
        f"bcos_conv expects x (N, H, W, C) and an HWIO kernel, got shapes "
        f"{tuple(x.shape)} and {tuple(kernel.shape)}."
    )
  kh, kw, cin, cout = kernel.shape
  if cin * groups != x.shape[-1]:
    raise ValueError(
        f"kernel {tuple(kernel.shape)} with groups={groups} expects "
        f"{cin * groups} input channels, x has {x.shape[-1]}."
    )
  if cout % max_out or (cout // max_out) % groups:
    raise ValueError(
        f"kernel output channels {cout} must be max_out ({max_out}) x a "
        f"multiple of groups ({groups})."
    )
  dtype = dtype or x.dtype
  acc = _accumulation_dtype(dtype)
  w_hat = unit_norm(kernel.astype(acc), (0, 1, 2)).astype(dtype)
  pads = _padding(padding, (kh, kw))
  lin = lax.conv_general_dilated(
      x.astype(dtype),
      w_hat,
      window_strides=_pair(strides, "strides"),
      padding=pads,
      dimension_numbers=_DIMENSION_NUMBERS,
      feature_group_count=groups,
      preferred_element_type=acc,
  )
  lin = maxout(lin, max_out)
  out_channels = lin.shape[-1]

  def norm_fn():
    norms = patch_norms(x.astype(dtype), (kh, kw), strides=strides, padding=padding, groups=groups)
    return jnp.repeat(norms, out_channels // groups, axis=-1) if groups > 1 else norms

  return _bcos_finish(lin, norm_fn, b, scale, explain)


def bcos_dense(
    x: Array,
    kernel: Array,
    *,
    b: float = 2.0,
    max_out: int = 1,
    scale: float = 1.0,
    explain: bool = False,
    dtype: Any = None,
) -> Array:
  """A B-cos dense layer: ``(..., C) -> (..., O)``.

  ``out = |cos(x, ŵ_o)|^(B − 1) · (ŵ_o · x) / scale``, ``ŵ_o = w_o / ‖w_o‖``,
  ``‖x‖ = √(Σ x²) + 1e-12`` over the last axis.

  Args:
    x: ``(..., C)``.
    kernel: ``(C, O·max_out)``, normalised per output column here.
    b, max_out, scale, explain, dtype: as :func:`bcos_conv`.

  Returns:
    ``(..., O)`` in the accumulation dtype.
  """
  _check_b_and_max_out(b, max_out)
  if kernel.ndim != 2 or kernel.shape[0] != x.shape[-1]:
    raise ValueError(
        f"bcos_dense expects a (C, O) kernel for x (..., C), got kernel "
        f"{tuple(kernel.shape)} and x {tuple(x.shape)}."
    )
  if kernel.shape[1] % max_out:
    raise ValueError(
        f"kernel output units {kernel.shape[1]} are not a multiple of " f"max_out={max_out}."
    )
  dtype = dtype or x.dtype
  acc = _accumulation_dtype(dtype)
  w_hat = unit_norm(kernel.astype(acc), (0,)).astype(dtype)
  lin = jnp.einsum("...c,co->...o", x.astype(dtype), w_hat, preferred_element_type=acc)
  lin = maxout(lin, max_out)

  def norm_fn():
    xa = x.astype(acc)
    return jnp.sqrt(jnp.sum(jnp.square(xa), axis=-1, keepdims=True)) + DENSE_NORM_EPS

  return _bcos_finish(lin, norm_fn, b, scale, explain)


def logit_layer(x: Array, temperature: float | None = None, bias: float | None = None) -> Array:
  """The authors' logit layer: ``x / temperature + bias`` (``None``: 1 and 0)."""
  if temperature is not None:
    x = x / temperature
  if bias is not None:
    x = x + bias
  return x
