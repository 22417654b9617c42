"""Training logs: ``metrics.jsonl`` (one JSON object per event) and TensorBoard events.

TensorBoard event files are written with tensorboardX (no TensorFlow). Only
process 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax


class MetricsLogger:
  """Appends ``{"step": s, "time": t, name: value, ...}`` lines and TensorBoard scalars."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tensorboard = None
    if self.enabled:
      from tensorboardX import SummaryWriter

      self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

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
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """All records of ``workdir/metrics.jsonl``, in order."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]
