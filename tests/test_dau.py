"""The functional DAU ops: both forms, norms, zero safety, explanation mode, dtypes."""

import itertools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codajax.nn import dau
from numpy_reference import coda_layer as reference_layer
from numpy_reference import unfold


def _layer(key, c=3, d=5, r=4, k=3, n=2, size=9):
  kp, kx = jax.random.split(key)
  params = dau.init_dau_params(kp, c, d, r, k)
  x = jax.random.uniform(kx, (n, size, size, c))
  return params, x


def test_extract_patches_matches_torch_unfold_order():
  x = np.random.default_rng(0).normal(size=(2, 7, 6, 3)).astype(np.float32)
  got = dau.extract_patches(jnp.asarray(x), 3, 2, 1)
  want = unfold(x.transpose(0, 3, 1, 2), 3, 2, 1).transpose(0, 2, 3, 1)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "k,stride,padding,norm",
    [
        (1, 1, 0, "squash"),
        (3, 1, 1, "squash"),
        (3, 2, 1, "l2"),
        (7, 3, 3, "squash"),
        (3, 2, 0, "squash"),
        (7, 1, 2, "l2"),
    ],
)
def test_explicit_and_implicit_forms_agree_with_numpy_reference(k, stride, padding, norm):
  params, x = _layer(jax.random.key(k * 10 + stride), k=k, size=11)
  kwargs = dict(stride=stride, padding=padding, norm=norm)
  implicit = dau.dau_conv(params, x, form="implicit", **kwargs)
  explicit = dau.dau_conv(params, x, form="explicit", **kwargs)
  np.testing.assert_allclose(implicit, explicit, rtol=2e-5, atol=1e-6)

  # The reference layout: B (r, C, k, k), A (P·D, r, 1, 1) with q = p·D + d.
  c, d, r = x.shape[-1], params["A"].shape[3], params["A"].shape[4]
  b_mat = np.asarray(params["B"]).transpose(3, 2, 0, 1)
  a_mat = np.asarray(params["A"]).transpose(2, 0, 1, 3, 4).reshape(c * k * k * d, r, 1, 1)
  beta = np.asarray(params["w0"]).transpose(2, 0, 1, 3).reshape(-1)
  want = reference_layer(
      np.asarray(x, np.float64).transpose(0, 3, 1, 2), b_mat, a_mat, beta, k, stride, padding, norm
  ).transpose(0, 2, 3, 1)
  assert implicit.shape == want.shape
  np.testing.assert_allclose(implicit, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "k,stride,padding,explain",
    [(3, 1, 1, False), (3, 2, 1, False), (1, 1, 0, False), (3, 2, 1, True)],
)
def test_explicit_and_implicit_gradients_agree(k, stride, padding, explain):
  params, x = _layer(jax.random.key(3), k=k, size=8)
  cot = jax.random.normal(
      jax.random.key(4), dau.dau_conv(params, x, stride=stride, padding=padding).shape
  )

  def loss(params, x, form):
    out = dau.dau_conv(params, x, stride=stride, padding=padding, form=form, explain=explain)
    return jnp.sum(out * cot)

  g_imp = jax.grad(loss, argnums=(0, 1))(params, x, "implicit")
  g_exp = jax.grad(loss, argnums=(0, 1))(params, x, "explicit")
  for a, b in zip(jax.tree.leaves(g_imp), jax.tree.leaves(g_exp)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_norm_factors_against_numpy():
  n2 = np.array([1e-3, 0.25, 1.0, 4.0, 100.0], np.float32)
  np.testing.assert_allclose(dau.norm_factor(n2, "squash"), np.sqrt(n2) / (1 + n2), rtol=1e-6)
  np.testing.assert_allclose(dau.norm_factor(n2, "l2"), 1 / np.sqrt(n2), rtol=1e-6)
  with pytest.raises(ValueError, match="known norms: squash, l2"):
    dau.norm_factor(n2, "l1")


@pytest.mark.parametrize("form,norm", list(itertools.product(dau.FORMS, dau.NORMS)))
def test_zero_weights_give_no_nan_in_value_or_gradient(form, norm):
  params, x = _layer(jax.random.key(5))
  zeros = jax.tree.map(jnp.zeros_like, params)

  def loss(params, x):
    return jnp.sum(dau.dau_conv(params, x, padding=1, form=form, norm=norm) ** 2 + 1.0)

  value, grads = jax.value_and_grad(loss, argnums=(0, 1))(zeros, x)
  out = dau.dau_conv(zeros, x, padding=1, form=form, norm=norm)
  np.testing.assert_array_equal(out, 0.0)
  assert np.isfinite(value)
  for g in jax.tree.leaves(grads):
    assert np.all(np.isfinite(g))
  # Zero padding at the border gives zero patches: no NaN there with real weights either.
  g = jax.grad(loss, argnums=1)(params, jnp.zeros_like(x))
  assert np.all(np.isfinite(g))


@pytest.mark.parametrize("form", dau.FORMS)
def test_explain_mode_is_exactly_linear_in_the_input(form):
  params, x = _layer(jax.random.key(6))
  f = lambda x: dau.dau_conv(params, x, stride=2, padding=1, form=form, explain=True)
  out, tangent_out = jax.jvp(f, (x,), (x,))  # W(x)·x, with W(x) frozen
  np.testing.assert_allclose(tangent_out, out, rtol=1e-5, atol=1e-7)
  # The same layer without explain mode is not linear: the check can fail.
  g = lambda x: dau.dau_conv(params, x, stride=2, padding=1, form=form)
  out, tangent_out = jax.jvp(g, (x,), (x,))
  assert not np.allclose(tangent_out, out, rtol=1e-3)
  # Explain mode leaves the forward value unchanged.
  np.testing.assert_allclose(f(x), g(x), rtol=1e-6)


def test_explain_gradient_is_the_dynamic_weight():
  params, x = _layer(jax.random.key(7), n=1)
  w = dau.dynamic_weights(params, x, padding=1)  # (1, H, W, P, D)
  n2 = jnp.sum(w**2, axis=-2)
  i, j, d = 4, 3, 2
  grad = jax.grad(lambda x: dau.dau_conv(params, x, padding=1, explain=True)[0, i, j, d])(x)
  patch_grad = dau.extract_patches(grad, 3, 1, 0)  # unpadded window at (i-1, j-1)
  want = w[0, i, j, :, d] * dau.norm_factor(n2[0, i, j, d], "squash")
  np.testing.assert_allclose(patch_grad[0, i - 1, j - 1], want, rtol=1e-5, atol=1e-7)


def test_bfloat16_compute_is_close_to_float32():
  params, x = _layer(jax.random.key(8), c=6, d=8, r=8)
  full = dau.dau_conv(params, x, padding=1)
  half = dau.dau_conv(params, x, padding=1, dtype=jnp.bfloat16)
  assert half.dtype == jnp.bfloat16
  np.testing.assert_allclose(half.astype(jnp.float32), full, rtol=5e-2, atol=5e-3)


def test_init_matches_pytorch_default_bounds_and_counts():
  params = dau.init_dau_params(jax.random.key(9), 16, 32, 64, 3)
  assert params["B"].shape == (3, 3, 16, 64)
  assert params["A"].shape == (3, 3, 16, 32, 64)
  assert params["w0"].shape == (3, 3, 16, 32)
  assert float(jnp.abs(params["B"]).max()) <= 1 / np.sqrt(16 * 9)
  assert float(jnp.abs(params["B"]).max()) > 0.9 / np.sqrt(16 * 9)
  for name in ("A", "w0"):
    assert 0.9 / 8 < float(jnp.abs(params[name]).max()) <= 1 / 8
  assert sum(p.size for p in params.values()) == dau.num_params(16, 32, 64, 3) == 308_736


def test_bad_inputs_raise_clear_errors():
  params, x = _layer(jax.random.key(10))
  with pytest.raises(ValueError, match="rank 4"):
    dau.dau_conv(params, x[0])
  with pytest.raises(ValueError, match="has 2 channels.*expect 3"):
    dau.dau_conv(params, x[..., :2])
  with pytest.raises(ValueError, match="known forms"):
    dau.dau_conv(params, x, form="dense")
  with pytest.raises(ValueError, match="known norms"):
    dau.dau_conv(params, x, norm="cosine")


def test_a_second_eager_call_compiles_nothing(caplog):
  """Outside ``jit`` the layer's loops (the norm's QR factors) are compiled once per shape, not
  at every call (they were: ~0.2 s per eager layer call, whatever its size)."""
  params = dau.init_dau_params(jax.random.key(0), 3, 6, 3, 3)
  x = jax.random.uniform(jax.random.key(1), (2, 6, 6, 3))
  dau.dau_conv(params, x)  # the first call compiles every operation once
  with jax.log_compiles(), caplog.at_level(logging.DEBUG):
    dau.dau_conv(params, x)
  compiles = [r.getMessage() for r in caplog.records if "compil" in r.getMessage().lower()]
  assert not compiles, compiles


def _factor_inputs(key, d=6, p=20, q=5):
  """``(d, p, q)`` matrices, the last with a column dependent on the others (a zero row of R)."""
  m = jax.random.normal(key, (d, p, q))
  return m.at[-1, :, 2].set(m[-1, :, 0] - 0.5 * m[-1, :, 1])


_QR_FORMS = {
    "one_at_a_time": dau._triangular_factors_one_at_a_time,  # the CPU form (lax.map)
    "all_at_once": dau._triangular_factors_all_at_once,  # the GPU/TPU form (vmap)
}


@pytest.mark.parametrize("form", sorted(_QR_FORMS))
def test_each_qr_form_is_a_triangular_factor_of_m(form):
  """``RᵀR = MᵀM`` with ``R`` upper triangular and a zero diagonal entry for a dependent column; of a
  full rank ``M``, ``diag R`` is ``|diag R|`` of numpy's Householder QR (unique)."""
  m = _factor_inputs(jax.random.key(11))
  r = np.asarray(_QR_FORMS[form](m))
  m64 = np.asarray(m, np.float64)
  np.testing.assert_array_equal(r, np.triu(r))
  np.testing.assert_allclose(
      np.einsum("dki,dkj->dij", r, r), np.einsum("dpi,dpj->dij", m64, m64), rtol=1e-5, atol=1e-4
  )
  full_rank = slice(0, -1)  # past a dependent column, R is not unique
  want_diag = np.abs(np.diagonal(np.linalg.qr(m64[full_rank])[1], axis1=1, axis2=2))
  got_diag = np.diagonal(r[full_rank], axis1=1, axis2=2)
  np.testing.assert_allclose(got_diag, want_diag, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(r[-1, 2, 2], 0.0, atol=1e-5)  # the dependent column adds no length


def test_qr_forms_agree_called_directly_under_vmap_and_under_grad():
  """The CPU and GPU/TPU forms of the QR loop are one function: equal to float round-off as
  called, batched by ``vmap`` (which the per-example paths do) and differentiated."""
  m = _factor_inputs(jax.random.key(12))
  cpu, accelerator = _QR_FORMS["one_at_a_time"], _QR_FORMS["all_at_once"]
  np.testing.assert_allclose(cpu(m), accelerator(m), rtol=1e-6, atol=1e-6)

  batch = jnp.stack([m, 2.0 * m[::-1], m + 1.0])  # (3, D, P, q)
  batched = jax.vmap(cpu)(batch)
  np.testing.assert_allclose(batched, jax.vmap(accelerator)(batch), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(batched[1], cpu(batch[1]), rtol=1e-6, atol=1e-6)

  # The QR's derivative blows up at a dependent column (1 / its round-off length): full rank only.
  m = m[:-1]
  weights = jax.random.normal(jax.random.key(13), (m.shape[0], m.shape[2], m.shape[2]))

  def loss_grad(form):
    return jax.jit(jax.grad(lambda m: jnp.sum(weights * form(m) ** 2)))

  grad_cpu, grad_accelerator = loss_grad(cpu)(m), loss_grad(accelerator)(m)
  assert bool(jnp.all(jnp.isfinite(grad_cpu)))
  assert float(jnp.max(jnp.abs(grad_cpu))) > 0.0
  np.testing.assert_allclose(grad_cpu, grad_accelerator, rtol=1e-5, atol=1e-5)


def test_the_qr_form_is_chosen_for_the_platform_lowered_for():
  """``_triangular_factors`` takes the ``lax.map`` form when lowered for CPU and the ``vmap`` form
  when lowered for GPU/TPU (chosen at lowering, not by the host's backend), also under ``vmap``
  and ``grad``; run here, it is the CPU form."""
  m = _factor_inputs(jax.random.key(14))
  cpu_name, accelerator_name = (
      "@_triangular_factors_one_at_a_time",
      "@_triangular_factors_all_at_once",
  )
  spec = jax.ShapeDtypeStruct((2, *m.shape), m.dtype)
  programs = {
      "plain": lambda b: dau._triangular_factors(b[0]),
      "vmap": jax.vmap(dau._triangular_factors),
      "grad": jax.grad(lambda b: jnp.sum(jax.vmap(dau._triangular_factors)(b) ** 2)),
  }
  for name, program in programs.items():
    for platforms, want, unwanted in (
        (["cpu"], cpu_name, accelerator_name),
        (["cuda", "tpu"], accelerator_name, cpu_name),
    ):
      text = jax.export.export(jax.jit(program), platforms=platforms)(spec).mlir_module()
      assert want in text and unwanted not in text, (name, platforms)
  np.testing.assert_array_equal(dau._triangular_factors(m), _QR_FORMS["one_at_a_time"](m))
