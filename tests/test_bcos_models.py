"""B-cos models: parameter counts, parity with the float64 numpy port through the converter,
exact explanations, attribution methods and an evaluator on a tiny model."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codajax.bcos.resnet import BcosResNet
from codajax.bcos.vgg import BcosVGG
from codajax.convert import from_bcos_state_dict, load_bcos_checkpoint, to_bcos_state_dict
from codajax.evaluators import methods as eval_methods
from codajax.explain import completeness_error, explain, explain_jit
from codajax.models import get_model
from tests import bcos_numpy_reference as ref


def _count(model, size=32, channels=3):
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, channels)))
  )
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


def test_parameter_counts_equal_the_released_models():
  # torchvision's counts, with 6 input channels at conv1, no fc bias and bias-free norms:
  # ResNet-18: 11,689,512 + 7·7·3·64 − 1,000 − 4,800 (its BN channels).
  assert _count(get_model("bcos-resnet18")) == 11_689_512 + 7 * 7 * 3 * 64 - 1_000 - 4_800
  # the authors' table (README / pretrained.py): 21.80M, 25.54M (README: 25.52M), 132.86M.
  assert round(_count(get_model("bcos-resnet34")) / 1e6, 2) == 21.80
  assert _count(get_model("bcos-resnet50")) == 25_557_032 + 7 * 7 * 3 * 64 - 1_000 - 26_560
  assert round(_count(get_model("bcos-vgg11")) / 1e6, 2) == 132.86
  # CIFAR ResNet-20 with MaxOut 2: every kernel doubled, no norms.
  convs = (
      6 * 16 * 9
      + 6 * (16 * 16 * 9)
      + (16 * 32 * 9 + 32 * 32 * 9 * 5 + 16 * 32)
      + (32 * 64 * 9 + 64 * 64 * 9 * 5 + 32 * 64)
      + 64 * 10
  )
  assert _count(get_model("bcos-cifar10-resnet20")) == 2 * convs


def _released_resnet_names(stage_sizes, block, width, in_channels, num_classes, rng):
  """A random state dict with the released PyTorch names and shapes (written from
  torchvision's ResNet layout, independently of the converter)."""
  sd = {}

  def conv(name, o, i, k):
    sd[name + ".linear.weight"] = rng.normal(size=(o, i, k, k)).astype(np.float32)

  def bn(name, c):
    sd[name + ".weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    sd[name + ".running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
    sd[name + ".running_mean"] = rng.normal(size=c).astype(np.float32)
    sd[name + ".num_batches_tracked"] = np.array(7)

  expansion = 4 if block == "bottleneck" else 1
  stem_k = 3 if in_channels[1] else 7
  conv("conv1", width, 2 * in_channels[0], stem_k)
  bn("bn1", width)
  inplanes = width
  for s, count in enumerate(stage_sizes):
    planes = width * 2**s
    for i in range(count):
      p = f"layer{s + 1}.{i}"
      if block == "basic":
        conv(p + ".conv1", planes, inplanes, 3)
        bn(p + ".bn1", planes)
        conv(p + ".conv2", planes, planes, 3)
        bn(p + ".bn2", planes)
      else:
        conv(p + ".conv1", planes, inplanes, 1)
        bn(p + ".bn1", planes)
        conv(p + ".conv2", planes, planes, 3)
        bn(p + ".bn2", planes)
        conv(p + ".conv3", planes * 4, planes, 1)
        bn(p + ".bn3", planes * 4)
      if i == 0 and (s > 0 or inplanes != planes * expansion):
        conv(p + ".downsample.0", planes * expansion, inplanes, 1)
        bn(p + ".downsample.1", planes * expansion)
      inplanes = planes * expansion
  conv("fc", num_classes, inplanes, 1)
  return sd


@pytest.mark.parametrize("block,small_inputs,size", [("basic", True, 8), ("bottleneck", False, 16)])
def test_resnet_matches_the_numpy_port_through_the_converter(block, small_inputs, size):
  rng = np.random.default_rng(0)
  stages = (2, 1)
  sd = _released_resnet_names(stages, block, 4, (3, small_inputs), 5, rng)
  model = BcosResNet(
      stage_sizes=stages,
      block=block,
      num_classes=5,
      width=4,
      small_inputs=small_inputs,
      norm="bn",
      logit_bias=-np.log(4),
  )
  variables = from_bcos_state_dict(sd, model)
  images = rng.uniform(size=(2, size, size, 3)).astype(np.float32)
  expect = ref.resnet_forward(
      images, sd, stages, block=block, small_inputs=small_inputs, num_classes=5
  )
  got = model.apply(variables, jnp.asarray(images))
  np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-5)


def test_explanation_mode_is_the_network_with_its_dynamic_factors_frozen():
  """The explain-mode linear map at h, applied to another input u, equals the numpy port
  with every convolution's |cos| factor recorded at h and replayed on u."""
  rng = np.random.default_rng(4)
  stages = (1, 1)
  sd = _released_resnet_names(stages, "basic", 4, (3, True), 5, rng)
  model = BcosResNet(
      stage_sizes=stages,
      block="basic",
      num_classes=5,
      width=4,
      small_inputs=True,
      norm="bn",
      logit_bias=-np.log(4),
  )
  variables = from_bcos_state_dict(sd, model)
  images = rng.uniform(size=(2, 8, 8, 3)).astype(np.float32)
  h = model.apply(variables, jnp.asarray(images), 0, method="layer_input")
  u = rng.normal(size=h.shape).astype(np.float32)
  f = lambda h: model.apply(variables, h, 0, True, False, method="forward_from")
  _, tangent = jax.jvp(f, (h,), (jnp.asarray(u),))
  factors = []
  nchw = lambda a: np.transpose(np.asarray(a, np.float64), (0, 3, 1, 2))
  ref.resnet_evidence(nchw(h), sd, stages, factors=factors)
  expect = ref.resnet_evidence(nchw(u), sd, stages, factors=factors, replay=True)
  np.testing.assert_allclose(tangent, expect, rtol=1e-4, atol=1e-5)


def test_converter_round_trip_with_the_released_names(tmp_path):
  rng = np.random.default_rng(1)
  sd = _released_resnet_names((2, 2, 2, 2), "basic", 64, (3, False), 1000, rng)
  variables = from_bcos_state_dict({"module." + k: v for k, v in sd.items()}, "bcos-resnet18")
  params = variables["params"]
  np.testing.assert_array_equal(
      params["layer_3"]["block_0"]["downsample_conv"]["kernel"],
      sd["layer3.0.downsample.0.linear.weight"].transpose(2, 3, 1, 0),
  )
  np.testing.assert_allclose(
      params["layer_0"]["bn1"]["scale"],
      sd["bn1.weight"] / np.sqrt(sd["bn1.running_var"] + 1e-5),
      rtol=1e-6,
  )
  back = to_bcos_state_dict(variables, "bcos-resnet18")
  assert {k for k in back if not k.endswith("running_mean")} == {
      k for k in sd if not k.endswith(("running_mean", "num_batches_tracked"))
  }
  for key in sd:
    if key.endswith(".linear.weight"):
      np.testing.assert_array_equal(back[key], sd[key])
  again = from_bcos_state_dict(back, "bcos-resnet18")
  jax.tree.map(np.testing.assert_array_equal, again, variables)
  # a .npz file of numpy arrays loads without torch
  np.savez(tmp_path / "small.npz", **back)
  loaded = load_bcos_checkpoint(str(tmp_path / "small.npz"), "bcos-resnet18")
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)
  # a wrong or incomplete state dict is refused
  with pytest.raises(ValueError, match="lacks 'fc.linear.weight'"):
    from_bcos_state_dict({k: v for k, v in sd.items() if not k.startswith("fc")}, "bcos-resnet18")
  with pytest.raises(ValueError, match="fit no parameter"):
    from_bcos_state_dict({**sd, "extra.linear.weight": np.zeros((1, 1, 1, 1))}, "bcos-resnet18")


def test_vgg_names_round_trip():
  rng = np.random.default_rng(2)
  sd, index, channels = {}, 0, 6
  for entry in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
    if entry == "M":
      index += 1
      continue
    sd[f"features.{index}.linear.weight"] = rng.normal(size=(entry, channels, 3, 3))
    sd[f"features.{index + 1}.weight"] = rng.uniform(0.5, 1.5, entry)
    sd[f"features.{index + 1}.running_var"] = rng.uniform(0.5, 1.5, entry)
    index, channels = index + 2, entry
  for k, (o, i, size) in enumerate([(8, 512, 7), (8, 8, 1), (3, 8, 1)]):
    sd[f"classifier.{k}.linear.weight"] = rng.normal(size=(o, i, size, size))
  model = get_model("bcos-vgg11", num_classes=3, hidden=8)
  variables = from_bcos_state_dict(sd, model)
  np.testing.assert_allclose(
      variables["params"]["layer_3"]["features_11"]["kernel"],
      sd["features.11.linear.weight"].transpose(2, 3, 1, 0),
      rtol=1e-7,
  )
  images = jnp.asarray(rng.uniform(size=(1, 32, 32, 3)), jnp.float32)
  e = explain_jit(model, variables, images, layer=2)
  assert float(completeness_error(e).max()) < 1e-6


@pytest.fixture(scope="module")
def tiny():
  model = get_model("bcos-resnet-tiny", num_classes=4)
  images = jax.random.uniform(jax.random.key(0), (3, 16, 16, 3))
  variables = jax.jit(model.init)(jax.random.key(1), images)
  return model, variables, images


def _bn_model():
  rng = np.random.default_rng(3)
  sd = _released_resnet_names((1, 1), "bottleneck", 4, (3, False), 6, rng)
  model = BcosResNet(
      stage_sizes=(1, 1),
      block="bottleneck",
      num_classes=6,
      width=4,
      small_inputs=False,
      norm="bn",
      logit_bias=-np.log(5),
  )
  return model, from_bcos_state_dict(sd, model)


@pytest.mark.parametrize("which", ["tiny", "bn"])
def test_explanations_are_complete_at_every_layer(tiny, which):
  if which == "tiny":
    model, variables, images = tiny
  else:
    (model, variables), images = _bn_model(), jax.random.uniform(jax.random.key(2), (2, 16, 16, 3))
  logits = model.apply(variables, images)
  for layer in range(model.num_explainable_layers):
    e = explain(model, variables, images, "all", layer=layer)
    assert float(completeness_error(e).max()) <= 1e-6, layer
    np.testing.assert_allclose(e.logits, logits, rtol=1e-5, atol=1e-6)
  jitted = explain_jit(model, variables, images, layer=1)
  assert float(completeness_error(jitted).max()) <= 1e-6


def test_explanation_at_the_input_is_the_explain_mode_gradient(tiny):
  """The dynamic linear weights are W(x) with every dynamic factor frozen: the linear map
  linearize() gives in explain mode maps the encoded input to the evidence."""
  model, variables, images = tiny
  h = model.apply(variables, images, 0, method="layer_input")
  f = lambda h: model.apply(variables, h, 0, True, False, method="forward_from")
  evidence, linear = jax.linearize(f, h)
  np.testing.assert_allclose(linear(h), evidence, rtol=1e-5, atol=1e-6)
  a, b = 0.3, -1.7
  u = jax.random.normal(jax.random.key(5), h.shape)
  np.testing.assert_allclose(
      linear(a * h + b * u), a * linear(h) + b * linear(u), rtol=1e-4, atol=1e-5
  )
  _, plain = jax.jvp(
      lambda h: model.apply(variables, h, 0, False, False, method="forward_from"), (h,), (h,)
  )
  assert np.max(np.abs(plain - evidence)) > 1e-3  # B = 2: the plain derivative is not W(x)


def test_posthoc_baselines_run_on_a_bcos_model(tiny):
  model, variables, images = tiny
  info = eval_methods.inspect_model(model, variables, images.shape[1:])
  assert info == eval_methods.ModelInfo(model.num_explainable_layers, True)
  targets = jnp.array([0, 1, 3])
  ixg = eval_methods.posthoc_attribution(model, info, "IxG", variables, images, targets)
  grad = jax.jit(jax.vmap(jax.grad(lambda x, t: model.apply(variables, x[None])[0, t])))(
      images, targets
  )
  np.testing.assert_allclose(ixg, grad * images, rtol=1e-5, atol=1e-7)
  cam = eval_methods.posthoc_attribution(model, info, "GCam", variables, images, targets)
  assert cam.shape[:3] == images.shape[:3] and bool(jnp.all(jnp.isfinite(cam)))
  assert float(jnp.abs(cam).sum()) > 0
  ours = eval_methods.coda_contributions(model, info, variables, images, targets)
  assert ours.shape == (3, 16, 16, 6)


def test_an_evaluator_runs_on_a_converted_workdir(tmp_path):
  from codajax import data, evaluators
  from codajax.convert.bcos import write_workdir

  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "eval"))
  import quick as quick_config  # noqa: E402

  model = get_model("bcos-resnet-tiny", num_classes=10, image_channels=1)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))
  data_dir = str(tmp_path / "tfds")
  workdir = write_workdir(
      variables,
      "bcos-resnet-tiny",
      str(tmp_path / "run"),
      dataset="digits",
      num_classes=10,
      image_size=16,
      image_channels=1,
      data_dir=data_dir,
  )
  workdir = str(workdir)
  config = quick_config.get_config()
  config.methods, config.out, config.progress = "Ours,IxG", str(tmp_path / "out"), False
  config.evals = {"accuracy": {}, "completeness": {"n_images": 8}}
  report = evaluators.evaluate_run(workdir, config)
  test = data.load_examples("digits", "test", data_dir=data_dir)
  logits = model.apply(variables, jnp.asarray(test["image"], jnp.float32) / 255)
  assert report["accuracy"]["count"] == len(test["label"])
  assert report["accuracy"]["top1"] == pytest.approx(
      float(np.mean(np.argmax(logits, -1) == test["label"]))
  )
  assert report["completeness"]["max"] <= 1e-6
  assert report["explainable_layers"] == model.num_explainable_layers


def test_get_model_settings():
  assert get_model("bcos-resnet50").logit_bias == pytest.approx(-np.log(999))
  assert get_model("bcos-resnet-tiny", norm="gn").norm == "gn"
  with pytest.raises(TypeError, match="form"):  # a CoDA setting: B-cos layers have one form
    get_model("bcos-resnet18", form="explicit")
  with pytest.raises(ValueError, match="Unknown B-cos norm"):
    get_model("bcos-resnet18", norm="l2")
  assert isinstance(get_model("bcos-vgg11"), BcosVGG)


def test_the_cli_writes_a_restorable_work_directory(tmp_path, capsys):
  from codajax.convert import bcos as convert_bcos
  from codajax.train import restore

  rng = np.random.default_rng(5)
  sd = _released_resnet_names((1, 1, 1), "basic", 16, (3, True), 10, rng)
  sd = {k: v for k, v in sd.items() if ".bn" not in k and not k.startswith("bn")}
  for key in [k for k in sd if "downsample.1" in k]:
    del sd[key]
  np.savez(tmp_path / "tiny.npz", **sd)  # no norm weights: unit scales (authors' Unaffine)
  convert_bcos.main(
      [
          "--checkpoint",
          str(tmp_path / "tiny.npz"),
          "--name",
          "bcos-resnet-tiny",
          "--workdir",
          str(tmp_path / "run"),
          "--num_classes",
          "10",
          "--image_size",
          "32",
          "--dataset",
          "shapes",
      ]
  )
  assert "eval.py --workdir" in capsys.readouterr().out
  run = restore(str(tmp_path / "run"))
  assert run.config.model.name == "bcos-resnet-tiny" and run.config.dataset == "shapes"
  np.testing.assert_array_equal(
      run.params["layer_1"]["block_0"]["conv2"]["kernel"],
      sd["layer1.0.conv2.linear.weight"].transpose(2, 3, 1, 0),
  )


def test_bfloat16_compute_is_explained_in_float32(tiny):
  model, variables, images = tiny
  half = get_model("bcos-resnet-tiny", num_classes=4, dtype=jnp.bfloat16)
  np.testing.assert_allclose(
      half.apply(variables, images), model.apply(variables, images), rtol=0.1, atol=0.05
  )
  e = explain(half, variables, images, layer=1)
  assert e.contribution_map.dtype == jnp.float32
  assert float(completeness_error(e).max()) <= 1e-6


@pytest.mark.parametrize(
    "block,small_inputs,norm", [("basic", True, "ln"), ("bottleneck", False, "bn")]
)
def test_nnx_and_linen_resnets_agree(block, small_inputs, norm):
  from flax import nnx

  from codajax.bcos.nnx_models import NNXBcosResNet, load_linen_params
  from codajax.explain import explain_nnx

  args = dict(
      stage_sizes=(1, 1),
      block=block,
      num_classes=5,
      width=4,
      small_inputs=small_inputs,
      norm=norm,
      max_out=2,
  )
  linen = BcosResNet(**args, logit_bias=-np.log(4))
  images = jax.random.uniform(jax.random.key(3), (2, 16, 16, 3))
  variables = jax.jit(linen.init)(jax.random.key(4), images)
  variables = jax.tree.map(lambda p: p * 1.3 if p.ndim == 1 else p, variables)
  model = load_linen_params(NNXBcosResNet(**args, rngs=nnx.Rngs(0)), variables)
  np.testing.assert_allclose(model(images), linen.apply(variables, images), rtol=1e-6)
  e_nnx = explain_nnx(model, images, layer=2)
  e_linen = explain(linen, variables, images, layer=2)
  np.testing.assert_allclose(e_nnx.contribution_map, e_linen.contribution_map, rtol=1e-5, atol=1e-8)
  assert float(completeness_error(e_nnx).max()) <= 1e-6
