"""Shared base of the codajax TFDS builders."""

from __future__ import annotations

import abc
import dataclasses
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds


@dataclasses.dataclass(eq=False)
class ParameterisedConfig(tfds.core.BuilderConfig):
  """A config built from parameters (sizes, class subsets) rather than picked from ``BUILDER_CONFIGS``."""


class _QuietParameterisedConfigs(logging.Filter):
  """Drops TFDS's "Using custom data configuration" warning for ``ParameterisedConfig`` (custom by design)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (
        record.msg == "Using custom data configuration: %s"
        and isinstance(record.args, tuple)
        and record.args
        and isinstance(record.args[0], ParameterisedConfig)
    )


logging.getLogger("absl").addFilter(_QuietParameterisedConfigs())


class OrderedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder whose records keep the order in which they are generated.

  TFDS shuffles records on write unless ``disable_shuffling`` is set; codajax
  keeps the natural order so that "index i of the test split" means the same
  image as in the original dataset (torchvision/ImageFolder order).
  Images are stored as uint8 ``Tensor`` features (or encoded bytes), which TFDS
  writes to array_record without TensorFlow.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  DESCRIPTION = ""
  HOMEPAGE = ""
  CITATION = ""

  @abc.abstractmethod
  def _features(self) -> tfds.features.FeaturesDict:
    """The feature spec of one example."""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=self._features(),
        supervised_keys=("image", "label"),
        disable_shuffling=True,
        homepage=self.HOMEPAGE or None,
        citation=self.CITATION or None,
    )

  def _generate_examples(
      self, examples: Iterable[dict[str, Any]]
  ) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields ``(i, example)`` with i the example's position, so the stored order is ``examples``' order."""
    yield from enumerate(examples)


def rows(arrays: Mapping[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
  """Yields ``{key: arrays[key][i]}`` for i in order; all arrays must share their first dimension."""
  sizes = {key: len(value) for key, value in arrays.items()}
  if len(set(sizes.values())) != 1:
    raise ValueError(f"All arrays must have the same length, got {sizes}.")
  for i in range(next(iter(sizes.values()))):
    yield {key: value[i] for key, value in arrays.items()}
