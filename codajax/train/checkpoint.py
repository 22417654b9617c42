"""Orbax checkpoints: the last K and the best, exact resume, corrupt-checkpoint fallback.

Layout of a work directory::

    workdir/config.json          the run's config (a resumed run must match its model/data)
    workdir/checkpoints/<step>/  {state: TrainState, data: iterator state (JSON)}, last K
    workdir/best/<step>/         the same, for the best eval accuracy so far
    workdir/corrupt/             checkpoints that failed to restore, moved aside
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

BEST_METRIC = "eval/accuracy"


def _manager(directory: str, max_to_keep: int, best: bool) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      enable_async_checkpointing=True,
      best_fn=(lambda metrics: metrics[BEST_METRIC]) if best else None,
      best_mode="max",
      create=True,
  )
  return ocp.CheckpointManager(directory, item_names=("state", "data"), options=options)


def _save_args(state: Any, data_state: dict | None) -> ocp.args.Composite:
  return ocp.args.Composite(state=ocp.args.StandardSave(state),
                            data=ocp.args.JsonSave(data_state or {}))


class Checkpointer:
  """Asynchronous saves of ``(TrainState, data iterator state)``; restores with fallback."""

  def __init__(self, workdir: str, keep: int = 2):
    self.workdir = os.path.abspath(workdir)
    self.latest = _manager(os.path.join(self.workdir, "checkpoints"), keep, best=False)
    self.best = _manager(os.path.join(self.workdir, "best"), 1, best=True)
    # Saves are collective: every process must take the same decision, so it is
    # taken from these counters (read while the directories are quiescent), never
    # from a directory listing that a peer's in-flight save may be changing.
    self._last_saved = self.latest.latest_step() or -1
    self._last_best = self.best.latest_step() or -1

  def save(self, step: int, state: Any, data_state: dict | None) -> None:
    """Starts an asynchronous save of ``state`` at ``step`` (no-op if already saved)."""
    if step > self._last_saved:
      self.best.wait_until_finished()   # one save in flight at a time (multi-host barriers)
      self.latest.save(step, args=_save_args(state, data_state))
      self._last_saved = step

  def save_best(self, step: int, state: Any, data_state: dict | None, metrics: dict) -> None:
    """Offers ``state`` to ``best/``, kept if ``metrics[eval/accuracy]`` beats the best so far."""
    if step > self._last_best:
      self.latest.wait_until_finished()
      self.best.save(step, args=_save_args(state, data_state),
                     metrics={BEST_METRIC: float(metrics[BEST_METRIC])})
      self._last_best = step

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict, int] | None:
    """The newest restorable ``(state, data_state, step)``, or None if there is none.

    A checkpoint that fails to restore (partial or corrupt) is moved to
    ``workdir/corrupt/`` with a warning and the one before it is tried.
    """
    for step in sorted(self.latest.all_steps(), reverse=True):
      try:
        restored = self.latest.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        return restored["state"], dict(restored["data"] or {}), step
      except Exception as error:  # orbax raises many types for damaged files
        logging.warning("Checkpoint at step %d could not be restored (%s: %s); moving it "
                        "aside and trying the previous one.", step, type(error).__name__, error)
        print(f"WARNING: checkpoint {step} is damaged ({type(error).__name__}); using an "
              "earlier one.", flush=True)
        self._move_aside(step)
        self._last_saved = self.latest.latest_step() or -1
    return None

  def _move_aside(self, step: int) -> None:
    source = os.path.join(self.latest.directory, str(step))
    if jax.process_index() == 0 and os.path.exists(source):
      target = os.path.join(self.workdir, "corrupt", f"{step}-{int(time.time())}")
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(source, target)
    multihost_utils.sync_global_devices(f"codajax_move_aside_{step}")
    self.latest.reload()

  def wait(self) -> None:
    """Blocks until pending saves are written."""
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.wait()
    self.latest.close()
    self.best.close()


def restore_params(workdir: str, which: str = "latest") -> tuple[dict, int]:
  """``(params, step)`` of a work directory's latest or best checkpoint, as host arrays.

  Needs no knowledge of the optimizer: the state is restored as a plain pytree.
  """
  if which not in ("latest", "best"):
    raise ValueError(f"which must be 'latest' or 'best', got {which!r}.")
  directory = os.path.join(os.path.abspath(workdir), "checkpoints" if which == "latest" else "best")
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"No checkpoints in {workdir} (looked for {directory}); train first: "
                            f"python train.py --workdir {workdir}")
  manager = ocp.CheckpointManager(
      directory, item_names=("state", "data"),
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "data": ocp.JsonCheckpointHandler()})
  try:
    step = manager.best_step() if which == "best" else manager.latest_step()
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"{directory} holds no finished checkpoint.")
    # Restore onto this process's first device, whatever topology saved it.
    on_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=on_device),
        manager.item_metadata(step)["state"])
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))
  finally:
    manager.close()
  return restored["state"]["params"], int(step)
