"""Accuracy on the test split: top-1, top-5, loss, per class (``train.py`` logs the same numbers as ``test/*_final``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from codajax import data
from codajax.evaluators.common import Context
from codajax.accuracy import evaluate, make_eval_step


class Evaluator:
  """Top-1, top-5, loss and per-class accuracy via :func:`codajax.train.evaluate`.

  Args:
    eval_batch_size: global batch (default: the run's ``eval_batch_size``).
  """

  def __init__(self, eval_batch_size: int | None = None):
    self.batch_size = eval_batch_size

  def run(self, ctx: Context) -> Iterator[tuple[str, Any]]:
    """Yields ``accuracy/top1``, ``accuracy/top5``, ``accuracy/loss``, ``accuracy/per_class``,
    ``accuracy/count``."""
    if ctx.probe:  # one cheap pass; nothing to estimate
      return
    step = ctx.programs.cached(
        "accuracy", lambda: make_eval_step(ctx.model, loss=ctx.loss, mesh=ctx.mesh)
    )
    loader = data.eval_loader(
        ctx.spec.name,
        global_batch_size=self.batch_size or ctx.eval_batch_size,
        data_dir=ctx.data_dir,
    )
    if ctx.progress is not None:
      ctx.progress.start("accuracy", loader.batches_per_epoch, counted=False)
    result = evaluate(step, ctx.variables["params"], _counting(loader, ctx), ctx.mesh)
    yield "accuracy/top1", result["eval/accuracy"]
    yield "accuracy/top5", result["eval/top5"]
    yield "accuracy/loss", result["eval/loss"]
    yield "accuracy/per_class", result["eval/per_class_accuracy"]
    yield "accuracy/count", result["eval/count"]


def _counting(loader, ctx: Context):
  for batch in loader:
    yield batch
    if ctx.progress is not None:
      ctx.progress.update()
