"""The training loop: config → data → model → steps → checkpoints → evaluation.

``train_and_evaluate(config, workdir)`` is what ``train.py`` runs; tests call it
directly. Re-running it in the same work directory resumes exactly where the
last checkpoint left off (parameters, optimizer, RNG and data position).
"""

from __future__ import annotations

import contextlib
import errno
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

from codajax import data, storage
from codajax.provenance import provenance
from codajax.models import get_model
from codajax.train import parallel
from codajax.train.checkpoint import Checkpointer, TrainingError, restore_params
from codajax.train.config import validate_config
from codajax.train.metrics_log import MetricsLogger, read_metrics
from codajax.train.schedules import learning_rate_schedule
from codajax.train.step import TrainState, make_eval_step, make_train_step

# Config sections that define what a checkpoint holds: a resumed run must match them.
_IDENTITY_KEYS = ("dataset", "model", "loss", "seed")  # "model" includes model.dtype
RUN_FILE = "run.json"
LOCK_FILE = "train.lock"


def build_model(config: ml_collections.ConfigDict, num_classes: int, image_channels: int):
  """The model a config names, sized for the dataset's classes and image channels."""
  m = config.model
  return get_model(
      m.name,
      num_classes=num_classes,
      temperature=m.temperature,
      norm=m.norm,
      form=m.form,
      dtype=jnp.bfloat16 if m.dtype == "bfloat16" else None,
      image_channels=image_channels,
      **m.kwargs.to_dict(),
  )


def accumulation_steps(config: ml_collections.ConfigDict) -> int:
  """Micro-batches per optimizer update (1 without a virtual batch)."""
  if config.virtual_batch_size <= config.batch_size:
    return 1
  return config.virtual_batch_size // config.batch_size


def build_optimizer(
    config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int
) -> optax.GradientTransformation:
  """Adam (the papers' optimizer) with the config's schedule, and gradient accumulation.

  With ``virtual_batch_size = k · batch_size`` the update is ``optax.MultiSteps``
  over ``k`` micro-batches: the same as one batch of ``k · batch_size``.
  """
  k = accumulation_steps(config)
  schedule = learning_rate_schedule(
      config.optimizer, steps_per_epoch // k, total_steps // k, config.batch_size * k
  )
  tx = optax.adam(schedule)
  return optax.MultiSteps(tx, every_k_schedule=k) if k > 1 else tx


# Settings the checkpoints depend on beyond their structure's identity: a resumed run must
# keep them (recorded in run.json as "state_settings"), with why each one matters.
_STATE_SETTINGS = {
    "accumulation_steps": "virtual_batch_size / batch_size: gradient accumulation changes the "
    "optimizer state's structure",
    "batch_size": "the data position and the learning-rate schedule depend on it",
    "num_epochs": "the learning-rate schedule's length depends on it",
    "optimizer": "the optimizer and its learning-rate schedule",
}


def state_settings(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The settings recorded in ``run.json`` that a resumed run must not change."""
  return json.loads(
      json.dumps(
          {
              "accumulation_steps": accumulation_steps(config),
              "batch_size": config.batch_size,
              "num_epochs": config.num_epochs,
              "optimizer": config.optimizer.to_dict(),
          },
          default=str,
      )
  )


def read_run_file(workdir: str) -> dict[str, Any] | None:
  """``workdir/run.json`` as a dict (None if absent); a :class:`TrainingError` naming the
  file if it is not a run file."""
  path = storage.join(workdir, RUN_FILE)
  if not storage.exists(path):
    return None
  try:
    run = storage.read_json(path)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
    raise TrainingError(
        f"{path} is not readable JSON ({error}). Restore it from a backup, or "
        f"delete it to resume with the given config (checkpoints are checked "
        "against it)."
    ) from None
  if not (
      isinstance(run, dict)
      and isinstance(run.get("config"), dict)
      and isinstance(run.get("num_classes"), int)
      and isinstance(run.get("image_shape"), list)
  ):
    raise TrainingError(
        f"{path} is not a codajax run file (expected config, num_classes and "
        "image_shape). Restore it from a backup, or delete it to resume with the "
        "given config."
    )
  return run


def _run_record(config: ml_collections.ConfigDict, spec) -> dict[str, Any]:
  return {
      "config": json.loads(json.dumps(config.to_dict(), default=str)),
      "num_classes": spec.num_classes,
      "image_shape": list(spec.image_shape),
      "state_settings": state_settings(config),
      "splits": _new_splits(spec),
      "provenance": provenance(),
  }


def _new_splits(spec) -> dict[str, str]:
  """Train / model-selection / report splits of a new run (validation carved when missing)."""
  return {
      "train": spec.train_split,
      "validation": spec.validation_split or spec.test_split,
      "test": spec.test_split,
  }


def run_splits(workdir: str, spec) -> dict[str, str]:
  """The splits of the run in ``workdir``: those in its ``run.json``, or, for runs written
  before validation splits existed (no ``"splits"`` entry), the old ones (all of ``train``;
  selection on ``test``), so old work directories resume exactly."""
  run = read_run_file(workdir)
  if run is None:
    return _new_splits(spec)
  return run.get("splits") or {
      "train": "train",
      "validation": spec.test_split,
      "test": spec.test_split,
  }


def _check_workdir(workdir: str, config: ml_collections.ConfigDict, spec) -> bool:
  """Refuses a work directory made by another model/data config or other state settings.

  Returns whether ``run.json`` exists (it is written by :func:`_write_run_file` once the
  checkpoints are known to fit). ``run.json`` holds the config and the dataset's classes
  and image shape, so :func:`codajax.train.restore` can rebuild the model without the data.
  """
  record = _run_record(config, spec)
  run = read_run_file(workdir)
  if run is not None:
    previous = run["config"]
    old = {k: previous.get(k) for k in _IDENTITY_KEYS}
    identity = {k: record["config"][k] for k in _IDENTITY_KEYS}
    if old != identity:
      changed = sorted(k for k in _IDENTITY_KEYS if old.get(k) != identity[k])
      raise TrainingError(
          f"{workdir} holds a run of a different config (differs in: {', '.join(changed)}). "
          f"Use another --workdir, or delete {workdir} to start over."
      )
    old_settings = run.get("state_settings")
    if old_settings is not None:
      changed = [
          f"{k} {old_settings.get(k)!r} -> {v!r} ({_STATE_SETTINGS[k]})"
          for k, v in record["state_settings"].items()
          if old_settings.get(k) != v
      ]
      if changed:
        raise TrainingError(
            f"{workdir} was trained with other settings that its checkpoints depend on: "
            f"{'; '.join(changed)}. Resume with the values in {storage.join(workdir, RUN_FILE)}, "
            "or use another --workdir."
        )
  # Every process has looked before process 0 writes.
  multihost_utils.sync_global_devices("codajax_check_workdir")
  return run is not None


def _write_run_file(workdir: str, config: ml_collections.ConfigDict, spec) -> None:
  """Writes ``run.json`` atomically (process 0)."""
  if jax.process_index() == 0:
    storage.write_json(storage.join(workdir, RUN_FILE), _run_record(config, spec))


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Holds an exclusive lock on ``workdir`` (one per process index) for the block.

  A second ``train.py`` on the same work directory gets a :class:`TrainingError` instead
  of writing next to the first. Local directories: ``flock``, released with the process
  (even on SIGKILL). ``gs://``: a lease object renewed while the run lives; one left by a
  killed run is taken over once ``$CODAJAX_LOCK_TTL_S`` (60 s) passes without renewal
  (see :class:`codajax.storage.ObjectLease`).
  """
  held_lock = contextlib.ExitStack()
  try:
    held_lock.enter_context(storage.workdir_lock(workdir, f"{LOCK_FILE}.{jax.process_index()}"))
  except storage.LockHeld as held:
    raise TrainingError(
        f"{workdir} is in use by another train.py ({held}). Wait for it to "
        "finish, or use another --workdir."
    ) from None
  except OSError as error:
    raise TrainingError(
        f"Cannot write to the work directory {workdir} "
        f"({error.strerror or error}). Make it writable, or use another "
        "--workdir."
    ) from None
  with held_lock:
    yield


def check_devices(config: ml_collections.ConfigDict) -> None:
  """Refuses batch sizes that do not split evenly over the devices and processes."""
  devices, local = jax.device_count(), jax.local_device_count()
  for key in ("batch_size", "eval_batch_size"):
    if config[key] % devices:
      raise TrainingError(
          f"{key} {config[key]} is not divisible by the {devices} devices; use a "
          f"multiple of {devices}."
      )
  if config.parallel == "pmap" and (config.batch_size // jax.process_count()) % local:
    raise TrainingError(
        f"batch_size {config.batch_size} does not split over "
        f"{jax.process_count()} processes of {local} devices (pmap)."
    )


def _init_state(model, tx, spec, seed: int, mesh, parallel_mode: str) -> TrainState:
  """A fresh state, replicated over the mesh (identical on every process)."""
  init_key, state_key = jax.random.split(jax.random.key(seed))
  dummy = jnp.zeros((1, *spec.image_shape), jnp.float32)

  def init():
    params = model.init(init_key, dummy)["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.key_data(state_key),
    )

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
  """Turns SIGTERM (and a first SIGINT) into a flag the loop polls: save, then exit.

  A second SIGINT interrupts at once (``KeyboardInterrupt``; in-flight saves are still
  waited for). With several processes the flag is exchanged (one collective) only at
  the steps the loop calls :meth:`poll` with ``sync=True`` (log and checkpoint steps).
  """

  def __init__(self):
    self.signal_name: str | None = None
    self._previous: dict[int, Any] = {}

  def __enter__(self):
    for signum in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[signum] = signal.signal(signum, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    if signum == signal.SIGINT and self.signal_name is not None:
      raise KeyboardInterrupt
    self.signal_name = signal.Signals(signum).name

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)

  @property
  def requested(self) -> bool:
    return self.signal_name is not None

  def poll(self, sync: bool) -> bool:
    """Whether to stop now: this process's flag with one process; with several, the
    flag of any process at ``sync`` steps (every process calls it at the same steps)."""
    if jax.process_count() == 1:
      return self.requested
    if not sync:
      return False
    return bool(multihost_utils.process_allgather(np.array(self.requested)).any())


def _final_eval_missing(workdir: str, step: int) -> bool:
  """Whether ``metrics.jsonl`` lacks the eval of ``step`` (a run stopped before it)."""
  try:
    records = read_metrics(workdir)
  except (OSError, ValueError):
    return True
  return not any(r.get("step") == step and "eval/accuracy" in r for r in records)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) the run of ``config`` in ``workdir``; returns the last metrics.

  Every exit (the end, SIGTERM/SIGINT, a non-finite loss, a failing eval, any exception)
  waits for the checkpoint saves in flight; the final step is saved before the final eval.
  """
  validate_config(config)
  check_devices(config)
  workdir = os.fspath(storage.path(workdir))
  with workdir_lock(workdir):
    return _train_locked(config, workdir)


def _train_locked(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  is_main = jax.process_index() == 0
  data_dir = config.data_dir or None

  # ---- Data and model --------------------------------------------------------------------
  spec = data.dataset_info(config.dataset, data_dir=data_dir)
  has_run_file = _check_workdir(workdir, config, spec)
  model = build_model(config, spec.num_classes, spec.image_shape[-1])
  splits = run_splits(workdir, spec)
  steps_per_epoch = spec.size(splits["train"]) // config.batch_size
  if steps_per_epoch == 0:
    raise TrainingError(
        f"batch_size {config.batch_size} exceeds the "
        f"{spec.size(splits['train'])} training examples."
    )
  total_steps = config.num_epochs * steps_per_epoch
  if config.max_steps:
    total_steps = min(total_steps, config.max_steps)

  # ---- State, steps, checkpoints -----------------------------------------------------------
  mesh = parallel.make_mesh()
  mode = config.parallel
  tx = build_optimizer(config, steps_per_epoch, config.num_epochs * steps_per_epoch)
  state = _init_state(model, tx, spec, config.seed, mesh, mode)
  train_iter = data.train_loader(
      config.dataset,
      global_batch_size=config.batch_size,
      seed=config.seed,
      data_dir=data_dir,
      split=splits["train"],
      augment=config.augment,
      worker_count=config.worker_count,
  )
  make_eval_loader = lambda split="validation": data.eval_loader(
      config.dataset,
      global_batch_size=config.eval_batch_size,
      data_dir=data_dir,
      split=splits[split],
      worker_count=config.worker_count,
  )
  checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints)
  try:
    restored = checkpointer.restore_latest(
        jax.tree.map(_abstract, state), expected_data=train_iter.get_state()
    )
    if restored is not None:
      state, data_state, _ = restored
      train_iter.set_state(data_state)
    if not has_run_file:
      _write_run_file(workdir, config, spec)
    return _loop(
        config,
        workdir,
        spec,
        model,
        tx,
        state,
        mesh,
        train_iter,
        make_eval_loader,
        checkpointer,
        steps_per_epoch,
        total_steps,
        is_main,
        splits=splits,
    )
  finally:
    train_iter.close()
    checkpointer.close()  # waits for every save in flight, on every exit path


def _loop(
    config,
    workdir,
    spec,
    model,
    tx,
    state,
    mesh,
    train_iter,
    make_eval_loader,
    checkpointer,
    steps_per_epoch,
    total_steps,
    is_main,
    splits=None,
) -> dict[str, Any]:
  """The training loop proper; returns the last metrics (``step`` included).

  ``eval/*`` metrics are on the validation split ``splits["validation"]`` (logged as
  ``eval/split``); the last step adds the ``test/*`` metrics of :func:`_test_eval`.
  """
  mode = config.parallel
  start_step = int(_host_scalar(state.step))
  train_step = make_train_step(
      model,
      tx,
      loss=config.loss,
      l1_matrix_weight=config.l1_matrix_weight,
      mesh=mesh,
      parallel_mode=mode,
  )
  eval_step = make_eval_step(model, loss=config.loss, mesh=mesh)
  from codajax.evaluators.training import TrainingEvaluators  # (it imports codajax.train)

  evals = TrainingEvaluators(config, model, spec, mesh, workdir)  # config.evals, every N steps
  if mode == "pmap":
    state = flax.jax_utils.replicate(state)

  logger = MetricsLogger(workdir)
  if is_main:
    print(
        f"codajax: training {config.model.name} on {config.dataset} "
        f"({jax.device_count()} devices, {jax.process_count()} processes, mode {mode}); "
        f"steps {start_step}→{total_steps}; work directory {workdir}",
        flush=True,
    )

  def unreplicated(state):
    return flax.jax_utils.unreplicate(state) if mode == "pmap" else state

  def run_eval(step, state):
    eval_metrics = evaluate(eval_step, unreplicated(state).params, make_eval_loader(), mesh)
    logger.write(
        step, {**eval_metrics, "eval/split": (splits or {}).get("validation", "validation")}
    )
    if is_main:
      bar.write(
          f"step {step} (epoch {step / steps_per_epoch:.2f}): validation accuracy "
          f"{eval_metrics['eval/accuracy']:.4f}, top-5 {eval_metrics['eval/top5']:.4f}"
      )
    checkpointer.save_best(step, unreplicated(state), train_iter.get_state(), eval_metrics)
    return eval_metrics

  # ---- Loop ---------------------------------------------------------------------------------
  last_metrics: dict[str, Any] = {}
  pending: list[dict[str, jax.Array]] = []
  window_start = time.perf_counter()
  bar = tqdm(
      total=total_steps,
      initial=start_step,
      disable=not is_main,
      desc="train",
      unit="step",
      dynamic_ncols=True,
  )
  try:
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
        log_now = step % config.log_every_steps == 0 or end_of_epoch
        save_now = step % config.checkpoint_every_steps == 0 or last
        preempted = preemption.poll(sync=log_now or save_now)
        save_now = save_now or preempted
        eval_now = (end_of_epoch and epoch % config.eval_every_epochs == 0) or last
        if log_now or eval_now or save_now:
          summary = _summarise(pending, step, workdir)  # raises before a bad state is saved
          elapsed = time.perf_counter() - window_start
          summary["train/images_per_sec"] = len(pending) * config.batch_size / max(elapsed, 1e-9)
          summary["train/epoch"] = step / steps_per_epoch
          logger.write(step, summary)
          bar.set_postfix(
              loss=f"{summary['train/loss']:.4f}", acc=f"{summary['train/accuracy']:.3f}"
          )
          last_metrics.update(summary)
          pending, window_start = [], time.perf_counter()

        if save_now:  # before the eval: a failing eval loses no training
          checkpointer.save(step, unreplicated(state), train_iter.get_state())
        if eval_now and not preempted:
          last_metrics.update(run_eval(step, state))
        if evals.due(step, last) and not preempted:
          evals.run(step, unreplicated(state).params, logger, last=last)
        if preempted:
          if is_main:
            bar.write(
                f"{preemption.signal_name}: saved step {step} to {workdir}; re-run the "
                "same command to resume."
            )
          last_metrics["interrupted"] = preemption.signal_name
          break
      if step == total_steps and step == start_step and _final_eval_missing(workdir, step):
        last_metrics.update(run_eval(step, state))  # the run had stopped before its final eval
      if step == total_steps and "interrupted" not in last_metrics:
        test_metrics = _test_eval(
            eval_step, unreplicated(state).params, make_eval_loader, mesh, checkpointer, workdir
        )
        logger.write(step, test_metrics)
        last_metrics.update(test_metrics)
  finally:
    bar.close()
    logger.close()
  last_metrics["step"] = step
  return last_metrics


def _test_eval(eval_step, params, make_eval_loader, mesh, checkpointer, workdir) -> dict[str, Any]:
  """Test accuracy of the final model and of the best-on-validation model (``best/``).

  Returns ``{"test/accuracy_final", "test/top5_final", "test/accuracy_best",
  "test/top5_best", "test/best_step", "test/count"}``; the test split is read only here.
  """
  final = evaluate(eval_step, params, make_eval_loader("test"), mesh)
  checkpointer.wait()
  best_params, best_step = restore_params(workdir, "best", like=params)
  if jax.process_count() > 1:  # restored on a local device; no cross-host device_put on CPU
    best_params = parallel.replicate(jax.device_get(best_params), mesh)
  else:
    best_params = jax.device_put(best_params, jax.tree.map(lambda x: x.sharding, params))
  best = evaluate(eval_step, best_params, make_eval_loader("test"), mesh)
  return {
      "test/accuracy_final": final["eval/accuracy"],
      "test/top5_final": final["eval/top5"],
      "test/accuracy_best": best["eval/accuracy"],
      "test/top5_best": best["eval/top5"],
      "test/best_step": best_step,
      "test/count": final["eval/count"],
  }


def _summarise(pending: list[dict[str, jax.Array]], step: int, workdir: str) -> dict[str, float]:
  """Means of the pending step metrics; raises on NaN/Inf (nothing bad gets saved)."""
  summary = {k: float(np.mean([_host_scalar(m[k]) for m in pending])) for k in pending[0]}
  if not all(math.isfinite(v) for v in summary.values()):
    raise TrainingError(
        f"Non-finite training metrics at step {step}: {summary}. Stopped; the last good "
        f"checkpoint in {workdir}/checkpoints is kept (lower the learning rate, or train in "
        f"float32)."
    )
  return summary


def _abstract(x):
  """``ShapeDtypeStruct`` with sharding, so restores land on the current devices."""
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
