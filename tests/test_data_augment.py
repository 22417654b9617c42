"""Augmentations: the papers' CIFAR and ImageNet transforms and RandAugment."""

import io

import numpy as np
import pytest
from PIL import Image

from codajax.data import augment, randaugment


def _rng(seed=0):
  return np.random.default_rng(seed)


def _jpeg(width, height, seed=0):
  rng = _rng(seed)
  coarse = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
  image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
  buffer = io.BytesIO()
  image.save(buffer, format="JPEG", quality=95)
  return buffer.getvalue()


def test_random_pad_crop_equals_crop_of_zero_padded_image():
  image = _rng().integers(1, 256, (8, 8, 2), dtype=np.uint8)
  for seed in range(40):
    top, left = _rng(seed).integers(0, 7, size=2)
    expected = np.pad(image, ((3, 3), (3, 3), (0, 0)))[top : top + 8, left : left + 8]
    np.testing.assert_array_equal(augment.random_pad_crop(image, 3, _rng(seed)), expected)


def test_random_pad_crop_reaches_every_offset():
  image = np.ones((4, 4, 1), np.uint8)
  zero_rows_cols = {
      (int((crop[:, :, 0] == 0).all(axis=1).sum()), int((crop[:, :, 0] == 0).all(axis=0).sum()))
      for crop in (augment.random_pad_crop(image, 2, _rng(seed)) for seed in range(400))
  }
  assert zero_rows_cols == {(rows, cols) for rows in range(3) for cols in range(3)}


def test_random_flip_mirrors_about_half_the_time():
  image = np.arange(12, dtype=np.uint8).reshape(2, 3, 2)
  rng = _rng()
  flips = [augment.random_flip(image, rng) for _ in range(400)]
  mirrored = sum(np.array_equal(flip, image[:, ::-1]) for flip in flips)
  assert all(np.array_equal(flip, image) or np.array_equal(flip, image[:, ::-1]) for flip in flips)
  assert 150 < mirrored < 250


@pytest.mark.parametrize(
    "shape, flip", [((32, 32, 3), True), ((16, 16, 1), False), ((64, 64, 3), True)]
)
def test_small_train_image_keeps_shape_dtype_and_pixels(shape, flip):
  prep = augment.small_preprocessing(shape, flip=flip)
  assert prep.crop_padding == shape[0] // 8
  image = _rng().integers(1, 256, shape, dtype=np.uint8)
  out = augment.train_image(image, prep, _rng(1))
  assert out.shape == shape and out.dtype == np.uint8
  # Every pixel is either zero padding or a pixel of the (possibly mirrored) image.
  assert set(np.unique(out)) <= set(np.unique(image)) | {0}
  np.testing.assert_array_equal(augment.eval_image(image, prep), image)


def test_resize_shorter_side_follows_torchvision_sizes():
  landscape = Image.new("RGB", (500, 375))
  portrait = Image.new("RGB", (375, 500))
  assert augment.resize_shorter_side(landscape, 256).size == (341, 256)  # int(256 * 500 / 375)
  assert augment.resize_shorter_side(portrait, 256).size == (256, 341)
  assert augment.resize_shorter_side(Image.new("RGB", (256, 300)), 256).size == (256, 300)


def test_center_crop_takes_the_middle():
  array = np.arange(10 * 7, dtype=np.uint8).reshape(10, 7)
  out = np.asarray(augment.center_crop(Image.fromarray(array), 4))
  np.testing.assert_array_equal(out, array[3:7, 2:6])  # round(6 / 2) = 3, round(3 / 2) = 2


def test_imagenet_transforms_give_240_crops_from_jpeg_bytes_and_arrays():
  prep = augment.imagenet_preprocessing()
  assert prep.image_shape == (240, 240, 3) and prep.randaugment == (2, 10)
  encoded = _jpeg(500, 375)
  grey = np.full((300, 260, 1), 77, np.uint8)
  for stored in (encoded, grey):
    train = augment.train_image(stored, prep, _rng())
    test = augment.eval_image(stored, prep)
    assert train.shape == test.shape == (240, 240, 3)
    assert train.dtype == test.dtype == np.uint8
  decoded = Image.open(io.BytesIO(encoded)).convert("RGB")
  expected = np.asarray(
      augment.center_crop(decoded.resize((341, 256), Image.Resampling.BILINEAR), 240)
  )
  np.testing.assert_array_equal(augment.eval_image(encoded, prep), expected)


def test_imagenet_train_crop_is_random_but_reproducible():
  prep = augment.imagenet_preprocessing(randaugment=None)
  encoded = _jpeg(400, 300)
  first, again = augment.train_image(encoded, prep, _rng(3)), augment.train_image(
      encoded, prep, _rng(3)
  )
  np.testing.assert_array_equal(first, again)
  assert any(
      not np.array_equal(first, augment.train_image(encoded, prep, _rng(seed)))
      for seed in range(4, 8)
  )


def test_randaugment_values_at_magnitude_10_match_the_reference():
  values = {name: randaugment.op_value(low, high, 10) for name, _, low, high in randaugment.OPS}
  assert len(randaugment.OPS) == 16
  expected = {
      "Rotate": 10,
      "Solarize": 256 / 3,
      "SolarizeAdd": 110 / 3,
      "Color": 0.7,
      "Contrast": 0.7,
      "Brightness": 0.7,
      "Sharpness": 0.7,
      "ShearX": 0.1,
      "ShearY": 0.1,
      "Cutout": 40 / 3,
      "TranslateX": 100 / 3,
      "TranslateY": 100 / 3,
  }
  for name, value in expected.items():
    assert values[name] == pytest.approx(value), name
  assert max(1, int(values["Posterize"])) == 1


@pytest.mark.parametrize("name, op", [(name, op) for name, op, _, _ in randaugment.OPS])
def test_every_randaugment_op_keeps_size_and_mode(name, op):
  image = Image.fromarray(_rng().integers(0, 256, (24, 30, 3), dtype=np.uint8))
  low, high = next((low, high) for op_name, _, low, high in randaugment.OPS if op_name == name)
  out = op(image, randaugment.op_value(low, high, 10), _rng())
  assert out.size == image.size and out.mode == "RGB"


def test_randaugment_ops_do_what_they_say():
  array = _rng().integers(0, 256, (40, 40, 3), dtype=np.uint8)
  image = Image.fromarray(array)
  np.testing.assert_array_equal(np.asarray(randaugment.invert(image, 0, _rng())), 255 - array)
  assert set(np.unique(np.asarray(randaugment.posterize(image, 1.33, _rng())))) <= {0, 128}
  shifted = np.asarray(randaugment.translate_x(image, 10.0, _rng()))
  assert (np.array_equal(shifted[:, :30], array[:, 10:]) and not shifted[:, 30:].any()) or (
      np.array_equal(shifted[:, 10:], array[:, :30]) and not shifted[:, :10].any()
  )
  cut = np.asarray(randaugment.cutout(Image.new("RGB", (40, 40)), 40 / 3, _rng()))
  filled = (cut == randaugment.CUTOUT_FILL).all(axis=-1)
  assert 7 * 7 <= filled.sum() <= 15 * 15
  solar = np.asarray(
      randaugment.solarize_add(Image.fromarray(np.full((2, 2, 3), 100, np.uint8)), 110 / 3, _rng())
  )
  np.testing.assert_array_equal(
      solar, np.full((2, 2, 3), 255 - 136, np.uint8)
  )  # 100 + 36 >= 128 -> inverted


def test_rand_augment_is_reproducible_and_random():
  image = Image.fromarray(_rng().integers(0, 256, (32, 32, 3), dtype=np.uint8))
  outputs = [np.asarray(randaugment.rand_augment(image, _rng(seed))) for seed in range(12)]
  np.testing.assert_array_equal(outputs[0], np.asarray(randaugment.rand_augment(image, _rng(0))))
  assert len({output.tobytes() for output in outputs}) > 6
  with pytest.raises(ValueError, match="magnitude"):
    randaugment.rand_augment(image, _rng(), magnitude=31)
