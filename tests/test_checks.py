"""codajax._checks: one image check, so explain, attribution and the models agree on bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codajax import attribution, metrics
from codajax import _checks
from codajax.nn import dau
from codajax._checks import check_images
from codajax.explain import explain
from codajax.models import get_model


def test_image_checks_name_the_caller_and_the_shape():
  check_images(np.zeros((2, 4, 4, 3)), name="M", channels=3)
  with pytest.raises(ValueError, match=r"^M expects NHWC images of rank 4, got shape \(4, 4, 3\)"):
    check_images(np.zeros((4, 4, 3)), name="M", channels=3)
  with pytest.raises(ValueError, match=r"^M was built for 3-channel images, got 1 channels"):
    check_images(np.zeros((2, 4, 4, 1)), name="M", channels=3)


def test_value_checks_are_opt_in_and_skip_tracers():
  outside = np.full((1, 2, 2, 3), 2.0, np.float32)
  nan = np.full((1, 2, 2, 3), np.nan, np.float32)
  assert check_images(outside, name="M").shape == (1, 2, 2, 3)
  check_images(nan, name="M", check_range=False)
  with pytest.raises(ValueError, match=r"^M expects images in \[0, 1\], got values in \[2, 2\]"):
    check_images(outside, name="M", check_range=True)
  with pytest.raises(ValueError, match="NaN or Inf"):
    check_images(nan, name="M", check_finite=True)
  jax.jit(lambda x: check_images(x, name="M", check_finite=True, check_range=True))(outside)
  with pytest.raises(ValueError, match="empty batch"):
    check_images(np.zeros((0, 2, 2, 3), np.float32), name="M")
  assert check_images(np.zeros((0, 2, 2, 3), np.float32), name="M", allow_empty=True).shape[0] == 0


@pytest.fixture(params=["host", "device"])
def reading(request, monkeypatch):
  """How check_images reads a JAX array's values: in place on the host (NumPy), or as on an
  accelerator (one jitted reduction, only the bounds copied back)."""
  if request.param == "device":
    monkeypatch.setattr(_checks, "_on_host", lambda values: False)
  return request.param


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_value_bounds_are_the_float32_min_and_max_or_nan(reading, dtype):
  values = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5, 5, 2)), dtype)
  flat = sorted(np.asarray(values, np.float32).ravel().tolist())
  assert _checks.value_bounds(values) == (flat[0], flat[-1])
  for at, value, want in (
      ((0, 0, 0, 0), np.nan, (np.nan, np.nan)),
      ((2, 4, 1, 1), np.nan, (np.nan, np.nan)),
      ((1, 2, 3, 0), np.inf, (flat[0], np.inf)),
      ((1, 2, 3, 0), -np.inf, (-np.inf, flat[-1])),
  ):
    got = _checks.value_bounds(values.at[at].set(value))
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_reading_on_the_device_raises_the_host_messages(monkeypatch):
  base = np.random.default_rng(1).uniform(size=(2, 3, 3, 1)).astype(np.float32)
  cases = [
      (jnp.asarray(base * 3 - 1), dict(check_range=True)),
      (jnp.asarray(base).at[1, 2, 2, 0].set(jnp.nan), dict(check_finite=True)),
      (jnp.asarray(base).at[0, 0, 1, 0].set(-jnp.inf), dict(check_finite=True, check_range=True)),
      (jnp.asarray(base).at[0, 0, 1, 0].set(jnp.inf), dict(check_range=True)),
  ]
  for images, checks in cases:
    messages = []
    for on_host in (True, False):
      monkeypatch.setattr(_checks, "_on_host", lambda values, on_host=on_host: on_host)
      with pytest.raises(ValueError) as info:
        check_images(images, name="M", **checks)
      messages.append(str(info.value))
    assert messages[0] == messages[1], messages
  nan = jnp.asarray(base).at[0, 1, 1, 0].set(jnp.nan)
  assert check_images(nan, name="M", check_range=True) is nan  # NaN is no range error


@pytest.fixture(scope="module")
def tiny():
  model = get_model("tiny-3L")
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  return model, variables


BAD_IMAGES = [
    pytest.param(jnp.zeros((8, 8, 3)), ValueError, "rank 4", id="rank-3"),
    pytest.param(jnp.zeros((2, 8, 8, 3), jnp.uint8), TypeError, "got dtype uint8", id="uint8"),
    pytest.param(jnp.zeros((2, 8, 8, 3), jnp.int32), TypeError, "got dtype int32", id="int32"),
]


@pytest.mark.parametrize("images,error,message", BAD_IMAGES)
def test_same_bad_images_same_error_from_explain_attribution_and_the_model(
    tiny, images, error, message
):
  model, variables = tiny
  fn = lambda x: model.apply(variables, x)
  with pytest.raises(error, match=message):
    explain(model, variables, images)
  with pytest.raises(error, match=message):
    attribution.gradient(fn, images, 0)
  with pytest.raises(error, match=message):
    attribution.METHODS["Occ5"](fn, images, 0)
  with pytest.raises(error, match=message):
    model.apply(variables, images)


# ------------------------------------------------------------------------ the lower entry points


@pytest.fixture(scope="module")
def ctx(tiny):
  """The tiny model as an apply function and a feature function, images, maps and masks."""
  model, variables = tiny
  images = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 8, 8, 3)), jnp.float32)
  maps = np.random.default_rng(1).normal(size=(2, 6, 6)).astype(np.float32)
  nan_maps = maps.copy()
  nan_maps[0, 1, 1] = np.nan
  masks = np.zeros((2, 6, 6), bool)
  masks[:, :3] = True
  weights = np.random.default_rng(2).normal(size=(6 * 6 * 6, 3)).astype(np.float32)
  return dict(
      model=model,
      variables=variables,
      fn=lambda x: model.apply(variables, x),
      features=attribution.layer_function(model, variables, "layer_1"),
      images=images,
      maps=maps,
      nan_maps=nan_maps,
      masks=masks,
      encoded_fn=lambda x6: x6.reshape(x6.shape[0], -1) @ weights,
      pixels=np.random.default_rng(3).uniform(size=(2, 6, 6, 3)).astype(np.float32),
      params=dau.init_dau_params(jax.random.key(0), 6, 4, 2, 3),
      layer_input=jnp.full((1, 8, 8, 6), 0.5),
  )


def _removal(c, labels=(1, 0), maps=None, **settings):
  return metrics.pixel_removal_probabilities(
      c["encoded_fn"],
      c["pixels"],
      labels if isinstance(labels, jax.Array) else np.asarray(labels),
      c["maps"] if maps is None else maps,
      **{"n_points": 4, **settings},
  )


def _conv(c, params=None, **settings):
  return dau.dau_conv(c["params"] if params is None else params, c["layer_input"], **settings)


_NAN = float("nan")
# (id, call, expected error, text the message must contain: the argument and its value)
BAD_CALLS = [
    (
        "gradient NaN pixel",
        lambda c: attribution.gradient(c["fn"], c["images"].at[0, 1, 1, 0].set(_NAN), 1),
        ValueError,
        "NaN",
    ),
    (
        "gradient images in [0, 255]",
        lambda c: attribution.gradient(c["fn"], c["images"] * 255, 1),
        ValueError,
        "[0, 1]",
    ),
    (
        "gradient target 2**40",
        lambda c: attribution.gradient(c["fn"], c["images"], 2**40),
        ValueError,
        "targets",
    ),
    (
        "gradient float target",
        lambda c: attribution.gradient(c["fn"], c["images"], 1.0),
        TypeError,
        "targets",
    ),
    (
        "gradient zero-height images",
        lambda c: attribution.gradient(c["fn"], c["images"][:, :0], 1),
        ValueError,
        "(2, 0, 8, 3)",
    ),
    (
        "gradient abs='yes'",
        lambda c: attribution.gradient(c["fn"], c["images"], 1, abs="yes"),
        TypeError,
        "abs",
    ),
    (
        "gradient fn not callable",
        lambda c: attribution.gradient("model", c["images"], 1),
        TypeError,
        "fn",
    ),
    (
        "IntGrad NaN baselines",
        lambda c: attribution.integrated_gradients(
            c["fn"], c["images"], 1, baselines=c["images"] * _NAN
        ),
        ValueError,
        "baselines",
    ),
    (
        "IntGrad preset NaN baselines",
        lambda c: attribution.METHODS["IntGrad"](
            c["fn"], c["images"], 1, n_steps=2, baselines=c["images"] * _NAN
        ),
        ValueError,
        "baselines",
    ),
    (
        "IntGrad baselines (5, 5)",
        lambda c: attribution.integrated_gradients(
            c["fn"], c["images"], 1, baselines=jnp.zeros((5, 5))
        ),
        ValueError,
        "baselines",
    ),
    (
        "IntGrad n_steps='20'",
        lambda c: attribution.integrated_gradients(c["fn"], c["images"], 1, n_steps="20"),
        TypeError,
        "n_steps",
    ),
    (
        "IntGrad n_steps=2.5",
        lambda c: attribution.integrated_gradients(c["fn"], c["images"], 1, n_steps=2.5),
        TypeError,
        "n_steps",
    ),
    (
        "IntGrad n_steps=0",
        lambda c: attribution.integrated_gradients(c["fn"], c["images"], 1, n_steps=0),
        ValueError,
        "n_steps",
    ),
    (
        "IntGrad riemann n_steps=1",
        lambda c: attribution.integrated_gradients(
            c["fn"], c["images"], 1, n_steps=1, method="riemann_left"
        ),
        ValueError,
        "n_steps",
    ),
    (
        "IntGrad items_per_pass=0",
        lambda c: attribution.integrated_gradients(
            c["fn"], c["images"], 1, n_steps=2, items_per_pass=0
        ),
        ValueError,
        "items_per_pass",
    ),
    (
        "SmoothGrad stdevs=nan",
        lambda c: attribution.smooth_grad(
            c["fn"], c["images"], 1, key=0, nt_samples=2, stdevs=_NAN
        ),
        ValueError,
        "stdevs",
    ),
    (
        "SmoothGrad stdevs=-1",
        lambda c: attribution.smooth_grad(
            c["fn"], c["images"], 1, key=0, nt_samples=2, stdevs=-1.0
        ),
        ValueError,
        "stdevs",
    ),
    (
        "SmoothGrad preset stdevs=nan",
        lambda c: attribution.METHODS["SmoothGrad"](
            c["fn"], c["images"], 1, nt_samples=2, stdevs=_NAN
        ),
        ValueError,
        "stdevs",
    ),
    (
        "SmoothGrad nt_samples=2.5",
        lambda c: attribution.smooth_grad(c["fn"], c["images"], 1, key=0, nt_samples=2.5),
        TypeError,
        "nt_samples",
    ),
    (
        "SmoothGrad key='0'",
        lambda c: attribution.smooth_grad(c["fn"], c["images"], 1, key="0", nt_samples=2),
        TypeError,
        "key",
    ),
    (
        "Occlusion NaN baselines",
        lambda c: attribution.occlusion(c["fn"], c["images"], 1, baselines=_NAN),
        ValueError,
        "baselines",
    ),
    (
        "Occlusion window (5,)",
        lambda c: attribution.occlusion(c["fn"], c["images"], 1, sliding_window_shapes=(5,)),
        ValueError,
        "sliding_window_shapes",
    ),
    (
        "Occlusion window 0",
        lambda c: attribution.occlusion(c["fn"], c["images"], 1, sliding_window_shapes=0),
        ValueError,
        "sliding_window_shapes",
    ),
    (
        "Occlusion strides=0",
        lambda c: attribution.occlusion(c["fn"], c["images"], 1, strides=0),
        ValueError,
        "strides",
    ),
    (
        "Occlusion strides=-1",
        lambda c: attribution.occlusion(c["fn"], c["images"], 1, strides=-1),
        ValueError,
        "strides",
    ),
    (
        "Occlusion strides=1.5",
        lambda c: attribution.occlusion(c["fn"], c["images"], 1, strides=1.5),
        TypeError,
        "strides",
    ),
    (
        "Occ5 preset strides=0",
        lambda c: attribution.METHODS["Occ5"](c["fn"], c["images"], 1, strides=0),
        ValueError,
        "strides",
    ),
    (
        "RISE p1='0.5'",
        lambda c: attribution.rise(c["fn"], c["images"], 1, key=0, n_masks=4, p1="0.5"),
        TypeError,
        "p1",
    ),
    (
        "RISE p1=nan",
        lambda c: attribution.rise(c["fn"], c["images"], 1, key=0, n_masks=4, p1=_NAN),
        ValueError,
        "p1",
    ),
    (
        "RISE s=2.5",
        lambda c: attribution.rise(c["fn"], c["images"], 1, key=0, n_masks=4, s=2.5),
        TypeError,
        "s must",
    ),
    ("rise_masks height 0", lambda c: attribution.rise_masks(0, 4, 0, 8), ValueError, "height"),
    (
        "Grad-CAM plain apply function",
        lambda c: attribution.grad_cam(c["fn"], c["images"], 1),
        TypeError,
        "feature function",
    ),
    (
        "GCam preset plain apply function",
        lambda c: attribution.METHODS["GCam"](c["fn"], c["images"], 1),
        TypeError,
        "feature function",
    ),
    (
        "layer_function layer=3",
        lambda c: attribution.layer_function(c["model"], c["variables"], 3),
        TypeError,
        "layer",
    ),
    (
        "explain zero-height images",
        lambda c: explain(c["model"], c["variables"], c["images"][:, :0], 1),
        ValueError,
        "(2, 0, 8, 3)",
    ),
    (
        "mask_energy NaN map",
        lambda c: metrics.mask_energy(c["nan_maps"], c["masks"]),
        ValueError,
        "maps",
    ),
    (
        "mask_energy soft mask",
        lambda c: metrics.mask_energy(c["maps"], np.where(c["masks"], 0.3, 0.0)),
        ValueError,
        "masks",
    ),
    (
        "pointing_game NaN map",
        lambda c: metrics.pointing_game(c["nan_maps"], c["masks"]),
        ValueError,
        "maps",
    ),
    (
        "localisation_metric NaN map",
        lambda c: metrics.localisation_metric(np.full((1, 9, 6, 6), np.nan), 3),
        ValueError,
        "maps",
    ),
    (
        "localisation_metric grid=0",
        lambda c: metrics.localisation_metric(np.zeros((1, 9, 6, 6)), 0),
        ValueError,
        "grid",
    ),
    (
        "contribution_sum_error NaN map",
        lambda c: metrics.contribution_sum_error(c["nan_maps"], np.ones(2)),
        ValueError,
        "maps",
    ),
    ("pixel_removal label -1", lambda c: _removal(c, labels=(-1, 0)), ValueError, "targets"),
    ("pixel_removal label K", lambda c: _removal(c, labels=(3, 0)), ValueError, "targets"),
    ("pixel_removal float labels", lambda c: _removal(c, labels=(1.0, 0.0)), TypeError, "targets"),
    ("pixel_removal fraction=2.0", lambda c: _removal(c, fraction=2.0), ValueError, "fraction"),
    ("pixel_removal fraction=nan", lambda c: _removal(c, fraction=_NAN), ValueError, "fraction"),
    ("pixel_removal n_points=0", lambda c: _removal(c, n_points=0), ValueError, "n_points"),
    ("pixel_removal NaN map", lambda c: _removal(c, maps=c["nan_maps"]), ValueError, "maps"),
    (
        "removal_rank direction",
        lambda c: metrics.removal_rank(c["maps"], "up"),
        ValueError,
        "direction",
    ),
    (
        "select_confident_images NaN logits",
        lambda c: metrics.select_confident_images(np.full((3, 2), np.nan), np.zeros(3, int)),
        ValueError,
        "logits",
    ),
    (
        "grid_indices n_grids=-1",
        lambda c: metrics.grid_indices(np.zeros(9, int), np.arange(9), n_grids=-1),
        ValueError,
        "n_grids",
    ),
    ("dau_conv padding=-1", lambda c: _conv(c, padding=-1), ValueError, "padding"),
    ("dau_conv stride=0", lambda c: _conv(c, stride=0), ValueError, "stride"),
    ("dau_conv stride=-1", lambda c: _conv(c, stride=-1), ValueError, "stride"),
    ("dau_conv stride=1.5", lambda c: _conv(c, stride=1.5), TypeError, "stride"),
    ("dau_conv dtype int32", lambda c: _conv(c, dtype=jnp.int32), ValueError, "dtype"),
    ("dau_conv explain='no'", lambda c: _conv(c, explain="no"), TypeError, "explain"),
    (
        "dau_conv A/B channels",
        lambda c: _conv(
            c,
            params={**c["params"], "A": jnp.zeros((3, 3, 5, 4, 2)), "w0": jnp.zeros((3, 3, 5, 4))},
        ),
        ValueError,
        "A is for 5 input channels, B for 6",
    ),
    (
        "dau_conv w0/A DAUs",
        lambda c: _conv(c, params={**c["params"], "w0": jnp.zeros((3, 3, 6, 3))}),
        ValueError,
        "w0 is for 3 DAUs, A for 4",
    ),
    (
        "dau_conv A/B rank",
        lambda c: _conv(c, params={**c["params"], "A": jnp.zeros((3, 3, 6, 4, 3))}),
        ValueError,
        "A is for rank 3, B for rank 2",
    ),
    (
        "dau_conv params without w0",
        lambda c: _conv(c, params={"A": 0, "B": 0}),
        TypeError,
        "params",
    ),
    (
        "dau_conv kernel larger than input",
        lambda c: dau.dau_conv(c["params"], jnp.zeros((1, 1, 1, 6)), padding=0),
        ValueError,
        "kernel",
    ),
    (
        "init_dau_params rank 0",
        lambda c: dau.init_dau_params(jax.random.key(0), 6, 4, 0, 3),
        ValueError,
        "rank",
    ),
    (
        "init_dau_params in_channels '6'",
        lambda c: dau.init_dau_params(jax.random.key(0), "6", 4, 2, 3),
        TypeError,
        "in_channels",
    ),
    (
        "init_dau_params dtype int32",
        lambda c: dau.init_dau_params(jax.random.key(0), 6, 4, 2, 3, dtype=jnp.int32),
        ValueError,
        "dtype",
    ),
    ("init_dau_params key 0", lambda c: dau.init_dau_params(0, 6, 4, 2, 3), TypeError, "key"),
    (
        "get_model temperature '10'",
        lambda c: get_model("tiny-3L", temperature="10"),
        TypeError,
        "temperature",
    ),
    (
        "get_model logit_bias nan",
        lambda c: get_model("tiny-3L", logit_bias=_NAN),
        ValueError,
        "logit_bias",
    ),
    (
        "get_model num_classes 2.5",
        lambda c: get_model("tiny-3L", num_classes=2.5),
        TypeError,
        "num_classes",
    ),
    (
        "get_model unknown architecture",
        lambda c: get_model("ResNet-50"),
        ValueError,
        "architecture_names()",
    ),
]


@pytest.mark.parametrize(
    "call,error,named", [pytest.param(*case[1:], id=case[0]) for case in BAD_CALLS]
)
def test_bad_input_is_one_clear_error_naming_the_argument(ctx, call, error, named):
  with pytest.raises(error) as raised:
    call(ctx)
  message = str(raised.value)
  assert type(raised.value) is error, message  # not a subclass such as jax's own errors
  assert named in message
  assert "\n" not in message and len(message) <= 400, message


def test_valid_inputs_that_looked_unusual_are_accepted(ctx):
  c = ctx
  nested = np.asarray(c["images"]).tolist()
  np.testing.assert_array_equal(
      attribution.gradient(c["fn"], nested, 1), attribution.gradient(c["fn"], c["images"], 1)
  )
  np.testing.assert_array_equal(
      explain(c["model"], c["variables"], nested, 1).contribution_map,
      explain(c["model"], c["variables"], c["images"], 1).contribution_map,
  )
  shifted = c["images"] - 0.5  # other input ranges on request, as explain allows
  assert np.isfinite(attribution.gradient(c["fn"], shifted, 1, check_range=False)).all()
  # Integer-valued masks and numpy integer settings are fine.
  np.testing.assert_array_equal(
      metrics.mask_energy(c["maps"], c["masks"].astype(np.int32)),
      metrics.mask_energy(c["maps"], c["masks"]),
  )
  assert attribution.rise(c["fn"], c["images"], 1, key=0, n_masks=np.int64(2)).shape[0] == 2


@pytest.mark.parametrize("name", list(attribution.METHODS))
@pytest.mark.parametrize("bad", [-1, 10])
def test_traced_out_of_range_target_gives_a_zero_map_under_jit(ctx, name, bad):
  # Documented in codajax.attribution._common: JAX indexing would read -1 as class K - 1.
  method = attribution.METHODS[name]
  fn = ctx["features"] if name == "GCam" else ctx["fn"]
  small = {"SmoothGrad": dict(nt_samples=2), "RISE": dict(n_masks=4), "IntGrad": dict(n_steps=2)}
  settings = small.get(name, {})
  jitted = jax.jit(lambda x, t: method(fn, x, t, **settings))(ctx["images"], jnp.array([bad, 1]))
  eager = method(fn, ctx["images"], jnp.array([1, 1]), **settings)
  np.testing.assert_array_equal(jitted[0], np.zeros_like(eager[0]))
  np.testing.assert_allclose(jitted[1], eager[1], rtol=1e-5, atol=1e-7)
  assert np.abs(eager[0]).max() > 0


def test_metrics_under_jit_do_what_their_docstrings_say(ctx):
  c = ctx
  energy = jax.jit(metrics.mask_energy)(c["nan_maps"], c["masks"])
  assert energy[0] == 0.0 and energy[1] == metrics.mask_energy(c["maps"], c["masks"])[1]
  peak_at_nan = c["nan_maps"].copy()
  peak_at_nan[0, 5, 5] = 1e9  # the real peak lies in the mask's complement ...
  masks = np.zeros_like(c["masks"])
  masks[0, 1, 1] = True  # ... and only the NaN pixel is in the mask: argmax picks the NaN
  assert jax.jit(metrics.pointing_game)(peak_at_nan, masks)[0] == 1.0
  scores = jax.jit(lambda m: metrics.localisation_metric(m, 3))(
      np.pad(np.full((1, 9, 5, 6), 1.0), ((0, 0), (0, 0), (0, 1), (0, 0)), constant_values=np.nan)
  )
  np.testing.assert_array_equal(scores, 0.0)
  soft = jax.jit(metrics.mask_energy)(c["maps"], np.where(c["masks"], 0.3, 0.0))
  np.testing.assert_array_equal(soft, metrics.mask_energy(c["maps"], c["masks"]))
  rows = jax.jit(lambda labels: _removal(c, labels=labels))(jnp.array([-1, 0]))
  assert np.isnan(rows[0]).all()
  np.testing.assert_allclose(rows[1], _removal(c, labels=(2, 0))[1], rtol=1e-6)
  rows = jax.jit(lambda labels: _removal(c, labels=labels))(jnp.array([1, 3]))
  assert np.isnan(rows[1]).all() and np.isfinite(rows[0]).all()


def test_eager_checks_add_nothing_to_a_traced_program(ctx):
  """Traced, a checked metric is the same program as the unchecked one (values are never read)."""

  def unchecked_mask_energy(maps, masks):  # mask_energy as it was before the checks
    maps, masks = jnp.asarray(maps), jnp.asarray(masks).astype(bool)
    positive = jax.nn.relu(maps)
    inside = jnp.sum(positive * masks, axis=(1, 2))
    total = jnp.sum(positive, axis=(1, 2))
    return jnp.where(total > 0, inside / jnp.where(total > 0, total, 1), 0.0)

  args = (ctx["maps"], ctx["masks"])
  assert str(jax.make_jaxpr(metrics.mask_energy)(*args)) == str(
      jax.make_jaxpr(unchecked_mask_energy)(*args)
  )


def test_shared_checks_one_type_per_kind_of_bad_input():
  from codajax import _checks

  assert _checks.check_int(np.int64(3), "n", where="f") == 3
  for wrong in ("3", 3.0, True, None):
    with pytest.raises(TypeError, match=r"^f: n must be an integer, got"):
      _checks.check_int(wrong, "n", where="f")
  with pytest.raises(ValueError, match=r"^f: n must be a positive integer, got 0\.$"):
    _checks.check_int(0, "n", where="f")
  with pytest.raises(ValueError, match=r"^f: p must be in \(0, 1\], got nan\.$"):
    _checks.check_real(float("nan"), "p", where="f", low=0, high=1, low_open=True)
  with pytest.raises(TypeError, match=r"^f: p must be a real number, got '0.5' \(str\)\.$"):
    _checks.check_real("0.5", "p", where="f")
  assert _checks.check_int_pair(3, "w", where="f") == (3, 3)
  assert _checks.check_int_pair((2, 5), "w", where="f") == (2, 5)
  with pytest.raises(ValueError, match=r"f: w must be an int or a pair"):
    _checks.check_int_pair((5,), "w", where="f")
  jax.jit(lambda v: _checks.check_finite(v, "v", where="f") or v)(jnp.array([jnp.nan]))
