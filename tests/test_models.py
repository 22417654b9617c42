"""Named architectures, parameter counts, the head, the full forward and bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from codajax.models import ARCHITECTURES, CoDANet, LayerSpec, count_params, get_model
from codajax.nn import add_inverse, coda_head

PAPER_COUNTS = {
    "9L-S": 7_782_816,
    "9L-L": 47_517_408,
    "9L-S-rank-4": 1_076_984,
    "9L-S-rank-8": 2_034_960,
    "9L-S-rank-16": 3_950_912,
    "9L-S-rank-144": 34_606_144,
}


@pytest.mark.parametrize("name,expected", sorted(PAPER_COUNTS.items()))
def test_parameter_counts_match_the_paper(name, expected):
  model = get_model(name)
  size = ARCHITECTURES[name].image_size
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
  assert sum(math.prod(x.shape) for x in jax.tree.leaves(shapes)) == expected
  assert count_params(model.layers) == expected


def test_output_shapes_of_the_papers_models():
  for name, classes in (("9L-S", 10), ("9L-L", 100)):
    size = ARCHITECTURES[name].image_size
    model = get_model(name)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
    logits = jax.eval_shape(model.apply, variables, jnp.zeros((2, size, size, 3)))
    assert logits.shape == (2, classes)
    inputs = jax.eval_shape(
        lambda v, x: model.apply(v, x, method="explanation_inputs"),
        variables,
        jnp.zeros((2, size, size, 3)),
    )
    assert len(inputs) == 9 and inputs[0].shape == (2, size, size, 6)
  last = jax.eval_shape(
      lambda v, x: model.apply(v, x, method="explanation_inputs"),
      variables,
      jnp.zeros((1, 240, 240, 3)),
  )[-1]
  assert last.shape == (1, 20, 20, 64)  # 9L-L's class map is 20×20 (CoDA Nets, ImageNet setting)


def test_unknown_architecture_lists_known_names():
  with pytest.raises(ValueError, match=r"known architectures: .*9L-L.*9L-S"):
    get_model("ResNet-50")


def test_overrides_reach_the_model():
  model = get_model("9L-S", temperature=10.0, norm="l2", num_classes=7)
  assert (model.temperature, model.norm, model.num_classes) == (10.0, "l2", 7)
  with pytest.raises(ValueError, match="known norms"):
    get_model("9L-S", norm="l1")


def test_head_sums_positions_divides_by_temperature_and_adds_bias():
  maps = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  want = np.asarray(maps).sum(axis=(1, 2)) / 50.0 + math.log(0.1 / 0.9)
  np.testing.assert_allclose(coda_head(maps, 50.0, math.log(1 / 9)), want, rtol=1e-6)


def test_add_inverse_encoding():
  x = jnp.array([[[[0.0, 0.25, 1.0]]]])
  np.testing.assert_array_equal(add_inverse(x), [[[[0.0, 0.25, 1.0, 1.0, 0.75, 0.0]]]])


def test_9l_s_train_step_runs_and_changes_params():
  model = get_model("9L-S")
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  labels = jnp.array([3, 7])
  variables = jax.jit(model.init)(jax.random.key(0), images[:1])
  tx = optax.adam(2.5e-4)
  opt_state = tx.init(variables["params"])

  @jax.jit
  def step(params, opt_state):
    def loss_fn(params):
      logits = model.apply({"params": params}, images)
      return optax.sigmoid_binary_cross_entropy(logits, jax.nn.one_hot(labels, 10)).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  params, _, loss = step(variables["params"], opt_state)
  assert np.isfinite(loss)
  delta = jax.tree.map(lambda a, b: jnp.abs(a - b).max(), params, variables["params"])
  assert all(float(d) > 0 for d in jax.tree.leaves(delta))


def test_bad_images_raise_clear_errors():
  model = CoDANet(layers=(LayerSpec(4, 2), LayerSpec(10, 2, 1, 1, 0)), image_channels=3)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError, match="rank 4"):
    model.apply(variables, jnp.zeros((8, 8, 3)))
  with pytest.raises(ValueError, match="built for 3-channel images, got 1"):
    model.apply(variables, jnp.zeros((1, 8, 8, 1)))
