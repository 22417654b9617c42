"""The ``shapes`` variants: deterministic in their seed, each knob doing what it says."""

import importlib.util
import os

import numpy as np
import pytest

from codajax.data import catalog
from codajax.data.builders import shapes

N = 200


def _generate(seed=0, **knobs):
  return shapes.generate_shapes(N, seed, "train", shapes.Style(**knobs))


def _split(data):
  """Object and background pixels (float grey levels, (k, 3)) of every image, as lists."""
  image = data["image"].astype(np.float64)
  mask = data["object_mask"].astype(bool)
  return [image[i][mask[i]] for i in range(len(image))], [
      image[i][~mask[i]] for i in range(len(image))
  ]


@pytest.mark.parametrize("knobs", [{}, {"polarity": "light", "texture": 0.5, "clutter": 2}])
def test_variants_are_deterministic_in_their_seed(knobs):
  first = _generate(3, **knobs)
  again = _generate(3, **knobs)
  for key in ("image", "object_mask", "label"):
    np.testing.assert_array_equal(first[key], again[key])
  assert not np.array_equal(first["image"], _generate(4, **knobs)["image"])


def test_default_style_is_the_original_dataset():
  np.testing.assert_array_equal(
      shapes.generate_shapes(N, 1, "test")["image"],
      shapes.generate_shapes(N, 1, "test", shapes.Style("random", 1.0, 5))["image"],
  )
  assert shapes.DEFAULT_CONFIG.name == "train20000_test2000_seed0"


def test_light_polarity_puts_the_object_above_the_background_in_every_channel():
  random_objects, random_background = _split(_generate(clutter=0))
  light_objects, light_background = _split(_generate(polarity="light", clutter=0))
  # Light: object >= 0.6*255*0.925 - noise, background <= 0.4*255 + noise, per channel, always.
  light_gap = np.array(
      [o.min(axis=0).min() - b.max(axis=0).max() for o, b in zip(light_objects, light_background)]
  )
  assert light_gap.min() > 0
  # Random: the object is darker than its background mean in some channel about as often as not.
  darker = np.array(
      [(o.mean(axis=0) < b.mean(axis=0)).any() for o, b in zip(random_objects, random_background)]
  )
  assert 0.3 < darker.mean() < 0.95


def test_texture_knob_sets_the_background_variation():
  def background_std(texture):
    _, background = _split(_generate(texture=texture, clutter=0))
    return np.median([b.std(axis=0).mean() for b in background])

  flat, half, full = background_std(0.0), background_std(0.5), background_std(1.0)
  noise_std = np.sqrt(((np.arange(-8, 9)) ** 2).mean())  # uniform integer noise in [-8, 8]: 4.90
  assert abs(flat - noise_std) < 0.6  # flat: only the pixel noise is left
  # The texture amplitude scales the texture's std; the noise adds in quadrature: half -> a quarter of the variance.
  texture_variance = lambda std: std**2 - noise_std**2
  assert 3.0 < texture_variance(full) / texture_variance(half) < 5.0


def test_clutter_knob_sets_the_number_of_strokes():
  def stroke_pixel_share(clutter):
    # Flat background: pixels more than 12 grey levels (noise is at most 8) from the background median are strokes.
    _, background = _split(_generate(texture=0.0, clutter=clutter))
    return np.mean([(np.abs(b - np.median(b, axis=0)).max(axis=1) > 12).mean() for b in background])

  none, few, many = stroke_pixel_share(0), stroke_pixel_share(2), stroke_pixel_share(8)
  assert none == 0.0
  assert 0.0 < few < many
  assert 2.5 < many / few < 5.5  # roughly proportional to the stroke count (overlaps aside)


def test_style_names_round_trip_and_bad_values_fail():
  style = shapes.Style("light", 0.5, 3)
  config = shapes.shapes_config(256, 64, 0, style)
  assert config.name == "train256_test64_seed0_light_tex50_clutter3"
  assert shapes.parse_shapes_config(config.name).style == style
  assert shapes.parse_shapes_config("train256_test64_seed0_light").style == shapes.Style("light")
  assert (
      catalog.canonical_name("shapes/train256_test64_seed0_clutter0")
      == "shapes/train256_test64_seed0_clutter0"
  )
  with pytest.raises(ValueError, match="canonical form"):
    shapes.parse_shapes_config("train256_test64_seed0_tex100")
  with pytest.raises(ValueError, match="polarity"):
    shapes.Style("dark")
  with pytest.raises(ValueError, match="texture"):
    shapes.Style(texture=1.5)
  with pytest.raises(ValueError, match="clutter"):
    shapes.Style(clutter=-1)


@pytest.mark.parametrize("arg", [None, "original", "smoke"])
def test_shapes_configs_build_and_validate(arg):
  from codajax.models import get_model
  from codajax.train.config import validate_config

  path = os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "shapes.py"
  )
  spec = importlib.util.spec_from_file_location("shapes_config_file", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  validate_config(config)
  expected = {
      None: "shapes/train20000_test2000_seed0_light",
      "original": "shapes",
      "smoke": "shapes/train256_test64_seed0_light",
  }[arg]
  assert config.dataset == expected
  assert catalog.canonical_name(config.dataset).startswith("shapes/train")
  model = get_model(config.model.name, temperature=config.model.temperature)
  assert model.num_classes == len(shapes.CLASS_NAMES)
