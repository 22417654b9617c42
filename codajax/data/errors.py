"""Errors of the data package; each names the exact command that fixes it."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence


def prepare_command(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    manual_dir: str | os.PathLike[str] | None = None,
    extra: Sequence[str] = (),
) -> str:
  """The shell command that prepares dataset ``name``, e.g. ``python -m codajax.data.prepare cifar10 ...``."""
  parts = ["python", "-m", "codajax.data.prepare", name]
  if manual_dir is not None:
    parts += ["--manual_dir", os.fspath(manual_dir)]
  if data_dir is not None:
    parts += ["--data_dir", os.fspath(data_dir)]
  parts += list(extra)
  return shlex.join(parts)


class UnknownDatasetError(ValueError):
  """A dataset name that is neither a codajax dataset nor a TFDS dataset."""


class DatasetNotPreparedError(FileNotFoundError):
  """A known dataset whose files are not (yet) in the data directory."""


class ManualDataNotFoundError(FileNotFoundError):
  """The archive or folder a dataset is built from is missing from the manual directory."""


class DatasetCorruptError(ValueError):
  """A prepared dataset whose files do not read (a corrupt array_record or dataset_info.json)."""


class BadManualDataError(ValueError):
  """The archive or image folder a dataset is built from exists but cannot be read."""
