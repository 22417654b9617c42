"""Native NNX CoDA layers and CoDA-Net: same function as Linen, trains, explains exactly."""

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from codajax.explain import completeness_error, explain_nnx
from codajax.models import CoDANet, LayerSpec, NNXCoDANet
from codajax.nn import NNXCoDAConv

LAYERS = (LayerSpec(6, 3, 3, 1, 1), LayerSpec(8, 3, 3, 2, 1), LayerSpec(4, 2, 1, 1, 0))
IMAGES = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 6, 6, 3)), jnp.float32)


def test_nnx_net_computes_the_linen_net_with_the_same_parameters():
  nnx_model = NNXCoDANet(LAYERS, temperature=3.0, rngs=nnx.Rngs(0))
  params = {f"layer_{i}": layer.params() for i, layer in enumerate(nnx_model.coda_layers)}
  linen = CoDANet(LAYERS, temperature=3.0)
  assert jax.tree.structure(params) == jax.tree.structure(
      jax.eval_shape(linen.init, jax.random.key(0), IMAGES)["params"]
  )
  np.testing.assert_allclose(nnx_model(IMAGES), linen.apply({"params": params}, IMAGES), rtol=1e-6)
  for layer in (0, 2):
    np.testing.assert_allclose(
        nnx_model.layer_input(IMAGES, layer),
        linen.apply({"params": params}, IMAGES, layer, method="layer_input"),
        rtol=1e-6,
    )


def test_nnx_net_weights_stream_at_its_own_inputs_is_its_forward_pass():
  nnx_model = NNXCoDANet(LAYERS, temperature=3.0, rngs=nnx.Rngs(0))
  params = {f"layer_{i}": layer.params() for i, layer in enumerate(nnx_model.coda_layers)}
  linen = CoDANet(LAYERS, temperature=3.0)
  logits, inputs = nnx_model.forward_and_inputs(IMAGES)
  np.testing.assert_allclose(logits, nnx_model(IMAGES), rtol=1e-6)
  for layer in (0, 1):
    stream = nnx_model.forward_with_weights_from(inputs[layer], layer, inputs, add_bias=False)
    want = linen.apply(
        {"params": params}, inputs[layer], layer, inputs, False, method="forward_with_weights_from"
    )
    np.testing.assert_allclose(stream, want, rtol=1e-6)
    np.testing.assert_allclose(stream + nnx_model.logit_bias, logits, rtol=1e-5)
  # Weights from other inputs change the logits: the stream uses weights_inputs.
  other = tuple(2.0 * h for h in inputs)
  assert not np.allclose(nnx_model.forward_with_weights_from(inputs[0], 0, other), logits)


def test_nnx_layer_checks_its_settings_and_uses_the_dau_initialisers():
  layer = NNXCoDAConv(5, 7, 3, rngs=nnx.Rngs(1))
  assert set(layer.params()) == {"B", "A", "w0"}
  assert layer.B[...].shape == (3, 3, 5, 3) and layer.w0[...].shape == (3, 3, 5, 7)
  assert float(jnp.abs(layer.B[...]).max()) <= 1 / np.sqrt(45)
  assert float(jnp.abs(layer.A[...]).max()) <= 1 / np.sqrt(3)
  with pytest.raises(ValueError, match="known norms"):
    NNXCoDAConv(5, 7, 3, norm="l1", rngs=nnx.Rngs(1))


@pytest.mark.slow
def test_nnx_net_trains_with_nnx_optimizer_and_explains_exactly():
  model = NNXCoDANet(LAYERS, temperature=3.0, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  labels = jnp.array([0, 1, 2, 3])

  def loss_fn(model):
    logits = model(IMAGES)
    return optax.sigmoid_binary_cross_entropy(logits, jax.nn.one_hot(labels, 4)).mean()

  @nnx.jit
  def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  before = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
  losses = [float(train_step(model, optimizer)) for _ in range(4)]
  assert losses[-1] < losses[0]
  moved = jax.tree.map(
      lambda a, b: float(jnp.abs(a - b).max()), before, nnx.state(model, nnx.Param)
  )
  assert all(d > 0 for d in jax.tree.leaves(moved))

  logits = model(IMAGES)
  for layer in (0, 1, 2):
    for targets in (None, jnp.array([3, 2, 1, 0]), "all"):
      e = explain_nnx(model, IMAGES, targets, layer=layer)
      assert float(completeness_error(e).max()) <= 1e-6, (layer, targets)
      np.testing.assert_allclose(e.logits, logits, rtol=1e-5, atol=1e-6)
  # Compiled with nnx.jit (layer and "all" static).
  jitted = nnx.jit(explain_nnx, static_argnames=("targets", "layer"))(
      model, IMAGES, targets="all", layer=1
  )
  assert jitted.contribution_map.shape == (4, 4, 6, 6, 6)
  assert float(completeness_error(jitted).max()) <= 1e-6


def _readme_snippets():
  text = (Path(__file__).parents[1] / "README.md").read_text()
  section = text.split("## Using DAU layers in your own model", 1)[1].split("\n## ", 1)[0]
  return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_snippets_run_as_written():
  snippets = _readme_snippets()
  assert len(snippets) == 2
  for code in snippets:
    assert len(code.strip().splitlines()) <= 20
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    e = namespace["e"]
    assert e["contribution_map"].dtype == jnp.float32
    assert float(completeness_error(e).max()) <= 1e-6
