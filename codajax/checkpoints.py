"""Orbax checkpoints of a run: the last K and the best, exact resume, damaged-checkpoint fallback.

The directories are those of :class:`codajax.runs.RunDir` (``checkpoints/``, ``best/``,
``corrupt/``); each step holds ``{state: TrainState, data: iterator state (JSON)}``.

Restoring tells two failures apart:

* **incompatible** – the checkpoint decodes but holds another structure (a changed
  ``virtual_batch_size``, another model, another loader): :class:`IncompatibleCheckpointError`,
  nothing is moved (the checkpoints are good; the config is what changed);
* **damaged** – the checkpoint's files do not decode, an array differs from the CRC-32 recorded
  when it was saved (silent corruption, see :func:`array_checksums`), or its data state is
  unusable (e.g. ``data/metadata`` = ``{}``): it is moved to ``corrupt/`` and the previous one
  is tried; when ``checkpoints/`` holds none, ``best/`` is a resume source too.

The structure is compared from the checkpoint's metadata before any array is read.
Transient I/O errors (EIO, EAGAIN, timeouts, ...) are retried, and never taken for damage.
On several hosts every verdict is agreed on (the worst one wins) before anything moves.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
import zlib
from typing import TYPE_CHECKING, Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from codajax import storage

if TYPE_CHECKING:  # the type only: codajax.runs imports this module
  from codajax.runs import RunDir

BEST_METRIC = "eval/accuracy"
# errno values of I/O errors that may go away on a retry (network file systems, busy disks).
TRANSIENT_ERRNOS = frozenset(
    {
        errno.EIO,
        errno.EAGAIN,
        errno.EBUSY,
        errno.ETIMEDOUT,
        errno.EINTR,
        errno.ESTALE,
        errno.ECONNRESET,
        errno.ENETDOWN,
    }
)
_TRANSIENT_MARKERS = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED: Too many")
RETRIES = 3
RETRY_DELAY_S = 0.5
# The key of the per-array CRC-32s in a checkpoint's custom metadata (``_CHECKPOINT_METADATA``).
CHECKSUMS_KEY = "codajax_crc32"

_OK, _DAMAGED, _IO, _INCOMPATIBLE = 0, 1, 2, 3

Path = tuple[str, ...]


class TrainingError(RuntimeError):
  """A run that cannot go on (non-finite loss, mismatching work directory, ...)."""


class IncompatibleCheckpointError(TrainingError):
  """A checkpoint that decodes but does not fit the expected state (nothing was moved)."""


class CheckpointIOError(TrainingError):
  """Reading a checkpoint kept failing with transient I/O errors (nothing was moved)."""


class _Damaged(Exception):
  """Internal: a checkpoint whose contents are unusable."""


# ------------------------------------------------------------------------------ tree paths


def _key_name(key: Any) -> str:
  for attribute in ("key", "name", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def tree_paths(tree: Any) -> dict[Path, Any]:
  """``{("params", "layer_0", "A"): leaf, ...}``: leaves by normalised path.

  Dict keys, dataclass/namedtuple fields and sequence indices all become strings, so a
  ``TrainState`` and the nested dicts/lists orbax saves it as have the same paths.
  """
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {tuple(_key_name(k) for k in path): leaf for path, leaf in leaves}


def _signature(leaf: Any) -> tuple[tuple[int, ...], str]:
  return tuple(leaf.shape), str(np.dtype(leaf.dtype))


def structure_differences(
    saved: dict[Path, Any], expected: dict[Path, Any], limit: int = 4
) -> list[str]:
  """Human-readable differences between two ``tree_paths`` maps."""
  diffs = []
  missing = sorted(set(expected) - set(saved))
  extra = sorted(set(saved) - set(expected))
  if missing:
    diffs.append(
        f"{len(missing)} arrays missing from the checkpoint (e.g. "
        f"{', '.join('/'.join(p) for p in missing[:limit])})"
    )
  if extra:
    diffs.append(
        f"{len(extra)} arrays the config does not have (e.g. "
        f"{', '.join('/'.join(p) for p in extra[:limit])})"
    )
  changed = [
      p
      for p in sorted(set(saved) & set(expected))
      if _signature(saved[p]) != _signature(expected[p])
  ]
  for p in changed[:limit]:
    (s_shape, s_dtype), (e_shape, e_dtype) = _signature(saved[p]), _signature(expected[p])
    diffs.append(
        f"{'/'.join(p)} is {s_dtype}{list(s_shape)} in the checkpoint, "
        f"{e_dtype}{list(e_shape)} here"
    )
  if len(changed) > limit:
    diffs.append(f"and {len(changed) - limit} more arrays of another shape or dtype")
  return diffs


def _rebuild(restored: Any, expected: Any) -> Any:
  """The restored leaves arranged as ``expected`` (its pytree type)."""
  by_path = tree_paths(restored)
  paths = list(tree_paths(expected))
  return jax.tree_util.tree_unflatten(
      jax.tree_util.tree_structure(expected), [by_path[p] for p in paths]
  )


def _target_for(saved_metadata: Any, expected: Any) -> Any:
  """An abstract restore target in the checkpoint's own structure, with the expected leaves'
  dtypes and shardings."""
  expected_leaves = tree_paths(expected)

  def leaf(path, _):
    return expected_leaves[tuple(_key_name(k) for k in path)]

  return jax.tree_util.tree_map_with_path(leaf, saved_metadata)


# ------------------------------------------------------------------------------ checksums


def _host_value(leaf: Any) -> np.ndarray | None:
  """The full value of ``leaf`` on this host, or None when no process holds all of it."""
  if isinstance(leaf, jax.Array):
    if leaf.is_fully_addressable:
      return np.asarray(leaf)
    if leaf.is_fully_replicated:
      return np.asarray(leaf.addressable_data(0))
    return None
  return np.asarray(leaf)


def crc32(value: np.ndarray) -> str:
  """The CRC-32 of an array's bytes (C order) as 8 hex digits."""
  data = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
  return f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"


def array_checksums(tree: Any) -> dict[str, str]:
  """``{"params/layer_0/A": crc32, ...}``: the CRC-32 of every leaf's host value.

  Training states are replicated on every process (each holds the full arrays), so process 0
  hashes its own copy: one device-to-host copy per save, no collective. A leaf that no
  process holds whole (sharded over hosts) is left out (not verified).
  """
  sums = {}
  for path, leaf in tree_paths(tree).items():
    value = _host_value(leaf)
    if value is not None:
      sums["/".join(path)] = crc32(value)
  return sums


def checksum_mismatches(recorded: dict[str, str], tree: Any, prefix: str = "") -> list[str]:
  """Paths of ``tree``'s leaves whose CRC-32 differs from ``recorded`` (keys ``prefix + path``).

  Leaves without a recorded sum (checkpoints written before sums were recorded) are not
  checked."""
  bad = []
  for path, leaf in tree_paths(tree).items():
    key = prefix + "/".join(path)
    value = _host_value(leaf) if key in recorded else None
    if value is not None and crc32(value) != recorded[key]:
      bad.append(key)
  return bad


def _recorded_checksums(manager: ocp.CheckpointManager, step: int, where: str) -> dict[str, str]:
  """The sums saved with ``step`` ({} when it has none)."""
  custom = with_retries(lambda: manager.metadata(step).custom_metadata, where) or {}
  sums = custom.get(CHECKSUMS_KEY) if isinstance(custom, dict) else None
  return sums if isinstance(sums, dict) else {}


def _corruption(recorded: dict[str, str], tree: Any, prefix: str = "") -> str | None:
  bad = checksum_mismatches(recorded, tree, prefix)
  if not bad:
    return None
  return (
      f"{len(bad)} arrays differ from the checksums recorded when it was saved (e.g. "
      f"{', '.join(bad[:3])}): its files are corrupt"
  )


# ------------------------------------------------------------------------------ errors, retries


def is_transient(error: BaseException) -> bool:
  """Whether ``error`` is an I/O error worth retrying (not evidence of damage)."""
  if isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS:
    return True
  text = str(error)
  return any(marker in text for marker in _TRANSIENT_MARKERS)


def with_retries(
    fn: Callable[[], Any], what: str, retries: int = RETRIES, delay_s: float = RETRY_DELAY_S
) -> Any:
  """``fn()``, retried ``retries`` times on transient I/O errors (doubling delays)."""
  for attempt in range(retries + 1):
    try:
      return fn()
    except Exception as error:  # noqa: BLE001  (classified below)
      if not is_transient(error):
        raise
      if attempt == retries:
        raise CheckpointIOError(
            f"Reading {what} failed {retries + 1} times with I/O errors "
            f"({type(error).__name__}: {error}); nothing was moved. Check "
            "the file system and run again."
        ) from error
      logging.warning("Transient I/O error reading %s (%s); retrying.", what, error)
      time.sleep(delay_s * 2**attempt)
  raise AssertionError("unreachable")


def _agree(verdict: int) -> int:
  """The worst verdict over all processes (every host then acts the same)."""
  if jax.process_count() == 1:
    return verdict
  return int(np.max(multihost_utils.process_allgather(np.array(verdict, np.int32))))


def data_state_problem(data_state: Any, expected: dict | None) -> tuple[int, str] | None:
  """``None`` if ``data_state`` is a usable iterator state for a loader whose fresh state
  is ``expected``; else ``(_DAMAGED or _INCOMPATIBLE, why)``."""
  if expected is None:
    return None
  if not isinstance(data_state, dict) or set(data_state) != set(expected):
    keys = sorted(data_state) if isinstance(data_state, dict) else type(data_state).__name__
    return _DAMAGED, f"its data state has keys {keys}, expected {sorted(expected)}"
  position = data_state.get("next_batch")
  if not isinstance(position, int) or isinstance(position, bool) or position < 0:
    return _DAMAGED, f"its data position next_batch={position!r} is not an int >= 0"
  changed = {
      k: (data_state[k], v) for k, v in expected.items() if k != "next_batch" and data_state[k] != v
  }
  if changed:
    listed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
    return _INCOMPATIBLE, f"its data loader differs ({listed})"
  return None


# ------------------------------------------------------------------------------ managers


def _handlers() -> dict[str, Any]:
  return {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}


def _manager(directory: str, max_to_keep: int, best: bool) -> ocp.CheckpointManager:
  """A manager for the run's own saves (the run holds the lock: a ``*.orbax-checkpoint-tmp``
  left there is an interrupted save, removed)."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      enable_async_checkpointing=True,
      best_fn=(lambda metrics: metrics[BEST_METRIC]) if best else None,
      best_mode="max",
      create=True,
      cleanup_tmp_directories=True,
  )
  return ocp.CheckpointManager(
      directory, item_names=("state", "data"), options=options, item_handlers=_handlers()
  )


def _save_args(state: Any, data_state: dict | None) -> ocp.args.Composite:
  return ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state or {})
  )


def _save_metadata(state: Any) -> dict[str, Any] | None:
  """The custom metadata of a save: the state's checksums (process 0 writes the metadata)."""
  if jax.process_index() != 0:
    return None
  return {CHECKSUMS_KEY: array_checksums(state)}


def _read(
    manager: ocp.CheckpointManager,
    step: int,
    expected_state: Any,
    expected_data: dict | None,
    with_data: bool,
) -> tuple[int, Any]:
  """``(verdict, payload)`` for one step: ``(_OK, (state, data))``, or a verdict and why."""
  where = storage.join(manager.directory, str(step))
  try:
    metadata = with_retries(lambda: manager.item_metadata(step), where)
    saved_tree = metadata["state"] if metadata is not None else None
    saved = tree_paths(saved_tree) if saved_tree is not None else {}
    if not saved or not all(hasattr(leaf, "shape") for leaf in saved.values()):
      raise _Damaged("its state metadata is missing or unreadable")
  except CheckpointIOError as error:
    return _IO, str(error)
  except Exception as error:  # noqa: BLE001  (orbax raises many types for damaged files)
    return _DAMAGED, f"{type(error).__name__}: {error}"
  expected = tree_paths(expected_state)
  diffs = structure_differences(saved, expected)
  if diffs:
    return _INCOMPATIBLE, "; ".join(diffs)
  items = {"state": ocp.args.StandardRestore(_target_for(saved_tree, expected_state))}
  if with_data:
    items["data"] = ocp.args.JsonRestore()
  try:
    restored = with_retries(lambda: manager.restore(step, args=ocp.args.Composite(**items)), where)
    state = _rebuild(restored["state"], expected_state)
    data_state = restored["data"] if with_data else None
    corruption = _corruption(_recorded_checksums(manager, step, where), restored["state"])
  except CheckpointIOError as error:
    return _IO, str(error)
  except Exception as error:  # noqa: BLE001
    return _DAMAGED, f"{type(error).__name__}: {error}"
  if corruption is not None:
    return _DAMAGED, corruption
  problem = data_state_problem(data_state, expected_data) if with_data else None
  if problem is not None:
    return problem
  return _OK, (state, data_state)


class Checkpointer:
  """Asynchronous saves of ``(TrainState, data iterator state)``; restores with fallback."""

  def __init__(self, run: RunDir, keep: int = 2):
    self.run = run
    self.latest = _manager(run.checkpoints_dir("latest"), keep, best=False)
    self.best = _manager(run.checkpoints_dir("best"), 1, best=True)
    # Saves are collective: every process must take the same decision, so it is
    # taken from these counters (read while the directories are quiescent), never
    # from a directory listing that a peer's in-flight save may be changing.
    self._last_saved = self.latest.latest_step() or -1
    self._last_best = self.best.latest_step() or -1
    self._failed = False

  @property
  def last_saved_step(self) -> int:
    """The newest step saved or being saved (-1: none)."""
    return self._last_saved

  @property
  def best_step(self) -> int:
    """The step ``best/`` holds or is saving (-1: none)."""
    return self._last_best

  def save(self, step: int, state: Any, data_state: dict | None) -> None:
    """Starts an asynchronous save of ``state`` at ``step`` (no-op if already saved).

    The CRC-32 of every array (:func:`array_checksums`) is recorded with it."""
    if step > self._last_saved:
      self._waited(self.best)  # one save in flight at a time (multi-host barriers)
      self._started(
          lambda: self.latest.save(
              step, args=_save_args(state, data_state), custom_metadata=_save_metadata(state)
          )
      )
      self._last_saved = step

  def save_best(self, step: int, state: Any, data_state: dict | None, metrics: dict) -> None:
    """Offers ``state`` to ``best/``, kept if ``metrics[eval/accuracy]`` beats the best so far."""
    if step > self._last_best:
      self._waited(self.latest)
      self._started(
          lambda: self.best.save(
              step,
              args=_save_args(state, data_state),
              metrics={BEST_METRIC: float(metrics[BEST_METRIC])},
              custom_metadata=_save_metadata(state),
          )
      )
      self._last_best = step

  def replace_best(self, step: int, state: Any, data_state: dict | None, metrics: dict) -> None:
    """Moves every step of ``best/`` to ``corrupt/`` and saves ``state`` there instead (for a
    ``best/`` that holds no restorable checkpoint); waits for the save."""
    self._waited(self.best)
    for old in self.best.all_steps():
      self._move_aside(self.best, old, prefix="best-")
    self._last_best = -1
    self.save_best(step, state, data_state, metrics)
    self.wait()

  def _started(self, save: Callable[[], Any]) -> None:
    try:
      save()
    except BaseException:
      self._failed = True
      raise

  def _waited(self, manager: ocp.CheckpointManager) -> None:
    try:
      manager.wait_until_finished()
    except BaseException:
      self._failed = True
      raise

  def _candidates(self) -> list[tuple[ocp.CheckpointManager, int]]:
    """``(manager, step)`` to resume from, newest first; ``checkpoints/`` before ``best/``."""
    found = [(self.latest, s) for s in self.latest.all_steps()]
    found += [(self.best, s) for s in self.best.all_steps()]
    return sorted(found, key=lambda c: (c[1], c[0] is self.latest), reverse=True)

  def restore_latest(
      self, abstract_state: Any, expected_data: dict | None = None
  ) -> tuple[Any, dict, int] | None:
    """The newest restorable ``(state, data_state, step)``, or None if there is none.

    Args:
      abstract_state: the expected state (``ShapeDtypeStruct`` leaves with shardings).
      expected_data: a fresh loader's ``get_state()``; the checkpoint's data state must
        have its keys and parameters (``next_batch`` may differ). None: not checked.

    Raises:
      IncompatibleCheckpointError: the newest checkpoint holds another structure or
        loader; nothing is moved.
      CheckpointIOError: reads kept failing with transient I/O errors; nothing is moved.

    A checkpoint that does not decode, fails its checksums or has an unusable data state is
    moved to ``corrupt/`` with a warning and the one before it is tried. ``best/`` (a full
    state too) is tried when ``checkpoints/`` has nothing newer; using it is said in one line.
    """
    for manager, step in self._candidates():
      verdict, payload = _read(manager, step, abstract_state, expected_data, with_data=True)
      verdict = _agree(verdict)
      where = storage.join(manager.directory, str(step))
      if verdict == _OK:
        state, data_state = payload
        if manager is self.best:
          print(
              f"codajax: no restorable checkpoint in {self.latest.directory} at or after step "
              f"{step}; resuming from {where} (the best-on-validation state, complete).",
              flush=True,
          )
        return state, dict(data_state), step
      if verdict == _INCOMPATIBLE:
        run_file = self.run.run_file
        source = f" ({run_file})" if storage.exists(run_file) else ""
        raise IncompatibleCheckpointError(
            f"Checkpoint {where} does not fit this config: {payload}. Nothing was moved. Resume "
            f"with the config that wrote it{source}, or use another --workdir."
        )
      if verdict == _IO:
        raise CheckpointIOError(
            payload
            if isinstance(payload, str)
            else f"Reading {where} failed with I/O errors on another host."
        )
      logging.warning(
          "Checkpoint %s is damaged (%s); moving it aside and trying the previous one.",
          where,
          payload,
      )
      print(
          f"WARNING: checkpoint {where} is damaged ({str(payload)[:200]}); moved to "
          f"{self.run.corrupt_dir()}, using an earlier one.",
          flush=True,
      )
      self._move_aside(manager, step, prefix="" if manager is self.latest else "best-")
    return None

  def _move_aside(self, manager: ocp.CheckpointManager, step: int, prefix: str = "") -> None:
    source = storage.join(manager.directory, str(step))
    if jax.process_index() == 0 and storage.exists(source):
      storage.move_tree(source, self.run.corrupt_dir(f"{prefix}{step}-{int(time.time())}"))
    multihost_utils.sync_global_devices(f"codajax_move_aside_{prefix}{step}")
    manager.reload()
    self._last_saved = self.latest.latest_step() or -1
    self._last_best = self.best.latest_step() or -1

  def wait(self) -> None:
    """Blocks until pending saves are written (both managers, even if one fails)."""
    try:
      self._waited(self.latest)
    finally:
      self._waited(self.best)

  def close(self) -> None:
    """Waits for pending saves, then releases the managers.

    After a failed save, orbax may leave threads waiting for a signal of the failed save
    (e.g. "directory created") that never comes; they are released so that the process can
    exit (they would keep it alive for orbax's barrier timeout)."""
    try:
      self.wait()
    finally:
      try:
        self.latest.close()
      finally:
        try:
          self.best.close()
        finally:
          if self._failed:
            release_orphaned_save_threads()


def release_orphaned_save_threads() -> int:
  """Cancels orbax's save threads still waiting for signals, and wakes them; their save has
  failed (call only once every manager's ``wait_until_finished`` has returned or raised).
  Returns how many were released; 0 with an orbax version without these internals."""
  try:
    from orbax.checkpoint._src.futures import future as orbax_future
  except ImportError:
    return 0
  thread_type = getattr(orbax_future, "_SignalingThread", None)
  set_signals = getattr(orbax_future, "set_signals", None)
  if thread_type is None or set_signals is None:
    return 0
  released = 0
  for thread in threading.enumerate():
    if not (isinstance(thread, thread_type) and thread.is_alive()):
      continue
    try:
      thread.cancel()  # sets the flag first; may then fail on the thread's closed event loop
    except RuntimeError:
      pass
    try:
      set_signals(thread._receive_signals, operation_id=thread._operation_id)  # noqa: SLF001
    except Exception as error:  # noqa: BLE001  (best effort: the exit is bounded elsewhere)
      logging.warning("Could not release an orbax save thread (%r).", error)
      continue
    threading.Thread.join(thread, timeout=5)  # the plain join: orbax's raises once cancelled
    released += not thread.is_alive()
  return released


def read_params(directory: str, best: bool = False, like: Any = None) -> tuple[dict, int]:
  """``(params, step)`` of the newest restorable checkpoint in ``directory``, as host arrays.

  Needs no knowledge of the optimizer: the state is restored as a plain pytree. A damaged
  newest checkpoint is skipped (with a warning, nothing moved: this is read-only) and the
  previous one is used, as ``train.py`` does.

  Args:
    directory: a checkpoint directory (``RunDir.checkpoints_dir(which)``).
    best: start from the manager's best step (``best/``) instead of the newest.
    like: optional expected params (arrays or ``ShapeDtypeStruct``s): the checkpoint must
      match it, else :class:`IncompatibleCheckpointError`.
  """
  manager = ocp.CheckpointManager(
      directory, item_names=("state", "data"), item_handlers=_handlers()
  )
  on_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  problems = []
  try:
    steps = sorted(manager.all_steps(), reverse=True)
    best_step = manager.best_step() if best else None
    if best_step is not None:
      steps = [best_step] + [s for s in steps if s != best_step]
    for step in steps:
      verdict, payload = _read_params(manager, step, like, on_device)
      if verdict == _OK:
        if problems:
          print(f"WARNING: {'; '.join(problems)}; using step {step}.", flush=True)
        return payload, int(step)
      if verdict == _INCOMPATIBLE:
        raise IncompatibleCheckpointError(
            f"Checkpoint {storage.join(directory, str(step))} does not fit the model: {payload}."
        )
      if verdict == _IO:
        raise CheckpointIOError(payload)
      problems.append(f"checkpoint {step} in {directory} is damaged ({str(payload)[:160]})")
  finally:
    manager.close()
  found = "; ".join(problems) if problems else "no finished checkpoint"
  raise FileNotFoundError(f"{directory} holds no restorable checkpoint ({found}).")


def _read_params(manager, step: int, like: Any, on_device) -> tuple[int, Any]:
  """``_read`` for the params alone, onto one device, shaped like ``like`` if given."""
  where = storage.join(manager.directory, str(step))
  try:
    metadata = with_retries(lambda: manager.item_metadata(step), where)
    saved_tree = metadata["state"] if metadata is not None else None
    saved = tree_paths(saved_tree) if saved_tree is not None else {}
    if not any(p[0] == "params" for p in saved) or not all(
        hasattr(leaf, "shape") for leaf in saved.values()
    ):
      raise _Damaged("its state metadata is missing or unreadable")
  except CheckpointIOError as error:
    return _IO, str(error)
  except Exception as error:  # noqa: BLE001
    return _DAMAGED, f"{type(error).__name__}: {error}"
  saved_params = {p[1:]: leaf for p, leaf in saved.items() if p[0] == "params"}
  if like is not None:
    diffs = structure_differences(saved_params, tree_paths(like))
    if diffs:
      return _INCOMPATIBLE, "; ".join(diffs)
  target = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=on_device), saved_tree
  )
  try:
    restored = with_retries(
        lambda: manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
        ),
        where,
    )
    params = restored["state"]["params"]
    corruption = _corruption(_recorded_checksums(manager, step, where), params, "params/")
  except CheckpointIOError as error:
    return _IO, str(error)
  except Exception as error:  # noqa: BLE001
    return _DAMAGED, f"{type(error).__name__}: {error}"
  if corruption is not None:
    return _DAMAGED, corruption
  if like is not None:
    params = _rebuild(params, like)
  return _OK, params
