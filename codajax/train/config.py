"""The training configuration schema shared by every file in ``configs/``.

A config file defines ``get_config(arg=None)`` returning :func:`base_config`
with its fields set; ``arg="smoke"`` must give a variant that runs on a CPU in
seconds (tests use it). Command-line overrides use ml_collections' syntax:
``python train.py --config configs/cifar10.py:1000 --config.batch_size=256``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import ml_collections
from ml_collections.config_dict import placeholder

from codajax.runs import validate_model_config

SCHEDULES = ("constant", "cifar_step", "imagenet_warmup_halving", "warmup_cosine")
LOSSES = ("bce", "softmax")
PARALLEL = ("jit", "pmap")


def base_config() -> ml_collections.ConfigDict:
  """Every training option with its default (the digits setting)."""
  config = ml_collections.ConfigDict()
  config.name = "digits"  # default work directory: runs/<name>
  config.description = ""

  config.dataset = "digits"  # a codajax.data dataset name
  config.data_dir = ""  # "" = $CODAJAX_DATA_DIR or ~/tensorflow_datasets
  config.augment = True
  config.worker_count = 0  # grain worker processes (0: in the main process)

  config.model = ml_collections.ConfigDict()
  config.model.name = "digits-5L"  # codajax.models.get_model name
  config.model.temperature = 100.0
  # The family's own settings (None: the model's default), checked by its get_model factory:
  config.model.norm = placeholder(str)  # CoDA: "squash" | "l2"; B-cos: "bn" | "gn" | "ln" | ...
  config.model.form = placeholder(str)  # CoDA: "implicit" | "explicit"
  config.model.kwargs = ml_collections.ConfigDict()  # further get_model settings of the family
  config.model.dtype = "float32"  # "bfloat16": bf16 compute, f32 params/optimizer/norms

  config.init_from = ""  # a run's work directory: start from its latest params (not on resume)
  config.seed = 0
  config.num_epochs = 30
  config.batch_size = 64  # global, over all devices and hosts
  config.virtual_batch_size = 0  # >batch_size: gradient accumulation (optax.MultiSteps)
  config.loss = "bce"  # "bce" (the papers: sigmoid BCE on one-hot) or "softmax"
  config.l1_matrix_weight = 0.0  # λ of the dynamic-matrix L1 regulariser

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 2.5e-4
  config.optimizer.schedule = "constant"
  config.optimizer.decay_every_epochs = 30  # cifar_step: lr·1.5^−⌊epoch/30⌋
  config.optimizer.decay_factor = 1.5
  config.optimizer.warmup_epochs = 0  # imagenet_warmup_halving / warmup_cosine
  config.optimizer.peak_learning_rate = 1e-3  # imagenet_warmup_halving: lr → peak over warm-up
  config.optimizer.halve_every_epochs = 20
  config.optimizer.lr_batch_scaling = False  # large-batch: lr × batch_size / reference_batch_size
  config.optimizer.reference_batch_size = 16

  config.parallel = "jit"  # "jit" (mesh, default) or "pmap"
  config.eval_every_epochs = 1
  config.eval_batch_size = 256
  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 2
  config.max_steps = 0  # >0: stop after this many steps (smoke runs, tests)
  # Evaluators during training (codajax.evaluators): {name: dict(every_steps=N, **settings)}.
  config.evals = ml_collections.ConfigDict()
  return config


class ConfigArgumentError(ValueError):
  """A config file's argument (``FILE.py:ARG``) that the file does not take."""


def config_tokens(
    arg: str | None, valid: Sequence[str] | None = None, config: str = "this config"
) -> list[str]:
  """The comma-separated tokens of a config argument: ``"s2,smoke"`` -> ``["s2", "smoke"]``.

  With ``valid`` (every token the config file takes), any other token is a
  :class:`ConfigArgumentError` naming ``config`` (e.g. ``"configs/digits.py"``) and the valid
  tokens, so a typo (``:smok``) is refused instead of silently giving the default config.
  """
  tokens = [token.strip() for token in (arg or "").split(",") if token.strip()]
  unknown = [token for token in tokens if valid is not None and token not in valid]
  if unknown:
    takes = (
        f"takes {', '.join(map(repr, valid))} (comma-separated)" if valid else "takes no argument"
    )
    raise ConfigArgumentError(
        f"unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
        f"for {config}, which {takes}."
    )
  return tokens


def parse_stage_arg(
    arg: str | None, default: str, num_stages: int, config: str = "this config"
) -> tuple[int, bool]:
  """A hybrid config's argument ``"s<k>[,smoke]"`` -> (embedding stage k, smoke?).

  ``default`` (e.g. ``"s2"``) applies when no stage is given; a token other than
  ``s0 .. s<num_stages>`` and ``smoke``, or two stages, is a :class:`ConfigArgumentError`.
  """
  stage_names = [f"s{k}" for k in range(num_stages + 1)]
  tokens = config_tokens(arg)
  stages = [t for t in tokens if t != "smoke"] or [default]
  if len(stages) != 1 or stages[0] not in stage_names:
    raise ConfigArgumentError(
        f"{config} takes one embedding stage of {', '.join(stage_names)} (and/or 'smoke'), "
        f"got {arg!r}."
    )
  return int(stages[0][1:]), "smoke" in tokens


def apply_smoke(
    config: ml_collections.ConfigDict,
    *,
    steps: int,
    batch_size: int,
    eval_batch_size: int,
    model: str | None = None,
    temperature: float | None = None,
) -> ml_collections.ConfigDict:
  """Turns ``config`` into its CPU smoke variant (in place; also returned).

  ``steps`` training steps of ``batch_size`` in one epoch, logging every ``steps // 2`` steps
  and checkpointing every 2; the name gains ``_smoke``; ``model``/``temperature`` replace the
  model name and temperature when given.
  """
  config.name += "_smoke"
  if model is not None:
    config.model.name = model
  if temperature is not None:
    config.model.temperature = temperature
  config.num_epochs = 1
  config.max_steps = steps
  config.batch_size = batch_size
  config.eval_batch_size = eval_batch_size
  config.log_every_steps = max(1, steps // 2)
  config.checkpoint_every_steps = 2
  return config


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(f"Bad config: {message}")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Fails at start-up with one clear message on a bad value.

  (Unknown keys are already refused by ml_collections when overridden from
  the command line.)
  """
  validate_model_config(config)
  _require(config.loss in LOSSES, f"loss must be one of {LOSSES}, got {config.loss!r}.")
  _require(config.parallel in PARALLEL, f"parallel must be one of {PARALLEL}.")
  _require(
      config.optimizer.schedule in SCHEDULES,
      f"optimizer.schedule must be one of {SCHEDULES}, got {config.optimizer.schedule!r}.",
  )
  for key in ("learning_rate", "peak_learning_rate"):
    value = config.optimizer[key]
    _require(
        math.isfinite(value) and value > 0,
        f"optimizer.{key} must be finite and > 0, " f"got {value}.",
    )
  _require(config.optimizer.warmup_epochs >= 0, "optimizer.warmup_epochs must be >= 0.")
  _require(
      config.optimizer.reference_batch_size >= 1, "optimizer.reference_batch_size must be >= 1."
  )
  for key in (
      "batch_size",
      "num_epochs",
      "eval_batch_size",
      "log_every_steps",
      "checkpoint_every_steps",
      "keep_checkpoints",
      "eval_every_epochs",
  ):
    _require(config[key] >= 1, f"{key} must be >= 1, got {config[key]}.")
  _require(config.max_steps >= 0, f"max_steps must be >= 0, got {config.max_steps}.")
  _require(config.seed >= 0, f"seed must be >= 0, got {config.seed}.")
  _require(config.worker_count >= 0, f"worker_count must be >= 0, got {config.worker_count}.")
  _require(
      config.virtual_batch_size >= 0,
      f"virtual_batch_size must be >= 0, got {config.virtual_batch_size}.",
  )
  _require(
      math.isfinite(config.l1_matrix_weight) and config.l1_matrix_weight >= 0,
      f"l1_matrix_weight must be finite and >= 0, got {config.l1_matrix_weight}.",
  )
  if config.virtual_batch_size > config.batch_size:
    _require(
        config.virtual_batch_size % config.batch_size == 0,
        f"virtual_batch_size {config.virtual_batch_size} must be a multiple of "
        f"batch_size {config.batch_size}.",
    )
