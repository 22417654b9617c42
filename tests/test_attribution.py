"""Tests of codajax.attribution against closed forms on linear models and hand computations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from codajax import attribution
from codajax.attribution.gradients import INTEGRATION_METHODS
from codajax.attribution.perturbation import _bilinear_matrix

N, H, W, C, K = 2, 8, 8, 3, 4


@pytest.fixture(scope="module")
def linear():
  """A linear model x -> x.reshape(N, -1) @ weights, its weights (H, W, C, K), images and targets."""
  weights = jax.random.normal(jax.random.key(0), (H * W * C, K))
  images = jax.random.uniform(jax.random.key(1), (N, H, W, C))
  fn = lambda x: x.reshape(x.shape[0], -1) @ weights
  return fn, np.asarray(weights).reshape(H, W, C, K), images, jnp.array([1, 3])


_RNG = np.random.default_rng(2)
_W1 = (_RNG.standard_normal((H * W * C, 16)) / 8).astype(np.float32)
_W2 = _RNG.standard_normal((16, K)).astype(np.float32)


def nonlinear_fn(x):
  """A smooth non-linear classifier (N, H, W, C) -> (N, K)."""
  flat = x.reshape(x.shape[0], -1)
  return jnp.tanh(flat @ _W1) @ _W2 + jnp.sum(flat**2, axis=1, keepdims=True) / 50


def target_weights(weights, target):
  return np.stack([weights[..., t] for t in np.asarray(target)])


# ---------------------------------------------------------------------------------- gradients


def test_gradient_of_linear_model_is_its_weight_row(linear):
  fn, weights, images, target = linear
  expected = target_weights(weights, target)
  np.testing.assert_allclose(attribution.gradient(fn, images, target), expected, rtol=1e-6)
  np.testing.assert_allclose(
      attribution.gradient(fn, images, target, abs=True), np.abs(expected), rtol=1e-6
  )


def test_input_x_gradient_of_linear_model(linear):
  fn, weights, images, target = linear
  expected = np.asarray(images) * target_weights(weights, target)
  np.testing.assert_allclose(
      attribution.input_x_gradient(fn, images, target), expected, rtol=1e-5, atol=1e-6
  )


def test_int_target_broadcasts(linear):
  fn, weights, images, _ = linear
  np.testing.assert_allclose(
      attribution.gradient(fn, images, 2), np.stack([weights[..., 2]] * N), rtol=1e-6
  )


@pytest.mark.parametrize("method", INTEGRATION_METHODS)
def test_integration_rules_cover_the_unit_interval(method):
  alphas, weights = attribution.integration_rule(20, method)
  assert alphas.shape == weights.shape == (20,)
  assert np.all((alphas >= 0) & (alphas <= 1))
  np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-12)


def test_riemann_nodes():
  np.testing.assert_allclose(
      attribution.integration_rule(4, "riemann_left")[0], [0, 0.25, 0.5, 0.75]
  )
  np.testing.assert_allclose(
      attribution.integration_rule(4, "riemann_right")[0], [0.25, 0.5, 0.75, 1]
  )
  np.testing.assert_allclose(
      attribution.integration_rule(4, "riemann_middle")[0], [0.125, 0.375, 0.625, 0.875]
  )
  alphas, weights = attribution.integration_rule(5, "riemann_trapezoid")
  np.testing.assert_allclose(alphas, [0, 0.25, 0.5, 0.75, 1])
  np.testing.assert_allclose(weights, [0.125, 0.25, 0.25, 0.25, 0.125])


def test_gausslegendre_rule_is_captums():
  nodes, weights = np.polynomial.legendre.leggauss(20)
  alphas, step_sizes = attribution.integration_rule(20, "gausslegendre")
  np.testing.assert_allclose(alphas, 0.5 * (1 + nodes))
  np.testing.assert_allclose(step_sizes, 0.5 * weights)


@pytest.mark.parametrize(
    "method,n_steps,rtol",
    [("gausslegendre", 20, 1e-4), ("riemann_trapezoid", 200, 1e-3), ("riemann_left", 400, 2e-2)],
)
def test_integrated_gradients_completeness(method, n_steps, rtol):
  images = jax.random.uniform(jax.random.key(4), (N, H, W, C))
  baselines = 0.25
  target = jnp.array([0, 2])
  attributions = attribution.integrated_gradients(
      nonlinear_fn,
      images,
      target,
      baselines=baselines,
      n_steps=n_steps,
      method=method,
      items_per_pass=64,
  )
  rows = jnp.arange(N)
  expected = (
      nonlinear_fn(images)[rows, target]
      - nonlinear_fn(jnp.full_like(images, baselines))[rows, target]
  )
  np.testing.assert_allclose(attributions.sum(axis=(1, 2, 3)), expected, rtol=rtol)


def test_integrated_gradients_of_linear_model_equals_input_x_gradient(linear):
  fn, _, images, target = linear
  np.testing.assert_allclose(
      attribution.integrated_gradients(fn, images, target, n_steps=7),
      attribution.input_x_gradient(fn, images, target),
      rtol=1e-5,
      atol=1e-6,
  )


def test_integrated_gradients_chunking_does_not_change_the_result():
  images = jax.random.uniform(jax.random.key(5), (N, H, W, C))
  whole = attribution.integrated_gradients(nonlinear_fn, images, 1, n_steps=20)
  chunked = attribution.integrated_gradients(nonlinear_fn, images, 1, n_steps=20, items_per_pass=3)
  np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-7)


def test_smoothgrad_with_zero_noise_is_the_wrapped_method():
  images = jax.random.uniform(jax.random.key(6), (N, H, W, C))
  smooth = attribution.smooth_grad(nonlinear_fn, images, 1, key=0, nt_samples=4, stdevs=0.0)
  np.testing.assert_allclose(
      smooth, attribution.gradient(nonlinear_fn, images, 1), rtol=1e-5, atol=1e-7
  )
  tunnel_ig = attribution.noise_tunnel(
      attribution.integrated_gradients,
      nonlinear_fn,
      images,
      1,
      key=0,
      nt_samples=3,
      stdevs=0.0,
      n_steps=5,
      method="riemann_middle",
  )
  np.testing.assert_allclose(
      tunnel_ig,
      attribution.integrated_gradients(nonlinear_fn, images, 1, n_steps=5, method="riemann_middle"),
      rtol=1e-5,
      atol=1e-7,
  )
  variance = attribution.noise_tunnel(
      attribution.gradient,
      nonlinear_fn,
      images,
      1,
      key=0,
      nt_samples=3,
      stdevs=0.0,
      nt_type="vargrad",
  )
  np.testing.assert_allclose(variance, 0.0, atol=1e-6)


def test_smoothgrad_is_seeded_and_batch_size_invariant():
  images = jax.random.uniform(jax.random.key(7), (N, H, W, C))
  run = jax.jit(
      lambda key: attribution.smooth_grad(
          nonlinear_fn, images, 2, key=key, nt_samples=5, stdevs=0.2
      )
  )
  first = run(jax.random.key(3))
  np.testing.assert_array_equal(first, run(jax.random.key(3)))
  chunked = attribution.smooth_grad(
      nonlinear_fn,
      images,
      2,
      key=jax.random.key(3),
      nt_samples=5,
      stdevs=0.2,
      items_per_pass=2,
  )
  np.testing.assert_allclose(chunked, first, rtol=1e-5, atol=1e-7)
  assert not np.allclose(first, run(jax.random.key(4)))
  assert not np.allclose(first, attribution.gradient(nonlinear_fn, images, 2))


# ---------------------------------------------------------------------------------- occlusion


def expected_occlusion(weights, images, target, window, stride, quirk):
  """Occlusion of a linear model written out with loops: diff of window m = sum over m of W_t * x."""
  contributions = np.asarray(images) * target_weights(weights, target)  # (N, H, W, C)

  def ranges(size):
    out = []
    for a in range(size // stride):
      centre = a * stride
      if quirk:
        half = (window - 1) // 2
        start, stop = centre - half, centre + half  # k - 1 pixels
      else:
        start = centre - (window - 1) // 2
        stop = start + window
      out.append((max(0, start), min(size, stop)))
    return out

  result = np.zeros(images.shape[:3])
  for top, bottom in ranges(H):
    for left, right in ranges(W):
      diff = contributions[:, top:bottom, left:right].sum(axis=(1, 2, 3))
      result[:, top:bottom, left:right] += diff[:, None, None] / ((bottom - top) * (right - left))
  return result[..., None]


@pytest.mark.parametrize("quirk", [True, False])
@pytest.mark.parametrize("window", [3, 5])
def test_occlusion_of_linear_model(linear, quirk, window):
  fn, weights, images, target = linear
  got = attribution.occlusion(
      fn, images, target, sliding_window_shapes=window, strides=2, reference_window_quirk=quirk
  )
  np.testing.assert_allclose(
      got, expected_occlusion(weights, images, target, window, 2, quirk), rtol=1e-4, atol=1e-5
  )


def test_occlusion_even_window_follows_the_reference_formula():
  bounds = attribution.occlusion_window_bounds(32, 32, 32)
  np.testing.assert_array_equal(bounds, [[0, 32]])
  bounds = attribution.occlusion_window_bounds(8, 4, 2)  # [max(0, (a+1)·2 − 4), a·2 + 4)
  np.testing.assert_array_equal(bounds, [[0, 4], [0, 6], [2, 8], [4, 8]])


def test_occlusion_windows_of_the_reference_presets():
  occ5 = attribution.occlusion_window_bounds(32, 5, 2)
  occ9 = attribution.occlusion_window_bounds(32, 9, 2)
  assert len(occ5) == len(occ9) == 16  # 16 x 16 = 256 masks on 32 x 32
  assert len(attribution.occlusion_window_bounds(96, 9, 2)) ** 2 == 2304
  np.testing.assert_array_equal(occ5[:3], [[0, 2], [0, 4], [2, 6]])
  assert set(np.diff(occ5[1:], axis=1).ravel()) == {4}
  np.testing.assert_array_equal(occ9[:3], [[0, 4], [0, 6], [0, 8]])
  np.testing.assert_array_equal(occ9[-1], [26, 32])
  exact = attribution.occlusion_window_bounds(32, 5, 2, reference_window_quirk=False)
  np.testing.assert_array_equal(exact[:3], [[0, 3], [0, 5], [2, 7]])


def test_occlusion_baseline_and_chunking(linear):
  fn, weights, images, target = linear
  reference = attribution.occlusion(
      fn, images, target, sliding_window_shapes=3, items_per_pass=None
  )
  for per_pass in (1, 7):
    np.testing.assert_allclose(
        attribution.occlusion(fn, images, target, sliding_window_shapes=3, items_per_pass=per_pass),
        reference,
        rtol=1e-5,
        atol=1e-6,
    )
  # occluding with the image's own value changes nothing
  constant = jnp.full_like(images, 0.5)
  np.testing.assert_allclose(
      attribution.occlusion(fn, constant, target, sliding_window_shapes=3, baselines=0.5),
      0.0,
      atol=1e-5,
  )


def test_occlusion_rejects_empty_quirk_windows(linear):
  fn, _, images, target = linear
  with pytest.raises(ValueError, match="empty"):
    attribution.occlusion(fn, images, target, sliding_window_shapes=1)


# ---------------------------------------------------------------------------------- Grad-CAM


class TinyNet(nn.Module):
  """Conv features (4 x 4 x 5 on 8 x 8 inputs) -> ReLU -> spatial mean -> dense logits."""

  @nn.compact
  def __call__(self, x):
    features = nn.Conv(5, (3, 3), strides=2, name="features")(x)
    return nn.Dense(K, name="head")(jnp.mean(nn.relu(features), axis=(1, 2)))


class TinyPerturbedNet(nn.Module):
  """TinyNet with the feature map sown and perturbable (Flax's intermediate-gradient idiom)."""

  @nn.compact
  def __call__(self, x):
    features = self.perturb("feats", nn.Conv(5, (3, 3), strides=2, name="features")(x))
    self.sow("intermediates", "feats", features)
    return nn.Dense(K, name="head")(jnp.mean(nn.relu(features), axis=(1, 2)))


def hand_grad_cam(params, features, target):
  """ReLU(sum_d mean_ij(d logit / d A_ijd) A_ijd), upsampled 4 -> 8 by repetition: (N, 8, 8, 1)."""
  head = np.asarray(params["head"]["kernel"])  # (D, K)
  features = np.asarray(features)
  active = features > 0
  cams = []
  for n, t in enumerate(np.asarray(target)):
    gradient = active[n] * head[:, t] / (features.shape[1] * features.shape[2])
    alpha = gradient.mean(axis=(0, 1))
    cam = np.maximum((features[n] * alpha).sum(-1), 0)
    cams.append(cam.repeat(2, axis=0).repeat(2, axis=1))
  return np.stack(cams)[..., None]


@pytest.fixture(scope="module")
def tiny():
  images = jax.random.uniform(jax.random.key(8), (N, H, W, C))
  model = TinyNet()
  variables = jax.jit(model.init)(jax.random.key(9), images)
  _, state = model.apply(variables, images, capture_intermediates=True, mutable=["intermediates"])
  features = state["intermediates"]["features"]["__call__"][0]
  return model, variables, images, features


def test_layer_grad_cam_matches_hand_computation(tiny):
  model, variables, images, features = tiny
  target = jnp.array([0, 3])
  expected = hand_grad_cam(variables["params"], features, target)
  assert expected.max() > 0
  got = attribution.layer_grad_cam(model, variables, images, target, layer="features")
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
  by_filter = attribution.layer_grad_cam(
      model,
      variables,
      images,
      target,
      layer=lambda module, name: module.name == "features" and name == "__call__",
  )
  np.testing.assert_allclose(by_filter, expected, rtol=1e-5, atol=1e-7)
  small = attribution.layer_grad_cam(
      model, variables, images, target, layer="features", upsample=False
  )
  assert small.shape == (N, 4, 4, 1)


def test_grad_cam_from_perturbed_and_sown_feature_function(tiny):
  _, variables, images, features = tiny
  model = TinyPerturbedNet()
  params = variables["params"]

  def fn(x, delta):
    logits, state = model.apply(
        {"params": params, "perturbations": {"feats": delta}}, x, mutable=["intermediates"]
    )
    return logits, state["intermediates"]["feats"][0]

  target = jnp.array([2, 1])
  np.testing.assert_allclose(
      attribution.grad_cam(fn, images, target),
      hand_grad_cam(params, features, target),
      rtol=1e-5,
      atol=1e-7,
  )
  np.testing.assert_allclose(
      attribution.METHODS["GCam"](fn, images, target),
      hand_grad_cam(params, features, target),
      rtol=1e-5,
      atol=1e-7,
  )


def test_grad_cam_without_relu_keeps_negative_evidence(tiny):
  model, variables, images, _ = tiny
  signed = attribution.layer_grad_cam(
      model, variables, images, 0, layer="features", relu_attributions=False
  )
  np.testing.assert_allclose(
      jax.nn.relu(signed),
      attribution.layer_grad_cam(model, variables, images, 0, layer="features"),
      atol=1e-7,
  )


def test_layer_grad_cam_unknown_layer_lists_the_paths(tiny):
  model, variables, images, _ = tiny
  with pytest.raises(ValueError, match="features"):
    attribution.layer_grad_cam(model, variables, images, 0, layer="nope")


# ---------------------------------------------------------------------------------- RISE


def test_bilinear_matrix_matches_scipy_zoom_with_mirror_edges():
  grid = np.random.default_rng(0).random((6, 6))
  for cell in (6, 16):
    matrix = _bilinear_matrix(6, 7 * cell)
    expected = scipy.ndimage.zoom(grid, 7 * cell / 6, order=1, mode="mirror", grid_mode=True)
    np.testing.assert_allclose(matrix @ grid @ matrix.T, expected, atol=1e-10)


def test_rise_masks_are_seeded_and_in_range():
  masks = attribution.rise_masks(jax.random.key(0), 64, 32, 32, s=6, p1=0.5)
  assert masks.shape == (64, 32, 32)
  assert float(masks.min()) >= 0 and float(masks.max()) <= 1
  np.testing.assert_array_equal(
      masks, attribution.rise_masks(jax.random.key(0), 64, 32, 32, s=6, p1=0.5)
  )
  assert not np.allclose(masks, attribution.rise_masks(jax.random.key(1), 64, 32, 32, s=6, p1=0.5))
  assert abs(float(masks.mean()) - 0.5) < 0.1


def test_rise_of_a_constant_model_is_the_mean_mask(linear):
  _, _, images, target = linear
  logits = jnp.array([0.3, -1.0, 2.0, 0.5])
  fn = lambda x: jnp.broadcast_to(logits + 0 * x.sum(), (x.shape[0], K))
  targets = jnp.stack([target, jnp.array([0, 2])], axis=1)  # (N, T=2): shares the masked passes
  saliency = attribution.rise(fn, images, targets, key=5, n_masks=40, p1=0.2, items_per_pass=16)
  masks = attribution.rise_masks(5, 40, H, W, p1=0.2)
  expected = jax.nn.sigmoid(logits[targets])[:, :, None, None] * masks.mean(0) / 0.2
  assert saliency.shape == (N, 2, H, W, 1)
  np.testing.assert_allclose(saliency[..., 0], expected, rtol=1e-5)


def test_rise_is_reproducible_with_a_seed(linear):
  fn, _, images, target = linear
  run = jax.jit(lambda key: attribution.rise(fn, images, target, key=key, n_masks=30))
  first = run(jax.random.key(2))
  assert first.shape == (N, H, W, 1)
  np.testing.assert_array_equal(first, run(jax.random.key(2)))
  assert not np.allclose(first, run(jax.random.key(3)))


# ---------------------------------------------------------------------------------- registry, jit, errors

SMALL_SETTINGS = {
    "SmoothGrad": {"nt_samples": 3},
    "RISE": {"n_masks": 20},
    "IntGrad": {"n_steps": 5},
}


def test_registry_has_the_reference_methods():
  assert set(attribution.METHODS) == {
      "Grad",
      "IxG",
      "IntGrad",
      "SmoothGrad",
      "GCam",
      "Occ5",
      "Occ9",
      "RISE",
  }
  assert attribution.METHODS["IntGrad"].settings["n_steps"] == 20
  assert attribution.METHODS["IntGrad"].settings["method"] == "gausslegendre"
  assert attribution.METHODS["Occ9"].settings["sliding_window_shapes"] == 9
  assert attribution.METHODS["RISE"].settings["n_masks"] == 6000


@pytest.mark.parametrize(
    "name", ["Grad", "IxG", "IntGrad", "SmoothGrad", "Occ5", "Occ9", "RISE", "GCam"]
)
def test_every_method_jits_to_the_eager_result(name, linear, tiny):
  if name == "GCam":
    model, variables, images, _ = tiny
    fn = attribution.layer_function(model, variables, "features")
  else:
    fn, _, images, _ = linear
  method = attribution.get_method(name)
  target = jnp.array([1, 2])
  eager = method(fn, images, target, **SMALL_SETTINGS.get(name, {}))
  jitted = jax.jit(lambda x, t: method(fn, x, t, **SMALL_SETTINGS.get(name, {})))(images, target)
  channels = 1 if name in ("GCam", "Occ5", "Occ9", "RISE") else C
  assert eager.shape == (N, H, W, channels)
  np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["Grad", "IntGrad", "SmoothGrad", "Occ5", "GCam"])
def test_several_targets_per_image_equal_one_call_per_target(name, linear, tiny):
  if name == "GCam":
    model, variables, images, _ = tiny
    fn = attribution.layer_function(model, variables, "features")
  else:
    fn, _, images, _ = linear
  method = attribution.get_method(name)
  targets = jnp.array([[0, 3, 1], [2, 2, 0]])
  together = method(fn, images, targets, **SMALL_SETTINGS.get(name, {}))
  separately = jnp.stack(
      [method(fn, images, targets[:, i], **SMALL_SETTINGS.get(name, {})) for i in range(3)], axis=1
  )
  assert together.shape == (N, 3) + separately.shape[2:]
  np.testing.assert_allclose(together, separately, rtol=1e-5, atol=1e-6)


def test_unknown_method_lists_the_known_ones():
  with pytest.raises(KeyError, match="Grad.*IxG.*IntGrad.*RISE"):
    attribution.get_method("LRP")


def test_bad_inputs_are_rejected(linear):
  fn, _, images, _ = linear
  with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
    attribution.gradient(fn, images[0], 0)
  with pytest.raises(ValueError, match=r"\[0, 4\)"):
    attribution.input_x_gradient(fn, images, 4)
  with pytest.raises(ValueError, match=r"\[0, 4\)"):
    attribution.occlusion(fn, images, jnp.array([0, -1]))
  with pytest.raises(ValueError, match=r"\[0, 4\)"):
    attribution.integrated_gradients(fn, images, jnp.array([[0, 1], [2, 9]]))
  with pytest.raises(ValueError, match="shape"):
    attribution.gradient(fn, images, jnp.array([0, 1, 2]))
  with pytest.raises(ValueError, match="shape"):
    attribution.gradient(fn, images, jnp.zeros((N, 2, 2), jnp.int32))
  with pytest.raises(TypeError, match="integer"):  # a wrong type: TypeError, as explain's
    attribution.gradient(fn, images, 1.0)
  with pytest.raises(ValueError, match="gausslegendre"):
    attribution.integrated_gradients(fn, images, 0, method="simpson")
  with pytest.raises(ValueError, match="vargrad"):
    attribution.noise_tunnel(attribution.gradient, fn, images, 0, key=0, nt_type="median")


# ---------------------------------------------------------------------------------- silent wrong results


@pytest.mark.parametrize("target", [2, np.int64(2), jnp.int32(2), np.array([2, 2])])
def test_smoothgrad_of_linear_model_is_the_weight_row_for_any_int_target(linear, target):
  # The gradient of a linear model is its weight column whatever the noise: SmoothGrad equals it.
  fn, weights, images, _ = linear
  maps = attribution.smooth_grad(fn, images, target, key=0, nt_samples=3)
  np.testing.assert_allclose(maps, np.stack([weights[..., 2]] * N), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("target", [-1, K, np.array([0, -1]), np.array([[0, 1], [K, 0]])])
def test_smoothgrad_rejects_out_of_range_targets(linear, target):
  # The noise samples run inside vmap/scan; the target must still be checked (it gave zero or
  # wrapped-around maps).
  fn, _, images, _ = linear
  with pytest.raises(ValueError, match=rf"\[0, {K}\)"):
    attribution.smooth_grad(fn, images, target, key=0, nt_samples=2)
  with pytest.raises(ValueError, match=rf"\[0, {K}\)"):
    attribution.METHODS["SmoothGrad"](fn, images, target, nt_samples=2)


@pytest.mark.parametrize(
    "settings,error,message",
    [
        (dict(n_masks=0), ValueError, "n_masks"),
        (dict(n_masks=-3), ValueError, "n_masks"),
        (dict(n_masks="abc"), TypeError, "n_masks"),  # a wrong type: TypeError
        (dict(n_masks=2.5), TypeError, "n_masks"),
        (dict(s=0), ValueError, "s "),
        (dict(p1=0.0), ValueError, "p1"),
        (dict(p1=1.5), ValueError, "p1"),
    ],
)
def test_rise_rejects_bad_settings(linear, settings, error, message):
  fn, _, images, target = linear
  with pytest.raises(error, match=message):
    attribution.rise(fn, images, target, key=0, **settings)


@pytest.mark.parametrize("name", list(attribution.METHODS))
def test_empty_batch_is_a_clear_error(name, linear, tiny):
  model, variables, _, _ = tiny
  fn = attribution.layer_function(model, variables, "features") if name == "GCam" else linear[0]
  empty = jnp.zeros((0, H, W, C))
  with pytest.raises(ValueError, match="empty batch"):
    attribution.METHODS[name](fn, empty, jnp.zeros((0,), jnp.int32))
