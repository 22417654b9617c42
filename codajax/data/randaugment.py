"""RandAugment as in the CoDA-Nets ImageNet training (PIL, 16 ops, magnitude scale 0..30).

The reference used a public PyTorch RandAugment (ildoonet/pytorch-randaugment):
pick ``num_ops`` ops uniformly **with replacement**, apply each with
``value = magnitude / 30 * (high - low) + low``. With ``num_ops=2, magnitude=10``:
Rotate +-10 deg, Posterize 1 bit, Solarize threshold 85.3, SolarizeAdd +36.7
(then solarize at 128), Color/Contrast/Brightness/Sharpness factor 0.7,
ShearX/ShearY +-0.1, Cutout 13.3 px square of (125, 123, 114), TranslateX/Y
+-33.3 px; the sign of Rotate/Shear/Translate is random (p = 0.5). Geometric ops
use PIL's defaults (nearest resampling, black fill). All randomness comes from
the ``np.random.Generator`` passed in, so results are reproducible per example.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

CUTOUT_FILL = (125, 123, 114)
MAX_MAGNITUDE = 30

Op = Callable[[Image.Image, float, np.random.Generator], Image.Image]


def _random_sign(value: float, rng: np.random.Generator) -> float:
  return -value if rng.random() > 0.5 else value


def _affine(image: Image.Image, coefficients: tuple[float, ...]) -> Image.Image:
  return image.transform(image.size, Image.Transform.AFFINE, coefficients)


def auto_contrast(image: Image.Image, value: float, rng: np.random.Generator) -> Image.Image:
  del value, rng
  return ImageOps.autocontrast(image)


def equalize(image: Image.Image, value: float, rng: np.random.Generator) -> Image.Image:
  del value, rng
  return ImageOps.equalize(image)


def invert(image: Image.Image, value: float, rng: np.random.Generator) -> Image.Image:
  del value, rng
  return ImageOps.invert(image)


def rotate(image: Image.Image, degrees: float, rng: np.random.Generator) -> Image.Image:
  return image.rotate(_random_sign(degrees, rng))


def posterize(image: Image.Image, bits: float, rng: np.random.Generator) -> Image.Image:
  del rng
  return ImageOps.posterize(image, max(1, int(bits)))


def solarize(image: Image.Image, threshold: float, rng: np.random.Generator) -> Image.Image:
  del rng
  return ImageOps.solarize(image, threshold)


def solarize_add(image: Image.Image, addition: float, rng: np.random.Generator) -> Image.Image:
  del rng
  added = np.clip(np.asarray(image).astype(np.int64) + addition, 0, 255).astype(np.uint8)
  return ImageOps.solarize(Image.fromarray(added), 128)


def color(image: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
  del rng
  return ImageEnhance.Color(image).enhance(factor)


def contrast(image: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
  del rng
  return ImageEnhance.Contrast(image).enhance(factor)


def brightness(image: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
  del rng
  return ImageEnhance.Brightness(image).enhance(factor)


def sharpness(image: Image.Image, factor: float, rng: np.random.Generator) -> Image.Image:
  del rng
  return ImageEnhance.Sharpness(image).enhance(factor)


def shear_x(image: Image.Image, shear: float, rng: np.random.Generator) -> Image.Image:
  return _affine(image, (1, _random_sign(shear, rng), 0, 0, 1, 0))


def shear_y(image: Image.Image, shear: float, rng: np.random.Generator) -> Image.Image:
  return _affine(image, (1, 0, 0, _random_sign(shear, rng), 1, 0))


def cutout(image: Image.Image, size: float, rng: np.random.Generator) -> Image.Image:
  """A ``size``-pixel square filled with ``CUTOUT_FILL`` (clipped at the image border)."""
  width, height = image.size
  # The reference draws the centre with np.random.uniform(w), i.e. uniform(low=w, high=1): w + (1 - w) * U.
  x0 = int(max(0, width + (1 - width) * rng.random() - size / 2))
  y0 = int(max(0, height + (1 - height) * rng.random() - size / 2))
  image = image.copy()
  ImageDraw.Draw(image).rectangle(
      (x0, y0, min(width, x0 + size), min(height, y0 + size)), CUTOUT_FILL
  )
  return image


def translate_x(image: Image.Image, pixels: float, rng: np.random.Generator) -> Image.Image:
  return _affine(image, (1, 0, _random_sign(pixels, rng), 0, 1, 0))


def translate_y(image: Image.Image, pixels: float, rng: np.random.Generator) -> Image.Image:
  return _affine(image, (1, 0, 0, 0, 1, _random_sign(pixels, rng)))


# (name, op, value at magnitude 0, value at magnitude 30), in the reference's order.
OPS: tuple[tuple[str, Op, float, float], ...] = (
    ("AutoContrast", auto_contrast, 0, 1),
    ("Equalize", equalize, 0, 1),
    ("Invert", invert, 0, 1),
    ("Rotate", rotate, 0, 30),
    ("Posterize", posterize, 0, 4),
    ("Solarize", solarize, 0, 256),
    ("SolarizeAdd", solarize_add, 0, 110),
    ("Color", color, 0.1, 1.9),
    ("Contrast", contrast, 0.1, 1.9),
    ("Brightness", brightness, 0.1, 1.9),
    ("Sharpness", sharpness, 0.1, 1.9),
    ("ShearX", shear_x, 0.0, 0.3),
    ("ShearY", shear_y, 0.0, 0.3),
    ("Cutout", cutout, 0, 40),
    ("TranslateX", translate_x, 0.0, 100),
    ("TranslateY", translate_y, 0.0, 100),
)


def op_value(low: float, high: float, magnitude: float) -> float:
  """The op argument at ``magnitude`` (0..30): ``magnitude / 30 * (high - low) + low``."""
  return magnitude / MAX_MAGNITUDE * (high - low) + low


def rand_augment(
    image: Image.Image, rng: np.random.Generator, *, num_ops: int = 2, magnitude: float = 10
) -> Image.Image:
  """Applies ``num_ops`` ops drawn uniformly with replacement from ``OPS`` to an RGB PIL image."""
  if not 0 <= magnitude <= MAX_MAGNITUDE:
    raise ValueError(f"magnitude must be in [0, {MAX_MAGNITUDE}], got {magnitude}.")
  for index in rng.integers(0, len(OPS), size=num_ops):
    _, op, low, high = OPS[index]
    image = op(image, op_value(low, high, magnitude), rng)
  return image
