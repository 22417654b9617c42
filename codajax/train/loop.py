"""The training loop: config → data → model → steps → checkpoints → evaluation.

``train_and_evaluate(config, workdir)`` is what ``train.py`` runs; tests call it
directly. Re-running it in the same work directory resumes exactly where the
last checkpoint left off (parameters, optimizer, RNG and data position).
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from typing import Any

import flax.jax_utils
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from codajax import data
from codajax.models import get_model
from codajax.train import parallel
from codajax.train.checkpoint import Checkpointer
from codajax.train.config import validate_config
from codajax.train.metrics_log import MetricsLogger
from codajax.train.schedules import learning_rate_schedule
from codajax.train.step import TrainState, make_eval_step, make_train_step

# Config sections that define what a checkpoint holds: a resumed run must match them.
_IDENTITY_KEYS = ("dataset", "model", "compute_dtype", "loss", "seed")
RUN_FILE = "run.json"


class TrainingError(RuntimeError):
  """A run that cannot go on (non-finite loss, mismatching work directory, ...)."""


def build_model(config: ml_collections.ConfigDict, num_classes: int, image_channels: int):
  """The model a config names, sized for the dataset's classes and image channels."""
  m = config.model
  return get_model(
      m.name,
      num_classes=num_classes,
      temperature=m.temperature,
      norm=m.norm,
      form=m.form,
      compute_dtype=jnp.bfloat16 if config.compute_dtype == "bfloat16" else None,
      image_channels=image_channels,
      **m.kwargs.to_dict(),
  )


def accumulation_steps(config: ml_collections.ConfigDict) -> int:
  """Micro-batches per optimizer update (1 without a virtual batch)."""
  if config.virtual_batch_size <= config.batch_size:
    return 1
  return config.virtual_batch_size // config.batch_size


def build_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
                    total_steps: int) -> optax.GradientTransformation:
  """Adam (the papers' optimizer) with the config's schedule, and gradient accumulation.

  With ``virtual_batch_size = k · batch_size`` the update is ``optax.MultiSteps``
  over ``k`` micro-batches: the same as one batch of ``k · batch_size``.
  """
  k = accumulation_steps(config)
  schedule = learning_rate_schedule(config.optimizer, steps_per_epoch // k, total_steps // k,
                                    config.batch_size * k)
  tx = optax.adam(schedule)
  return optax.MultiSteps(tx, every_k_schedule=k) if k > 1 else tx


def _check_workdir(workdir: str, config: ml_collections.ConfigDict, spec) -> None:
  """Writes ``run.json``, or refuses a work directory made by another model/data config.

  ``run.json`` holds the config and the dataset's classes and image shape, so
  :func:`codajax.train.restore` can rebuild the model without the data.
  """
  path = os.path.join(workdir, RUN_FILE)
  config_dict = json.loads(json.dumps(config.to_dict(), default=str))
  identity = {k: config_dict[k] for k in _IDENTITY_KEYS}
  exists = os.path.exists(path)
  if exists:
    with open(path) as f:
      previous = json.load(f)["config"]
    old = {k: previous.get(k) for k in _IDENTITY_KEYS}
    if old != identity:
      changed = sorted(k for k in _IDENTITY_KEYS if old.get(k) != identity[k])
      raise TrainingError(
          f"{workdir} holds a run of a different config (differs in: {', '.join(changed)}). "
          f"Use another --workdir, or delete {workdir} to start over.")
  # Every process has looked before process 0 writes (atomically).
  multihost_utils.sync_global_devices("codajax_check_workdir")
  if not exists and jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    run = {"config": config_dict, "num_classes": spec.num_classes,
           "image_shape": list(spec.image_shape)}
    with open(path + ".tmp", "w") as f:
      json.dump(run, f, indent=2)
    os.replace(path + ".tmp", path)


def _init_state(model, tx, spec, seed: int, mesh, parallel_mode: str) -> TrainState:
  """A fresh state, replicated over the mesh (identical on every process)."""
  init_key, state_key = jax.random.split(jax.random.key(seed))
  dummy = jnp.zeros((1, *spec.image_shape), jnp.float32)

  def init():
    params = model.init(init_key, dummy)["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.key_data(state_key))

  out = parallel.replicated_sharding(mesh) if parallel_mode == "jit" else None
  return jax.jit(init, out_shardings=out)()


def _host_scalar(x) -> float:
  return float(np.asarray(jax.device_get(x)).reshape(-1)[0])


def evaluate(eval_step, params, loader, mesh, parallel_mode: str = "jit") -> dict[str, Any]:
  """Accuracy (top-1, top-5), loss and per-class accuracy over a one-pass loader."""
  totals = None
  for batch in loader:
    batch = {k: v for k, v in batch.items() if k in ("image", "label", "valid")}
    sums = eval_step(params, parallel.shard_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = max(float(totals["count"]), 1.0)
  per_class = np.asarray(totals["class_top1"]) / np.maximum(np.asarray(totals["class_count"]), 1)
  return {
      "eval/accuracy": float(totals["top1"]) / count,
      "eval/top5": float(totals["top5"]) / count,
      "eval/loss": float(totals["loss"]) / count,
      "eval/per_class_accuracy": per_class.round(6).tolist(),
      "eval/count": int(count),
  }


class _Preemption:
  """Turns SIGTERM into a flag the loop polls (save, then exit cleanly)."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: leave signals alone
      self._previous = None
    return self

  def _handle(self, signum, frame):
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def any_process(self) -> bool:
    if jax.process_count() == 1:
      return self.requested
    return bool(multihost_utils.process_allgather(np.array(self.requested)).any())


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) the run of ``config`` in ``workdir``; returns the last metrics."""
  validate_config(config)
  workdir = os.path.abspath(workdir)
  is_main = jax.process_index() == 0
  data_dir = config.data_dir or None

  # ---- Data and model --------------------------------------------------------------------
  spec = data.dataset_info(config.dataset, data_dir=data_dir)
  _check_workdir(workdir, config, spec)
  model = build_model(config, spec.num_classes, spec.image_shape[-1])
  steps_per_epoch = spec.split_sizes[spec.train_split] // config.batch_size
  if steps_per_epoch == 0:
    raise TrainingError(f"batch_size {config.batch_size} exceeds the "
                        f"{spec.split_sizes[spec.train_split]} training examples.")
  total_steps = config.num_epochs * steps_per_epoch
  if config.max_steps:
    total_steps = min(total_steps, config.max_steps)

  # ---- State, steps, checkpoints -----------------------------------------------------------
  mesh = parallel.make_mesh()
  mode = config.parallel
  tx = build_optimizer(config, steps_per_epoch, config.num_epochs * steps_per_epoch)
  state = _init_state(model, tx, spec, config.seed, mesh, mode)
  checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints)
  restored = checkpointer.restore_latest(jax.tree.map(_abstract, state))
  data_state = None
  if restored is not None:
    state, data_state, _ = restored
  start_step = int(_host_scalar(state.step))
  train_step = make_train_step(model, tx, loss=config.loss,
                               l1_matrix_weight=config.l1_matrix_weight, mesh=mesh,
                               parallel_mode=mode)
  eval_step = make_eval_step(model, loss=config.loss, mesh=mesh)
  from codajax.evaluators.training import TrainingEvaluators  # (it imports codajax.train)
  evals = TrainingEvaluators(config, model, spec, mesh, workdir)   # config.evals, every N steps
  if mode == "pmap":
    state = flax.jax_utils.replicate(state)

  train_iter = data.train_loader(
      config.dataset, global_batch_size=config.batch_size, seed=config.seed, data_dir=data_dir,
      augment=config.augment, worker_count=config.worker_count, start_state=data_state)
  make_eval_loader = lambda: data.eval_loader(
      config.dataset, global_batch_size=config.eval_batch_size, data_dir=data_dir,
      worker_count=config.worker_count)

  logger = MetricsLogger(workdir)
  if is_main:
    print(f"codajax: training {config.model.name} on {config.dataset} "
          f"({jax.device_count()} devices, {jax.process_count()} processes, mode {mode}); "
          f"steps {start_step}→{total_steps}; work directory {workdir}", flush=True)

  def unreplicated(state):
    return flax.jax_utils.unreplicate(state) if mode == "pmap" else state

  # ---- Loop ---------------------------------------------------------------------------------
  last_metrics: dict[str, Any] = {}
  pending: list[dict[str, jax.Array]] = []
  window_start = time.perf_counter()
  bar = tqdm(total=total_steps, initial=start_step, disable=not is_main, desc="train",
             unit="step", dynamic_ncols=True)
  with _Preemption() as preemption:
    step = start_step
    while step < total_steps:
      batch = next(train_iter)
      if mode == "jit":
        state, metrics = train_step(state, parallel.shard_batch(batch, mesh))
      else:
        state, metrics = train_step(state, parallel.split_for_pmap(batch))
        metrics = jax.tree.map(lambda x: x[0], metrics)
      pending.append(metrics)
      step += 1
      bar.update(1)

      end_of_epoch = step % steps_per_epoch == 0
      epoch = step // steps_per_epoch
      last = step == total_steps
      preempted = preemption.any_process()
      eval_now = (end_of_epoch and epoch % config.eval_every_epochs == 0) or last
      save_now = step % config.checkpoint_every_steps == 0 or last or preempted
      if step % config.log_every_steps == 0 or end_of_epoch or eval_now or save_now:
        summary = _summarise(pending, step, workdir)   # raises before a bad state is saved
        elapsed = time.perf_counter() - window_start
        summary["train/images_per_sec"] = len(pending) * config.batch_size / max(elapsed, 1e-9)
        summary["train/epoch"] = step / steps_per_epoch
        logger.write(step, summary)
        bar.set_postfix(loss=f"{summary['train/loss']:.4f}",
                        acc=f"{summary['train/accuracy']:.3f}")
        last_metrics.update(summary)
        pending, window_start = [], time.perf_counter()

      if eval_now:
        eval_metrics = evaluate(eval_step, unreplicated(state).params, make_eval_loader(), mesh)
        logger.write(step, eval_metrics)
        last_metrics.update(eval_metrics)
        if is_main:
          bar.write(f"step {step} (epoch {step / steps_per_epoch:.2f}): eval accuracy "
                    f"{eval_metrics['eval/accuracy']:.4f}, top-5 {eval_metrics['eval/top5']:.4f}")
        checkpointer.save_best(step, unreplicated(state), train_iter.get_state(), eval_metrics)
      if evals.due(step, last):
        evals.run(step, unreplicated(state).params, logger, last=last)
      if save_now:
        checkpointer.save(step, unreplicated(state), train_iter.get_state())
      if preempted:
        if is_main:
          bar.write(f"SIGTERM: saved step {step} to {workdir}; re-run the same command to resume.")
        break
  bar.close()
  checkpointer.close()
  logger.close()
  last_metrics["step"] = step
  return last_metrics


def _summarise(pending: list[dict[str, jax.Array]], step: int, workdir: str) -> dict[str, float]:
  """Means of the pending step metrics; raises on NaN/Inf (nothing bad gets saved)."""
  summary = {k: float(np.mean([_host_scalar(m[k]) for m in pending])) for k in pending[0]}
  if not all(math.isfinite(v) for v in summary.values()):
    raise TrainingError(
        f"Non-finite training metrics at step {step}: {summary}. Stopped; the last good "
        f"checkpoint in {workdir}/checkpoints is kept (lower the learning rate, or train in "
        f"float32).")
  return summary


def _abstract(x):
  """``ShapeDtypeStruct`` with sharding, so restores land on the current devices."""
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
