"""Image preprocessing of the papers, on uint8 numpy arrays and PIL images.

Two families:

* ``small`` (digits, shapes, CIFAR-10, Tiny ImageNet, other fixed-size images up
  to 64 px): train = random crop of the image zero-padded by ``crop_padding``
  pixels on each side, then an optional random horizontal flip (CIFAR-10:
  padding 4 + flip, as the reference's ``RandomCrop(32, padding=4)`` +
  ``RandomHorizontalFlip``); eval = the image unchanged.
* ``imagenet`` (encoded or variable-size images): train = resize the shorter side
  to 256 (bilinear), random 240x240 crop, random flip, RandAugment(n=2, m=10);
  eval = resize 256, centre crop 240 (torchvision ``Resize``/``CenterCrop``
  semantics on PIL images).

All functions take and return uint8 arrays of shape (H, W, C); randomness comes
only from the ``np.random.Generator`` passed in.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Literal

import numpy as np
from PIL import Image

from codajax.data import randaugment


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How one dataset's stored images become model inputs.

  Attributes:
    kind: ``"small"`` (pad-crop + flip) or ``"imagenet"`` (resize, crop, flip, RandAugment).
    image_shape: (H, W, C) after the eval transform.
    crop_padding: ``small``: zero padding on each side before the random crop.
    flip: random horizontal flip in training.
    resize: ``imagenet``: the shorter side after resizing.
    randaugment: ``imagenet``: ``(num_ops, magnitude)``, or ``None`` for no RandAugment.
  """

  kind: Literal["small", "imagenet"]
  image_shape: tuple[int, int, int]
  crop_padding: int = 0
  flip: bool = False
  resize: int = 256
  randaugment: tuple[int, float] | None = None


def small_preprocessing(
    image_shape: tuple[int, int, int], *, flip: bool, crop_padding: int | None = None
) -> Preprocessing:
  """``small`` preprocessing; the crop padding defaults to 1/8 of the height (4 px at 32 px)."""
  padding = image_shape[0] // 8 if crop_padding is None else crop_padding
  return Preprocessing(
      kind="small", image_shape=tuple(image_shape), crop_padding=padding, flip=flip
  )


def imagenet_preprocessing(
    *, resize: int = 256, crop: int = 240, randaugment: tuple[int, float] | None = (2, 10)
) -> Preprocessing:
  """``imagenet`` preprocessing of the paper: resize 256, crop 240, flip, RandAugment(2, 10)."""
  if crop > resize:
    raise ValueError(f"crop ({crop}) must not exceed resize ({resize}).")
  return Preprocessing(
      kind="imagenet",
      image_shape=(crop, crop, 3),
      flip=True,
      resize=resize,
      randaugment=randaugment,
  )


def random_pad_crop(image: np.ndarray, padding: int, rng: np.random.Generator) -> np.ndarray:
  """Random (H, W) crop of ``image`` (H, W, C) zero-padded by ``padding`` px on each side.

  Same result as ``np.pad`` followed by a crop at offsets uniform in [0, 2 * padding],
  without building the padded image.
  """
  if padding == 0:
    return image
  height, width = image.shape[:2]
  shift_y, shift_x = rng.integers(0, 2 * padding + 1, size=2) - padding
  out = np.zeros_like(image)
  out[max(0, -shift_y) : height - max(0, shift_y), max(0, -shift_x) : width - max(0, shift_x)] = (
      image[max(0, shift_y) : height - max(0, -shift_y), max(0, shift_x) : width - max(0, -shift_x)]
  )
  return out


def random_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """``image`` (H, W, C) mirrored left-right with probability 1/2."""
  return image[:, ::-1] if rng.random() < 0.5 else image


def to_pil(image: bytes | np.ndarray, *, draft_size: int | None = None) -> Image.Image:
  """An RGB PIL image from encoded bytes (JPEG, PNG, ...) or a uint8 array (H, W) / (H, W, C).

  ``draft_size``: for JPEG bytes, let the decoder downscale by 2, 4 or 8 in the DCT
  domain while both sides stay >= ``draft_size`` (much faster for large photos).
  """
  if isinstance(image, bytes):
    with Image.open(io.BytesIO(image)) as decoded:
      if draft_size is not None:
        decoded.draft("RGB", (draft_size, draft_size))
      return decoded.convert("RGB")
  array = np.asarray(image, dtype=np.uint8)
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  return Image.fromarray(array).convert("RGB")


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
  """Bilinear resize so the shorter side is ``size`` (torchvision ``Resize(size)`` on PIL images)."""
  width, height = image.size
  short, long = min(width, height), max(width, height)
  if short == size:
    return image
  new_long = int(size * long / short)
  new_size = (size, new_long) if width <= height else (new_long, size)
  return image.resize(new_size, Image.Resampling.BILINEAR)


def center_crop(image: Image.Image, size: int) -> Image.Image:
  """Central ``size`` x ``size`` crop (torchvision ``CenterCrop`` rounding)."""
  width, height = image.size
  top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
  return image.crop((left, top, left + size, top + size))


def random_crop(image: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
  """Uniformly placed ``size`` x ``size`` crop (torchvision ``RandomCrop``)."""
  width, height = image.size
  top, left = rng.integers(0, height - size + 1), rng.integers(0, width - size + 1)
  return image.crop((left, top, left + size, top + size))


def train_image(
    image: bytes | np.ndarray, prep: Preprocessing, rng: np.random.Generator
) -> np.ndarray:
  """Training augmentation: stored image -> uint8 ``prep.image_shape`` (possibly a strided view)."""
  if prep.kind == "small":
    out = random_pad_crop(np.asarray(image), prep.crop_padding, rng)
    return random_flip(out, rng) if prep.flip else out
  crop = prep.image_shape[0]
  pil = random_crop(
      resize_shorter_side(to_pil(image, draft_size=prep.resize), prep.resize), crop, rng
  )
  if prep.flip and rng.random() < 0.5:
    pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  if prep.randaugment is not None:
    num_ops, magnitude = prep.randaugment
    pil = randaugment.rand_augment(pil, rng, num_ops=num_ops, magnitude=magnitude)
  return np.asarray(pil, dtype=np.uint8)


def eval_image(image: bytes | np.ndarray, prep: Preprocessing) -> np.ndarray:
  """Evaluation transform: stored image -> uint8 ``prep.image_shape`` (identity for ``small``)."""
  if prep.kind == "small":
    return np.asarray(image)
  pil = center_crop(
      resize_shorter_side(to_pil(image, draft_size=prep.resize), prep.resize), prep.image_shape[0]
  )
  return np.asarray(pil, dtype=np.uint8)
