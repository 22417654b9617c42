"""The training loop: config → data → model → steps → checkpoints → evaluation.

``train_and_evaluate(config, workdir)`` is what ``train.py`` runs; tests call it
directly. Re-running it in the same work directory resumes exactly where the
last checkpoint left off (parameters, optimizer, RNG and data position).
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import flax.jax_utils
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from codajax import data, parallel, runs
from codajax.accuracy import evaluate, make_eval_step
from codajax.checkpoints import BEST_METRIC, Checkpointer, TrainingError
from codajax.runs import RunDir, accumulation_steps
from codajax.train.config import validate_config
from codajax.train.metrics_log import MetricsLogger, read_metrics
from codajax.train.schedules import learning_rate_schedule
from codajax.train.step import TrainState, make_train_step


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


def _start_from(source_dir, model, tx, state: TrainState, mesh, mode) -> TrainState:
  """``state`` with the params of the run in ``source_dir`` (converted for ``model``, see
  :func:`codajax.runs.start_params`) and a fresh optimizer state."""
  try:
    source = runs.restore(source_dir)
  except (FileNotFoundError, TrainingError) as error:
    raise TrainingError(f"init_from: {error}") from None
  refusal = (
      f"init_from: the params of {source_dir} ({source.config.model.name}) do not fit "
      f"{type(model).__name__}; start from a run of the same model or of its conventional original"
  )
  try:
    params = runs.start_params(model, source)
  except Exception as error:  # a conversion that does not apply to these params
    raise TrainingError(f"{refusal} ({type(error).__name__}: {error}).") from error
  like = jax.tree.map(lambda a: (a.shape, a.dtype), state.params)
  if jax.tree.map(lambda a: (np.shape(a), np.asarray(a).dtype), params) != like:
    raise TrainingError(f"{refusal}.")
  print(f"Starting from {source_dir} (step {source.step}).", flush=True)
  out = parallel.replicated_sharding(mesh) if mode == "jit" else None
  fresh = lambda p: state.replace(params=p, opt_state=tx.init(p))
  return jax.jit(fresh, out_shardings=out)(jax.tree.map(jnp.asarray, params))


def _host_scalar(x) -> float:
  return float(np.asarray(jax.device_get(x)).reshape(-1)[0])


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


def _logged_evals(run: RunDir) -> dict[int, dict[str, Any]]:
  """``{step: {"eval/accuracy": ..., ...}}``: the validation evals ``metrics.jsonl`` holds."""
  try:
    records = read_metrics(run)
  except OSError:
    return {}
  return {
      r["step"]: {k: v for k, v in r.items() if k.startswith("eval/")}
      for r in records
      if isinstance(r.get("step"), int) and isinstance(r.get("eval/accuracy"), (int, float))
  }


def _needs_best_offer(evals: dict[int, dict[str, Any]], step: int, best_step: int) -> bool:
  """Whether the logged eval of ``step`` should be in ``best/`` but ``best/`` (at
  ``best_step``, -1: empty) never got it (its save was interrupted, or never started)."""
  if step <= best_step:
    return False
  if best_step < 0 or best_step not in evals:
    return True
  return evals[step]["eval/accuracy"] > evals[best_step]["eval/accuracy"]


class TrainingHook(Protocol):
  """A periodic evaluation during training (e.g. :class:`codajax.evaluators.TrainingEvaluators`).

  Built once per run by a :data:`HookFactory`, then asked at every step whether it is due.
  """

  def due(self, step: int, last: bool = False) -> Any:
    """Truthy when the hook runs at ``step`` (``last``: the run's final step)."""

  def run(self, step: int, params: Any, logger: MetricsLogger, last: bool = False) -> Any:
    """Runs on the current ``params`` and logs what it measured through ``logger``."""


# ``factory(config, model, spec, mesh, run) -> TrainingHook``: what train_and_evaluate takes.
HookFactory = Callable[..., TrainingHook]


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir, hooks: Sequence[HookFactory] = ()
) -> dict[str, Any]:
  """Trains (or resumes) the run of ``config`` in ``workdir``; returns the last metrics.

  Args:
    config: a training config (:func:`codajax.train.base_config`).
    workdir: the run directory (``str``, ``gs://...`` or :class:`codajax.runs.RunDir`).
    hooks: factories ``(config, model, spec, mesh, run) -> TrainingHook`` of periodic
      evaluations (``train.py`` passes :class:`codajax.evaluators.TrainingEvaluators`,
      which runs ``config.evals``). A config with ``evals`` and no hook is refused.

  Every exit (the end, SIGTERM/SIGINT, a non-finite loss, a failing eval, any exception)
  waits for the checkpoint saves in flight; the final step is saved before the final eval.
  """
  validate_config(config)
  check_devices(config)
  if config.get("evals") and not hooks:
    raise TrainingError(
        "config.evals is set but no evaluation hook was given: pass "
        "hooks=[codajax.evaluators.TrainingEvaluators] (train.py does)."
    )
  run = RunDir(workdir)
  with run.lock():
    return _train_locked(config, run, hooks)


def _check_run(run: RunDir, config: ml_collections.ConfigDict) -> dict[str, Any] | None:
  """The run's record, after refusing a directory made by another model/data config or
  other state settings (None: a new run)."""
  record = run.read_record()
  problem = None if record is None else runs.record_conflicts(record, config, run.root)
  # Every process has looked before process 0 writes.
  multihost_utils.sync_global_devices("codajax_check_workdir")
  if problem:
    raise TrainingError(problem)
  return record


def _train_locked(config: ml_collections.ConfigDict, run: RunDir, hooks) -> dict[str, Any]:
  is_main = jax.process_index() == 0
  data_dir = config.data_dir or None

  # ---- Data and model --------------------------------------------------------------------
  spec = data.dataset_info(config.dataset, data_dir=data_dir)
  record = _check_run(run, config)
  model = runs.build_model(config, spec.num_classes, spec.image_shape[-1])
  splits = record["splits"] if record else runs.dataset_splits(spec)
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
  checkpointer = Checkpointer(run, keep=config.keep_checkpoints)
  try:
    restored = checkpointer.restore_latest(
        jax.tree.map(_abstract, state), expected_data=train_iter.get_state()
    )
    if restored is not None:
      state, data_state, restored_step = restored
      if restored_step > total_steps:
        raise TrainingError(
            f"{run} holds a run at step {restored_step}, past this config's last step "
            f"{total_steps} (max_steps={config.max_steps}); nothing was changed. Re-run with "
            f"max_steps >= {restored_step} (0: all {config.num_epochs} epochs), or use another "
            "--workdir."
        )
      train_iter.set_state(data_state)
      if restored_step > checkpointer.last_saved_step:  # taken from best/: checkpoints/ gets it
        checkpointer.save(restored_step, state, data_state)
    elif config.init_from:
      state = _start_from(config.init_from, model, tx, state, mesh, mode)
    if record is None:  # written once the checkpoints are known to fit
      run.write_record(
          runs.new_record(
              config, num_classes=spec.num_classes, image_shape=spec.image_shape, splits=splits
          )
      )
    hooks = [factory(config, model, spec, mesh, run) for factory in hooks]
    return _loop(
        config,
        run,
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
        splits,
        hooks,
    )
  finally:
    train_iter.close()
    checkpointer.close()  # waits for every save in flight, on every exit path


def _loop(
    config,
    run,
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
    splits,
    hooks,
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
  if mode == "pmap":
    state = flax.jax_utils.replicate(state)

  logger = MetricsLogger(run)
  if is_main:
    print(
        f"codajax: training {config.model.name} on {config.dataset} "
        f"({jax.device_count()} devices, {jax.process_count()} processes, mode {mode}); "
        f"steps {start_step}→{total_steps}; work directory {run}",
        flush=True,
    )

  def unreplicated(state):
    return flax.jax_utils.unreplicate(state) if mode == "pmap" else state

  def run_eval(step, state):
    eval_metrics = evaluate(eval_step, unreplicated(state).params, make_eval_loader(), mesh)
    logger.write(step, {**eval_metrics, "eval/split": splits["validation"]})
    if is_main:
      bar.write(
          f"step {step} (epoch {step / steps_per_epoch:.2f}): validation accuracy "
          f"{eval_metrics['eval/accuracy']:.4f}, top-5 {eval_metrics['eval/top5']:.4f}"
      )
    checkpointer.save_best(step, unreplicated(state), train_iter.get_state(), eval_metrics)
    return eval_metrics

  def is_eval_step(step):
    epochs, rest = divmod(step, steps_per_epoch)
    return step == total_steps or (rest == 0 and epochs % config.eval_every_epochs == 0)

  def catch_up(step, state):
    """At a resumed eval step: the eval a stopped run missed, or the ``best/`` save it lost."""
    evals = _logged_evals(run)
    if step not in evals:
      return run_eval(step, state)
    if _needs_best_offer(evals, step, checkpointer.best_step):
      if is_main:
        bar.write(
            f"codajax: {run.best_dir} lacks step {step} (its save was cut short); saving it "
            f"again from checkpoint {step}."
        )
      checkpointer.save_best(step, unreplicated(state), train_iter.get_state(), evals[step])
    return evals[step]

  def recreate_best(error):
    """``best/`` holds no restorable checkpoint: the final state (step ``step``) replaces it."""
    if is_main:
      bar.write(f"WARNING: {error} Re-creating {run.best_dir} from step {step}.")
    metrics = {BEST_METRIC: last_metrics.get(BEST_METRIC, 0.0)}
    checkpointer.replace_best(step, unreplicated(state), train_iter.get_state(), metrics)

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
      if 0 < start_step <= total_steps and is_eval_step(start_step):
        last_metrics.update(catch_up(start_step, state))
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
          summary = _summarise(pending, step, run)  # raises before a bad state is saved
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
        for hook in hooks:
          if hook.due(step, last) and not preempted:
            hook.run(step, unreplicated(state).params, logger, last=last)
        if preempted:
          if is_main:
            bar.write(
                f"{preemption.signal_name}: saved step {step} to {run}; re-run the "
                "same command to resume."
            )
          last_metrics["interrupted"] = preemption.signal_name
          break
      if step == total_steps and "interrupted" not in last_metrics:
        test_metrics = _test_eval(
            eval_step,
            unreplicated(state).params,
            make_eval_loader,
            mesh,
            checkpointer,
            run,
            recreate_best,
        )
        logger.write(step, test_metrics)
        last_metrics.update(test_metrics)
  finally:
    bar.close()
    logger.close()
  last_metrics["step"] = step
  return last_metrics


def _test_eval(
    eval_step, params, make_eval_loader, mesh, checkpointer, run, recreate_best
) -> dict[str, Any]:
  """Test accuracy of the final model and of the best-on-validation model (``best/``).

  Returns ``{"test/accuracy_final", "test/top5_final", "test/accuracy_best",
  "test/top5_best", "test/best_step", "test/count"}``; the test split is read only here.
  ``recreate_best(error)`` is called when ``best/`` holds no restorable checkpoint.
  """
  final = evaluate(eval_step, params, make_eval_loader("test"), mesh)
  checkpointer.wait()
  try:
    best_params, best_step = runs.restore_params(run, "best", like=params)
  except FileNotFoundError as error:
    recreate_best(error)
    best_params, best_step = runs.restore_params(run, "best", like=params)
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


def _summarise(pending: list[dict[str, jax.Array]], step: int, run: RunDir) -> dict[str, float]:
  """Means of the pending step metrics; raises on NaN/Inf (nothing bad gets saved)."""
  summary = {k: float(np.mean([_host_scalar(m[k]) for m in pending])) for k in pending[0]}
  if not all(math.isfinite(v) for v in summary.values()):
    raise TrainingError(
        f"Non-finite training metrics at step {step}: {summary}. Stopped; the last good "
        f"checkpoint in {run.checkpoints_dir()} is kept (lower the learning rate, or train in "
        f"float32)."
    )
  return summary


def _abstract(x):
  """``ShapeDtypeStruct`` with sharding, so restores land on the current devices."""
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
