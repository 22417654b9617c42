"""The Linen CoDAConv: Flax field names, dau's initialisers, weights_input, explanation dtype."""

import jax
import jax.numpy as jnp
import numpy as np

from codajax.nn import CoDAConv, dau

X = jax.random.uniform(jax.random.key(0), (2, 6, 6, 4))


def test_coda_conv_is_dau_conv_with_w0_params_from_the_dau_initialisers():
  layer = CoDAConv(features=5, rank=3, stride=2)
  variables = layer.init(jax.random.key(1), X)
  params = variables["params"]
  assert set(params) == {"B", "A", "w0"}  # no two names differ only by case
  assert {k: v.shape for k, v in params.items()} == dau.param_shapes(4, 5, 3, 3)
  assert float(jnp.abs(params["B"]).max()) <= 1 / np.sqrt(36)
  assert float(jnp.abs(params["w0"]).max()) <= 1 / np.sqrt(3)
  assert float(jnp.abs(params["w0"]).max()) > 1 / np.sqrt(36)  # not B's bound: A/w0 use r
  y = jax.random.uniform(jax.random.key(2), X.shape)
  np.testing.assert_allclose(
      layer.apply(variables, X), dau.dau_conv(params, X, stride=2, padding=1), rtol=1e-6
  )
  np.testing.assert_allclose(
      layer.apply(variables, y, weights_input=X),
      dau.dau_conv(params, y, stride=2, padding=1, weights_input=X),
      rtol=1e-6,
  )
  np.testing.assert_allclose(
      layer.apply(variables, y, weights_input=X),
      dau.dau_conv(params, y, stride=2, padding=1, weights_input=X, explain=True),
      rtol=1e-6,
  )


def test_dtype_and_param_dtype():
  half = CoDAConv(features=5, rank=3, dtype=jnp.bfloat16)
  variables = half.init(jax.random.key(1), X)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  assert half.apply(variables, X).dtype == jnp.bfloat16
  explained = half.apply(variables, X, explain=True)
  assert explained.dtype == jnp.float32  # explanation mode computes in float32
  np.testing.assert_allclose(explained, CoDAConv(features=5, rank=3).apply(variables, X), rtol=1e-6)
  stored = CoDAConv(features=5, rank=3, param_dtype=jnp.bfloat16).init(jax.random.key(1), X)
  assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(stored))
