"""B-cosification (codajax.bcos.bcosify): exactness against a float64 numpy port, completeness at
every layer for every class, the flax examples/imagenet ResNet and a VGG, clear refusals."""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codajax.bcos.bcosification import BcosifiedNet, BcosifyError, bcosify
from codajax.explain import explain
from codajax.models import get_model


def _images(n, size, channels=3, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.uniform(size=(n, size, size, channels)), jnp.float32)


def _randomise(variables, seed=0):
  """Every leaf replaced by random values (positive for variances), so nothing is at its init."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = str(getattr(path[-1], "key", path[-1]))
    value = rng.normal(size=leaf.shape) * 0.5
    if name == "var":
      value = rng.uniform(0.5, 2.0, size=leaf.shape)
    elif name == "scale":
      value = 1.0 + value * 0.2
    return jnp.asarray(value, jnp.float32)

  return jax.tree_util.tree_map_with_path(draw, variables)


def _check_completeness(model, variables, images):
  """Σ contributions == logit − bias for every class, at every explainable layer (1e-5 rel.)."""
  layers = range(model.num_explainable_layers)
  every_layer = jax.jit(lambda v, x: [explain(model, v, x, "all", layer=l) for l in layers])
  for layer, e in zip(layers, every_layer(variables, images)):
    maps = e.contribution_map  # (N, K, ...): every class
    sums = np.asarray(jnp.sum(maps, axis=tuple(range(2, maps.ndim))), np.float64)
    evidence = np.asarray(e.evidence, np.float64)
    scale = np.max(np.abs(evidence), axis=-1, keepdims=True)
    assert np.max(np.abs(sums - evidence) / scale) <= 1e-5, layer
    assert maps.dtype == jnp.float32


# ------------------------------------------------------------------- a float64 numpy port


class SmallNet(nn.Module):
  """Conv(bias) -> BatchNorm -> ReLU -> Conv/2 (bias) -> GroupNorm -> ReLU -> mean -> Dense(bias)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3))(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    x = nn.Conv(6, (3, 3), strides=(2, 2))(x)
    x = nn.relu(nn.GroupNorm(num_groups=2)(x))
    return nn.Dense(3)(jnp.mean(x, axis=(1, 2)))


def _same_pads(size, k, s):
  """TensorFlow/Flax "SAME": the output has ceil(size / s) positions; the extra pad goes last."""
  out = -(-size // s)
  total = max((out - 1) * s + k - size, 0)
  return total // 2, total - total // 2


def _np_bcos_conv(x, w, stride, b=2.0):
  """B-cos of a convolution with weights kept: |cos|^(B−1)·(w·patch), float64, SAME padding."""
  n, h, wd, _ = x.shape
  k = w.shape[0]
  (pt, pb), (pl, pr) = _same_pads(h, k, stride), _same_pads(wd, k, stride)
  xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  oh, ow = -(-h // stride), -(-wd // stride)
  out = np.zeros((n, oh, ow, w.shape[-1]))
  w_norm = np.sqrt(np.sum(w**2, axis=(0, 1, 2)))
  for i in range(oh):
    for j in range(ow):
      patch = xp[:, i * stride : i * stride + k, j * stride : j * stride + k, :]
      lin = np.einsum("nhwc,hwco->no", patch, w)
      norm = np.sqrt(np.sum(patch**2, axis=(1, 2, 3)) + 1e-6)[:, None]
      out[:, i, j] = np.abs(lin / (norm * w_norm)) ** (b - 1) * lin
  return out


def _np_small_net(params, stats, images):
  """The B-cosified SmallNet in float64 numpy, written from the recipe (docs/bcos.md)."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  s = jax.tree.map(lambda a: np.asarray(a, np.float64), stats)
  x = np.asarray(images, np.float64)
  x = np.concatenate([x, 1 - x], axis=-1)
  w0 = p["Conv_0"]["kernel"]
  x = _np_bcos_conv(x, np.concatenate([w0, -w0], axis=2) / 2, 1)
  bn_scale = p["BatchNorm_0"]["scale"] / np.sqrt(s["BatchNorm_0"]["var"] + 1e-5)
  x = np.maximum(x * bn_scale, 0)
  x = _np_bcos_conv(x, p["Conv_1"]["kernel"], 2)
  n, h, w, c = x.shape
  g = x.reshape(n, h, w, 2, c // 2)
  var = np.var(g, axis=(1, 2, 4), keepdims=True)
  x = np.maximum((g / np.sqrt(var + 1e-6)).reshape(n, h, w, c) * p["GroupNorm_0"]["scale"], 0)
  pooled = np.mean(x, axis=(1, 2))
  wd = p["Dense_0"]["kernel"]
  lin = pooled @ wd
  norm = (np.sqrt(np.sum(pooled**2, axis=-1, keepdims=True)) + 1e-12) * np.sqrt(
      np.sum(wd**2, axis=0)
  )
  return np.abs(lin / norm) * lin - math.log(2)


def test_converted_network_equals_a_float64_numpy_port():
  net = SmallNet()
  images = _images(3, 8)
  variables = _randomise(net.init(jax.random.key(0), images))
  model, converted = bcosify(net, variables, image_shape=(8, 8, 3))
  want = _np_small_net(variables["params"], variables["batch_stats"], images)
  got = model.apply(converted, images)
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-6)
  # No bias, no running mean survives; the first kernel takes the 6-channel encoding.
  names = {
      str(getattr(k, "key", k))
      for path, _ in jax.tree_util.tree_leaves_with_path(converted)
      for k in path
  }
  assert "bias" not in names and "mean" not in names
  assert converted["params"]["network"]["Conv_0"]["kernel"].shape == (3, 3, 6, 4)


def test_b1_without_biases_or_norms_is_the_original_on_centred_images():
  """At B = 1 a bias- and norm-free network converts to itself on (x − 1/2) / σ: the first kernel
  [W, −W] / (2σ) on [x, 1 − x] (an independent check of the encoding step)."""

  class Plain(nn.Module):

    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Conv(5, (3, 3), use_bias=False)(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
      x = nn.relu(nn.Conv(7, (3, 3), use_bias=False)(x))
      return nn.Dense(4, use_bias=False)(jnp.mean(x, axis=(1, 2)))

  net, images = Plain(), _images(2, 8, seed=3)
  variables = net.init(jax.random.key(1), images)
  std = np.array([0.2, 0.25, 0.3], np.float32)
  model, converted = bcosify(
      net, variables, image_shape=(8, 8, 3), b=1.0, input_std=std, logit_bias=0.0
  )
  want = net.apply(variables, (images - 0.5) / std)
  np.testing.assert_allclose(model.apply(converted, images), want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ completeness, user networks


def test_bcosified_resnet_tiny_is_complete_for_every_class_at_every_layer():
  net = get_model("resnet-tiny", num_classes=5)
  images = _images(2, 16, seed=4)
  variables = _randomise(net.init(jax.random.key(0), images), seed=1)
  model, converted = bcosify(net, variables, image_shape=(16, 16, 3))
  # The encoded image, the input of stages 1..3 and of the classifier; Grad-CAM on stage 3.
  assert model.num_explainable_layers == 5
  assert model.grad_cam_module == "stage_3"
  _check_completeness(model, converted, images)


# The ResNet of flax's examples/imagenet (models.py), as a user writes it.
ModuleDef = type(nn.Module)


class ResNetBlock(nn.Module):
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: callable
  strides: tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), self.strides)(x)
    y = self.act(self.norm()(y))
    y = self.conv(self.filters, (3, 3))(y)
    y = self.norm(scale_init=nn.initializers.zeros_init())(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters, (1, 1), self.strides, name="conv_proj")(residual)
      residual = self.norm(name="norm_proj")(residual)
    return self.act(residual + y)


class BottleneckResNetBlock(nn.Module):
  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: callable
  strides: tuple[int, int] = (1, 1)

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.act(self.norm()(self.conv(self.filters, (1, 1))(x)))
    y = self.act(self.norm()(self.conv(self.filters, (3, 3), self.strides)(y)))
    y = self.norm(scale_init=nn.initializers.zeros_init())(self.conv(self.filters * 4, (1, 1))(y))
    if residual.shape != y.shape:
      residual = self.conv(self.filters * 4, (1, 1), self.strides, name="conv_proj")(residual)
      residual = self.norm(name="norm_proj")(residual)
    return self.act(residual + y)


class ImagenetResNet(nn.Module):
  stage_sizes: tuple[int, ...]
  block_cls: ModuleDef
  num_classes: int
  num_filters: int = 8

  @nn.compact
  def __call__(self, x, train: bool = True):
    conv = functools.partial(nn.Conv, use_bias=False)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9)
    x = conv(self.num_filters, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], name="conv_init")(x)
    x = nn.relu(norm(name="bn_init")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    for i, block_size in enumerate(self.stage_sizes):
      for j in range(block_size):
        strides = (2, 2) if i > 0 and j == 0 else (1, 1)
        x = self.block_cls(self.num_filters * 2**i, conv, norm, nn.relu, strides)(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)


@pytest.mark.parametrize("block", [ResNetBlock, BottleneckResNetBlock])
def test_flax_imagenet_resnet_converts_exactly(block):
  net = ImagenetResNet((1, 1), block, num_classes=4)
  images = _images(2, 32, seed=5)
  variables = _randomise(net.init(jax.random.key(0), images, train=False), seed=2)
  model, converted = bcosify(net, variables, image_shape=(32, 32, 3), call_kwargs={"train": False})
  # layer 0, the input of bn_init (the output of conv_init), of both blocks, of the Dense head.
  assert model.num_explainable_layers == 5
  assert model.grad_cam_module == f"{block.__name__}_1"
  kernel = variables["params"]["conv_init"]["kernel"]
  np.testing.assert_array_equal(
      converted["params"]["network"]["conv_init"]["kernel"],
      np.concatenate([kernel, -kernel], axis=2) / 2,
  )
  bn = converted["params"]["network"]["bn_init"]["scale"]
  gamma, var = variables["params"]["bn_init"]["scale"], variables["batch_stats"]["bn_init"]["var"]
  np.testing.assert_allclose(bn, gamma / np.sqrt(var + 1e-5), rtol=1e-6)
  _check_completeness(model, converted, images)


class VGGNet(nn.Module):
  """A VGG: conv+ReLU stages with 2×2 max-pools, flatten, two dense layers (all with biases)."""

  @nn.compact
  def __call__(self, x):
    for width in (8, 16):
      x = nn.relu(nn.Conv(width, (3, 3))(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(16)(x))
    return nn.Dense(3)(x)


def test_vgg_style_network_converts_exactly():
  net = VGGNet()
  images = _images(2, 8, seed=6)
  variables = _randomise(net.init(jax.random.key(0), images), seed=3)
  model, converted = bcosify(net, variables, image_shape=(8, 8, 3))
  # The encoded image and the input of Conv_1, Dense_0 and Dense_1.
  assert model.num_explainable_layers == 4
  assert isinstance(model, BcosifiedNet)
  _check_completeness(model, converted, images)


# -------------------------------------------------------------------------------- refusals


def _wrap(layer_fn):
  class Net(nn.Module):

    @nn.compact
    def __call__(self, x):
      x = layer_fn(self, x)
      return nn.Dense(2)(jnp.mean(x, axis=(1, 2)))

  return Net()


@pytest.mark.parametrize(
    "layer_fn, message",
    [
        (lambda m, x: nn.gelu(nn.Conv(4, (3, 3))(x)), "nn.gelu"),
        (lambda m, x: nn.swish(nn.Conv(4, (3, 3))(x)), "nn.swish"),
        (lambda m, x: nn.ConvTranspose(4, (3, 3))(nn.Conv(4, (3, 3))(x)), "nn.ConvTranspose"),
        (
            lambda m, x: nn.Conv(4, (3, 3))(x) * m.param("alpha", nn.initializers.ones, ()),
            "params/alpha",
        ),
        (lambda m, x: nn.Conv(4, (3, 3))((x - 0.45) / 0.22), "takes the images as they come"),
    ],
    ids=["gelu", "swish", "conv_transpose", "custom_param", "normalisation_inside"],
)
def test_a_layer_it_cannot_convert_gives_one_clear_error(layer_fn, message):
  net = _wrap(layer_fn)
  images = _images(1, 8)
  variables = net.init(jax.random.key(0), images)
  with pytest.raises(BcosifyError, match=message.replace("(", r"\(").replace("/", "/")):
    bcosify(net, variables, image_shape=(8, 8, 3))


def test_bad_options_are_refused():
  net = VGGNet()
  variables = net.init(jax.random.key(0), _images(1, 8))
  with pytest.raises(ValueError, match="image_shape"):
    bcosify(net, variables, image_shape=(8, 8))
  with pytest.raises(ValueError, match="b must be"):
    bcosify(net, variables, image_shape=(8, 8, 3), b=0.5)
  with pytest.raises(TypeError, match="image_size"):
    get_model("bcosified-resnet-tiny")
