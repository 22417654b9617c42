"""DAU numerics: small dynamic weights against an extended-precision reference, the zero-norm
guard, float64 gradients against finite differences, and float32 intermediates under bfloat16.

The small-norm layer is a 1×1 CoDA layer whose ``b_d = −A_d z + δ·‖A_d z‖·noise/√C``
(``z = Bx``), so ``‖w_d‖ ≈ δ·‖A_d z‖``. A backward-stable evaluation in precision ``ε`` has
a relative error of order ``ε·κ`` with ``κ = max_d ‖[A_d | b_d]‖_F·‖[z; 1]‖ / ‖w_d‖``; the
former Gram expansion of ``‖w‖²`` had ``ε·κ²`` and fails these bounds from ``δ = 0.1``.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from codajax.nn import dau

_BIAS = "w0"  # the static part of the dynamic weight: w_d = A_d z + w0_d
_C, _D, _RANK = 8, 16, 4
_EXT = np.longdouble  # reference precision (80-bit extended on x86-64: ε ≈ 1.1e-19)


def _small_norm_layer(delta, dtype, seed=0):
  """Parameters (numpy, ``dtype``) and input ``(C,)`` of a 1×1 layer with ``‖w_d‖ ≈ δ·‖A_d z‖``."""
  rng = np.random.default_rng(seed)
  b_mat = (rng.uniform(-1, 1, (_C, _RANK)) / np.sqrt(_C)).astype(dtype)
  a = (rng.uniform(-1, 1, (_C, _D, _RANK)) / np.sqrt(_RANK)).astype(dtype)
  x = rng.uniform(0, 1, _C).astype(dtype)
  z = x.astype(_EXT) @ b_mat.astype(_EXT)
  az = np.einsum("cdr,r->cd", a.astype(_EXT), z)
  noise = rng.normal(size=(_C, _D)) / np.sqrt(_C)
  bias = (-az + delta * np.sqrt(np.sum(az**2, axis=0)) * noise).astype(dtype)
  return {"B": b_mat[None, None], "A": a[None, None], _BIAS: bias[None, None]}, x


def _reference(params, x, norm, g):
  """Extended-precision explicit layer on one position, and gradients of ``Σ_d g_d·out_d``.

  Returns:
    ``out (D,)``, ``{"x": (C,), "A": (C, D, r), bias: (C, D), "B": (C, r)}`` and ``κ``.
  """
  b_mat, a, bias = (params[k][0, 0].astype(_EXT) for k in ("B", "A", _BIAS))
  x, g = x.astype(_EXT), np.asarray(g, _EXT)
  z = x @ b_mat
  w = np.einsum("cdr,r->cd", a, z) + bias  # (C, D)
  n2 = np.sum(w**2, axis=0)
  if norm == "squash":
    s, ds = np.sqrt(n2) / (1 + n2), (1 - n2) / (2 * np.sqrt(n2) * (1 + n2) ** 2)
  else:
    s, ds = 1 / np.sqrt(n2), -0.5 / (n2 * np.sqrt(n2))
  u = x @ w
  gs, gu = g * s, g * u * ds * 2  # cotangents of u and of ‖w‖²
  grad_z = np.einsum("d,cdr,c->r", gs, a, x) + np.einsum("d,cdr,cd->r", gu, a, w)
  grads = {
      "x": w @ gs + b_mat @ grad_z,
      "A": np.einsum("d,c,r->cdr", gs, x, z) + np.einsum("d,cd,r->cdr", gu, w, z),
      _BIAS: np.einsum("d,c->cd", gs, x) + w * gu,
      "B": np.outer(x, grad_z),
  }
  kappa = np.max(np.sqrt((np.sum(a**2, axis=(0, 2)) + np.sum(bias**2, axis=0)) * (1 + z @ z) / n2))
  return u * s, grads, float(kappa)


@functools.partial(jax.jit, static_argnames=("norm", "form"))
def _layer_and_grads(params, x, g, *, norm, form):
  """The library's output ``(D,)`` and gradients, keyed like :func:`_reference`'s."""

  def loss(params, x):
    return jnp.sum(g * dau.dau_conv(params, x[None, None, None], norm=norm, form=form))

  out = dau.dau_conv(params, x[None, None, None], norm=norm, form=form)[0, 0, 0]
  grad_params, grad_x = jax.grad(loss, argnums=(0, 1))(params, x)
  grads = {"x": grad_x, **{k: v[0, 0] for k, v in grad_params.items()}}
  return out, grads


def _relative_error(got, want):
  want = np.asarray(want, np.float64)
  return float(np.linalg.norm(np.asarray(got, np.float64) - want) / np.linalg.norm(want))


def _check_small_norm(form, norm, deltas, dtype):
  eps = np.finfo(dtype).eps
  g = np.linspace(1.0, 2.0, _D).astype(dtype)
  for delta in deltas:
    params, x = _small_norm_layer(delta, dtype)
    want_out, want_grads, kappa = _reference(params, x, norm, g)
    out, grads = _layer_and_grads(params, x, g, norm=norm, form=form)
    assert out.dtype == dtype
    bound = eps * kappa
    errors = {"out": _relative_error(out, want_out)}
    errors.update({k: _relative_error(grads[k], want_grads[k]) for k in want_grads})
    assert all(e <= bound for e in errors.values()), (delta, kappa, bound, errors)


@pytest.mark.parametrize("form,norm", list(itertools.product(dau.FORMS, dau.NORMS)))
def test_small_weight_norm_float32_matches_reference_to_eps_kappa(form, norm):
  # κ reaches 9e5 at δ = 1e-5; below that float32 cannot tell ‖w‖ from rounding noise.
  _check_small_norm(form, norm, (1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5), np.float32)


@pytest.mark.parametrize("form,norm", list(itertools.product(dau.FORMS, dau.NORMS)))
def test_small_weight_norm_float64_matches_reference_to_eps_kappa(form, norm):
  with jax.enable_x64(True):
    _check_small_norm(form, norm, (1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6), np.float64)


def _dyadic(rng, shape):
  """Multiples of 1/8 in [−1, 1]: sums of their products are exact in float32."""
  return (rng.integers(-8, 9, shape) / 8.0).astype(np.float32)


@pytest.mark.parametrize("form,norm", list(itertools.product(dau.FORMS, dau.NORMS)))
def test_exactly_zero_weight_with_nonzero_parameters_reaches_the_guard(form, norm):
  # Position 0 has w_d = A_d z + b_d = 0 exactly (b_d = −A_d z in exact dyadic arithmetic),
  # position 1 an ordinary weight. The computed ‖w‖ at position 0 is rounding noise (the QR
  # is not exact), which the relative zero threshold must recognise: output 0, no gradient.
  rng = np.random.default_rng(3)
  c, d, r = 4, 3, 2
  b_mat, a = _dyadic(rng, (c, r)), _dyadic(rng, (c, d, r))
  x0 = np.eye(c, dtype=np.float32)[1]
  x1 = _dyadic(rng, (c,))
  bias = -np.einsum("cdr,r->cd", a, x0 @ b_mat)
  params = jax.tree.map(
      jnp.asarray, {"B": b_mat[None, None], "A": a[None, None], _BIAS: bias[None, None]}
  )
  x = jnp.asarray(np.stack([x0, x1])[:, None, None])  # (2, 1, 1, C)
  g = jnp.asarray([1.0, -2.0, 0.5])

  @jax.jit
  def loss(params, x):
    return jnp.sum(g * dau.dau_conv(params, x, norm=norm, form=form))

  out = jax.jit(functools.partial(dau.dau_conv, norm=norm, form=form))(params, x)[:, 0, 0]
  np.testing.assert_array_equal(out[0], 0.0)
  want, _, _ = _reference(jax.tree.map(np.asarray, params), x1, norm, np.ones(d))
  np.testing.assert_allclose(out[1], want.astype(np.float64), rtol=1e-5)

  grad_params, grad_x = jax.grad(loss, argnums=(0, 1))(params, x)
  alone_params, alone_x = jax.grad(loss, argnums=(0, 1))(params, x[1:])
  np.testing.assert_array_equal(grad_x[0], 0.0)
  np.testing.assert_allclose(grad_x[1:], alone_x, rtol=1e-6, atol=1e-7)
  for key in params:
    assert np.all(np.isfinite(grad_params[key]))
    np.testing.assert_allclose(grad_params[key], alone_params[key], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "form,norm,k,stride,padding,c,r",
    [(form, norm, 3, 2, 1, 2, 2) for form, norm in itertools.product(dau.FORMS, dau.NORMS)]
    # P = C·k² = 2 < r + 1: the implicit norm uses [A_d | b_d] itself, not a QR.
    + [("implicit", norm, 1, 1, 0, 2, 3) for norm in dau.NORMS],
)
def test_float64_gradients_match_finite_differences(form, norm, k, stride, padding, c, r):
  with jax.enable_x64(True):
    params = dau.init_dau_params(jax.random.key(11), c, 3, r, k, dtype=jnp.float64)
    x = jax.random.uniform(jax.random.key(12), (1, 4, 4, c), jnp.float64)
    f = jax.jit(
        lambda params, x: dau.dau_conv(
            params, x, stride=stride, padding=padding, norm=norm, form=form
        )
    )
    assert f(params, x).dtype == jnp.float64
    check_grads(f, (params, x), order=2, modes=("fwd", "rev"))


def _equations(jaxpr):
  """Every equation of a jaxpr, sub-jaxprs (jit, custom_jvp, …) included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          yield from _equations(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          yield from _equations(sub)


@pytest.mark.parametrize("form", dau.FORMS)
def test_bfloat16_compute_convolves_in_bfloat16_and_accumulates_in_float32(form):
  params = dau.init_dau_params(jax.random.key(8), 6, 8, 8, 3)
  x = jax.random.uniform(jax.random.key(9), (2, 5, 5, 6))

  def loss(params, x):
    return jnp.sum(dau.dau_conv(params, x, padding=1, form=form, dtype=jnp.bfloat16))

  forward = list(_equations(jax.make_jaxpr(loss)(params, x).jaxpr))
  convs = [e for e in forward if e.primitive.name == "conv_general_dilated"]
  assert convs
  for eqn in convs:  # the forward convolutions: bfloat16 operands, float32 sums
    assert {v.aval.dtype for v in eqn.invars} == {jnp.dtype(jnp.bfloat16)}, eqn
    if eqn.params["feature_group_count"] == 1:
      assert eqn.outvars[0].aval.dtype == jnp.float32, eqn
    else:  # the explicit form's patch extraction (a grouped 0/1 kernel): exact
      assert eqn.params["feature_group_count"] == x.shape[-1] and form == "explicit", eqn
  equations = list(_equations(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(params, x).jaxpr))
  products = [
      e
      for e in equations
      if e.primitive.name in ("dot_general", "sqrt", "rsqrt", "div", "geqrf", "householder_product")
  ]
  assert any(e.primitive.name == "dot_general" for e in products)
  for eqn in products:  # every contraction and the norm factor, forward and backward: float32
    assert all(v.aval.dtype == jnp.float32 for v in eqn.invars), eqn
