"""The run directory that ``train.py`` writes and ``eval.py`` reads: the one place its layout is spelled.

Layout of a work directory::

    run.json            the run record: config, classes, image shape, splits, state
                        settings, provenance (a resumed run must match its model and data)
    metrics.jsonl       one JSON object per logged event (training, validation, test)
    tensorboard/        TensorBoard events of the same numbers
    checkpoints/<step>/ the last K states {state: TrainState, data: iterator state}
    best/<step>/        the state of the best validation accuracy so far
    corrupt/            checkpoints that failed to decode, moved aside
    eval/               what ``eval.py`` writes (report.json, figures)
    evals/step_<N>/     figures of the evaluators run during training
    train.lock.<i>      the lock of process ``i`` while it trains

:class:`RunDir` names these paths, reads and writes ``run.json`` and holds the lock;
:func:`build_model` and :func:`restore` turn a run back into a model and its parameters.
Neither :mod:`codajax.train` nor :mod:`codajax.evaluators` spells a path of its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from codajax import checkpoints, storage
from codajax.checkpoints import TrainingError
from codajax.provenance import provenance
from codajax.registry import architecture_names, get_model, unknown_architecture_message

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
CORRUPT_DIR = "corrupt"
EVAL_DIR = "eval"
EVALS_DIR = "evals"
LOCK_FILE = "train.lock"
CHECKPOINT_KINDS = ("latest", "best")

# Config sections that define what a checkpoint holds: a resumed run must match them.
IDENTITY_KEYS = ("dataset", "model", "loss", "seed")  # "model" includes model.dtype
# Settings the checkpoints depend on beyond their structure's identity: a resumed run must
# keep them (recorded in run.json as "state_settings"), with why each one matters.
STATE_SETTINGS = {
    "accumulation_steps": "virtual_batch_size / batch_size: gradient accumulation changes the "
    "optimizer state's structure",
    "batch_size": "the data position and the learning-rate schedule depend on it",
    "num_epochs": "the learning-rate schedule's length depends on it",
    "optimizer": "the optimizer and its learning-rate schedule",
}


@dataclasses.dataclass(frozen=True)
class RunDir:
  """A work directory (local or ``gs://``) and the paths of its layout.

  Args:
    root: the directory, as given (a ``str``, ``os.PathLike`` or another :class:`RunDir`).
  """

  root: str

  def __post_init__(self):
    root = self.root.root if isinstance(self.root, RunDir) else self.root
    object.__setattr__(self, "root", os.fspath(storage.path(root)))

  def __fspath__(self) -> str:
    return self.root

  def __str__(self) -> str:
    return self.root

  def join(self, *parts: str) -> str:
    return storage.join(self.root, *parts)

  @property
  def run_file(self) -> str:
    return self.join(RUN_FILE)

  @property
  def metrics_file(self) -> str:
    return self.join(METRICS_FILE)

  @property
  def tensorboard_dir(self) -> str:
    return self.join(TENSORBOARD_DIR)

  @property
  def best_dir(self) -> str:
    return self.join(BEST_DIR)

  @property
  def eval_dir(self) -> str:
    return self.join(EVAL_DIR)

  def checkpoints_dir(self, which: str = "latest") -> str:
    """``checkpoints/`` (``which="latest"``) or ``best/`` (``"best"``)."""
    if which not in CHECKPOINT_KINDS:
      raise ValueError(f"which must be one of {CHECKPOINT_KINDS}, got {which!r}.")
    return self.join(CHECKPOINTS_DIR if which == "latest" else BEST_DIR)

  def corrupt_dir(self, name: str = "") -> str:
    """``corrupt/`` or ``corrupt/<name>``: where a damaged checkpoint is moved."""
    return self.join(CORRUPT_DIR, name) if name else self.join(CORRUPT_DIR)

  def evals_dir(self, step: int) -> str:
    """``evals/step_<step>/``: figures of the evaluators run during training."""
    return self.join(EVALS_DIR, f"step_{step}")

  # ---- run.json -------------------------------------------------------------------------

  def read_record(self) -> dict[str, Any] | None:
    """``run.json`` as a dict (None if absent); a :class:`TrainingError` naming the file if
    it is not a run record."""
    path = self.run_file
    if not storage.exists(path):
      return None
    try:
      record = storage.read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
      raise TrainingError(
          f"{path} is not readable JSON ({error}). Restore it from a backup, or delete it to "
          "resume with the given config (checkpoints are checked against it)."
      ) from None
    if not (
        isinstance(record, dict)
        and isinstance(record.get("config"), dict)
        and isinstance(record.get("num_classes"), int)
        and isinstance(record.get("image_shape"), list)
        and isinstance(record.get("splits"), dict)
    ):
      raise TrainingError(
          f"{path} is not a codajax run record (expected config, num_classes, image_shape and "
          "splits). Restore it from a backup, or delete it to resume with the given config."
      )
    return record

  def write_record(self, record: dict[str, Any]) -> None:
    """Writes ``run.json`` atomically (process 0 only)."""
    if jax.process_index() == 0:
      storage.write_json(self.run_file, record)

  # ---- the lock -------------------------------------------------------------------------

  @contextlib.contextmanager
  def lock(self) -> Iterator[None]:
    """Holds an exclusive lock on the directory (one per process index) for the block.

    A second ``train.py`` on the same directory gets a :class:`TrainingError` instead of
    writing next to the first. Local directories: ``flock`` on ``train.lock.<i>`` and, by
    process 0, on the directory itself (which deleting the lock file does not defeat); both
    are released with the process (even on SIGKILL). ``gs://``: a lease object renewed while
    the run lives; one left by a killed run is taken over once ``$CODAJAX_LOCK_TTL_S`` (60 s)
    passes without renewal (see :class:`codajax.storage.ObjectLease`).
    """
    held = contextlib.ExitStack()
    try:
      held.enter_context(storage.workdir_lock(self.root, f"{LOCK_FILE}.{jax.process_index()}"))
      if jax.process_index() == 0 and not storage.is_remote(self.root):
        held.enter_context(storage.directory_lock(self.root))
    except storage.LockHeld as error:
      held.close()
      raise TrainingError(
          f"{self.root} is in use by another train.py ({error}). Wait for it to finish, or use "
          "another --workdir."
      ) from None
    except OSError as error:
      held.close()
      raise TrainingError(
          f"Cannot write to the work directory {self.root} ({error.strerror or error}). Make it "
          "writable, or use another --workdir."
      ) from None
    with held:
      yield


# ---- The run record -----------------------------------------------------------------------


def accumulation_steps(config: ml_collections.ConfigDict) -> int:
  """Micro-batches per optimizer update (1 without a virtual batch)."""
  if config.virtual_batch_size <= config.batch_size:
    return 1
  return config.virtual_batch_size // config.batch_size


def _plain(tree: Any) -> Any:
  """``tree`` as JSON would give it back (tuples as lists, other values as strings)."""
  return json.loads(json.dumps(tree, default=str))


def state_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The settings recorded in ``run.json`` that a resumed run must not change."""
  return _plain(
      {
          "accumulation_steps": accumulation_steps(config),
          "batch_size": config.batch_size,
          "num_epochs": config.num_epochs,
          "optimizer": config.optimizer.to_dict(),
      }
  )


def dataset_splits(spec) -> dict[str, str]:
  """Train / model-selection / report splits of a new run (validation carved when missing)."""
  return {
      "train": spec.train_split,
      "validation": spec.validation_split or spec.test_split,
      "test": spec.test_split,
  }


def new_record(
    config: ml_collections.ConfigDict,
    *,
    num_classes: int,
    image_shape: tuple[int, int, int],
    splits: dict[str, str],
    **extra: Any,
) -> dict[str, Any]:
  """The ``run.json`` of a new run of ``config``: the dataset's classes, image shape (H, W, C)
  and splits (:func:`dataset_splits`), the state settings and provenance; ``extra`` entries
  (e.g. ``converted_from``) are added as given."""
  return {
      "config": _plain(config.to_dict()),
      "num_classes": int(num_classes),
      "image_shape": [int(n) for n in image_shape],
      "state_settings": state_settings(config),
      "splits": dict(splits),
      "provenance": provenance(),
      **extra,
  }


def record_conflicts(
    record: dict[str, Any], config: ml_collections.ConfigDict, where: str
) -> str | None:
  """Why ``config`` cannot resume the run of ``record`` (None: it can)."""
  identity = {k: _plain(config.to_dict())[k] for k in IDENTITY_KEYS}
  old = {k: record["config"].get(k) for k in IDENTITY_KEYS}
  if old != identity:
    changed = sorted(k for k in IDENTITY_KEYS if old.get(k) != identity[k])
    return (
        f"{where} holds a run of a different config (differs in: {', '.join(changed)}). "
        f"Use another --workdir, or delete {where} to start over."
    )
  old_settings = record.get("state_settings")
  if not isinstance(old_settings, dict):
    return (
        f"{storage.join(where, RUN_FILE)} has no record of the settings its checkpoints depend "
        f"on (state_settings is {'missing' if old_settings is None else 'not an object'}), so "
        f"a resume cannot be checked against them ({', '.join(STATE_SETTINGS)}). Restore the "
        f"file from a backup, or delete it to resume with the given config (checkpoints are "
        "checked against it)."
    )
  changed = [
      f"{k} {old_settings.get(k)!r} -> {v!r} ({STATE_SETTINGS[k]})"
      for k, v in state_settings(config).items()
      if old_settings.get(k) != v
  ]
  if changed:
    return (
        f"{where} was trained with other settings that its checkpoints depend on: "
        f"{'; '.join(changed)}. Resume with the values in its {RUN_FILE}, or use another "
        "--workdir."
    )
  return None


# ---- Model and parameters of a run --------------------------------------------------------


DTYPES = ("float32", "bfloat16")  # model.dtype: the compute dtype (parameters stay float32)


def validate_model_config(config: ml_collections.ConfigDict) -> None:
  """Checks that ``config.model`` names a model that can be built (a training config, or a run's
  ``run.json`` before restoring it): a known architecture, a finite temperature > 0, a known
  dtype and settings the family accepts; one-line ``ValueError`` otherwise."""
  name, temperature = config.model.name, config.model.temperature
  if name not in architecture_names():
    raise ValueError(f"Bad config: model.name: {unknown_architecture_message(name)}")
  number = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
  if not (number and math.isfinite(temperature) and temperature > 0):
    raise ValueError(
        f"Bad config: model.temperature must be finite and > 0 (a number), got {temperature!r}."
    )
  if config.model.dtype not in DTYPES:
    raise ValueError(
        f"Bad config: model.dtype must be one of {DTYPES}, got {config.model.dtype!r}."
    )
  try:
    build_model(config, num_classes=2, image_channels=3)
  except (TypeError, ValueError) as error:
    given = {k: v for k, v in model_settings(config).items() if k != "dtype"}
    raise ValueError(
        f"Bad config: model settings {given} are not accepted by {name!r} ({error})."
    ) from None


def model_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The ``get_model`` settings a config gives beyond the data's: temperature, computation dtype,
  the family's ``norm``/``form`` when set, and ``model.kwargs``."""
  m = config.model
  return {
      "temperature": m.temperature,
      "dtype": jnp.bfloat16 if m.dtype == "bfloat16" else None,
      **{k: m[k] for k in ("norm", "form") if m.get(k) is not None},
      **m.kwargs.to_dict(),
  }


def build_model(config: ml_collections.ConfigDict, num_classes: int, image_channels: int):
  """The model a config names, sized for the dataset's classes and image channels."""
  return get_model(
      config.model.name,
      num_classes=num_classes,
      image_channels=image_channels,
      **model_settings(config),
  )


@dataclasses.dataclass
class RestoredRun:
  """A trained run: its config, the model, the params for ``model.apply`` and the step."""

  config: ml_collections.ConfigDict
  model: nn.Module
  params: Any
  step: int
  num_classes: int
  image_shape: tuple[int, int, int]
  run: RunDir

  @property
  def variables(self) -> dict[str, Any]:
    return {"params": self.params}


def restore_params(workdir, which: str = "latest", like: Any = None) -> tuple[dict, int]:
  """``(params, step)`` of a run's latest or best checkpoint, as host arrays.

  Args:
    workdir: the run's directory (``str`` or :class:`RunDir`).
    which: ``"latest"`` or ``"best"``.
    like: optional expected params (arrays or ``ShapeDtypeStruct``s, e.g. from
      ``jax.eval_shape`` of ``model.init``): the checkpoint must match it, else
      :class:`~codajax.checkpoints.IncompatibleCheckpointError`.

  A damaged newest checkpoint (one that does not decode or fails its checksums) is skipped
  (with a warning; nothing is moved) for the previous one; with none left in ``checkpoints/``,
  ``which="latest"`` takes ``best/`` (said in one line).
  """
  run = RunDir(workdir)
  directory = run.checkpoints_dir(which)
  if not storage.isdir(directory):
    raise FileNotFoundError(
        f"No checkpoints in {run} (looked for {directory}); train first: python train.py "
        f"--workdir {run}"
    )
  try:
    return checkpoints.read_params(directory, best=which == "best", like=like)
  except FileNotFoundError as error:
    if which == "best" or not storage.isdir(run.best_dir):
      raise
    params, step = checkpoints.read_params(run.best_dir, best=True, like=like)
    print(f"WARNING: {error} Using {run.best_dir} (step {step}).", flush=True)
    return params, step


def start_params(model: nn.Module, source: RestoredRun) -> Any:
  """The params a new run of ``model`` starts from (``config.init_from``): ``source``'s, converted
  by ``type(model).params_from(model, source.variables)`` when the model defines it (a
  B-cosified network converts its conventional original), else taken as they are."""
  convert = getattr(type(model), "params_from", None)
  if convert is not None:
    return convert(model, source.variables)["params"]
  return source.params


def restore(workdir, which: str = "latest") -> RestoredRun:
  """Loads a work directory written by ``train.py`` (or the converters): config, model, params.

  Args:
    workdir: the run's directory (``str`` or :class:`RunDir`).
    which: ``"latest"`` or ``"best"`` (by validation accuracy).

  Raises:
    FileNotFoundError: no run record or no restorable checkpoint.
    TrainingError: a garbage ``run.json`` (named), or checkpoints that do not fit the model
      (:class:`~codajax.checkpoints.IncompatibleCheckpointError`).
  """
  run = RunDir(workdir)
  record = run.read_record()
  if record is None:
    raise FileNotFoundError(
        f"{run} is not a codajax run directory (no {RUN_FILE}); train first: python train.py "
        f"--workdir {run}"
    )
  config = ml_collections.ConfigDict(record["config"])
  image_shape = tuple(record["image_shape"])
  model = build_model(config, record["num_classes"], image_shape[-1])
  dummy = jnp.zeros((1, *image_shape), jnp.float32)
  like = jax.eval_shape(lambda: model.init(jax.random.key(0), dummy))["params"]
  params, step = restore_params(run, which, like=like)
  return RestoredRun(config, model, params, step, record["num_classes"], image_shape, run)
