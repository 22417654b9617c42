"""Hybrid networks: registered shapes, stage 0 = CoDA-Net, exact contributions at every depth."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codajax.explain import completeness_error, explain
from codajax.explain.hybrid import explain_at_depths, upsample_to_image
from codajax.models import (
    ARCHITECTURES,
    BackboneSpec,
    CoDANet,
    HybridNet,
    LayerSpec,
    architecture_names,
    count_params,
    get_model,
    with_num_classes,
)
from codajax.models.hybrid import HYBRID_FAMILIES, hybrid_model_names, mirrored_coda_layers
from codajax.nn import add_inverse

TINY_CODA = ((6, 3, 3, 1, 1), (6, 3, 3, 2, 1), (5, 2, 1, 1, 0))
IMAGES = np.random.default_rng(1).uniform(size=(2, 16, 16, 3)).astype(np.float32)


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


TINY_HYBRIDS = {
    # A basic-block ResNet (CIFAR stem) cut after stage 2.
    "resnet": dict(
        family="shapes", embedding_stage=2, backbone_widths=(4, 8, 8), coda_layers=TINY_CODA
    ),
    # A bottleneck ResNet with the ImageNet stem cut after stage 1.
    "bottleneck": dict(
        family="resnet50-imagenet",
        embedding_stage=1,
        backbone_widths=(2, 4, 4, 4),
        coda_layers=TINY_CODA,
    ),
    # VGG cut after stage 2, the explicit DAU form.
    "vgg": dict(
        family="vgg11-cifar",
        embedding_stage=2,
        backbone_widths=(4, 4, 4, 4, 4),
        coda_layers=TINY_CODA,
        form="explicit",
    ),
}
COMPLETENESS_KINDS = ("bottleneck", "vgg")  # "resnet": test_explain_at_depths_...


@functools.cache
def _tiny(kind):
  kwargs = dict(TINY_HYBRIDS[kind])
  model = get_model(f"hybrid-{kwargs.pop('family')}", temperature=5.0, **kwargs)
  return model, _random_variables(model, IMAGES)


def test_every_registered_hybrid_builds_with_the_expected_shapes():
  names = hybrid_model_names()
  assert set(names) <= set(architecture_names())
  for family, spec in HYBRID_FAMILIES.items():
    size = 64 if spec.image_size > 32 else spec.image_size  # shapes only: any size works
    images = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    for stage in range(spec.backbone.num_stages + 1):
      name = f"hybrid-{family}-s{stage}"
      assert name in names
      model = get_model(name)
      logits, variables = jax.eval_shape(model.init_with_output, jax.random.key(0), images)
      assert logits.shape == (2, spec.num_classes), name
      assert set(variables) == {"params"}, name  # GroupNorm: no batch_stats
      first = variables["params"]["coda"]["layer_0"]["B"]
      assert first.shape[2] == model.embedding_channels, name  # the embedding feeds layer 0
      if stage == 0:
        assert model.layers == with_num_classes(spec.pure_layers, spec.num_classes), name
        assert model.temperature == spec.pure_temperature
        assert "features" not in variables["params"]
      else:
        assert model.layers == mirrored_coda_layers(
            spec.backbone.num_stages - stage, spec.num_classes, spec.coda_width, spec.coda_rank
        )


def test_embedding_resolution_and_channels_across_depths():
  want = {1: (32, 64), 2: (16, 128), 3: (8, 256), 4: (4, 512)}
  for stage, (size, channels) in want.items():
    model = get_model("hybrid-resnet18-cifar", embedding_stage=stage)
    images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    inputs = jax.eval_shape(
        lambda v, x: model.apply(v, x, method="explanation_inputs"), variables, images
    )
    assert inputs[0].shape == (1, size, size, channels)
    assert len(inputs) == len(model.layers) == 2 + 2 * (4 - stage)
    assert inputs[-1].shape == (1, 4, 4, 64)  # the class map is 4×4
  imagenet = get_model("hybrid-resnet50-imagenet-s3")
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(imagenet.init, jax.random.key(0), images)
  embedding = jax.eval_shape(lambda v, x: imagenet.apply(v, x, method="embed"), variables, images)
  assert embedding.shape == (1, 14, 14, 1024)


def test_stage_zero_is_the_pure_coda_net():
  model = get_model("hybrid-shapes", embedding_stage=0, coda_layers=TINY_CODA, temperature=5.0)
  pure = CoDANet(tuple(LayerSpec(*spec) for spec in TINY_CODA), temperature=5.0)
  pure_variables = _random_variables(pure, IMAGES)
  variables = {"params": {"coda": pure_variables["params"]}}
  assert jax.tree.map(
      jnp.shape, jax.eval_shape(model.init, jax.random.key(0), IMAGES)
  ) == jax.tree.map(jnp.shape, variables)
  logits, embedding = jax.jit(
      lambda v: (model.apply(v, IMAGES), model.apply(v, IMAGES, method="embed"))
  )(variables)
  np.testing.assert_allclose(logits, jax.jit(pure.apply)(pure_variables, IMAGES), rtol=1e-6)
  np.testing.assert_array_equal(embedding, add_inverse(IMAGES))
  s0 = get_model("hybrid-resnet18-cifar-s0")
  assert s0.layers == ARCHITECTURES["9L-S"].layers and s0.temperature == 1000.0


@pytest.mark.parametrize("kind", COMPLETENESS_KINDS)
def test_contributions_are_complete_at_the_embedding_and_every_coda_layer(kind):
  model, variables = _tiny(kind)
  inputs = jax.jit(lambda v: model.apply(v, IMAGES, method="explanation_inputs"))(variables)
  assert len(inputs) == len(model.layers)
  embedding = jax.jit(lambda v: model.apply(v, IMAGES, method="embed"))(variables)
  np.testing.assert_array_equal(inputs[0], embedding)
  assert embedding.shape[-1] == model.embedding_channels and float(embedding.min()) >= 0  # ReLU
  logits = jax.jit(model.apply)(variables, IMAGES)
  explain_all = jax.jit(explain, static_argnums=(0, 3), static_argnames="layer")
  for layer in range(len(inputs)):
    e = explain_all(model, variables, IMAGES, "all", layer=layer)
    assert e["contribution_map"].shape == (2, model.num_classes, *inputs[layer].shape[1:])
    assert float(completeness_error(e).max()) <= 1e-6, layer
    np.testing.assert_allclose(e["logits"], logits, rtol=1e-5, atol=1e-6)
    # The contributions sum to logit − bias; the evidence is not trivially small.
    total = e["contribution_map"].sum(axis=(2, 3, 4))
    np.testing.assert_allclose(total, logits - model.logit_bias, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(total).max()) > 1e-2


def test_upsample_nearest_keeps_every_cells_mass_on_the_pixels_it_covers():
  maps = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 3)), jnp.float32)
  up = upsample_to_image(maps, (8, 6))
  assert up.shape == (2, 8, 6)
  np.testing.assert_allclose(up[:, :2, :2].sum(axis=(1, 2)), maps[:, 0, 0], rtol=1e-6)
  np.testing.assert_allclose(
      up[:, 6:, 4:], jnp.broadcast_to(maps[:, 3:, 2:] / 4, (2, 2, 2)), rtol=1e-6
  )
  # Sizes that do not divide: cells cover 2 or 3 pixels, every total is still exact.
  odd = upsample_to_image(maps, (11, 7))
  np.testing.assert_allclose(odd.sum(axis=(1, 2)), maps.sum(axis=(1, 2)), rtol=1e-5, atol=1e-6)
  rows, cols = (np.arange(11) * 4) // 11, (np.arange(7) * 3) // 7
  pooled = np.zeros((2, 4, 3))
  np.add.at(pooled, (slice(None), rows[:, None], cols[None, :]), np.asarray(odd))
  np.testing.assert_allclose(pooled, maps, rtol=1e-5, atol=1e-6)
  same = upsample_to_image(maps, (4, 3))
  np.testing.assert_array_equal(same, maps)


def test_upsample_bilinear_and_errors():
  maps = jnp.ones((1, 4, 4))
  smooth = upsample_to_image(maps, (16, 16), "bilinear")
  np.testing.assert_allclose(smooth, np.full((1, 16, 16), 1 / 16), rtol=1e-6)
  ramp = upsample_to_image(jnp.arange(4.0).reshape(1, 2, 2), (8, 8), "bilinear")
  assert float(jnp.abs(jnp.diff(ramp, axis=2)).max()) < float(
      jnp.abs(jnp.diff(upsample_to_image(jnp.arange(4.0).reshape(1, 2, 2), (8, 8)), axis=2)).max()
  )
  with pytest.raises(ValueError, match=r"\(N, h, w\)"):
    upsample_to_image(jnp.ones((4, 4)), (8, 8))
  with pytest.raises(ValueError, match="Unknown upsampling"):
    upsample_to_image(maps, (8, 8), "cubic")
  with pytest.raises(ValueError, match="smaller than"):
    upsample_to_image(maps, (2, 8))


def test_explain_at_depths_gives_exact_image_sized_maps_at_every_layer():
  model, variables = _tiny("resnet")
  maps = jax.jit(explain_at_depths, static_argnums=0)(model, variables, IMAGES)
  assert sorted(maps) == [0, 1, 2]
  logits = jax.jit(model.apply)(variables, IMAGES)
  predicted = jnp.max(logits, axis=-1) - model.logit_bias
  for layer, image_map in maps.items():
    assert image_map.shape == (2, 16, 16) and image_map.dtype == jnp.float32
    np.testing.assert_allclose(image_map.sum(axis=(1, 2)), predicted, rtol=1e-4, atol=1e-5)
  # The embedding of stage 2 is 8×8: its map is constant on 2×2 pixel blocks.
  np.testing.assert_array_equal(maps[0][:, ::2, ::2], maps[0][:, 1::2, 1::2])
  with pytest.raises(ValueError, match="one class per image"):
    explain_at_depths(model, variables, IMAGES, "all")
  with pytest.raises(ValueError, match="rank 4"):
    explain_at_depths(model, variables, IMAGES[0])


def test_hybrid_errors():
  with pytest.raises(ValueError, match=r"needs embedding_stage=0\.\.4"):
    get_model("hybrid-resnet18-cifar")
  with pytest.raises(ValueError, match=r"embedding_stage must be in 0\.\.3"):
    get_model("hybrid-shapes", embedding_stage=4)
  with pytest.raises(TypeError, match="fixes embedding_stage=2"):
    get_model("hybrid-shapes-s2", embedding_stage=1)
  with pytest.raises(ValueError, match="known norms"):
    get_model("hybrid-shapes-s1", norm="l1")
  with pytest.raises(ValueError, match="Unknown backbone kind"):
    BackboneSpec("densenet", (1,), (4,))
  with pytest.raises(ValueError, match="equal length"):
    BackboneSpec("resnet", (1, 1), (4,))
  with pytest.raises(ValueError, match=r"embedding_stage must be in 0\.\.2"):
    HybridNet(BackboneSpec("resnet", (1, 1), (4, 8)), 3, (LayerSpec(10, 2, 1, 1, 0),))
  model, variables = _tiny("resnet")
  with pytest.raises(ValueError, match="built for 3-channel images"):
    model.apply(variables, IMAGES[..., :1])
  with pytest.raises(ValueError, match="rank 4"):
    model.apply(variables, IMAGES[0])


def test_parameter_counts_follow_the_specs():
  model = get_model("hybrid-shapes-s3")
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  coda = sum(math.prod(x.shape) for x in jax.tree.leaves(variables["params"]["coda"]))
  assert coda == count_params(model.layers, image_channels=64 // 2)  # 64 embedding channels
