"""What every evaluator shares: the context, batching, padding, sharding, gathering, programs.

An evaluator is a module of :mod:`codajax.evaluators` with a class ``Evaluator(**settings)`` whose
``run(ctx)`` yields ``(name, value)`` pairs (see :mod:`codajax.evaluators`). This module holds the
pieces they have in common:

* :class:`Context`: the model, its variables (replicated on the mesh), the dataset and the caches
  that outlive one evaluator (compiled programs; per-variables results such as test logits,
  localisation grids and attribution maps that several evaluators use);
* :func:`map_batches`: one jitted program over items in fixed-size, padded batches, each a global
  array sharded over the mesh, with the results gathered across processes
  (``multihost_utils.process_allgather``) once per call: no per-batch host round trip;
* :class:`Programs`: ahead-of-time compilation, once per program and input shape, with a count.

Every process loads the same host rows (``data.load_examples`` by index) and builds the same
global batch from them, so the results are identical on one process and on many.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from codajax import data, storage
from codajax import parallel


class EvaluationError(ValueError):
  """A request the evaluation cannot satisfy (no checkpoint, unknown method, no object masks)."""


# ------------------------------------------------------------------------------------ batching


def batch_slices(num: int, size: int) -> list[slice]:
  """Consecutive row ranges of at most ``size`` rows covering ``range(num)``."""
  return [slice(start, min(start + size, num)) for start in range(0, num, size)]


def pad_rows(array: np.ndarray, size: int) -> np.ndarray:
  """``array`` with its last row repeated up to ``size`` rows (fixed shapes: no recompiles)."""
  missing = size - len(array)
  if missing < 0:
    raise ValueError(f"{len(array)} rows do not fit a batch of {size}")
  return array if missing == 0 else np.concatenate([array, np.repeat(array[-1:], missing, 0)])


def device_batch_size(size: int, num_devices: int) -> int:
  """``size`` rounded up to a multiple of ``num_devices`` (at least one row per device)."""
  return max(num_devices, -(-size // num_devices) * num_devices)


def global_batch(arrays: Mapping[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """Host arrays, identical on every process, as global arrays split over the mesh's rows."""
  sharding = parallel.batch_sharding(mesh)
  return {
      k: jax.make_array_from_callback(v.shape, sharding, lambda index, v=v: v[index])
      for k, v in arrays.items()
  }


def gather(tree: Any) -> Any:
  """Every leaf (a global array, possibly spread over processes) as a numpy array on every process."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, jax.device_get(tree))
  return multihost_utils.process_allgather(tree, tiled=True)


def is_main_process() -> bool:
  """Whether this process writes files (process 0)."""
  return jax.process_index() == 0


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
  """``fn()`` and its wall time in seconds, waiting for the device."""
  start = time.perf_counter()
  result = jax.block_until_ready(fn())
  return result, time.perf_counter() - start


# ------------------------------------------------------------------------------------ programs


def _spec(x) -> Any:
  return (tuple(x.shape), str(x.dtype), getattr(x, "sharding", None))


class Programs:
  """Jitted functions compiled ahead of time once per (label, input shapes); counts compiles.

  ``get(label, fn, *args)`` returns the compiled executable for ``args``; a label names one
  function (the first ``fn`` given for it is kept).
  """

  def __init__(self):
    self._functions: dict[str, Callable] = {}
    self._compiled: dict[tuple, Any] = {}
    self.counts: dict[str, int] = {}
    self.seconds: dict[str, float] = {}

  def get(self, label: str, fn: Callable, *args) -> Any:
    """The executable of ``jax.jit(fn)`` for arguments shaped like ``args`` (compiles once)."""
    leaves, treedef = jax.tree.flatten(args)
    key = (label, treedef, tuple(_spec(x) for x in leaves))
    if key not in self._compiled:
      jitted = self._functions.setdefault(label, jax.jit(fn))
      start = time.perf_counter()
      self._compiled[key] = jitted.lower(*args).compile()
      self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start
      self.counts[label] = self.counts.get(label, 0) + 1
    return self._compiled[key]

  def cached(self, label: str, make: Callable[[], Any]) -> Any:
    """``make()`` once per label (e.g. a jitted step kept across evaluations)."""
    if label not in self._functions:
      self._functions[label] = make()
    return self._functions[label]


# ------------------------------------------------------------------------------------- progress


class Progress:
  """One progress bar over every batch of the whole job (process 0 shows it)."""

  def __init__(self, total: int = 0, enabled: bool = True):
    self.bar = tqdm(
        total=total or None,
        unit="batch",
        desc="eval",
        dynamic_ncols=True,
        disable=not (enabled and is_main_process()),
    )

  def start(self, label: str, batches: int, counted: bool) -> None:
    """A unit of ``batches`` begins; adds them to the total unless ``counted`` already."""
    if not counted:
      self.bar.total = (self.bar.total or 0) + batches
      self.bar.refresh()
    self.bar.set_description(f"eval {label}")

  def update(self, count: int = 1) -> None:
    self.bar.update(count)

  def close(self) -> None:
    self.bar.close()


# -------------------------------------------------------------------------------------- context


@dataclasses.dataclass
class Context:
  """What a run of evaluators shares.

  ``variables`` are replicated on ``mesh``; ``memo`` caches computations that depend on them
  (test logits, grids, examples; :meth:`memoized`, reset by :meth:`with_variables`), while what an
  evaluator measured travels as its ``run``'s return value; ``programs`` outlives them
  (compiled once for a whole training run).
  ``probe``: evaluators run each batched unit on its first batch only (see :func:`probe_job`).
  """

  model: Any
  variables: Any
  spec: data.DatasetSpec
  data_dir: str | None
  mesh: Any
  info: Any  # methods.ModelInfo
  loss: str = "bce"
  eval_batch_size: int = 256
  out: str | None = None
  programs: Programs = dataclasses.field(default_factory=Programs)
  memo: dict = dataclasses.field(default_factory=dict)
  progress: Progress | None = None
  probe: bool = False
  first_batches: dict = dataclasses.field(default_factory=dict)
  plan: dict = dataclasses.field(default_factory=dict)  # label -> (batches, seconds of one)

  @property
  def split(self) -> str:
    return self.spec.test_split

  @property
  def num_test(self) -> int:
    return self.spec.split_sizes[self.spec.test_split]

  def with_variables(self, variables: Any) -> "Context":
    """The same context for other variables: compiled programs kept, results forgotten."""
    return dataclasses.replace(self, variables=variables, memo={}, first_batches={}, plan={})

  def memoized(self, key: Any, compute: Callable[[], Any]) -> Any:
    """``compute()`` once per key and variables."""
    if key not in self.memo:
      self.memo[key] = compute()
    return self.memo[key]

  def load(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Test examples by index (every process loads the same rows)."""
    return data.load_examples(self.spec.name, self.split, data_dir=self.data_dir, indices=indices)

  def output_path(self, name: str) -> str | None:
    """``out/name`` (a local path or URI; directory created), or ``None`` when there is no
    output directory."""
    if not self.out:
      return None
    if is_main_process():
      storage.makedirs(self.out)
    return storage.join(self.out, name)


FIRST = "first_"


def map_batches(
    ctx: Context,
    label: str,
    fn: Callable,
    load: Callable[[np.ndarray], Mapping],
    num: int,
    batch_size: int,
    keys: Sequence[str],
    *,
    truncate: bool = True,
    unit: str | None = None,
) -> Any:
  """``fn(variables, *batch[keys])`` over items ``0..num-1``; the outputs gathered, ``num`` rows.

  Args:
    ctx: the context (variables, mesh, programs, progress).
    label: names the program (compiled once per input shape) and the progress unit.
    fn: ``(variables, *arrays (B, ...)) -> pytree of (B, ...)`` arrays.
    load: item indices (b,) -> host arrays with those rows (identical on every process).
    num: items.
    batch_size: rows per call, rounded up to the device count; the last batch is padded.
    keys: which arrays of ``load``'s result ``fn`` takes, in order.
    truncate: in a probe (``ctx.probe``), run the first batch only (rows of it are returned).
    unit: names this pass for the estimate and the reuse of its probed first batch (default:
      ``label``; give one when several passes share a program).

  Returns:
    The outputs as numpy arrays with ``num`` rows (in a truncated probe: the first batch's rows).
    A dict output's ``first_*`` entries are gathered from the first batch only (its rows).
  """
  size = device_batch_size(batch_size, ctx.mesh.devices.size)
  slices = batch_slices(num, size)
  if not slices:
    return None
  probing = ctx.probe and truncate
  unit = unit or label
  if ctx.progress is not None:
    ctx.progress.start(
        unit, 1 if probing else len(slices), counted=not probing and unit in ctx.plan
    )
  outputs, rows_done = [], 0
  for index, rows in enumerate(slices):
    if probing and index > 0:
      break
    cached = ctx.first_batches.pop(unit, None) if index == 0 and not probing else None
    if cached is None:
      host = load(np.arange(rows.start, rows.stop))
      batch = global_batch({k: pad_rows(np.asarray(host[k]), size) for k in keys}, ctx.mesh)
      args = (ctx.variables, *[batch[k] for k in keys])
      program = ctx.programs.get(label, fn, *args)
      if probing:
        cached, seconds = timed(lambda: program(*args))
        ctx.plan[unit] = (len(slices), seconds)
        ctx.first_batches[unit] = cached
      else:
        cached = program(*args)
    outputs.append(cached)
    rows_done = rows.stop
    if ctx.progress is not None:
      ctx.progress.update()
  first = {}
  if isinstance(outputs[0], Mapping):  # "first_*" outputs: kept from the first batch only
    first = {k: v for k, v in outputs[0].items() if k.startswith(FIRST)}
    outputs = [{k: v for k, v in out.items() if not k.startswith(FIRST)} for out in outputs]
  gathered, first = gather((outputs, first))
  rows_first = slices[0].stop
  result = jax.tree.map(lambda *parts: np.concatenate(parts)[:rows_done], *gathered)
  return {**result, **{k: v[:rows_first] for k, v in first.items()}} if first else result


def rows_of(arrays: Mapping[str, np.ndarray]) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
  """A ``load`` for :func:`map_batches` that takes rows of in-memory arrays."""
  return lambda indices: {k: v[indices] for k, v in arrays.items()}


def test_examples(
    ctx: Context, indices: np.ndarray
) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
  """A ``load`` for :func:`map_batches`: item i is test example ``indices[i]`` (read on demand)."""
  return lambda rows: ctx.load(indices[rows])


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
  """``items`` in consecutive pieces of ``size``."""
  for start in range(0, len(items), size):
    yield items[start : start + size]
