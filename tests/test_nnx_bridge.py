"""A codajax Linen layer inside a Flax NNX model through ``flax.nnx.bridge``."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from codajax.nn import CoDAConv, coda_head


class NNXClassifier(nnx.Module):
  """An NNX model whose feature layers are codajax CoDA layers."""

  def __init__(self, rngs: nnx.Rngs):
    self.first = nnx.bridge.ToNNX(CoDAConv(features=8, rank=4), rngs=rngs)
    self.last = nnx.bridge.ToNNX(CoDAConv(features=10, rank=4, kernel_size=1, padding=0), rngs=rngs)

  def __call__(self, x):
    return coda_head(self.last(self.first(x)), temperature=10.0, logit_bias=0.0)


def test_coda_layer_inside_an_nnx_model():
  x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 6))
  model = NNXClassifier(nnx.Rngs(0))
  nnx.bridge.lazy_init(model, x)
  logits = model(x)
  assert logits.shape == (2, 10)

  # Same numbers as the Linen modules applied with the bridged parameters.
  params = nnx.state(model, nnx.Param)
  first = {"params": jax.tree.map(lambda v: v, nnx.to_pure_dict(params)["first"])}
  last = {"params": nnx.to_pure_dict(params)["last"]}
  h = CoDAConv(features=8, rank=4).apply(first, x)
  want = coda_head(
      CoDAConv(features=10, rank=4, kernel_size=1, padding=0).apply(last, h), 10.0, 0.0
  )
  np.testing.assert_allclose(logits, want, rtol=1e-6)

  # The bridged layer trains with NNX's transforms.
  grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
