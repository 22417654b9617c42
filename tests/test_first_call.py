"""Eager ``explain``, ``explain_nnx`` and ``METHODS`` presets run one cached jitted program.

Each eager call checks its inputs, then runs a program compiled once per model (or ``fn``),
layer, kind of targets and input shape, with the parameters as arguments: the results equal the
jitted entry points exactly, a second call compiles nothing, and bad input still raises its one
error before anything is compiled.
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

from codajax import _checks, attribution
from codajax.explain import explain, explain_jit, explain_nnx
from codajax.models import LayerSpec, NNXCoDANet, get_model

SMALL = {"IntGrad": dict(n_steps=3), "SmoothGrad": dict(nt_samples=2), "RISE": dict(n_masks=8)}


@pytest.fixture(scope="module")
def tiny():
  model = get_model("tiny-3L")
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  images = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3))
  return model, variables, images


class SmallCNN(nn.Module):
  """Conv, ReLU, global mean, dense: the presets take any ``images -> logits`` function, and this
  one compiles in a fraction of a CoDA Net's time."""

  @nn.compact
  def __call__(self, images):
    features = nn.relu(nn.Conv(8, (3, 3), name="conv")(images))
    return nn.Dense(10, name="head")(features.mean((1, 2)))


@pytest.fixture(scope="module")
def cnn(tiny):
  model, images = SmallCNN(), tiny[2]
  return model, jax.jit(model.init)(jax.random.key(0), images[:1]), images


def _compiles(caplog, call) -> list[str]:
  """The compile messages JAX logs while running ``call()``."""
  caplog.clear()
  with jax.log_compiles(), caplog.at_level(logging.DEBUG):
    call()
  return [r.getMessage() for r in caplog.records if "compil" in r.getMessage().lower()]


def _assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _other(variables, scale=1.1):
  return jax.tree.map(lambda p: p * scale, variables)


@pytest.mark.parametrize(
    "targets,layer", [(None, 0), ("all", 0), (np.array([3, 1]), 0), (2, 1), ("all", 2)]
)
def test_eager_explain_equals_explain_jit_and_compiles_once(tiny, caplog, targets, layer):
  model, variables, images = tiny
  eager = explain(model, variables, images, targets, layer=layer)
  _assert_same(eager, explain_jit(model, variables, images, targets, layer=layer))
  other, flipped, again = _other(variables), images[::-1], []
  assert not _compiles(
      caplog, lambda: again.append(explain(model, other, flipped, targets, layer=layer))
  )
  # New parameters are arguments of the same program, not constants of the first one.
  _assert_same(again[0], explain_jit(model, other, flipped, targets, layer=layer))
  assert not np.allclose(again[0].logits, eager.logits[::-1])


@pytest.mark.parametrize(
    "targets,error,message",
    [
        (np.array([0, 10]), ValueError, "out of range"),
        (-1, ValueError, "out of range"),
        (np.array([0.5, 1.0]), TypeError, "integer"),
        (np.array([0, 1, 2]), ValueError, "shape"),
        ("every", ValueError, "'all'"),
    ],
)
def test_bad_targets_raise_before_anything_compiles(tiny, caplog, targets, error, message):
  model, variables, _ = tiny
  fresh = jax.random.uniform(jax.random.key(5), (2, 8, 8, 3))[:, :7, :7]  # a shape never run
  raised = []

  def call():
    with pytest.raises(error, match=message) as info:
      explain(model, variables, fresh, targets)
    raised.append(info)

  # On an accelerator the image check itself is one small jitted reduction (codajax._checks);
  # nothing of the explanation may compile.
  compiled = [m for m in _compiles(caplog, call) if "_device_value_bounds" not in m]
  assert not compiled, compiled
  assert raised


def test_bad_images_and_layer_keep_their_error(tiny):
  model, variables, images = tiny
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    explain(model, variables, images * 3)
  with pytest.raises(TypeError, match="float images"):
    explain(model, variables, (images * 255).astype(jnp.uint8))
  with pytest.raises(ValueError, match="NaN"):
    explain(model, variables, images.at[0, 0, 0, 0].set(jnp.nan))
  with pytest.raises(ValueError, match="layer"):
    explain(model, variables, images, layer=7)


@pytest.mark.parametrize("on_host", [True, False], ids=["host-read", "device-read"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_every_eager_entry_refuses_a_jax_array_with_nan_or_inf(
    tiny, cnn, monkeypatch, on_host, value
):
  """The images' values are read before the program runs, for a jax.Array too: in place on the
  host, or (as on an accelerator) by one jitted reduction returning only their bounds."""
  monkeypatch.setattr(_checks, "_on_host", lambda values: on_host)
  model, variables, images = tiny
  bad = images.at[1, 5, 2, 1].set(value)
  assert isinstance(bad, jax.Array)
  message = r"^{}: the images contain NaN or Inf values\.$"
  with pytest.raises(ValueError, match=message.format("explain")):
    explain(model, variables, bad, check_range=False)
  nnx_model = NNXCoDANet((LayerSpec(4, 3, 3, 1, 1), LayerSpec(10, 8, 1, 1, 0)), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=message.format("explain")):
    explain_nnx(nnx_model, bad, check_range=False)
  cnn_model, cnn_variables, _ = cnn
  for name, method in attribution.METHODS.items():
    fn = _method_fn(name, cnn_model, cnn_variables)
    with pytest.raises(ValueError, match=message.format(method.method.__name__)):
      method(fn, bad, np.array([3, 7]), check_range=False)


@pytest.mark.parametrize("targets,layer", [(None, 0), ("all", 1), (np.array([3, 0]), 0)])
def test_eager_explain_nnx_equals_nnx_jit_and_compiles_once(caplog, targets, layer):
  layers = (LayerSpec(6, 3, 3, 1, 1), LayerSpec(8, 3, 3, 2, 1), LayerSpec(4, 2, 1, 1, 0))
  model = NNXCoDANet(layers, temperature=3.0, rngs=nnx.Rngs(0))
  images = jax.random.uniform(jax.random.key(1), (2, 6, 6, 3))
  eager = explain_nnx(model, images, targets, layer=layer)
  if targets is None or isinstance(targets, str):
    jitted = nnx.jit(explain_nnx, static_argnames=("targets", "layer"))(
        model, images, targets, layer=layer
    )
  else:
    jitted = nnx.jit(explain_nnx, static_argnames=("layer",))(
        model, images, jnp.asarray(targets), layer=layer
    )
  _assert_same(eager, jitted)
  flipped = images[::-1]
  assert not _compiles(caplog, lambda: explain_nnx(model, flipped, targets, layer=layer))
  with pytest.raises(ValueError, match="out of range"):
    explain_nnx(model, images, 10)


def _method_fn(name, model, variables):
  """A ``Partial`` with the parameters as its argument (Grad-CAM: the feature function)."""
  if name == "GCam":
    return jax.tree_util.Partial(_last_layer_features, variables)
  return jax.tree_util.Partial(model.apply, variables)


def _last_layer_features(variables, images, delta):
  return attribution.layer_function(SmallCNN(), variables, "conv")(images, delta)


@pytest.mark.parametrize("name", list(attribution.METHODS))
def test_eager_presets_equal_jitted_ones_and_compile_once(cnn, caplog, name):
  model, variables, images = cnn
  method, settings = attribution.METHODS[name], SMALL.get(name, {})
  targets = np.array([3, 7])
  jitted = jax.jit(lambda v, x, t: method(_method_fn(name, model, v), x, t, **settings))
  eager = method(_method_fn(name, model, variables), images, targets, **settings)
  np.testing.assert_array_equal(np.asarray(eager), np.asarray(jitted(variables, images, targets)))
  other = _other(variables, 0.9)
  again = []
  fn = _method_fn(name, model, other)
  assert not _compiles(caplog, lambda: again.append(method(fn, images, targets, **settings)))
  np.testing.assert_array_equal(np.asarray(again[0]), np.asarray(jitted(other, images, targets)))
  with pytest.raises(ValueError, match=r"\[0, 10\)"):
    method(fn, images, np.array([0, 10]), **settings)


def test_a_closure_fn_is_static_and_compiled_once_per_function_object(cnn, caplog):
  model, variables, images = cnn
  fn = lambda x: model.apply(variables, x)
  first = attribution.METHODS["IxG"](fn, images, 1)
  flipped = images[::-1]
  assert not _compiles(caplog, lambda: attribution.METHODS["IxG"](fn, flipped, 1))
  by_partial = attribution.METHODS["IxG"](jax.tree_util.Partial(model.apply, variables), images, 1)
  np.testing.assert_allclose(first, by_partial, rtol=1e-5, atol=1e-7)
