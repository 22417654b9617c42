"""Attribution and metrics on a small CoDA-Net (codajax.models): identities of the explainers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codajax import attribution, metrics
from codajax.models.coda_net import CoDANet, LayerSpec

TEMPERATURE = 10.0


@pytest.fixture(scope="module")
def coda():
  model = CoDANet(
      layers=(LayerSpec(8, 4, 3, 2, 1), LayerSpec(5, 4, 1, 1, 0)), temperature=TEMPERATURE
  )
  images = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
  variables = jax.jit(model.init)(jax.random.key(1), images)
  return model, variables, images


def test_grad_cam_on_the_last_coda_layer_is_the_relu_class_map_over_t(coda):
  model, variables, images = coda
  target = jnp.array([1, 4])
  _, state = model.apply(variables, images, capture_intermediates=True, mutable=["intermediates"])
  class_maps = state["intermediates"]["layer_1"]["__call__"][0]  # (N, 4, 4, K)
  expected = (
      jax.nn.relu(jnp.take_along_axis(class_maps, target[:, None, None, None], axis=-1))
      / TEMPERATURE
  )
  got = attribution.layer_grad_cam(
      model, variables, images, target, layer="layer_1", upsample=False
  )
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-8)


def test_integrated_gradients_complete_on_a_coda_net(coda):
  model, variables, images = coda
  fn = lambda x: model.apply(variables, x)
  target = jnp.array([0, 2])
  summed = attribution.METHODS["IntGrad"](fn, images, target).sum(axis=(1, 2, 3))
  rows = jnp.arange(2)
  np.testing.assert_allclose(
      summed, fn(images)[rows, target] - fn(jnp.zeros_like(images))[rows, target], rtol=1e-3
  )


def test_pixel_removal_zeroes_the_encoded_input_of_a_coda_net(coda):
  model, variables, images = coda
  fn_encoded = jax.jit(lambda x6: model.apply(variables, x6, method=CoDANet.forward_from))
  labels = np.array([3, 1])
  importance = jax.random.normal(jax.random.key(2), (2, 8, 8))
  probabilities = metrics.pixel_removal_probabilities(
      fn_encoded, images, labels, importance, n_points=8
  )
  logits = model.apply(variables, images)
  np.testing.assert_allclose(
      probabilities[:, 0], jax.nn.sigmoid(logits[jnp.arange(2), labels]), rtol=1e-5
  )
  removed = np.asarray(metrics.removal_masks(importance, n_points=8))[:, 4, :, :, None]
  expected = fn_encoded(
      jnp.concatenate([images, 1 - images], axis=-1) * removed
  )  # removed pixels: 0 in all 6 channels
  np.testing.assert_allclose(
      probabilities[:, 4], jax.nn.sigmoid(expected[jnp.arange(2), labels]), rtol=1e-5
  )
