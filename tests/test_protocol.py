"""codajax.explain.protocol and .base: the checks, the segment loops and the explainable base."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codajax.explain import base, protocol


def test_check_layer_accepts_ints_in_range_only():
  for layer in (0, 2, np.int64(1)):
    protocol.check_layer(layer, 3)
  for bad in (3, -1, True, 1.0, np.float32(1.0), "1", None):
    with pytest.raises(ValueError, match=r"layer must be in 0\.\.2 \(the model has 3 explainable"):
      protocol.check_layer(bad, 3)


def test_segment_loops_run_in_order():
  calls = []

  def segment(k):
    def run(h, *args):
      calls.append((k, args))
      return 10 * h + k

    return run

  segments = [segment(1), segment(2), segment(3)]
  assert protocol.run_segments(0, segments, range(3), "explain") == 123
  assert calls == [(1, ("explain",)), (2, ("explain",)), (3, ("explain",))]
  calls.clear()
  assert protocol.run_segments(4, segments, range(1, 3)) == 423
  assert calls == [(2, ()), (3, ())]
  assert protocol.run_segments(7, segments, range(0)) == 7
  calls.clear()
  assert protocol.segment_inputs(0, segments) == (0, 1, 12)
  assert calls == [(1, ()), (2, ())]


def test_segment_inputs_pass_their_arguments_on():
  calls = []

  def run(h, *args):
    calls.append(args)
    return h + 1

  assert protocol.segment_inputs(0, [run, run, run], False) == (0, 1, 2)
  assert calls == [(False,), (False,)]


class _Toy(base.ExplainableMixin):
  """Three segments ``h -> 10 h + k`` on ``[x, 1 − x]``; logits ``(Σh, −Σh) + 0.5``."""

  image_channels, num_classes, logit_bias = 1, 2, 0.5

  def __init__(self):
    self.calls = []

  def _segments(self):
    def segment(k):
      def run(h, explain):
        self.calls.append((k, explain))
        return 10 * h + k

      return run

    return [segment(1), segment(2), segment(3)]

  def _readout(self, out, add_bias):
    total = out.sum(axis=(1, 2, 3))
    logits = np.stack([total, -total], axis=-1)
    return logits + self.logit_bias if add_bias else logits


def test_the_base_composes_encode_segments_and_readout():
  # x = 0.25: h0 = [0.25, 0.75], h1 = [3.5, 8.5], h2 = [37, 87], h3 = [373, 873], Σ = 1246.
  model, x = _Toy(), np.full((1, 1, 1, 1), 0.25)
  h = [np.array([0.25, 0.75]), np.array([3.5, 8.5]), np.array([37.0, 87.0])]
  assert model.num_explainable_layers == 3
  assert isinstance(model, base.ExplainableModel)
  np.testing.assert_allclose(np.asarray(model.encode(x)).ravel(), h[0])
  np.testing.assert_allclose(np.asarray(model.layer_input(x, 2)).ravel(), h[2])
  assert model.calls == [(1, False), (2, False)]
  model.calls.clear()
  out = model.forward_from(h[1].reshape(1, 1, 1, 2), 1, explain=True, add_bias=False)
  np.testing.assert_allclose(out, [[1246.0, -1246.0]])
  assert model.calls == [(2, True), (3, True)]
  model.calls.clear()
  logits, inputs = model.forward_and_inputs(x)
  np.testing.assert_allclose(logits, [[1246.5, -1245.5]])
  for got, want in zip(inputs, h, strict=True):
    np.testing.assert_allclose(np.asarray(got).ravel(), want)
  assert model.calls == [(1, False), (2, False), (3, False)]
  np.testing.assert_allclose(model(x), logits)
  np.testing.assert_allclose(np.asarray(model.explanation_inputs(x)[1]).ravel(), h[1])
  with pytest.raises(ValueError, match="_Toy was built for 1-channel images"):
    model.encode(np.zeros((1, 1, 1, 2)))
  with pytest.raises(ValueError, match=r"layer must be in 0\.\.2"):
    model.forward_from(h[0].reshape(1, 1, 1, 2), 3)


class _Scale(nn.Module):

  @nn.compact
  def __call__(self, h, explain=False):
    return h * self.param("s", nn.initializers.constant(2.0), ())


class _LinenToy(base.ExplainableModule):
  image_channels: int = 1
  logit_bias: float = 0.0
  num_classes = 2
  num_explainable_layers = 2

  def setup(self):
    self.layers = [_Scale(name="layer_0"), _Scale(name="layer_1")]

  def _segments(self):
    return self.layers

  def _readout(self, out, add_bias):
    return out.sum(axis=(1, 2)) + (self.logit_bias if add_bias else 0.0)


def test_linen_base_keeps_the_parameter_names_and_wraps_its_methods():
  model, x = _LinenToy(), jnp.full((1, 2, 2, 1), 0.25)
  variables = model.init(jax.random.key(0), x)
  assert set(variables["params"]) == {"layer_0", "layer_1"}
  logits = model.apply(variables, x)
  np.testing.assert_allclose(logits, [[4.0, 12.0]])  # 4 · [0.25, 0.75] summed over 4 pixels
  # Linen records (and intercepts) only wrapped methods: the base's must be.
  _, state = model.apply(
      variables,
      x,
      capture_intermediates=lambda module, name: module.path == ()
      and name in ("__call__", "forward_from", "encode"),
      mutable=["intermediates"],
  )
  assert set(state["intermediates"]) == {"__call__", "forward_from", "encode"}
  _, state = model.apply(
      variables,
      x,
      1,
      method="layer_input",
      capture_intermediates=lambda module, name: name == "layer_input",
      mutable=["intermediates"],
  )
  np.testing.assert_allclose(
      state["intermediates"]["layer_input"][0][..., 0], np.full((1, 2, 2), 0.5)
  )
