"""ImageNet-style folder datasets: ``imagenet_folder`` (with class subsets) and ``tiny_imagenet``.

``imagenet_folder`` reads an ImageFolder tree in a manual directory::

    MANUAL_DIR/train/<wnid>/*.JPEG
    MANUAL_DIR/val/<wnid>/*.JPEG                     (class folders), or
    MANUAL_DIR/val/ILSVRC2012_val_00000001.JPEG ...  (official flat layout)

Labels index the sorted wnids of ``train/`` (torchvision ``ImageFolder``); the
config ``first{K}`` keeps only the first K of them (the paper's ImageNet-100 is
``first100``), ``all`` keeps every class. Labels of a flat ``val/`` come from
``MANUAL_DIR/LOC_val_solution.csv`` (Kaggle format) when present, else from the
official ILSVRC2012 validation labels that ship with tensorflow-datasets (files
must keep their official names). Examples keep ImageFolder order (class, then
file name) in both splits and store the encoded file bytes; images are decoded
with PIL at read time. Preparation decodes every file once: files that do not decode
(zero-byte, corrupt, not images) are skipped and reported with a count on stderr.

``tiny_imagenet`` reads the released ``tiny-imagenet-200`` folder (train/<wnid>/images/,
val/images/ + val/val_annotations.txt, wnids.txt) and stores decoded 64x64x3 uint8
images (train 100,000 / validation 10,000; the unlabeled test split is skipped).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import sys
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from codajax.data import errors
from codajax.data.builders import base

# torchvision's ImageFolder extensions (compared case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
KAGGLE_VAL_LABELS = "LOC_val_solution.csv"
_OFFICIAL_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.[A-Za-z]+")
TINY_IMAGENET_FOLDER = "tiny-imagenet-200"
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGE_SHAPE = (64, 64, 3)

LabelledFile = tuple[str, int]  # (path, label)


def _is_image(file_name: str) -> bool:
  return file_name.lower().endswith(IMAGE_EXTENSIONS)


def sorted_class_folders(directory: str) -> list[str]:
  """Sorted names of the sub-folders of ``directory`` (the wnids of an ImageFolder split)."""
  return sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())


def class_folder_files(directory: str, classes: Sequence[str]) -> list[LabelledFile]:
  """``(path, label)`` of every image in ``directory/<classes[label]>/`` (recursively), in ImageFolder order."""
  files = []
  for label, name in enumerate(classes):
    class_dir = os.path.join(directory, name)
    if not os.path.isdir(class_dir):
      continue
    for root, _, file_names in sorted(os.walk(class_dir, followlinks=True)):
      files += [
          (os.path.join(root, file_name), label)
          for file_name in sorted(file_names)
          if _is_image(file_name)
      ]
  return files


def _official_val_labels() -> list[str]:
  """The wnid of ILSVRC2012_val_{i:08d} at position i - 1 (the list tensorflow-datasets ships)."""
  path = tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt")
  return path.read_text().split()


def _read_kaggle_val_labels(path: str) -> dict[str, str]:
  """``{image id: wnid}`` from a Kaggle ``LOC_val_solution.csv`` (``ImageId,PredictionString``)."""
  with open(path, newline="") as file:
    return {row["ImageId"]: row["PredictionString"].split()[0] for row in csv.DictReader(file)}


def flat_val_files(val_dir: str, manual_dir: str, classes: Sequence[str]) -> list[LabelledFile]:
  """``(path, label)`` of the images of a flat ``val/`` whose wnid is in ``classes``, ordered by (label, name)."""
  label_of = {wnid: label for label, wnid in enumerate(classes)}
  kaggle_path = os.path.join(manual_dir, KAGGLE_VAL_LABELS)
  kaggle = _read_kaggle_val_labels(kaggle_path) if os.path.isfile(kaggle_path) else None
  official = None if kaggle is not None else _official_val_labels()
  files = []
  for file_name in sorted(name for name in os.listdir(val_dir) if _is_image(name)):
    if kaggle is not None:
      wnid = kaggle.get(os.path.splitext(file_name)[0])
      source = kaggle_path
    else:
      match = _OFFICIAL_VAL_NAME.fullmatch(file_name)
      wnid = (
          official[int(match.group(1)) - 1]
          if match and int(match.group(1)) <= len(official)
          else None
      )
      source = "the official ILSVRC2012 validation labels"
    if wnid is None:
      raise ValueError(
          f"No label for {os.path.join(val_dir, file_name)} in {source}. A flat val/ folder needs "
          f"{KAGGLE_VAL_LABELS} in {manual_dir} or the official file names ILSVRC2012_val_<8 digits>.JPEG."
      )
    if wnid in label_of:
      files.append((os.path.join(val_dir, file_name), label_of[wnid]))
  return sorted(files, key=lambda item: (item[1], os.path.basename(item[0])))


def find_imagenet_root(
    manual_dir: str | os.PathLike[str] | None,
    *,
    name: str = "imagenet_folder",
    data_dir: str | None = None,
    extra: Sequence[str] = (),
) -> str:
  """``manual_dir`` if it holds ``train/`` and ``val/`` folders; raises ``ManualDataNotFoundError``."""
  if manual_dir is None or not all(
      os.path.isdir(os.path.join(manual_dir, split)) for split in ("train", "val")
  ):
    shown = manual_dir if manual_dir is not None else "DIR"
    raise errors.ManualDataNotFoundError(
        f"{name}: no ImageFolder tree in manual directory {shown}: it must hold train/<wnid>/*.JPEG and "
        f"val/<wnid>/*.JPEG (or the official flat val/ with {KAGGLE_VAL_LABELS} or official file names). "
        f"Then run:\n  {errors.prepare_command(name, manual_dir=shown, data_dir=data_dir, extra=extra)}"
    )
  return os.fspath(manual_dir)


def imagenet_split_files(
    root: str, num_classes: int | None
) -> tuple[list[str], dict[str, list[LabelledFile]]]:
  """The kept wnids (the first ``num_classes`` sorted ones, or all) and ``{"train"|"validation": files}``."""
  wnids = sorted_class_folders(os.path.join(root, "train"))
  if not wnids:
    raise ValueError(f"{os.path.join(root, 'train')} has no class folders.")
  if num_classes is not None:
    if num_classes > len(wnids):
      raise ValueError(
          f"Asked for the first {num_classes} classes, but {root}/train has only {len(wnids)}."
      )
    wnids = wnids[:num_classes]
  val_dir = os.path.join(root, "val")
  has_class_folders = bool(sorted_class_folders(val_dir))
  validation = (
      class_folder_files(val_dir, wnids)
      if has_class_folders
      else flat_val_files(val_dir, root, wnids)
  )
  return wnids, {
      "train": class_folder_files(os.path.join(root, "train"), wnids),
      "validation": validation,
  }


def undecodable_reason(data: bytes) -> str | None:
  """Why ``data`` is not a decodable image (``"zero-byte"``, ``"not an image: ..."``), or None.

  Decodes the whole image (PIL ``load``), so truncated and corrupt files are caught here
  rather than at training time.
  """
  if not data:
    return "zero-byte"
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()
      image.convert("RGB")
  except Exception as error:  # noqa: BLE001  (PIL raises OSError, SyntaxError, ValueError, ...)
    return f"not an image ({type(error).__name__}: {str(error)[:80]})"
  return None


class SkippedFiles:
  """Counts the files a preparation skips and reports them once (to stderr) per split."""

  def __init__(self, split: str):
    self.split, self.skipped, self.total = split, [], 0

  def add(self, path: str, reason: str) -> None:
    self.skipped.append((path, reason))

  def report(self) -> None:
    if not self.skipped:
      return
    kinds: dict[str, int] = {}
    for _, reason in self.skipped:
      kind = "zero-byte" if reason == "zero-byte" else "not decodable"
      kinds[kind] = kinds.get(kind, 0) + 1
    listed = "; ".join(f"{path}: {reason}" for path, reason in self.skipped[:5])
    more = f" (and {len(self.skipped) - 5} more)" if len(self.skipped) > 5 else ""
    print(
        f"WARNING: {self.split}: skipped {len(self.skipped)} of {self.total} image files "
        f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}): {listed}{more}",
        file=sys.stderr,
        flush=True,
    )
    if len(self.skipped) == self.total:
      raise errors.BadManualDataError(f"{self.split}: none of the {self.total} image files decode.")


def _decodable_files(files: Sequence[LabelledFile], split: str) -> Iterator[tuple[str, int, bytes]]:
  """``(path, label, bytes)`` of the files that decode; the others are skipped and reported with a count."""
  skipped = SkippedFiles(split)
  for path, label in files:
    skipped.total += 1
    with open(path, "rb") as file:
      data = file.read()
    reason = undecodable_reason(data)
    if reason is not None:
      skipped.add(path, reason)
      continue
    yield path, label, data
  skipped.report()


def _encoded_examples(
    files: Sequence[LabelledFile], root: str, split: str = "split"
) -> Iterator[dict]:
  """The files' encoded bytes; files that do not decode are skipped and reported with a count."""
  for path, label, data in _decodable_files(files, split):
    yield {"image": data, "label": label, "file_name": os.path.relpath(path, root)}


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(base.ParameterisedConfig):
  """Class subset of ``imagenet_folder``: ``num_classes=None`` keeps all classes."""

  num_classes: int | None = None


def image_folder_config(num_classes: int | None = None) -> ImageFolderConfig:
  """Config ``all`` (``num_classes=None``) or ``first{K}`` (the first K sorted wnids, K >= 1)."""
  if num_classes is None:
    return ImageFolderConfig(name="all", description="All classes.")
  if num_classes < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
  return ImageFolderConfig(
      name=f"first{num_classes}",
      num_classes=num_classes,
      description=f"The first {num_classes} sorted wnids, relabelled 0..{num_classes - 1}.",
  )


def parse_image_folder_config(name: str) -> ImageFolderConfig:
  """Inverse of ``image_folder_config(...).name``: ``"all"`` or ``"first{K}"``."""
  if name == "all":
    return image_folder_config(None)
  match = re.fullmatch(r"first(\d+)", name)
  if match is None:
    raise ValueError(
        f"An imagenet_folder config is 'all' or 'first<K>' (e.g. 'first100'), got {name!r}."
    )
  return image_folder_config(int(match.group(1)))


class CodajaxImagenetFolder(base.OrderedBuilder):
  """An ImageFolder tree (ImageNet layout), optionally the first K classes; encoded image bytes."""

  DESCRIPTION = __doc__
  BUILDER_CONFIGS = [image_folder_config(None), image_folder_config(100)]
  DEFAULT_CONFIG_NAME = "all"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "The manual directory holds train/<wnid>/*.JPEG and val/ (see the module docstring)."
  )

  def _features(self) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=(), dtype=np.object_),  # encoded file bytes
            "label": tfds.features.ClassLabel(),  # names (wnids) are set when the folder is read
            "file_name": tfds.features.Text(),  # path relative to the manual directory
        }
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = find_imagenet_root(dl_manager.manual_dir, data_dir=os.fspath(self.data_dir_root))
    wnids, files = imagenet_split_files(root, self.builder_config.num_classes)
    self.info.features["label"].names = wnids
    return {
        split: self._generate_examples(_encoded_examples(split_files, root, split))
        for split, split_files in files.items()
    }


def find_tiny_imagenet_root(
    manual_dir: str | os.PathLike[str] | None, *, data_dir: str | None = None
) -> str:
  """The ``tiny-imagenet-200`` folder in (or equal to) ``manual_dir``; raises ``ManualDataNotFoundError``."""
  if manual_dir is not None:
    for candidate in (os.path.join(manual_dir, TINY_IMAGENET_FOLDER), os.fspath(manual_dir)):
      if os.path.isfile(os.path.join(candidate, "wnids.txt")):
        return candidate
  shown = manual_dir if manual_dir is not None else "DIR"
  raise errors.ManualDataNotFoundError(
      f"tiny_imagenet: no {TINY_IMAGENET_FOLDER}/ folder (with wnids.txt, train/, val/) in manual directory "
      f"{shown}. Download {TINY_IMAGENET_URL}, unzip it into DIR, then run:\n"
      f"  {errors.prepare_command('tiny_imagenet', manual_dir=shown, data_dir=data_dir)}\n"
      f"(or add --download to let the command fetch it)."
  )


def tiny_imagenet_split_files(root: str) -> tuple[list[str], dict[str, list[LabelledFile]]]:
  """Sorted wnids and ``{"train"|"validation": (path, label)}`` of a ``tiny-imagenet-200`` folder."""
  with open(os.path.join(root, "wnids.txt")) as file:
    wnids = sorted(file.read().split())
  label_of = {wnid: label for label, wnid in enumerate(wnids)}
  train = []
  for label, wnid in enumerate(wnids):
    image_dir = os.path.join(root, "train", wnid, "images")
    train += [
        (os.path.join(image_dir, name), label)
        for name in sorted(os.listdir(image_dir))
        if _is_image(name)
    ]
  validation = []
  with open(os.path.join(root, "val", "val_annotations.txt")) as file:
    for line in file:
      if line.strip():
        file_name, wnid = line.split("\t")[:2]
        validation.append((os.path.join(root, "val", "images", file_name), label_of[wnid]))
  validation.sort(key=lambda item: (item[1], os.path.basename(item[0])))
  return wnids, {"train": train, "validation": validation}


def _decoded_tiny_examples(files: Sequence[LabelledFile], split: str = "split") -> Iterator[dict]:
  """Decoded 64x64x3 images; files that do not decode are skipped and reported with a count."""
  for path, label, data in _decodable_files(files, split):
    with Image.open(io.BytesIO(data)) as image:
      array = np.asarray(image.convert("RGB"))
    if array.shape != TINY_IMAGE_SHAPE:
      raise errors.BadManualDataError(
          f"{path}: expected a {TINY_IMAGE_SHAPE} image, got {array.shape}."
      )
    yield {"image": array, "label": label}


class CodajaxTinyImagenet(base.OrderedBuilder):
  """Tiny ImageNet (200 classes, 64x64x3 uint8): train 100,000 / validation 10,000."""

  DESCRIPTION = __doc__
  HOMEPAGE = "https://www.kaggle.com/c/tiny-imagenet"
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"Unzip {TINY_IMAGENET_URL} into the manual directory."

  def _features(self) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=TINY_IMAGE_SHAPE, dtype=np.uint8),
            "label": tfds.features.ClassLabel(),  # names (wnids) are set when the folder is read
        }
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = find_tiny_imagenet_root(dl_manager.manual_dir, data_dir=os.fspath(self.data_dir_root))
    wnids, files = tiny_imagenet_split_files(root)
    self.info.features["label"].names = wnids
    return {
        split: self._generate_examples(_decoded_tiny_examples(split_files, split))
        for split, split_files in files.items()
    }
