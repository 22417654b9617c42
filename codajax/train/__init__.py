"""Training: config schema, train/eval steps over a device mesh, checkpoints and the loop."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from codajax.train.checkpoint import (
    CheckpointIOError,
    Checkpointer,
    IncompatibleCheckpointError,
    restore_params,
)
from codajax.train.config import base_config, validate_config
from codajax.train.loop import (
    RUN_FILE,
    TrainingError,
    build_model,
    read_run_file,
    build_optimizer,
    evaluate,
    train_and_evaluate,
)
from codajax.train.step import TrainState, make_eval_step, make_train_step


@dataclasses.dataclass
class RestoredRun:
  """A trained run: its config, the model, the params for ``model.apply`` and the step."""

  config: ml_collections.ConfigDict
  model: nn.Module
  params: Any
  step: int
  num_classes: int
  image_shape: tuple[int, int, int]

  @property
  def variables(self) -> dict[str, Any]:
    return {"params": self.params}


def restore(workdir: str, which: str = "latest") -> RestoredRun:
  """Loads a work directory written by ``train.py``: config, model and params.

  Args:
    workdir: the run's directory.
    which: ``"latest"`` or ``"best"`` (by eval accuracy).

  A damaged newest checkpoint is skipped for the previous one (nothing is moved);
  checkpoints with legacy parameter names load into the current model's names.

  Raises:
    FileNotFoundError: no run file or no restorable checkpoint.
    TrainingError: a garbage ``run.json`` (named), or checkpoints that do not fit the model
      (:class:`IncompatibleCheckpointError`).
  """
  run = read_run_file(workdir)
  if run is None:
    raise FileNotFoundError(
        f"{workdir} is not a codajax run directory (no {RUN_FILE}); train "
        f"first: python train.py --workdir {workdir}"
    )
  config = ml_collections.ConfigDict(run["config"])
  model = build_model(config, run["num_classes"], run["image_shape"][-1])
  dummy = jnp.zeros((1, *run["image_shape"]), jnp.float32)
  like = jax.eval_shape(lambda: model.init(jax.random.key(0), dummy))["params"]
  params, step = restore_params(workdir, which, like=like)
  return RestoredRun(config, model, params, step, run["num_classes"], tuple(run["image_shape"]))


__all__ = [
    "CheckpointIOError",
    "Checkpointer",
    "IncompatibleCheckpointError",
    "RestoredRun",
    "TrainState",
    "TrainingError",
    "base_config",
    "build_model",
    "build_optimizer",
    "evaluate",
    "make_eval_step",
    "make_train_step",
    "restore",
    "restore_params",
    "train_and_evaluate",
    "validate_config",
]
