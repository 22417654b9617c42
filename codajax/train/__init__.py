"""Training: the config schema, train steps over a device mesh (jit or pmap) and the loop.

``train_and_evaluate(config, workdir, hooks=...)`` trains or resumes a run; the run directory
(its layout, ``run.json``, restoring a trained model) is :mod:`codajax.runs`, re-exported
here as :func:`restore` and :func:`restore_params`.
"""

from codajax.checkpoints import (
    CheckpointIOError,
    Checkpointer,
    IncompatibleCheckpointError,
    TrainingError,
)
from codajax.runs import RestoredRun, build_model, restore, restore_params
from codajax.train.config import base_config, validate_config
from codajax.train.loop import (
    HookFactory,
    TrainingHook,
    build_optimizer,
    train_and_evaluate,
)
from codajax.train.step import TrainState, make_train_step

__all__ = [
    "CheckpointIOError",
    "Checkpointer",
    "HookFactory",
    "IncompatibleCheckpointError",
    "RestoredRun",
    "TrainState",
    "TrainingError",
    "TrainingHook",
    "base_config",
    "build_model",
    "build_optimizer",
    "make_train_step",
    "restore",
    "restore_params",
    "train_and_evaluate",
    "validate_config",
]
