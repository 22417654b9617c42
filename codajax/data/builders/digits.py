"""The ``digits`` dataset: scikit-learn's handwritten digits at 16x16.

scikit-learn ships 1,797 8x8 grey images (values 0..16) of the digits 0-9
(the test part of the UCI "Optical Recognition of Handwritten Digits" data).
Stored resolution 16x16x1 uint8: values rescaled to 0..255, then bilinear x2
upsampling (half-pixel centres, PIL ``BILINEAR``), rounded.

Fixed split, in scikit-learn's order: train = images 0..1436 (1,437),
test = images 1437..1796 (360). Both splits hold every class 33-37 (test) and
141-146 (train) times.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from codajax.data.builders import base

NUM_TRAIN = 1437
IMAGE_SHAPE = (16, 16, 1)


def upsampled_digits() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's digits as ``(images uint8 (1797, 16, 16, 1), labels int64 (1797,))``."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top  (1 s import)

  digits = load_digits()
  scaled = digits.images.astype(np.float32) * (255.0 / 16.0)
  size = IMAGE_SHAPE[:2][::-1]
  upsampled = np.stack(
      [
          np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
          for image in scaled
      ]
  )
  images = np.clip(np.rint(upsampled), 0, 255).astype(np.uint8)[..., None]
  return images, digits.target.astype(np.int64)


class CodajaxDigits(base.OrderedBuilder):
  """scikit-learn digits, 16x16x1 uint8, 1,437 train / 360 test images."""

  DESCRIPTION = __doc__
  HOMEPAGE = "https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits"

  def _features(self) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=[str(digit) for digit in range(10)]),
        }
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # The data ships inside scikit-learn.
    images, labels = upsampled_digits()
    return {
        "train": self._generate_examples(
            base.rows({"image": images[:NUM_TRAIN], "label": labels[:NUM_TRAIN]})
        ),
        "test": self._generate_examples(
            base.rows({"image": images[NUM_TRAIN:], "label": labels[NUM_TRAIN:]})
        ),
    }
