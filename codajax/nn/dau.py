"""Functional Dynamic Alignment Unit (DAU) convolutions.

A CoDA layer with ``D`` DAUs of rank ``r`` maps each input patch ``x ∈ R^P``
(``P = C·k²``) to ``D`` outputs::

    z     = B x                      B: r × P, shared by the layer's DAUs
    w_d   = A_d z + w0_d             A_d: P × r, w0_d ∈ R^P  (the static part of the weight)
    out_d = (w_d · x) · s(‖w_d‖²)    squash: s(n²) = √n² / (1 + n²);  l2: s(n²) = 1 / √n²

Parameters are a plain dict (all float32 by default, HWIO convolution layout)::

    {"B": (k, k, C, r),  "A": (k, k, C, D, r),  "w0": (k, k, C, D)}

so that ``A[ki, kj, c, d, :]`` is row ``(c, ki, kj)`` of ``A_d``.

Two forms compute the same function:

* ``"explicit"`` materialises every dynamic weight ``w`` (``D·P`` numbers per
  output position), as the authors' PyTorch code does;
* ``"implicit"`` (the default) never forms ``w``: ``A_dᵀx`` for all ``d`` and
  ``w0_d·x`` come from one ordinary convolution of the input, ``u_d = z·(A_dᵀx) +
  w0_d·x`` and ``‖w_d‖² = zᵀ(A_dᵀA_d)z + 2(A_dᵀw0_d)·z + ‖w0_d‖²`` from small
  per-layer Gram matrices.

With ``explain=True`` the dynamic weights and the norm factor are detached
(``stop_gradient``), so the layer is exactly linear in its input and the
gradient of an output with respect to the input is the dynamic weight itself.

With ``weights_input=h`` the dynamic weights and the norm factor are computed
from ``h`` instead of ``x``: the layer is then exactly linear in ``x`` (the
same value as explanation mode when ``x = h``) while the weights stay
differentiable with respect to the parameters and ``h``. This makes the
network's dynamic linear map itself differentiable in the parameters (used by
:mod:`codajax.regularizers`).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
Norm = Literal["squash", "l2"]
Form = Literal["implicit", "explicit"]

NORMS: tuple[str, ...] = ("squash", "l2")
FORMS: tuple[str, ...] = ("implicit", "explicit")

# Below this squared norm a weight vector counts as zero: the norm factor is
# set to its limit (0) and no gradient flows through the norm.
_TINY_SQUARED_NORM = 1e-30

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def uniform_fan_in(fan_in: int):
  """PyTorch's default ``Conv2d`` init, ``U(±1/√fan_in)``, as a JAX initializer."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


PARAM_NAMES: tuple[str, ...] = ("B", "A", "w0")


def param_shapes(
    in_channels: int, features: int, rank: int, kernel_size: int
) -> dict[str, tuple[int, ...]]:
  """Shapes of one CoDA layer's parameters: ``B (k, k, C, r)``, ``A (k, k, C, D, r)``, ``w0 (k, k, C, D)``."""
  k, c, d, r = kernel_size, in_channels, features, rank
  return {"B": (k, k, c, r), "A": (k, k, c, d, r), "w0": (k, k, c, d)}


def param_initializers(in_channels: int, rank: int, kernel_size: int) -> dict[str, Any]:
  """The reference's (PyTorch default) initialisers of ``B``, ``A`` and ``w0``.

  ``B ~ U(±1/√(C·k²))``, ``A ~ U(±1/√r)``, ``w0 ~ U(±1/√r)`` (``A`` and ``w0`` are
  the weight and bias of a 1×1 convolution with ``r`` input channels). Each is a
  JAX initializer ``(key, shape, dtype) -> Array``, shared by every CoDA layer
  class (Linen, NNX) and :func:`init_dau_params`.
  """
  fan_in_b = in_channels * kernel_size * kernel_size
  return {"B": uniform_fan_in(fan_in_b), "A": uniform_fan_in(rank), "w0": uniform_fan_in(rank)}


def init_dau_params(
    key: Array,
    in_channels: int,
    features: int,
    rank: int,
    kernel_size: int,
    dtype=jnp.float32,
) -> dict[str, Array]:
  """Initialises one CoDA layer as the reference does (see :func:`param_initializers`).

  Returns:
    ``{"B": (k, k, C, r), "A": (k, k, C, D, r), "w0": (k, k, C, D)}``.
  """
  shapes = param_shapes(in_channels, features, rank, kernel_size)
  inits = param_initializers(in_channels, rank, kernel_size)
  keys = dict(zip(PARAM_NAMES, jax.random.split(key, 3)))
  return {name: inits[name](keys[name], shapes[name], dtype) for name in ("B", "A", "w0")}


def num_params(in_channels: int, features: int, rank: int, kernel_size: int) -> int:
  """Parameter count of one CoDA layer: ``C·r·k² + r·P·D + P·D``."""
  patch = in_channels * kernel_size**2
  return patch * rank + rank * patch * features + patch * features


def output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
  """Spatial output size ``⌊(size + 2p − k)/s⌋ + 1`` of a convolution."""
  return (size + 2 * padding - kernel_size) // stride + 1


def _conv(x: Array, kernel: Array, stride: int, padding: int) -> Array:
  """NHWC × HWIO convolution with explicit symmetric padding, float32 accumulation."""
  return lax.conv_general_dilated(
      x,
      kernel,
      window_strides=(stride, stride),
      padding=((padding, padding), (padding, padding)),
      dimension_numbers=_DIMENSION_NUMBERS,
      preferred_element_type=jnp.float32,
  )


def extract_patches(x: Array, kernel_size: int, stride: int, padding: int) -> Array:
  """im2col: ``(N, H, W, C) -> (N, H', W', C·k²)``, patch index ``c·k² + ki·k + kj``.

  This is the element order of PyTorch's ``F.unfold``.
  """
  return lax.conv_general_dilated_patches(
      x,
      filter_shape=(kernel_size, kernel_size),
      window_strides=(stride, stride),
      padding=((padding, padding), (padding, padding)),
      dimension_numbers=_DIMENSION_NUMBERS,
  )


def _flat_dynamic_factors(params: dict[str, Array]) -> tuple[Array, Array]:
  """``A`` as (P, D, r) and ``w0`` as (P, D), rows in ``c·k² + ki·k + kj`` order."""
  k, _, c, d, r = params["A"].shape
  a = jnp.transpose(params["A"], (2, 0, 1, 3, 4)).reshape(c * k * k, d, r)
  b = jnp.transpose(params["w0"], (2, 0, 1, 3)).reshape(c * k * k, d)
  return a, b


def norm_factor(squared_norm: Array, norm: Norm) -> Array:
  """The DAU's output scale ``s(‖w‖²)``, safe at ``w = 0``.

  squash: ``√n² / (1 + n²)``; l2: ``1 / √n²``. At (numerically) zero norm the
  factor is 0 and its gradient is 0 instead of NaN; elsewhere the formula is
  exact (no epsilon).
  """
  if norm not in NORMS:
    raise ValueError(f"Unknown norm {norm!r}; known norms: {', '.join(NORMS)}.")
  is_zero = squared_norm <= _TINY_SQUARED_NORM
  safe = jnp.where(is_zero, 1.0, squared_norm)
  if norm == "squash":
    factor = jnp.sqrt(safe) / (1.0 + safe)
  else:
    factor = lax.rsqrt(safe)
  return jnp.where(is_zero, 0.0, factor)


def dynamic_weights(
    params: dict[str, Array], x: Array, *, stride: int = 1, padding: int = 0
) -> Array:
  """Materialised dynamic weights ``w`` of every DAU at every output position.

  Args:
    params: one layer's parameters (see module docstring).
    x: layer input, ``(N, H, W, C)``.

  Returns:
    ``(N, H', W', P, D)`` with ``P = C·k²`` in ``c·k² + ki·k + kj`` order.
  """
  a, b = _flat_dynamic_factors(params)
  z = _conv(x, params["B"].astype(x.dtype), stride, padding)
  return jnp.einsum("nhwr,pdr->nhwpd", z, a) + b


def _explicit_raw_and_norm(params, x, weights_input, stride, padding, explain):
  """Explicit form: ``u = w·x`` and ``‖w‖²`` from the materialised weights ``w(weights_input)``."""
  k = params["B"].shape[0]
  w = dynamic_weights(params, weights_input, stride=stride, padding=padding)
  if explain:
    w = lax.stop_gradient(w)
  patches = extract_patches(x, k, stride, padding).astype(jnp.float32)
  u = jnp.einsum("nhwp,nhwpd->nhwd", patches, w)
  return u, jnp.sum(jnp.square(w), axis=-2)


def _implicit_raw_and_norm(params, x, weights_input, stride, padding, explain):
  """Implicit form: ``u`` and ``‖w‖²`` without forming ``w``.

  One convolution of ``x`` with ``r + D·r + D`` output channels gives ``z = Bx``,
  ``A_dᵀx`` and ``w0_d·x``; the squared norm comes from the Gram matrices. When
  the weights come from another tensor (``weights_input is not x``), ``z`` is a
  separate convolution of that tensor.
  """
  k, _, c, d, r = params["A"].shape
  kernel = jnp.concatenate(
      [params["B"], params["A"].reshape(k, k, c, d * r), params["w0"]], axis=-1
  )
  if explain:  # the weights are constants: no gradient reaches the parameters
    kernel = lax.stop_gradient(kernel)
  kernel = kernel.astype(x.dtype)
  if weights_input is x:
    z, y = jnp.split(_conv(x, kernel, stride, padding), [r], axis=-1)
  else:
    z = _conv(weights_input, kernel[..., :r], stride, padding)
    y = _conv(x, kernel[..., r:], stride, padding)
  a_x, b_x = jnp.split(y, [d * r], axis=-1)
  a_x = a_x.reshape(*a_x.shape[:-1], d, r)

  a, b = _flat_dynamic_factors(params)
  a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  gram = jnp.einsum("pdr,pds->drs", a, a)            # (D, r, r)
  cross = jnp.einsum("pdr,pd->dr", a, b)             # (D, r)
  bias_sq = jnp.sum(jnp.square(b), axis=0)           # (D,)

  z_w = lax.stop_gradient(z) if explain else z       # z only shapes the weights
  u = jnp.einsum("nhwr,nhwdr->nhwd", z_w, a_x) + b_x
  squared_norm = (
      jnp.einsum("nhwr,drs,nhws->nhwd", z, gram, z)
      + 2.0 * jnp.einsum("nhwr,dr->nhwd", z, cross)
      + bias_sq
  )
  # The Gram expansion can round slightly below zero when ‖w‖ is tiny.
  return u, jnp.maximum(squared_norm, 0.0)


def dau_conv(
    params: dict[str, Array],
    x: Array,
    *,
    stride: int = 1,
    padding: int = 0,
    norm: Norm = "squash",
    form: Form = "implicit",
    explain: bool = False,
    compute_dtype=None,
    weights_input: Array | None = None,
) -> Array:
  """A CoDA layer: ``D`` dynamic alignment units applied convolutionally.

  Args:
    params: ``{"B": (k, k, C, r), "A": (k, k, C, D, r), "w0": (k, k, C, D)}``.
    x: ``(N, H, W, C)`` layer input.
    stride: convolution stride ``s``.
    padding: explicit symmetric zero padding ``p`` on every side (not XLA's
      "SAME", which pads strided layers asymmetrically).
    norm: ``"squash"`` (all published models) or ``"l2"`` (the intended ``u/‖w‖``).
    form: ``"implicit"`` (default, never materialises ``w``) or ``"explicit"``.
    explain: detach the dynamic weights and the norm factor so the layer is
      exactly linear in ``x``.
    compute_dtype: dtype of the convolution inputs (e.g. ``jnp.bfloat16``);
      accumulation, Gram matrices and norms stay float32. Default: ``x.dtype``.
    weights_input: compute the dynamic weights and the norm factor from this
      tensor (shaped like ``x``) instead of ``x``: the output is exactly linear
      in ``x`` and differentiable in ``params`` and ``weights_input``.
      Default: ``x``.

  Returns:
    ``(N, H', W', D)`` with ``H' = ⌊(H + 2p − k)/s⌋ + 1``, in ``compute_dtype``.
  """
  if x.ndim != 4:
    raise ValueError(f"dau_conv expects NHWC input of rank 4, got shape {x.shape}.")
  in_channels = params["B"].shape[2]
  if x.shape[-1] != in_channels:
    raise ValueError(
        f"dau_conv: input has {x.shape[-1]} channels, the layer's parameters expect "
        f"{in_channels}."
    )
  if form not in FORMS:
    raise ValueError(f"Unknown form {form!r}; known forms: {', '.join(FORMS)}.")
  if weights_input is not None and weights_input.shape != x.shape:
    raise ValueError(
        f"dau_conv: weights_input has shape {weights_input.shape}, x has shape {x.shape}; "
        f"they must match."
    )
  compute_dtype = compute_dtype or x.dtype
  x = x.astype(compute_dtype)
  weights_input = x if weights_input is None else weights_input.astype(compute_dtype)
  raw_and_norm = _implicit_raw_and_norm if form == "implicit" else _explicit_raw_and_norm
  u, squared_norm = raw_and_norm(params, x, weights_input, stride, padding, explain)
  scale = norm_factor(squared_norm, norm)
  if explain:
    scale = lax.stop_gradient(scale)
  return (u * scale).astype(compute_dtype)
