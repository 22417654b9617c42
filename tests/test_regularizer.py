"""The dynamic-matrix L1 regulariser: class choice, exact value, parameter gradient, training."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from codajax.bcos.resnet import tiny_resnet
from codajax.explain import ExplainableModel
from codajax.models import BackboneSpec, CoDANet, HybridNet, LayerSpec
from codajax.nn import dau
from codajax.regularizers import (
    RegularisableModel,
    as_variables,
    differentiable_dynamic_map,
    dynamic_matrix_l1,
    regularised_classes,
)

TINY_LAYERS = (LayerSpec(5, 3, 3, 1, 1), LayerSpec(6, 3, 3, 2, 1), LayerSpec(4, 2, 1, 1, 0))


def _random_variables(model, images, seed=0):
  """Variables of ``model`` filled with numpy noise (no init compile; every path active)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), images)
  rng = np.random.default_rng(seed)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  values = [
      (1.0 if path[-1].key == "scale" else 0.0)
      + rng.uniform(-0.5, 0.5, leaf.shape).astype(np.float32)
      for path, leaf in leaves
  ]
  return jax.tree.unflatten(treedef, [jnp.asarray(v) for v in values])


IMAGES = np.random.default_rng(1).uniform(size=(2, 6, 6, 3)).astype(np.float32)


@functools.cache
def _tiny_coda():
  model = CoDANet(TINY_LAYERS, temperature=3.0)
  return model, _random_variables(model, IMAGES), jnp.asarray(IMAGES)


@functools.cache
def _tiny_hybrid():
  model = HybridNet(
      BackboneSpec("resnet", (1, 1), (4, 8)),
      1,
      (LayerSpec(5, 3, 1, 1, 0), LayerSpec(6, 3, 3, 2, 1), LayerSpec(4, 2, 1, 1, 0)),
      temperature=3.0,
  )
  return model, _random_variables(model, IMAGES), jnp.asarray(IMAGES)


MODELS = {"coda": _tiny_coda, "hybrid": _tiny_hybrid}


@functools.partial(jax.jit, static_argnums=(0, 4))
def _direct_rows(model, params, images, classes, layer=0):
  """``W_c(x)`` from the full Jacobian of the explanation-mode evidence (independent path)."""
  variables = {"params": params}
  h = model.apply(variables, images, method="explanation_inputs")[layer]
  jac = jax.jacrev(lambda h: model.apply(variables, h, layer, True, False, method="forward_from"))(
      h
  )
  n = images.shape[0]
  per_image = jac[jnp.arange(n), :, jnp.arange(n)]  # (N, K, ...)
  return jnp.take_along_axis(
      per_image, classes.reshape(*classes.shape, *(1,) * (h.ndim - 1)), axis=1
  )


def test_regularised_classes_are_the_label_and_distinct_others():
  labels = jnp.array([0, 3, 9, 9, 5, 1])
  classes = regularised_classes(labels, 10, jax.random.key(0), num_other=3)
  assert classes.shape == (6, 4) and classes.dtype == jnp.int32
  np.testing.assert_array_equal(classes[:, 0], labels)
  for row in np.asarray(classes):
    assert len(set(row)) == 4 and all(0 <= c < 10 for c in row)
  every = regularised_classes(labels, 10, jax.random.key(1), num_other=9)
  np.testing.assert_array_equal(np.sort(every, axis=1), np.tile(np.arange(10), (6, 1)))
  # One other class, drawn uniformly from the nine wrong ones.
  many = regularised_classes(jnp.zeros(9000, jnp.int32), 10, jax.random.key(2))[:, 1]
  counts = np.bincount(np.asarray(many), minlength=10)
  assert counts[0] == 0 and counts[1:].min() > 850 and counts[1:].max() < 1150
  assert not np.array_equal(
      regularised_classes(labels, 10, jax.random.key(3)),
      regularised_classes(labels, 10, jax.random.key(4)),
  )


def test_regularised_classes_errors():
  with pytest.raises(ValueError, match=r"num_other must be in 0\.\.9"):
    regularised_classes(jnp.array([1]), 10, jax.random.key(0), num_other=10)
  with pytest.raises(ValueError, match="integer class indices"):
    regularised_classes(jnp.array([1.0]), 10, jax.random.key(0))


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_rows_are_the_exact_dynamic_linear_map_at_a_later_layer(kind):
  """Layer 1 here; layer 0 (the default) is checked by the gradient tests below."""
  model, variables, images = MODELS[kind]()
  classes = jnp.array([[1, 0, 3], [3, 2, 1]])

  @jax.jit
  def rows_and_direct(variables):
    return (
        differentiable_dynamic_map(model, variables, images, classes, layer=1),
        _direct_rows(model, variables["params"], images, classes, 1),
    )

  rows, direct = rows_and_direct(variables)
  assert rows.shape == direct.shape == (2, 3, 6, 6, 5)
  np.testing.assert_allclose(rows, direct, rtol=1e-5, atol=1e-7)


def test_params_or_variables():
  params = {"layer_0": {"B": jnp.zeros(1)}}
  assert as_variables(params) == {"params": params}
  assert as_variables({"params": params}) == {"params": params}


def _sign_fixed_l1(model, params, images, classes):
  """``p -> mean(sign(W(params)) ⊙ W(p))`` with W from the Jacobian: smooth, same gradient at p."""
  signs = jnp.sign(_direct_rows(model, params, images, classes))
  return jax.jit(lambda p: jnp.mean(signs * _direct_rows(model, p, images, classes)))


def _random_like(tree, seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), tree)


def _directional(f, x, direction, eps):
  """Central difference of ``f`` at ``x`` along ``direction`` (the shifts in numpy)."""

  def shifted(step):
    return jax.tree.map(lambda a, d: np.asarray(a) + np.float32(step) * d, x, direction)

  return float(f(shifted(eps)) - f(shifted(-eps))) / (2 * eps)


def _dot(a, b):
  return float(sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


def test_parameter_gradient_matches_finite_differences():
  """∇θ mean|W_c| against central differences of the directly computed (jacrev) map.

  The kink of |·| is taken out by fixing the signs at θ (same gradient, smooth),
  so float32 differences suffice. Each parameter group of the hybrid is checked
  on its own: every path (a CoDA layer's weights, its input, the backbone) must
  be right. The backbone's ReLUs put kinks into the differences, hence the
  smaller step and looser tolerance there; the next test checks the embedding
  path tightly.
  """
  model, variables, images = _tiny_hybrid()
  params = variables["params"]
  labels, key = jnp.array([2, 0]), jax.random.key(3)
  classes = regularised_classes(labels, model.num_classes, key)
  smooth = _sign_fixed_l1(model, params, images, classes)
  value, grad = jax.jit(
      jax.value_and_grad(lambda p: dynamic_matrix_l1(model, p, images, labels, key))
  )(params)
  np.testing.assert_allclose(value, smooth(params), rtol=1e-6)  # = mean |W_c| from the Jacobian
  assert float(value) > 0
  direction = _random_like(params, 11)
  zeros = jax.tree.map(np.zeros_like, direction)
  groups = [("features",)] + [("coda", layer) for layer in direction["coda"]]
  assert len(groups) == 4
  for group in groups:
    step = jax.tree_util.tree_map_with_path(
        lambda path, d, z: d if tuple(k.key for k in path[: len(group)]) == group else z,
        direction,
        zeros,
    )
    eps, rtol = (1e-4, 5e-2) if group == ("features",) else (1e-3, 1e-2)
    finite = _directional(smooth, params, step, eps)
    assert abs(finite) > 1e-5, group
    np.testing.assert_allclose(_dot(grad, step), finite, rtol=rtol, err_msg=str(group))


def test_gradient_with_respect_to_the_embedding_matches_finite_differences():
  """The hybrid's backbone gradient is (standard autodiff) · ∂ mean|W_c| / ∂embedding."""
  model, variables, images = _tiny_hybrid()
  coda, params = model.coda_net(), variables["params"]["coda"]
  embedding = model.apply(variables, images, method="embed")
  labels, key = jnp.array([2, 0]), jax.random.key(3)
  classes = regularised_classes(labels, model.num_classes, key)
  signs = jnp.sign(_direct_rows(coda, params, embedding, classes))
  smooth = jax.jit(lambda e: jnp.mean(signs * _direct_rows(coda, params, e, classes)))
  grad = jax.jit(jax.grad(lambda e: dynamic_matrix_l1(coda, params, e, labels, key)))(embedding)
  for seed in (0, 1):
    direction = _random_like(embedding, seed)
    np.testing.assert_allclose(
        _dot(grad, direction), _directional(smooth, embedding, direction, 3e-3), rtol=1e-2
    )


def test_adam_steps_with_the_regulariser_decrease_the_total_loss():
  model, variables, _ = _tiny_coda()
  images = jnp.asarray(np.random.default_rng(8).uniform(size=(4, 6, 6, 3)), jnp.float32)
  labels = jnp.array([0, 1, 2, 3])
  weight = 10.0

  def total_loss(params, key):
    logits = model.apply({"params": params}, images)
    bce = optax.sigmoid_binary_cross_entropy(logits, jax.nn.one_hot(labels, 4)).mean()
    return bce + weight * dynamic_matrix_l1(model, params, images, labels, key), bce

  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, opt_state, key):
    (loss, bce), grads = jax.value_and_grad(total_loss, has_aux=True)(params, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  params, opt_state = variables["params"], tx.init(variables["params"])
  fixed_key = jax.random.key(0)
  evaluate = jax.jit(
      lambda p: (
          total_loss(p, fixed_key)[0],
          dynamic_matrix_l1(model, p, images, labels, fixed_key),
      )
  )
  start, l1_start = evaluate(params)
  for i in range(6):
    params, opt_state, loss = step(params, opt_state, jax.random.key(i))
    assert np.isfinite(float(loss))
  end, l1_end = evaluate(params)
  assert float(end) < float(start) and float(l1_end) < float(l1_start)


def test_regulariser_jits_with_more_classes_and_rejects_other_models():
  model, variables, images = _tiny_coda()
  labels, key = jnp.array([1, 2]), jax.random.key(0)
  jitted = jax.jit(dynamic_matrix_l1, static_argnums=0, static_argnames="num_other")(
      model, variables, images, labels, key, num_other=3
  )
  classes = regularised_classes(labels, model.num_classes, key, num_other=3)
  want = jnp.mean(jnp.abs(_direct_rows(model, variables["params"], images, classes)))
  np.testing.assert_allclose(jitted, want, rtol=1e-6)
  with pytest.raises(TypeError, match="CoDANet or a HybridNet"):
    dynamic_matrix_l1(object(), variables, images, labels, key)
  # A B-cos model explains (the explanation protocol) but has no weights-input pass.
  bcos = tiny_resnet(num_classes=4)
  assert isinstance(bcos, ExplainableModel) and not isinstance(bcos, RegularisableModel)
  with pytest.raises(TypeError, match="BcosResNet, which lacks forward_with_weights_from"):
    dynamic_matrix_l1(bcos, variables, images, labels, key)
  for coda_model in (model, _tiny_hybrid()[0]):
    assert isinstance(coda_model, RegularisableModel)
  with pytest.raises(ValueError, match=r"classes must have shape \(N, n\)"):
    differentiable_dynamic_map(model, variables, images, jnp.array([1, 2]))
  with pytest.raises(ValueError, match=r"layer must be in 0\.\.2"):
    differentiable_dynamic_map(model, variables, images, jnp.array([[1], [2]]), layer=3)


@pytest.mark.parametrize("form", dau.FORMS)
def test_dau_weights_input_gives_a_linear_layer_with_parameter_gradients(form):
  params = dau.init_dau_params(jax.random.key(0), 3, 4, 2, 3)
  x, y, z = jax.random.uniform(jax.random.key(1), (3, 2, 5, 5, 3))

  def conv(p, a, **kwargs):
    return dau.dau_conv(p, a, stride=2, padding=1, form=form, **kwargs)

  @jax.jit
  def outputs(params):
    linear = lambda a: conv(params, a, weights_input=x)  # noqa: E731
    grad = jax.grad(lambda p: conv(p, y, weights_input=x).sum())(params)
    detached = jax.grad(lambda p: conv(p, y, weights_input=x, explain=True).sum())(params)
    return (
        linear(x),
        conv(params, x),
        linear(y),
        conv(params, y, weights_input=x, explain=True),
        linear(2 * y - 3 * z),
        2 * linear(y) - 3 * linear(z),
        grad,
        detached,
    )

  same, plain, linear_y, explained, combined, combination, grad, detached = outputs(params)
  np.testing.assert_allclose(same, plain, rtol=1e-6)  # weights_input = x: the layer
  np.testing.assert_allclose(linear_y, explained, rtol=1e-6)  # the value of explanation mode
  np.testing.assert_allclose(combined, combination, rtol=1e-4, atol=1e-6)  # exactly linear
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grad))  # reaches params
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(detached))
  with pytest.raises(ValueError, match="weights_input has shape"):
    conv(params, y, weights_input=x[:1])


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_logits_come_from_the_same_pass_with_the_forward_gradient(kind):
  """The regulariser's logits are the model's, and so is their parameter gradient."""
  from codajax.regularizers import logits_and_dynamic_matrix_l1

  model, variables, images = MODELS[kind]()
  labels, key = jnp.array([1, 3]), jax.random.key(5)
  cot = jnp.asarray(np.random.default_rng(4).normal(size=(2, 4)), jnp.float32)

  @jax.jit
  def both(params):
    logits, penalty = logits_and_dynamic_matrix_l1(model, params, images, labels, key)
    grad_shared = jax.grad(
        lambda p: jnp.sum(cot * logits_and_dynamic_matrix_l1(model, p, images, labels, key)[0])
    )(params)
    grad_plain = jax.grad(lambda p: jnp.sum(cot * model.apply({"params": p}, images)))(params)
    return logits, penalty, grad_shared, grad_plain, model.apply({"params": params}, images)

  logits, penalty, grad_shared, grad_plain, plain = both(variables["params"])
  np.testing.assert_allclose(logits, plain, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(
      penalty, dynamic_matrix_l1(model, variables, images, labels, key), rtol=1e-6
  )
  for shared, direct in zip(jax.tree.leaves(grad_shared), jax.tree.leaves(grad_plain)):
    np.testing.assert_allclose(shared, direct, rtol=1e-4, atol=1e-6 * float(jnp.abs(direct).max()))


def test_train_step_with_the_regulariser_equals_the_two_pass_gradient():
  """``make_train_step(l1_matrix_weight > 0)`` (logits from the regulariser's pass) equals
  BCE of ``model.apply`` plus λ·``dynamic_matrix_l1``, differentiated directly."""
  from codajax import parallel
  from codajax.train.step import TrainState, make_train_step

  model, variables, images = _tiny_coda()
  params, labels, weight = variables["params"], jnp.array([1, 3]), 2.0
  tx = optax.sgd(0.1)
  mesh = parallel.make_mesh(jax.devices()[:1])
  key = jax.random.key(7)
  state = TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=tx.init(params),
      rng=jax.random.key_data(key),
  )
  batch = {"image": jnp.asarray(np.asarray(images) * 255, jnp.uint8), "label": labels}
  step = make_train_step(model, tx, l1_matrix_weight=weight, mesh=mesh)
  new_state, metrics = step(
      jax.tree.map(jnp.copy, state), parallel.shard_batch(jax.tree.map(np.asarray, batch), mesh)
  )

  floats = batch["image"].astype(jnp.float32) / 255.0
  rng = jax.random.fold_in(key, 0)

  def loss(p):
    logits = model.apply({"params": p}, floats)
    bce = optax.sigmoid_binary_cross_entropy(logits, jax.nn.one_hot(labels, 4)).mean()
    return bce + weight * dynamic_matrix_l1(model, p, floats, labels, rng)

  grads = jax.jit(jax.grad(loss))(params)
  want = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
  for got, expected in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(want)):
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
  assert float(metrics["train/l1_matrix"]) > 0
