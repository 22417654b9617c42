"""B-cos ops, norms and layers against closed forms and the float64 numpy port."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from codajax.bcos import layers, nnx_layers, norms, ops
from tests import bcos_numpy_reference as ref


def _nchw(x):
  return np.transpose(np.asarray(x, np.float64), (0, 3, 1, 2))


def _nhwc(x):
  return np.transpose(x, (0, 2, 3, 1))


def _torch_weight(kernel):
  """HWIO -> (O, I, kh, kw)."""
  return np.transpose(np.asarray(kernel, np.float64), (3, 2, 0, 1))


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(2, 7, 7, 4)).astype(np.float32)
  kernel = rng.normal(size=(3, 3, 4, 6)).astype(np.float32)
  return x, kernel


def test_b1_is_a_unit_norm_linear_layer(data):
  x, kernel = data
  out = ops.bcos_conv(jnp.asarray(x), jnp.asarray(kernel), b=1, strides=2, padding=1)
  w = kernel.astype(np.float64)
  w = w / np.sqrt((w**2).sum(axis=(0, 1, 2), keepdims=True))
  xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  expect = np.zeros((2, 4, 4, 6))
  for i in range(4):
    for j in range(4):
      expect[:, i, j] = np.einsum("nhwc,hwco->no", xp[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3], w)
  np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-5)
  v = np.random.default_rng(1).normal(size=(5, 4))
  dense = ops.bcos_dense(jnp.asarray(v, jnp.float32), jnp.asarray(kernel[0, 0]), b=1)
  wd = kernel[0, 0].astype(np.float64)
  np.testing.assert_allclose(dense, v @ (wd / np.linalg.norm(wd, axis=0)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "b,max_out,stride,pad", [(2, 1, 1, 1), (2, 2, 2, 1), (2.5, 3, 1, 0), (1, 2, 2, 1)]
)
def test_conv_matches_numpy_port(data, b, max_out, stride, pad):
  x, kernel = data
  out = ops.bcos_conv(
      jnp.asarray(x), jnp.asarray(kernel), b=b, max_out=max_out, strides=stride, padding=pad
  )
  expect = _nhwc(ref.bcos_conv2d(_nchw(x), _torch_weight(kernel), b, max_out, stride, pad))
  np.testing.assert_allclose(out, expect, rtol=2e-5, atol=1e-6)


def test_conv_default_padding_and_scale(data):
  x, kernel = data
  out = ops.bcos_conv(jnp.asarray(x), jnp.asarray(kernel), scale=ops.default_scale(3, 4))
  expect = _nhwc(ref.bcos_conv2d(_nchw(x), _torch_weight(kernel), 2, 1, 1, 1))
  np.testing.assert_allclose(out, expect / (3 * 2 / 100), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("b,max_out", [(2, 1), (2, 3), (1.5, 2), (1, 1)])
def test_dense_matches_numpy_port(b, max_out):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(3, 5, 8)).astype(np.float32)
  kernel = rng.normal(size=(8, 6)).astype(np.float32)
  out = ops.bcos_dense(jnp.asarray(x), jnp.asarray(kernel), b=b, max_out=max_out)
  expect = ref.bcos_linear(x, kernel.T, b, max_out)
  np.testing.assert_allclose(out, expect, rtol=2e-5, atol=1e-6)


def test_patch_norms_count_the_padding_as_zeros(data):
  x, _ = data
  got = ops.patch_norms(jnp.asarray(x), 3, strides=2, padding=1)
  patches = ref.unfold(_nchw(x), 3, 3, 2, 1)
  expect = np.sqrt((patches**2).sum(axis=(1, 2, 3)) + 1e-6)[..., None]
  np.testing.assert_allclose(got, expect, rtol=1e-6)


def test_maxout_keeps_the_largest_linear_response(data):
  x, kernel = data
  lin = ops.bcos_conv(jnp.asarray(x), jnp.asarray(kernel), b=1)
  pooled = ops.bcos_conv(jnp.asarray(x), jnp.asarray(kernel), b=1, max_out=2)
  np.testing.assert_array_equal(pooled, np.maximum(lin[..., 0::2], lin[..., 1::2]))
  full = ops.bcos_conv(jnp.asarray(x), jnp.asarray(kernel), b=2, max_out=2)
  norm = np.asarray(ops.patch_norms(jnp.asarray(x), 3))
  np.testing.assert_allclose(full, np.abs(pooled) / norm * pooled, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_gradients():
  """Derivatives against finite differences (float64); jitted: half the time of eager calls."""
  rng = np.random.default_rng(3)
  with jax.enable_x64():
    x = jnp.asarray(rng.normal(size=(1, 4, 4, 2)))
    k = jnp.asarray(rng.normal(size=(3, 3, 2, 4)))
    check_grads(
        jax.jit(lambda x, k: ops.bcos_conv(x, k, b=2, max_out=2, padding=1)),
        (x, k),
        order=2,
        modes=("fwd", "rev"),
    )
    check_grads(
        jax.jit(lambda x, k: ops.bcos_conv(x, k, b=2.5, strides=2)),
        (x, k),
        order=1,
        modes=("fwd", "rev"),
    )
    v = jnp.asarray(rng.normal(size=(3, 5)))
    kd = jnp.asarray(rng.normal(size=(5, 4)))
    check_grads(
        jax.jit(lambda v, k: ops.bcos_dense(v, k, b=2)), (v, kd), order=2, modes=("fwd", "rev")
    )
    check_grads(jax.jit(lambda x: norms.group_norm_uncentered(x, 2)), (x,), order=1)
    check_grads(jax.jit(norms.position_norm_uncentered), (x,), order=1)
    check_grads(jax.jit(norms.batch_norm_uncentered), (x,), order=1)


@pytest.mark.parametrize("b", [2, 2.5])
def test_explanation_mode_is_exactly_linear(data, b):
  """jvp of the explain-mode op at x0 is the linear map with the factor frozen at x0."""
  x, kernel = data
  rng = np.random.default_rng(4)
  x0 = jnp.asarray(x)
  u, v = (jnp.asarray(rng.normal(size=x.shape), jnp.float32) for _ in range(2))
  f = lambda z: ops.bcos_conv(z, jnp.asarray(kernel), b=b, padding=1, explain=True)
  lin0 = ref.bcos_conv2d(_nchw(x), _torch_weight(kernel), 1, 1, 1, 1)
  norm0 = np.sqrt((ref.unfold(_nchw(x), 3, 3, 1, 1) ** 2).sum(axis=(1, 2, 3)) + 1e-6)[:, None]
  factor0 = np.abs(lin0) / norm0 if b == 2 else (np.abs(lin0 / norm0) + 1e-6) ** (b - 1)

  def frozen(z):
    return _nhwc(factor0 * ref.bcos_conv2d(_nchw(z), _torch_weight(kernel), 1, 1, 1, 1))

  direction = 0.7 * u - 1.3 * v
  _, tangent = jax.jvp(f, (x0,), (direction,))
  np.testing.assert_allclose(tangent, frozen(np.asarray(direction)), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(f(x0), frozen(x), rtol=1e-5, atol=1e-6)
  # without explanation mode the derivative also moves the factor
  _, plain = jax.jvp(
      lambda z: ops.bcos_conv(z, jnp.asarray(kernel), b=b, padding=1), (x0,), (direction,)
  )
  assert np.max(np.abs(plain - tangent)) > 1e-2


def test_norms_match_numpy_and_detach():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(2, 3, 3, 8)).astype(np.float32) + 0.5
  w = rng.uniform(0.5, 2, size=8).astype(np.float32)
  var = rng.uniform(0.5, 2, size=8)
  gn = norms.group_norm_uncentered(jnp.asarray(x), 4, jnp.asarray(w))
  np.testing.assert_allclose(gn, _nhwc(ref.gn_uncentered(_nchw(x), 4, w)), rtol=1e-5)
  ln = norms.layer_norm_uncentered(jnp.asarray(x))
  np.testing.assert_allclose(ln, _nhwc(ref.gn_uncentered(_nchw(x), 1)), rtol=1e-5)
  bn = norms.batch_norm_uncentered(jnp.asarray(x), jnp.asarray(w), jnp.asarray(var))
  np.testing.assert_allclose(bn, _nhwc(ref.bn_uncentered_eval(_nchw(x), w, var)), rtol=1e-5)
  folded = norms.fold_batch_norm(w, var)
  np.testing.assert_allclose(x * folded, bn, rtol=1e-5)
  xb = x.astype(np.float64)
  batch = norms.batch_norm_uncentered(jnp.asarray(x))
  np.testing.assert_allclose(batch, xb / np.sqrt(xb.var(axis=(0, 1, 2)) + 1e-5), rtol=1e-5)
  pn = norms.position_norm_uncentered(jnp.asarray(x))
  np.testing.assert_allclose(pn, xb / np.sqrt(xb.var(axis=-1, keepdims=True) + 1e-5), rtol=1e-5)
  # explanation mode: the statistics are constants, so J(x0) x0 = f(x0)
  for fn in (
      lambda z, e: norms.group_norm_uncentered(z, 4, explain=e),
      lambda z, e: norms.position_norm_uncentered(z, explain=e),
      lambda z, e: norms.batch_norm_uncentered(z, explain=e),
  ):
    x0 = jnp.asarray(x)
    out, tangent = jax.jvp(lambda z: fn(z, True), (x0,), (x0,))
    np.testing.assert_allclose(tangent, out, rtol=1e-5, atol=1e-6)
    _, plain = jax.jvp(lambda z: fn(z, False), (x0,), (x0,))
    assert np.max(np.abs(plain - out)) > 1e-2


def test_linen_and_nnx_layers_agree():
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.uniform(size=(2, 6, 6, 4)), jnp.float32)
  conv = layers.BcosConv(3, kernel_size=3, strides=2, max_out=2)
  variables = conv.init(jax.random.key(0), x)
  nconv = nnx_layers.NNXBcosConv(4, 3, 3, strides=2, max_out=2, rngs=nnx.Rngs(1))
  nconv.kernel[...] = variables["params"]["kernel"]
  np.testing.assert_array_equal(conv.apply(variables, x), nconv(x))
  dense = layers.BcosDense(5, max_out=2)
  dvars = dense.init(jax.random.key(1), x)
  ndense = nnx_layers.NNXBcosDense(4, 5, max_out=2, rngs=nnx.Rngs(2))
  ndense.kernel[...] = dvars["params"]["kernel"]
  np.testing.assert_array_equal(dense.apply(dvars, x), ndense(x))
  for kind in ("bn", "gn", "ln", "pn", "none"):
    lin = layers.make_norm(kind, 4)
    lvars = lin.init(jax.random.key(2), x)
    scaled = jax.tree.map(lambda p: p * 1.5, lvars)
    nn_norm = nnx_layers.make_nnx_norm(kind, 4)
    if "params" in scaled:
      nn_norm.scale[...] = scaled["params"]["scale"]
    np.testing.assert_allclose(lin.apply(scaled, x), nn_norm(x), rtol=1e-6)


def test_bad_arguments():
  x = jnp.ones((1, 4, 4, 2))
  with pytest.raises(ValueError, match="b must be"):
    ops.bcos_conv(x, jnp.ones((3, 3, 2, 2)), b=0.5)
  with pytest.raises(ValueError, match="max_out"):
    ops.bcos_conv(x, jnp.ones((3, 3, 2, 3)), max_out=2)
  with pytest.raises(ValueError, match="input channels"):
    ops.bcos_conv(x, jnp.ones((3, 3, 3, 2)))
  with pytest.raises(ValueError, match="Unknown B-cos norm"):
    layers.make_norm("batch", 4)
