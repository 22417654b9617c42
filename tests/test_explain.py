"""Exact contribution maps: completeness, classes, layers, jit/vmap and errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codajax.explain import completeness_error, explain
from codajax.models import get_model


@pytest.fixture(scope="module")
def nine_layer_small():
  model = get_model("9L-S")
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  return model, variables, images


@pytest.fixture(scope="module")
def tiny():
  model = get_model("tiny-3L")
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  images = jax.random.uniform(jax.random.key(1), (3, 8, 8, 3))
  return model, variables, images


def _evidence_of(explanation):
  idx = explanation["explained_class_idx"]
  ev = explanation["evidence"]
  return jnp.take_along_axis(ev, idx.reshape(ev.shape[0], -1), axis=1).reshape(idx.shape)


@pytest.mark.parametrize("layer", [0, 4, 8])
def test_completeness_on_9l_s_for_predicted_given_and_all_classes(nine_layer_small, layer):
  model, variables, images = nine_layer_small
  for targets in (None, jnp.array([1, 9]), "all"):
    e = explain(model, variables, images, targets, layer=layer)
    assert float(completeness_error(e).max()) < 1e-6
  # Predicted class: relative to the evidence itself, as in the issue (<= 1e-5).
  e = explain(model, variables, images, layer=layer)
  total = jnp.sum(e["contribution_map_sum"], axis=(-2, -1))
  rel = jnp.abs(total - _evidence_of(e)) / jnp.abs(_evidence_of(e))
  assert float(rel.max()) <= 1e-5
  np.testing.assert_allclose(e["logits"], model.apply(variables, images), rtol=1e-6)


def test_result_shapes_and_fields(tiny):
  model, variables, images = tiny
  e = explain(model, variables, images)
  assert e["contribution_map"].shape == (3, 8, 8, 6)
  assert e["contribution_map_sum"].shape == (3, 8, 8)
  np.testing.assert_array_equal(e["explained_class_idx"], jnp.argmax(e["logits"], -1))
  np.testing.assert_allclose(
      e["contribution_map"],
      e["dynamic_linear_weights"] * jnp.concatenate([images, 1 - images], -1), rtol=1e-6)
  all_classes = explain(model, variables, images, "all", form="model")   # same form as `e`
  assert all_classes["contribution_map"].shape == (3, 10, 8, 8, 6)
  for n in range(3):
    c = int(e["explained_class_idx"][n])
    np.testing.assert_allclose(all_classes["contribution_map"][n, c], e["contribution_map"][n],
                               rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(e["evidence"] + model.logit_bias, e["logits"], rtol=1e-6)


def test_dynamic_weights_are_the_gradient_in_explanation_mode_only(tiny):
  model, variables, images = tiny
  e = explain(model, variables, images, 2)
  encoded = jnp.concatenate([images, 1 - images], -1)
  grad_explain = jax.grad(lambda h: model.apply(variables, h, 0, True, method="forward_from")[:, 2].sum())(encoded)
  np.testing.assert_allclose(e["dynamic_linear_weights"], grad_explain, rtol=1e-5, atol=1e-9)
  grad_plain = jax.grad(lambda h: model.apply(variables, h, 0, False, method="forward_from")[:, 2].sum())(encoded)
  assert not np.allclose(grad_plain, grad_explain, rtol=1e-3)


def test_explicit_and_implicit_forms_explain_alike(tiny):
  model, variables, images = tiny
  explicit = get_model("tiny-3L", form="explicit")
  a = explain(model, variables, images, "all")
  b = explain(explicit, variables, images, "all")
  np.testing.assert_allclose(a["contribution_map"], b["contribution_map"], rtol=1e-4, atol=1e-8)


def test_explain_jits_and_vmaps(tiny):
  model, variables, images = tiny
  eager = explain(model, variables, images, "all")
  jitted = jax.jit(explain, static_argnums=(0, 3))(model, variables, images, "all")
  np.testing.assert_allclose(jitted["contribution_map"], eager["contribution_map"], rtol=1e-5,
                             atol=1e-9)
  targets = jnp.array([0, 5, 9])
  traced = jax.jit(functools.partial(explain, model))(variables, images, targets)
  np.testing.assert_array_equal(traced["explained_class_idx"], targets)
  # vmap over a leading axis of image batches.
  stacked = jnp.stack([images, images[::-1]])
  per_batch = jax.vmap(lambda x: explain(model, variables, x)["contribution_map_sum"])(stacked)
  predicted = explain(model, variables, images)["contribution_map_sum"]
  np.testing.assert_allclose(per_batch[0], predicted, rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(per_batch[1], predicted[::-1], rtol=1e-5, atol=1e-9)


def test_errors(tiny):
  model, variables, images = tiny
  with pytest.raises(ValueError, match="out of range.*10 classes"):
    explain(model, variables, images, 10)
  with pytest.raises(ValueError, match="out of range"):
    explain(model, variables, images, jnp.array([0, -1, 2]))
  with pytest.raises(ValueError, match=r"shape \(3,\)"):
    explain(model, variables, images, jnp.array([0, 1]))
  with pytest.raises(TypeError, match="integer class indices"):
    explain(model, variables, images, jnp.array([0.5, 1.0, 2.0]))
  with pytest.raises(ValueError, match="rank 4"):
    explain(model, variables, images[0])
  with pytest.raises(ValueError, match="built for 3-channel images"):
    explain(model, variables, images[..., :1])
  with pytest.raises(ValueError, match=r"layer must be in 0\.\.2"):
    explain(model, variables, images, layer=3)
  with pytest.raises(ValueError, match="'all'"):
    explain(model, variables, images, "every")
