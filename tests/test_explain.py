"""Exact contribution maps: completeness, classes, layers, jit/vmap and errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax.linen as nn

from codajax.explain import (
    Explanation,
    ExplainableModel,
    completeness_error,
    explain,
    explain_jit,
    explain_linear,
)
from codajax.models import get_model
from codajax.nn import CoDAConv
from numpy_reference import coda_layer_matrix


@pytest.fixture(scope="module")
def nine_layer_small():
  model = get_model("9L-S")
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  return model, variables, images


@pytest.fixture(scope="module")
def tiny():
  model = get_model("tiny-3L")
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  images = jax.random.uniform(jax.random.key(1), (3, 8, 8, 3))
  return model, variables, images


def _evidence_of(explanation):
  idx = explanation["explained_class_idx"]
  ev = explanation["evidence"]
  return jnp.take_along_axis(ev, idx.reshape(ev.shape[0], -1), axis=1).reshape(idx.shape)


@pytest.mark.slow
@pytest.mark.parametrize("layer", [0, 4, 8])
def test_completeness_on_9l_s_for_predicted_given_and_all_classes(nine_layer_small, layer):
  model, variables, images = nine_layer_small
  for targets in (None, jnp.array([1, 9]), "all"):
    e = explain(model, variables, images, targets, layer=layer)
    assert float(completeness_error(e).max()) < 1e-6
  # Predicted class: relative to the evidence itself (<= 1e-5).
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
      e["dynamic_linear_weights"] * jnp.concatenate([images, 1 - images], -1),
      rtol=1e-6,
  )
  all_classes = explain(model, variables, images, "all", form="model")  # same form as `e`
  assert all_classes["contribution_map"].shape == (3, 10, 8, 8, 6)
  for n in range(3):
    c = int(e["explained_class_idx"][n])
    np.testing.assert_allclose(
        all_classes["contribution_map"][n, c], e["contribution_map"][n], rtol=1e-5, atol=1e-9
    )
  np.testing.assert_allclose(e["evidence"] + model.logit_bias, e["logits"], rtol=1e-6)


def test_dynamic_weights_are_the_gradient_in_explanation_mode_only(tiny):
  model, variables, images = tiny
  e = explain(model, variables, images, 2)
  encoded = jnp.concatenate([images, 1 - images], -1)
  grad_explain = jax.grad(
      lambda h: model.apply(variables, h, 0, True, method="forward_from")[:, 2].sum()
  )(encoded)
  np.testing.assert_allclose(e["dynamic_linear_weights"], grad_explain, rtol=1e-5, atol=1e-9)
  grad_plain = jax.grad(
      lambda h: model.apply(variables, h, 0, False, method="forward_from")[:, 2].sum()
  )(encoded)
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
  np.testing.assert_allclose(
      jitted["contribution_map"], eager["contribution_map"], rtol=1e-5, atol=1e-9
  )
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


def _reference_layout(params, k):
  """codajax HWIO parameters -> the reference's B (r, C, k, k), A (P·D, r, 1, 1), beta (P·D,)."""
  a = np.asarray(params["A"], np.float64)
  _, _, c, d, r = a.shape
  return (
      np.asarray(params["B"], np.float64).transpose(3, 2, 0, 1),
      a.transpose(2, 0, 1, 3, 4).reshape(c * k * k * d, r, 1, 1),
      np.asarray(params["w0"], np.float64).transpose(2, 0, 1, 3).reshape(-1),
  )


def _float64_dynamic_map(model, variables, image):
  """Per explainable layer l: (h_l as CHW, W_l (K, C·H·W)) as a float64 product of layer matrices."""
  x = np.concatenate([image, 1 - image], -1).astype(np.float64).transpose(2, 0, 1)
  inputs, matrices = [], []
  for i, spec in enumerate(model.layers):
    inputs.append(x)
    b_mat, a_mat, beta = _reference_layout(variables["params"][f"layer_{i}"], spec.kernel_size)
    matrix, x = coda_layer_matrix(
        x, b_mat, a_mat, beta, spec.kernel_size, spec.stride, spec.padding, model.norm
    )
    matrices.append(matrix)
  k, ho, wo = x.shape
  head = np.kron(np.eye(k), np.ones((1, ho * wo))) / model.temperature  # sum pool, 1/T
  rows, maps = head, [None] * len(matrices)
  for i in reversed(range(len(matrices))):
    rows = rows @ matrices[i]
    maps[i] = rows  # head @ M_{L-1} ... M_i: acts on the input of layer i
  return inputs, maps, head @ x.ravel()


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_weights_and_contributions_match_an_independent_float64_product_of_layer_maps(tiny, layer):
  """``W_c`` against ``(1/T)·pool·M_{L−1}···M_l`` built in numpy float64 from the parameters."""
  model, variables, images = tiny
  e = explain(model, variables, images, "all", layer=layer)
  for n in range(images.shape[0]):
    inputs, maps, evidence = _float64_dynamic_map(model, variables, np.asarray(images[n]))
    h = inputs[layer]  # (C, H, W)
    want_w = maps[layer].reshape(model.num_classes, *h.shape).transpose(0, 2, 3, 1)
    got_w = np.asarray(e["dynamic_linear_weights"][n], np.float64)
    scale = np.abs(want_w).max()
    np.testing.assert_allclose(got_w, want_w, rtol=1e-4, atol=1e-5 * scale)
    want_c = want_w * h.transpose(1, 2, 0)[None]
    np.testing.assert_allclose(
        e["contribution_map"][n], want_c, rtol=1e-4, atol=1e-5 * np.abs(want_c).max()
    )
    np.testing.assert_allclose(e["evidence"][n], evidence, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        want_c.reshape(model.num_classes, -1).sum(-1), evidence, rtol=1e-9, atol=1e-12
    )  # the reference itself is complete


def test_bfloat16_model_is_explained_in_float32_exactly():
  model = get_model("tiny-3L", dtype=jnp.bfloat16)
  images = jax.random.uniform(jax.random.key(1), (3, 8, 8, 3))
  variables = jax.jit(model.init)(jax.random.key(0), images[:1])
  plain = model.apply(variables, images)
  for layer in (0, 1, 2):
    for targets in (None, "all"):
      e = explain(model, variables, images, targets, layer=layer)
      for field in (
          "logits",
          "evidence",
          "dynamic_linear_weights",
          "contribution_map",
          "contribution_map_sum",
      ):
        assert e[field].dtype == jnp.float32, field
      assert float(completeness_error(e).max()) <= 1e-6, (layer, targets)
      # Same model: the float32 logits differ from the bfloat16 forward by bf16 rounding only.
      np.testing.assert_allclose(e.logits, plain, rtol=0.05, atol=0.05)
  # The bfloat16 forward is really bfloat16 inside (otherwise the test above proves nothing).
  hidden = model.apply(variables, images, 1, method="layer_input")
  assert hidden.dtype == jnp.bfloat16


def test_explain_jit_and_documented_static_argnames_with_a_later_layer(tiny):
  model, variables, images = tiny
  eager = explain(model, variables, images, "all", layer=1)
  jitted = explain_jit(model, variables, images, "all", layer=1)
  assert isinstance(jitted, Explanation)
  np.testing.assert_allclose(jitted.contribution_map, eager.contribution_map, rtol=1e-5, atol=1e-9)
  documented = jax.jit(explain, static_argnames=("model", "targets", "layer"))(
      model, variables, images, targets="all", layer=2
  )
  np.testing.assert_allclose(
      documented.contribution_map,
      explain(model, variables, images, "all", layer=2).contribution_map,
      rtol=1e-5,
      atol=1e-9,
  )
  targets = jnp.array([0, 5, 9])
  given = jax.jit(explain, static_argnames=("model", "layer"))(
      model, variables, images, targets, layer=1
  )
  np.testing.assert_allclose(
      given.contribution_map,  # "all" ran the explicit form ("auto")
      eager.contribution_map[jnp.arange(3), targets],
      rtol=1e-4,
      atol=1e-8,
  )
  by_entry = explain_jit(model, variables, images, targets, layer=1)
  np.testing.assert_allclose(by_entry.contribution_map, given.contribution_map, rtol=1e-6)
  # Out-of-range targets under jit are flagged, not silently zero.
  flagged = explain_jit(model, variables, images, jnp.array([0, 10, -1]), layer=1)
  np.testing.assert_array_equal(flagged.explained_class_idx, [0, -1, -1])
  assert np.all(np.isfinite(flagged.contribution_map[0]))
  assert np.all(np.isnan(flagged.contribution_map[1:]))
  assert np.isnan(completeness_error(flagged)[1:]).all()


def test_every_layer_runs_once(tiny):
  model, variables, images = tiny
  for layer in (0, 1, 2):
    calls = []

    def count(next_fun, args, kwargs, context):
      if isinstance(context.module, CoDAConv) and context.method_name == "__call__":
        calls.append(context.module.name)
      return next_fun(*args, **kwargs)

    # Traced in place (an eager call may reuse a program compiled by an earlier test).
    with nn.intercept_methods(count):
      jax.eval_shape(lambda v, x: explain(model, v, x, "all", layer=layer), variables, images)
    assert sorted(calls) == ["layer_0", "layer_1", "layer_2"], (layer, calls)


def test_result_is_a_typed_pytree_with_dict_access(tiny):
  model, variables, images = tiny
  e = explain(model, variables, images)
  assert isinstance(model, ExplainableModel) and not isinstance(object(), ExplainableModel)
  assert set(e.keys()) == {
      "logits",
      "evidence",
      "prediction",
      "explained_class_idx",
      "dynamic_linear_weights",
      "contribution_map",
      "contribution_map_sum",
  }
  assert e["contribution_map"] is e.contribution_map and "evidence" in e
  with pytest.raises(KeyError, match="fields"):
    e["contributions"]
  doubled = jax.tree.map(lambda a: 2 * a, e)
  assert isinstance(doubled, Explanation)
  np.testing.assert_allclose(doubled.contribution_map, 2 * e.contribution_map)
  with pytest.raises(TypeError, match="not an explainable model"):
    explain(nn.Dense(3), {}, images)


def test_functional_core_on_a_plain_linear_function():
  """An ordinary matrix is dynamic-linear too: weights are its rows, exactly."""
  rng = np.random.default_rng(0)
  matrix = rng.normal(size=(4, 12)).astype(np.float32)
  h = jnp.asarray(rng.normal(size=(2, 3, 4)).astype(np.float32))
  e = explain_linear(lambda h: h.reshape(2, 12) @ matrix.T, h, "all", logit_bias=1.5)
  np.testing.assert_allclose(
      e.dynamic_linear_weights, np.broadcast_to(matrix.reshape(4, 3, 4), (2, 4, 3, 4))
  )
  want = np.asarray(h, np.float64).reshape(2, 12) @ matrix.T.astype(np.float64)
  np.testing.assert_allclose(e.logits, want + 1.5, rtol=1e-5, atol=1e-5)


def test_bad_images_and_model_settings_raise_clear_errors(tiny):
  model, variables, images = tiny
  with pytest.raises(TypeError, match=r"float images in \[0, 1\], got dtype uint8"):
    explain(model, variables, (images * 255).astype(jnp.uint8))
  with pytest.raises(TypeError, match="got dtype int32"):
    explain(model, variables, jnp.zeros((1, 8, 8, 3), jnp.int32))
  with pytest.raises(ValueError, match=r"in \[0, 1\], got values in \[-0\.49"):
    explain(model, variables, images - 0.5)
  shifted = explain(model, variables, images - 0.5, check_range=False)
  assert float(completeness_error(shifted).max()) <= 1e-6
  with pytest.raises(ValueError, match="NaN or Inf"):
    explain(model, variables, images.at[0, 0, 0, 0].set(jnp.nan))
  with pytest.raises(ValueError, match="NaN or Inf"):
    explain(model, variables, images.at[1, 2, 0, 0].set(jnp.inf), check_range=False)
  with pytest.raises(ValueError, match="empty batch"):
    explain(model, variables, images[:0])
  # Under jit NaN propagates (documented) instead of a silent finite map.
  nan_maps = explain_jit(model, variables, images.at[0, 0, 0, 0].set(jnp.nan))
  assert np.isnan(nan_maps.logits[0]).all()
  for kwargs, message in (
      (dict(num_classes=0), "num_classes must be a positive"),
      (dict(temperature=0.0), "temperature must be finite and > 0"),
      (dict(temperature=float("inf")), "temperature must be finite"),
      (dict(dtype=jnp.int32), "dtype must be a float"),
      (dict(image_channels=0), "image_channels must be a positive"),
  ):
    with pytest.raises(ValueError, match=message):
      get_model("tiny-3L", **kwargs)
    with pytest.raises(ValueError, match=message):
      get_model("hybrid-shapes-s1", **kwargs)
