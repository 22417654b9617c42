"""Evaluators during training: ``config.evals.<name> = dict(every_steps=N, **settings)``.

``train.py`` builds one :class:`TrainingEvaluators` and calls :meth:`TrainingEvaluators.run` after
each step; an entry runs when its step comes (and at the last step), with the current
parameters, and its numbers are logged (``metrics.jsonl`` and TensorBoard) as
``evals/<report path>``, e.g. ``evals/methods/Ours/localisation/mean`` (an entry's ``prefix``
keeps two entries of one type apart). Programs are compiled
once for the whole run. Figures, if configured, go to ``workdir/evals/step_<N>/``.
"""

from __future__ import annotations

from typing import Any

from codajax.runs import RunDir
from codajax.evaluators.driver import (
    Entry,
    flat_scalars,
    from_config,
    make_context,
    replicated,
    run_evaluators,
)
from codajax.evaluators.common import EvaluationError

PREFIX = "evals/"
DEFAULT_METHODS = "Ours"  # an entry without ``methods`` scores the CoDA contributions only


def _flat(report: dict[str, Any]) -> dict[str, float]:
  return flat_scalars(
      {k: v for k, v in report.items() if k not in ("protocol", "timings_s")}, PREFIX
  )


class TrainingEvaluators:
  """The ``evals`` entries of a training config, run every ``every_steps`` steps.

  Args:
    config: the training config (its ``evals``; ``eval_batch_size``, ``loss``, ``data_dir``).
    model: the model being trained.
    spec: the dataset's :class:`codajax.data.DatasetSpec`.
    mesh: the training mesh.
    run: the run's :class:`codajax.runs.RunDir`.

  Pass the class itself to ``codajax.train.train_and_evaluate(..., hooks=[TrainingEvaluators])``.
  """

  def __init__(self, config, model, spec, mesh, run: RunDir):
    evals = config.get("evals", None) or {}
    self.entries: list[Entry] = from_config(evals, {"methods": DEFAULT_METHODS})
    for entry in self.entries:
      if entry.every_steps is None:
        raise EvaluationError(
            f"evals.{entry.name}: set every_steps (how often to run it " f"during training)"
        )
    self._make = lambda params: make_context(
        model,
        params,
        spec,
        data_dir=config.data_dir or None,
        mesh=mesh,
        loss=config.loss,
        eval_batch_size=config.eval_batch_size,
    )
    self.run_dir = run
    self._ctx = None

  def due(self, step: int, last: bool = False) -> list[Entry]:
    """The entries to run at ``step`` (every one at the last step)."""
    return [e for e in self.entries if last or step % e.every_steps == 0]

  def run(self, step: int, params: Any, logger, last: bool = False) -> dict[str, float]:
    """Runs the entries due at ``step`` on ``params``; logs and returns their numbers."""
    entries = self.due(step, last)
    if not entries:
      return {}
    if self._ctx is None:
      self._ctx = self._make(params)
      for entry in self.entries:
        if hasattr(entry.evaluator, "check"):
          entry.evaluator.check(self._ctx)
      ctx = self._ctx
    else:
      ctx = self._ctx.with_variables(self._make_variables(params))
    ctx.out = self.run_dir.evals_dir(step)
    report, _ = run_evaluators(entries, ctx)  # in one call: the figures get the results
    values = _flat(report)
    if values:
      logger.write(step, values)
    return values

  def _make_variables(self, params: Any) -> dict[str, Any]:
    return {"params": replicated(params, self._ctx.mesh)}
