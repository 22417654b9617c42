"""Training logs: ``metrics.jsonl`` (one JSON object per event) and TensorBoard events.

TensorBoard event files are written with tensorboardX (no TensorFlow); on ``gs://`` through
:mod:`codajax.storage` (the event file is uploaded whole at each flush, as tensorboardX's own
GCS writer does, but with codajax's credentials chain and no second upload when collected at
exit). Only process 0 writes. ``metrics.jsonl`` is rewritten whole (atomically, see
:func:`codajax.storage.write_atomic`) at each write: object stores such as ``gs://`` have
no append, and a reader never sees a half-written line.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from typing import Any

import jax

from codajax import storage
from codajax.runs import RunDir


class _StorageRecordWriter:
  """A tensorboardX record writer for a URI: buffered, uploaded whole at each flush."""

  def __init__(self, path: str):
    self.path, self._buffer, self._closed = path, io.BytesIO(), False

  def write(self, data: bytes) -> None:
    self._buffer.write(data)

  def flush(self) -> None:
    if not self._closed:
      storage.write_atomic(self.path, self._buffer.getvalue())

  def close(self) -> None:
    self.flush()
    self._closed = True


class _StorageWriterFactory:
  """tensorboardX's writer factory interface (``open``, ``directory_check``) for ``gs://``."""

  def open(self, path: str) -> _StorageRecordWriter:
    return _StorageRecordWriter(path)

  def directory_check(self, path: str) -> None:
    del path  # object stores have no directories to create


def _register_tensorboard_storage() -> None:
  from tensorboardX import record_writer

  record_writer.register_writer_factory("gs", _StorageWriterFactory())


class MetricsLogger:
  """Appends ``{"step": s, "time": t, name: value, ...}`` lines and TensorBoard scalars."""

  def __init__(self, run: RunDir):
    self.enabled = jax.process_index() == 0
    self.path = run.metrics_file
    self._tensorboard = None
    self._lines: list[str] = []
    if self.enabled:
      from tensorboardX import SummaryWriter

      _register_tensorboard_storage()
      if storage.exists(self.path):  # a resumed run: keep what was logged
        records, damaged = parse_metrics(storage.read_bytes(self.path), self.path)
        self._lines = [json.dumps(record) for record in records]
        if damaged:  # the file the run goes on writing holds the good lines only
          storage.write_atomic(self.path, "".join(line + "\n" for line in self._lines))
      self._tensorboard = SummaryWriter(run.tensorboard_dir)

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    """Logs scalar ``metrics`` at ``step``; lists/arrays go to the JSON file only."""
    if not self.enabled:
      return
    record = {"step": int(step), "time": round(time.time(), 3)}
    for name, value in metrics.items():
      value = value.tolist() if hasattr(value, "tolist") else value
      record[name] = value
      if isinstance(value, (int, float)) and math.isfinite(value):
        self._tensorboard.add_scalar(name, value, int(step))
    self._lines.append(json.dumps(record))
    storage.write_atomic(self.path, "".join(line + "\n" for line in self._lines))

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()


def parse_metrics(content: bytes, where: str) -> tuple[list[dict[str, Any]], list[int]]:
  """``(records, damaged line numbers)`` of a ``metrics.jsonl``'s bytes.

  A line that is not UTF-8, not JSON (e.g. cut midway by a crash or a full disk) or not a JSON
  object is skipped with a warning naming ``where`` and the line."""
  records, damaged = [], []
  for number, raw in enumerate(content.split(b"\n"), start=1):
    if not raw.strip():
      continue
    try:
      record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
      record, why = None, f"{type(error).__name__}: {str(error)[:80]}"
    else:
      why = f"a JSON {type(record).__name__}, not an object"
    if isinstance(record, dict):
      records.append(record)
    else:
      damaged.append(number)
      logging.warning("Skipping damaged line %d of %s (%s).", number, where, why)
  return records, damaged


def read_metrics(workdir) -> list[dict[str, Any]]:
  """All records of a run's ``metrics.jsonl`` (``workdir``: ``str`` or :class:`RunDir`), in order.

  Damaged lines are skipped with a warning (see :func:`parse_metrics`); the next training run
  in the directory rewrites the file without them."""
  path = RunDir(workdir).metrics_file
  return parse_metrics(storage.read_bytes(path), path)[0]
