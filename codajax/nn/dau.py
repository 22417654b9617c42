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
  w0_d·x`` and ``‖w_d‖ = ‖R_d [z; 1]‖`` with ``R_d`` the triangular factor of a QR
  of ``M_d = [A_d | w0_d]``, computed once per call (small per-layer matrices).
  Unlike the Gram expansion ``zᵀ(A_dᵀA_d)z + 2(A_dᵀw0_d)·z + ‖w0_d‖²``, which
  cancels catastrophically when ``‖w_d‖`` is small against ``‖A_d z‖`` and
  ``‖w0_d‖`` (relative error ``ε·κ²``), this is as accurate as the explicit form
  (``ε·κ``, ``κ = ‖M_d‖·‖[z; 1]‖ / ‖w_d‖``).

Both forms treat a weight as zero when ``‖w_d‖`` is below the rounding error of
the terms it is computed from (``_ZERO_NORM_ULPS·ε·‖M_d‖_F·‖[z; 1]‖``): its norm
factor is then 0 and no gradient flows through the norm. float64 inputs are
computed in float64; bfloat16/float16/float32 inputs accumulate in float32.

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

from codajax import _checks

Array = jax.Array
Norm = Literal["squash", "l2"]
Form = Literal["implicit", "explicit"]

NORMS: tuple[str, ...] = ("squash", "l2")
FORMS: tuple[str, ...] = ("implicit", "explicit")

# Below this squared norm a weight vector counts as zero: the norm factor is
# set to its limit (0) and no gradient flows through the norm.
_TINY_SQUARED_NORM = 1e-30

# A weight with ‖w_d‖ ≤ _ZERO_NORM_ULPS·ε·‖M_d‖_F·‖[z; 1]‖ is rounding noise
# (ε of the accumulation dtype, M_d = [A_d | w0_d]): its squared norm is set to 0.
_ZERO_NORM_ULPS = 4.0

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

  Raises:
    TypeError: a size that is not an integer, a key that is not a ``jax.random`` key.
    ValueError: a size below 1, a dtype that is not floating point.
  """
  where = "init_dau_params"
  in_channels = _checks.check_int(in_channels, "in_channels", where=where)
  features = _checks.check_int(features, "features", where=where)
  rank = _checks.check_int(rank, "rank", where=where)
  kernel_size = _checks.check_int(kernel_size, "kernel_size", where=where)
  _checks.check_float_dtype(dtype, "dtype", where=where)
  if not isinstance(key, jax.Array) or not (
      jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or key.dtype == jnp.uint32
  ):
    raise TypeError(
        f"{where}: key must be a jax.random key (e.g. jax.random.key(0)), got "
        f"{_checks.describe(key)}."
    )
  shapes = param_shapes(in_channels, features, rank, kernel_size)
  inits = param_initializers(in_channels, rank, kernel_size)
  keys = dict(zip(PARAM_NAMES, jax.random.split(key, 3)))
  return {name: inits[name](keys[name], shapes[name], dtype) for name in PARAM_NAMES}


def num_params(in_channels: int, features: int, rank: int, kernel_size: int) -> int:
  """Parameter count of one CoDA layer: ``C·r·k² + r·P·D + P·D``."""
  patch = in_channels * kernel_size**2
  return patch * rank + rank * patch * features + patch * features


def output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
  """Spatial output size ``⌊(size + 2p − k)/s⌋ + 1`` of a convolution."""
  return (size + 2 * padding - kernel_size) // stride + 1


def _accumulation_dtype(dtype) -> jnp.dtype:
  """float32 for bfloat16/float16/float32 inputs, float64 for float64 inputs."""
  return jnp.promote_types(dtype, jnp.float32)


def _conv(x: Array, kernel: Array, stride: int, padding: int) -> Array:
  """NHWC × HWIO convolution with explicit symmetric padding, float32 (or float64) accumulation."""
  return lax.conv_general_dilated(
      x,
      kernel,
      window_strides=(stride, stride),
      padding=((padding, padding), (padding, padding)),
      dimension_numbers=_DIMENSION_NUMBERS,
      preferred_element_type=_accumulation_dtype(x.dtype),
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


def _factor_matrices(a: Array, b: Array) -> Array:
  """``M_d = [A_d | w0_d]`` of every DAU: ``(P, D, r)``, ``(P, D) -> (D, P, r + 1)``."""
  return jnp.transpose(jnp.concatenate([a, b[..., None]], axis=-1), (1, 0, 2))


@jax.jit  # called eagerly, the loops would be traced and compiled anew at every call
def _triangular_factors(m: Array) -> Array:
  """``R_d`` of a QR of every ``M_d`` by modified Gram–Schmidt: ``(D, P, q) -> (D, q, q)``.

  MGS's ``R`` is as accurate as Householder's (it is Householder QR of
  ``[0; M_d]``, Björck & Paige 1992): ``R_dᵀR_d = (M_d + ΔM)ᵀ(M_d + ΔM)`` with
  ``‖ΔM‖ = O(ε‖M_d‖)``. Written as a loop of ``q`` rank-one updates: on CPU,
  LAPACK's Householder QR (``jnp.linalg.qr``) is 1.3× faster alone but made a
  9L-S train step 1.1-1.3× slower (``benchmarks/RESULTS.md``, session 7). On
  CPU the matrices are factored one at a time (each stays in cache: ~2× faster
  than all at once); elsewhere all ``D`` at once (``vmap``). The choice is made
  when the program is lowered, for the platform it is lowered for
  (``lax.platform_dependent``), so a program exported on a CPU host for a GPU or
  TPU carries the accelerator's form.
  """
  return lax.platform_dependent(
      m, cpu=_triangular_factors_one_at_a_time, default=_triangular_factors_all_at_once
  )


@jax.jit  # its name marks the CPU form in a lowered program (tests/test_export.py)
def _triangular_factors_one_at_a_time(m: Array) -> Array:
  """``_triangular_factors`` on CPU, a ``lax.map`` over ``D``: ``(D, P, q) -> (D, q, q)``."""
  return lax.map(_triangular_factor, m)


@jax.jit  # its name marks the accelerator form in a lowered program (tests/test_export.py)
def _triangular_factors_all_at_once(m: Array) -> Array:
  """``_triangular_factors`` on GPU/TPU, a ``vmap`` over ``D``: ``(D, P, q) -> (D, q, q)``."""
  return jax.vmap(_triangular_factor)(m)


def _triangular_factor(m: Array) -> Array:
  """MGS ``R`` of one ``(P, q)`` matrix: ``-> (q, q)``, upper triangular.

  A column that is (numerically) dependent on the previous ones gets a zero row.
  """
  q = m.shape[1]
  cols = jnp.arange(q)

  def step(j, carry):
    rest, r = carry
    column = lax.dynamic_index_in_dim(rest, j, axis=1, keepdims=False)  # (P,)
    length = jnp.sqrt(jnp.sum(jnp.square(column)))
    unit = column / jnp.where(length > 0, length, 1.0)
    row = jnp.where(cols > j, unit @ rest, 0.0)  # (q,)
    rest = rest - unit[:, None] * row[None, :]
    row = jnp.where(cols == j, length, row)
    return rest, lax.dynamic_update_index_in_dim(r, row, j, axis=0)

  return lax.fori_loop(0, q, step, (m, jnp.zeros((q, q), m.dtype)), unroll=4)[1]


def _norm_preserving_factors(m: Array) -> Array:
  """``R_d`` with ``‖R_d v‖ = ‖M_d v‖`` for every ``v``: ``(D, P, q) -> (D, min(P, q), q)``.

  The triangular factor of a QR of ``M_d`` when ``M_d`` is tall (``P > q``);
  ``M_d`` itself otherwise (it is then no larger than ``R_d``).
  """
  if m.shape[1] <= m.shape[2]:
    return m
  return _triangular_factors(m)


@jax.custom_jvp
def _squared_norms_qr(m: Array, z: Array) -> Array:
  """``‖M_d [z; 1]‖²`` as ``‖R_d [z; 1]‖²``: ``(D, P, r + 1)``, ``(..., r) -> (..., D)``.

  Backward stable: the error of the norm is ``O(ε·‖M_d‖·‖[z; 1]‖)``, however
  small ``‖M_d [z; 1]‖`` is (the Gram expansion's is ``O(ε·‖M_d‖²·‖[z; 1]‖²)``
  in the squared norm).
  """
  r = _norm_preserving_factors(m)
  y = jnp.einsum("...k,dqk->...dq", z, r[..., :-1]) + r[..., -1]
  return jnp.sum(jnp.square(y), axis=-1)


@_squared_norms_qr.defjvp
def _squared_norms_qr_jvp(primals, tangents):
  """``d‖Mv‖² = 2 vᵀ(MᵀdM)v + 2 vᵀ(MᵀM)dv`` with ``v = [z; 1]``, ``dv = [dz; 0]``.

  Both terms are of the size of ``‖w‖`` and their rounding error is
  ``O(ε·‖M‖²·‖v‖²)``, the explicit form's order: no QR is differentiated.
  """
  m, z = primals
  dm, dz = tangents
  gram = jnp.einsum("dpk,dpl->dkl", m, m)  # (D, q, q)
  m_t_dm = jnp.einsum("dpk,dpl->dkl", m, dm)  # (D, q, q)
  # Per-position contractions run over the rank r, not q = r + 1 (v's last entry is 1):
  # vᵀTv = zᵀT_zz z + z·(T_z1 + T_1z) + T_11 and (Gv)_z = G_zz z + G_z1.
  t_zz, t_cross = m_t_dm[:, :-1, :-1], m_t_dm[:, :-1, -1] + m_t_dm[:, -1, :-1]
  quadratic = (
      jnp.einsum("...dl,...l->...d", jnp.einsum("...k,dkl->...dl", z, t_zz), z)
      + jnp.einsum("...k,dk->...d", z, t_cross)
      + m_t_dm[:, -1, -1]
  )
  gram_v = jnp.einsum("...k,dkl->...dl", z, gram[:, :-1, :-1]) + gram[:, -1, :-1]
  tangent = 2.0 * (quadratic + jnp.einsum("...dl,...l->...d", gram_v, dz))
  return _squared_norms_qr(m, z), tangent


def _zero_below_rounding(squared_norm: Array, m: Array, z: Array) -> Array:
  """``‖w_d‖²`` with the values below the rounding error of ``M_d [z; 1]`` set to 0.

  Args:
    squared_norm: ``(..., D)``; m: ``(D, P, r + 1)``; z: ``(..., r)``.
  """
  eps = jnp.finfo(squared_norm.dtype).eps
  scale = jnp.sum(jnp.square(m), axis=(1, 2)) * (
      1.0 + jnp.sum(jnp.square(z), axis=-1, keepdims=True)
  )
  noise = jnp.square(_ZERO_NORM_ULPS * eps) * scale
  return jnp.where(squared_norm <= noise, 0.0, squared_norm)


def _squared_norms(a: Array, b: Array, z: Array) -> Array:
  """``‖A_d z + w0_d‖²`` of every DAU at every position, exact to ``O(ε·κ)``, 0 below rounding.

  Args:
    a: ``(P, D, r)``; b: ``(P, D)``; z: ``(..., r)``.

  Returns:
    ``(..., D)``.
  """
  m = _factor_matrices(a, b)
  return _zero_below_rounding(_squared_norms_qr(m, z), m, z)


def default_padding(kernel_size: int) -> int:
  """The padding every codajax layer uses when none is given: ``(k − 1) // 2`` (1 for the
  3×3 layers, 0 for 1×1; the output keeps the input size at stride 1 for odd ``k``)."""
  return (int(kernel_size) - 1) // 2


def resolve_padding(padding: int | None, kernel_size: int) -> int:
  """``padding``, or :func:`default_padding` of ``kernel_size`` when it is None."""
  return default_padding(kernel_size) if padding is None else int(padding)


def dynamic_weights(
    params: dict[str, Array], x: Array, *, stride: int = 1, padding: int | None = None
) -> Array:
  """Materialised dynamic weights ``w`` of every DAU at every output position.

  Args:
    params: one layer's parameters (see module docstring).
    x: layer input, ``(N, H, W, C)``.
    stride, padding: as in :func:`dau_conv` (padding default ``(k − 1) // 2``).

  Returns:
    ``(N, H', W', P, D)`` with ``P = C·k²`` in ``c·k² + ki·k + kj`` order.
  """
  padding = resolve_padding(padding, params["B"].shape[0])
  a, b = _flat_dynamic_factors(params)
  z = _conv(x, params["B"].astype(x.dtype), stride, padding)
  return jnp.einsum("nhwr,pdr->nhwpd", z, a) + b


def _explicit_raw_and_norm(params, x, weights_input, stride, padding, explain):
  """Explicit form: ``u = w·x`` and ``‖w‖²`` from the materialised weights ``w(weights_input)``."""
  k = params["B"].shape[0]
  acc = _accumulation_dtype(x.dtype)
  w = dynamic_weights(params, weights_input, stride=stride, padding=padding)
  if explain:
    w = lax.stop_gradient(w)
  patches = extract_patches(x, k, stride, padding).astype(acc)
  u = jnp.einsum("nhwp,nhwpd->nhwd", patches, w)
  z = _conv(weights_input, params["B"].astype(x.dtype), stride, padding)  # as in w (CSE)
  m = _factor_matrices(*(f.astype(acc) for f in _flat_dynamic_factors(params)))
  return u, _zero_below_rounding(jnp.sum(jnp.square(w), axis=-2), m, z)


def _implicit_raw_and_norm(params, x, weights_input, stride, padding, explain):
  """Implicit form: ``u`` and ``‖w‖²`` without forming ``w``.

  One convolution of ``x`` with ``r + D·r + D`` output channels gives ``z = Bx``,
  ``A_dᵀx`` and ``w0_d·x``; the squared norm comes from ``_squared_norms``. When
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
  acc = _accumulation_dtype(x.dtype)
  a, b = a.astype(acc), b.astype(acc)

  z_w = lax.stop_gradient(z) if explain else z  # z only shapes the weights
  u = jnp.einsum("nhwr,nhwdr->nhwd", z_w, a_x) + b_x
  return u, _squared_norms(a, b, z)


def check_params(params: Any, where: str) -> tuple[int, int, int, int]:
  """``(k, C, D, r)`` of one layer's parameters, after checking that their shapes fit together.

  Raises:
    TypeError: ``params`` is not a mapping with ``B``, ``A`` and ``w0``.
    ValueError: shapes of the wrong rank or that disagree (kernel size, input channels, DAUs,
      rank), named in the message, e.g. "A is for 5 input channels, B for 6".
  """
  if not hasattr(params, "keys") or set(PARAM_NAMES) - set(params.keys()):
    raise TypeError(
        f"{where}: params must be a dict with the arrays {', '.join(PARAM_NAMES)}, got "
        f"{_checks.describe(params) if not hasattr(params, 'keys') else sorted(params.keys())}."
    )
  shapes = {name: tuple(jnp.shape(params[name])) for name in PARAM_NAMES}
  expected = {"B": "(k, k, C, r)", "A": "(k, k, C, D, r)", "w0": "(k, k, C, D)"}
  for name, rank in (("B", 4), ("A", 5), ("w0", 4)):
    if len(shapes[name]) != rank:
      raise ValueError(
          f"{where}: params {name} must have shape {expected[name]}, got {shapes[name]}."
      )
  b, a, w0 = shapes["B"], shapes["A"], shapes["w0"]
  if b[0] != b[1]:
    raise ValueError(f"{where}: params B must have a square kernel (k, k, C, r), got {b}.")
  agree = (  # (first, its size, second, its size, what the sizes count)
      ("A", a[0], "B", b[0], "{} kernel rows"),
      ("A", a[1], "B", b[1], "{} kernel columns"),
      ("w0", w0[0], "B", b[0], "{} kernel rows"),
      ("w0", w0[1], "B", b[1], "{} kernel columns"),
      ("A", a[2], "B", b[2], "{} input channels"),
      ("w0", w0[2], "B", b[2], "{} input channels"),
      ("A", a[4], "B", b[3], "rank {}"),
      ("w0", w0[3], "A", a[3], "{} DAUs"),
  )
  for first, first_size, second, second_size, what in agree:
    if first_size != second_size:
      raise ValueError(
          f"{where}: params {first} is for {what.format(first_size)}, {second} for "
          f"{what.format(second_size)} (shapes B {b}, A {a}, w0 {w0})."
      )
  return b[0], b[2], a[3], b[3]


def dau_conv(
    params: dict[str, Array],
    x: Array,
    *,
    stride: int = 1,
    padding: int | None = None,
    norm: Norm = "squash",
    form: Form = "implicit",
    explain: bool = False,
    dtype=None,
    weights_input: Array | None = None,
) -> Array:
  """A CoDA layer: ``D`` dynamic alignment units applied convolutionally.

  Args:
    params: ``{"B": (k, k, C, r), "A": (k, k, C, D, r), "w0": (k, k, C, D)}``.
    x: ``(N, H, W, C)`` layer input.
    stride: convolution stride ``s``.
    padding: explicit symmetric zero padding ``p`` on every side (not XLA's
      "SAME", which pads strided layers asymmetrically). Default (None):
      ``(k − 1) // 2``, as ``CoDAConv``, ``NNXCoDAConv`` and ``LayerSpec``.
    norm: ``"squash"`` (all published models) or ``"l2"`` (the intended ``u/‖w‖``).
    form: ``"implicit"`` (default, never materialises ``w``) or ``"explicit"``.
    explain: detach the dynamic weights and the norm factor so the layer is
      exactly linear in ``x``.
    dtype: dtype of the convolution inputs (e.g. ``jnp.bfloat16``);
      accumulation and norms stay float32 (float64 for float64 inputs).
      Default: ``x.dtype``.
    weights_input: compute the dynamic weights and the norm factor from this
      tensor (shaped like ``x``) instead of ``x``: the output is exactly linear
      in ``x`` and differentiable in ``params`` and ``weights_input``.
      Default: ``x``.

  Returns:
    ``(N, H', W', D)`` with ``H' = ⌊(H + 2p − k)/s⌋ + 1``, in ``dtype``.

  Raises:
    ValueError: parameters whose shapes do not fit together (e.g. ``A`` for 5 input channels,
      ``B`` for 6), an input of another rank or channel count, ``stride < 1``, ``padding < 0``,
      an output smaller than one pixel, an unknown ``norm`` or ``form``, a compute dtype that is
      not floating point (``dtype``, or ``x.dtype`` when it is None).
    TypeError: a non-integer stride or padding.
    These are shape checks: they run under ``jit`` too, at trace time.
  """
  if x.ndim != 4:
    raise ValueError(f"dau_conv expects NHWC input of rank 4, got shape {x.shape}.")
  kernel_size, in_channels, _, _ = check_params(params, "dau_conv")
  if x.shape[-1] != in_channels:
    raise ValueError(
        f"dau_conv: input has {x.shape[-1]} channels, the layer's parameters expect "
        f"{in_channels}."
    )
  if form not in FORMS:
    raise ValueError(f"Unknown form {form!r}; known forms: {', '.join(FORMS)}.")
  if norm not in NORMS:
    raise ValueError(f"Unknown norm {norm!r}; known norms: {', '.join(NORMS)}.")
  _checks.check_bool(explain, "explain", where="dau_conv")
  if weights_input is not None and weights_input.shape != x.shape:
    raise ValueError(
        f"dau_conv: weights_input has shape {weights_input.shape}, x has shape {x.shape}; "
        f"they must match."
    )
  stride = _checks.check_int(stride, "stride", where="dau_conv")
  if padding is not None:
    padding = _checks.check_int(padding, "padding", where="dau_conv", minimum=0)
  padding = resolve_padding(padding, kernel_size)
  for size in x.shape[1:3]:
    if output_size(size, kernel_size, stride, padding) < 1:
      raise ValueError(
          f"dau_conv: an input of {x.shape[1]}x{x.shape[2]} pixels is smaller than the "
          f"{kernel_size}x{kernel_size} kernel with padding {padding}; no output pixel is left."
      )
  dtype = dtype or x.dtype
  _checks.check_float_dtype(
      dtype, "the compute dtype (dtype, or x.dtype when dtype is None)", where="dau_conv"
  )
  x = x.astype(dtype)
  weights_input = x if weights_input is None else weights_input.astype(dtype)
  raw_and_norm = _implicit_raw_and_norm if form == "implicit" else _explicit_raw_and_norm
  u, squared_norm = raw_and_norm(params, x, weights_input, stride, padding, explain)
  scale = norm_factor(squared_norm, norm)
  if explain:
    scale = lax.stop_gradient(scale)
  return (u * scale).astype(dtype)
