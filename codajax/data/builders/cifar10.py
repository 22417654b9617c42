"""The ``cifar10`` dataset, built from the python-version archive (no network, no TensorFlow).

Place ``cifar-10-python.tar.gz`` (https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz)
in a manual directory. Splits in torchvision's order: train = ``data_batch_1`` ..
``data_batch_5`` (50,000), test = ``test_batch`` (10,000); 32x32x3 uint8.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np
import tensorflow_datasets as tfds

from codajax.data import errors
from codajax.data.builders import base

ARCHIVE_NAME = "cifar-10-python.tar.gz"
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
SPLIT_MEMBERS = {
    "train": tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
    "test": ("cifar-10-batches-py/test_batch",),
}


def default_manual_dir(data_dir: str | os.PathLike[str] | None) -> str:
  """``DATA_DIR/downloads/manual/cifar10``: where ``--download`` puts the archive (``DATA_DIR``
  defaults to ``$CODAJAX_DATA_DIR`` or ``~/tensorflow_datasets``)."""
  root = (
      os.fspath(data_dir)
      if data_dir is not None
      else (os.environ.get("CODAJAX_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets"))
  )
  return os.path.join(root, "downloads", "manual", "cifar10")


def find_archive(manual_dir: str | os.PathLike[str] | None, *, data_dir: str | None = None) -> str:
  """Path of ``cifar-10-python.tar.gz`` inside ``manual_dir``; raises ``ManualDataNotFoundError``."""
  path = None if manual_dir is None else os.path.join(manual_dir, ARCHIVE_NAME)
  if path is None or not os.path.isfile(path):
    # Without --manual_dir: the folder --download would use, a real path to put the archive in.
    shown = os.fspath(manual_dir) if manual_dir is not None else default_manual_dir(data_dir)
    where = (
        f"not found in manual directory {shown}"
        if manual_dir is not None
        else "not given (no --manual_dir)"
    )
    raise errors.ManualDataNotFoundError(
        f"cifar10: {ARCHIVE_NAME} {where}. Download it from {ARCHIVE_URL}, "
        f"put it in {shown}, then run:\n  {errors.prepare_command('cifar10', manual_dir=shown, data_dir=data_dir)}\n"
        f"(or add --download to let the command fetch it)."
    )
  return path


def read_archive(path: str | os.PathLike[str]) -> dict[str, dict[str, np.ndarray]]:
  """Reads the archive: ``{split: {"image": uint8 (n, 32, 32, 3), "label": int64 (n,)}}``.

  Raises ``BadManualDataError`` (naming the file) when it is not a complete CIFAR-10 python
  archive: not gzip, gzip of something else than tar, a tar without the batches, truncated.
  """
  try:
    return _read_archive(path)
  except errors.BadManualDataError:
    raise
  except KeyError as error:
    raise errors.BadManualDataError(
        f"cifar10: {path} lacks {error.args[0] if error.args else 'a batch'}; it is not the CIFAR-10 "
        f"python archive. Download it again from {ARCHIVE_URL} (or use --download)."
    ) from None
  except Exception as error:  # noqa: BLE001  (tarfile/gzip/pickle/zlib/EOF errors)
    raise errors.BadManualDataError(
        f"cifar10: {path} is not a readable CIFAR-10 python archive ({type(error).__name__}: "
        f"{str(error)[:160]}). Download it again from {ARCHIVE_URL} (or use --download)."
    ) from None


def check_archive(path: str | os.PathLike[str]) -> None:
  """Reads the whole archive's index (cheap, no unpickling); ``BadManualDataError`` unless it is
  a complete tar.gz holding every CIFAR-10 batch (so a bad file fails before any preparation)."""

  def scan():
    with tarfile.open(path, "r:gz") as archive:
      names = set(archive.getnames())
    missing = [m for members in SPLIT_MEMBERS.values() for m in members if m not in names]
    if missing:
      raise KeyError(", ".join(missing))

  try:
    scan()
  except KeyError as error:
    raise errors.BadManualDataError(
        f"cifar10: {path} lacks {error.args[0]}; it is not the CIFAR-10 python archive. Download "
        f"it again from {ARCHIVE_URL} (or use --download)."
    ) from None
  except Exception as error:  # noqa: BLE001  (tarfile/gzip/zlib/EOF errors)
    raise errors.BadManualDataError(
        f"cifar10: {path} is not a readable CIFAR-10 python archive ({type(error).__name__}: "
        f"{str(error)[:160]}). Download it again from {ARCHIVE_URL} (or use --download)."
    ) from None


def _read_archive(path: str | os.PathLike[str]) -> dict[str, dict[str, np.ndarray]]:
  splits = {}
  with tarfile.open(path, "r:gz") as archive:
    for split, members in SPLIT_MEMBERS.items():
      images, labels = [], []
      for member in members:
        file = archive.extractfile(member)
        if file is None:
          raise errors.BadManualDataError(f"cifar10: {path}: {member} is not a regular file.")
        batch = pickle.load(file, encoding="bytes")
        images.append(
            np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        )
        labels.append(np.asarray(batch[b"labels"], np.int64))
      splits[split] = {"image": np.concatenate(images), "label": np.concatenate(labels)}
  return splits


def write_archive(
    path: str | os.PathLike[str],
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> None:
  """Writes ``(images uint8 (n, 32, 32, 3), labels (n,))`` splits as a CIFAR-10 python archive.

  Same layout as the official file (train over five ``data_batch_*`` pickles); for
  tests and benchmarks that need a CIFAR-format archive without the real data.
  """
  train_batches = zip(
      SPLIT_MEMBERS["train"], np.array_split(train[0], 5), np.array_split(train[1], 5)
  )
  with tarfile.open(path, "w:gz") as archive:
    for member, images, labels in [*train_batches, (SPLIT_MEMBERS["test"][0], *test)]:
      payload = pickle.dumps(
          {
              b"data": np.asarray(images, np.uint8).transpose(0, 3, 1, 2).reshape(len(images), -1),
              b"labels": np.asarray(labels).tolist(),
          }
      )
      info = tarfile.TarInfo(member)
      info.size = len(payload)
      archive.addfile(info, io.BytesIO(payload))


class CodajaxCifar10(base.OrderedBuilder):
  """CIFAR-10 from ``cifar-10-python.tar.gz``: 50,000 train / 10,000 test, 32x32x3 uint8."""

  DESCRIPTION = __doc__
  HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"Place {ARCHIVE_NAME} ({ARCHIVE_URL}) in the manual directory."

  def _features(self) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=(32, 32, 3), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
        }
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    splits = read_archive(
        find_archive(dl_manager.manual_dir, data_dir=os.fspath(self.data_dir_root))
    )
    return {split: self._generate_examples(base.rows(arrays)) for split, arrays in splits.items()}
