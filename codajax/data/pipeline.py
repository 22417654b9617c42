"""Grain input pipelines over TFDS array_record data sources.

One epoch of ``train_loader`` is a permutation of the split (grain's index
shuffle, seeded from ``(seed, epoch)``) cut into global batches of
``global_batch_size`` consecutive examples; the examples past the last full
global batch are dropped. Process p of n gets rows ``[p*b, (p+1)*b)`` of every
global batch (``b = global_batch_size // n``), so the processes' shards are
disjoint and cover the epoch, and the global batches do not depend on n.
Augmentation randomness is seeded per (seed, epoch, position in the epoch), so it
does not depend on n or on the number of worker processes either.

Grain does the index work (epoch shuffles, sharding, batching, prefetching,
worker processes); each batch of records is then read with one batched
``tfds`` data-source read (``__getitems__``), about 4x cheaper per record than
the record-by-record reads of grain's ``MapDataset.batch``.

The iterator state is the number of global batches consumed (plus the
parameters it is only valid for): a resumed iterator rebuilds the pipeline from
that batch on and yields exactly what the original would have, with any
``worker_count`` and any number of processes.

``eval_loader`` walks the split once in dataset order in global batches; the
last one is padded (copies of real examples with ``valid=False``), so every
process yields the same number of batches.
"""

from __future__ import annotations

import functools
import os
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np
from absl import flags

from codajax.data import augment, catalog

Batch = dict[str, np.ndarray]

# Threads that read and transform batches inside each (main or worker) process,
# and how many finished batches each process keeps ahead.
READ_THREADS = 2
PREFETCH_BATCHES = 4


def _process_shard(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  """``(process_index, process_count)``, defaulting to JAX's (imported lazily: worker processes never need it)."""
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top

    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(
        f"Need 0 <= process_index < process_count, got {process_index} of {process_count}."
    )
  return process_index, process_count


def _local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(
        f"global_batch_size ({global_batch_size}) must be a positive multiple of the number of "
        f"processes ({process_count})."
    )
  return global_batch_size // process_count


def derived_seed(seed: int, purpose: str) -> int:
  """A 32-bit seed for one random stream of the pipeline (``purpose`` e.g. ``"shuffle"``).

  Hashing keeps nearby user seeds unrelated (grain reshuffles epoch e with
  ``seed + e``, so raw seeds 0 and 1 would give shifted copies of each other).
  """
  if seed < 0:
    raise ValueError(f"seed must be >= 0, got {seed}.")
  return int(np.random.SeedSequence([seed, zlib.crc32(purpose.encode())]).generate_state(1)[0])


def example_rng(seed: int, position: int) -> np.random.Generator:
  """The generator of the example at ``position`` of the (epoch-concatenated) training stream."""
  return np.random.default_rng([seed, position])


def transform_example(
    example: dict[str, Any],
    *,
    prep: augment.Preprocessing,
    image_key: str,
    label_key: str,
    mask_key: str | None = None,
    rng: np.random.Generator | None = None,
) -> Batch:
  """One stored example -> ``{"image": uint8 (H, W, C), "label": int32 ()}``.

  With ``rng`` the training augmentation is applied, else the eval transform; with
  ``mask_key`` (datasets whose eval transform is the identity) also ``"object_mask": uint8 (H, W)``.
  """
  image = example[image_key]
  out = {
      "image": augment.eval_image(image, prep)
      if rng is None
      else augment.train_image(image, prep, rng),
      "label": np.int32(example[label_key]),
  }
  if mask_key is not None:
    out["object_mask"] = np.asarray(example[mask_key], np.uint8)
  return out


def _stack(rows: Sequence[Batch]) -> Batch:
  return {key: np.stack([row[key] for row in rows]) for key in rows[0]}


def _position_and_index(position: int, index: int) -> tuple[int, int]:
  return position, index


def read_train_batch(
    positions_and_indices: tuple[np.ndarray, np.ndarray],
    *,
    source: Sequence[dict[str, Any]],
    augment_seed: int | None,
    **keys: Any,
) -> Batch:
  """Reads examples ``indices`` (b,) in one batched read and transforms them.

  Example i is augmented with ``example_rng(augment_seed, positions[i])`` (no augmentation
  when ``augment_seed`` is None). Returns ``{"image": uint8 (b, H, W, C), "label": int32 (b,)}``.
  """
  positions, indices = positions_and_indices
  examples = source.__getitems__(indices.tolist())
  return _stack(
      [
          transform_example(
              example,
              rng=None if augment_seed is None else example_rng(augment_seed, int(position)),
              **keys,
          )
          for example, position in zip(examples, positions)
      ]
  )


def read_eval_batch(
    positions: np.ndarray, *, source: Sequence[dict[str, Any]], **keys: Any
) -> Batch:
  """Reads positions (b,) of the padded eval stream: example ``position % N``, ``valid = position < N``.

  Returns ``{"image", "label", "valid": bool (b,)}`` (+ ``"object_mask"`` when ``keys`` has a mask key).
  """
  num_examples = len(source)
  examples = source.__getitems__((positions % num_examples).tolist())
  return {
      **_stack([transform_example(example, **keys) for example in examples]),
      "valid": positions < num_examples,
  }


class BatchIterator(Iterator[Batch]):
  """Iterator over a grain ``MapDataset`` of batches, with a resumable position.

  Attributes:
    batches_per_epoch: train: global batches per epoch; eval: batches in the one pass.
  """

  def __init__(
      self,
      batches: grain.MapDataset,
      *,
      identity: dict[str, int | str],
      batches_per_epoch: int,
      worker_count: int,
  ):
    if worker_count < 0:
      raise ValueError(f"worker_count must be >= 0, got {worker_count}.")
    self._batches = batches
    self._identity = dict(identity)
    self._worker_count = worker_count
    self._next_batch = 0
    self._iterator: grain.DatasetIterator | None = None
    self.batches_per_epoch = batches_per_epoch

  def __iter__(self) -> BatchIterator:
    return self

  def __next__(self) -> Batch:
    if self._iterator is None:
      self._iterator = self._start(self._next_batch)
    batch = next(self._iterator)
    self._next_batch += 1
    return batch

  def _start(self, first_batch: int) -> grain.DatasetIterator:
    dataset = self._batches[first_batch:].to_iter_dataset(
        grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=PREFETCH_BATCHES)
    )
    if self._worker_count:
      if not flags.FLAGS.is_parsed():  # grain's workers read absl flags
        flags.FLAGS.mark_as_parsed()
      dataset = dataset.mp_prefetch(
          grain.MultiprocessingOptions(
              num_workers=self._worker_count, per_worker_buffer_size=PREFETCH_BATCHES
          )
      )
    return iter(dataset)

  def get_state(self) -> dict[str, int | str]:
    """JSON-serialisable position: ``{..parameters.., "next_batch": global batches consumed}``."""
    return {**self._identity, "next_batch": self._next_batch}

  def set_state(self, state: dict[str, int | str]) -> None:
    """Continues from ``state`` (from ``get_state`` of an iterator with the same parameters)."""
    mismatched = {
        key: (state.get(key), value)
        for key, value in self._identity.items()
        if state.get(key) != value
    }
    if mismatched or set(state) != set(self._identity) | {"next_batch"}:
      raise ValueError(
          f"The state does not belong to this loader: (state, loader) values differ for {mismatched}; "
          f"state keys {sorted(state)}."
      )
    next_batch = state["next_batch"]
    if not isinstance(next_batch, int) or next_batch < 0:
      raise ValueError(f"next_batch must be an int >= 0, got {next_batch!r}.")
    self.close()
    self._next_batch = next_batch

  def close(self) -> None:
    """Stops the worker processes and threads (restarted lazily by ``next``)."""
    if self._iterator is not None:
      self._iterator.close()
      self._iterator = None

  def __enter__(self) -> BatchIterator:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()


def train_loader(
    name: str,
    *,
    global_batch_size: int,
    seed: int,
    data_dir: str | os.PathLike[str] | None = None,
    split: str | None = None,
    augment: bool = True,
    worker_count: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
    start_state: dict[str, int | str] | None = None,
) -> BatchIterator:
  """Infinite iterator of this process's training batches, reshuffled every epoch.

  Args:
    name: dataset name (see ``codajax.data.catalog``).
    global_batch_size: examples per step over all processes; must divide by ``process_count``.
    seed: non-negative seed of the shuffle and the augmentation.
    data_dir: TFDS data directory (default ``$CODAJAX_DATA_DIR`` or ``~/tensorflow_datasets``).
    split: TFDS split (default: the dataset's train split).
    augment: apply the training augmentation; ``False`` applies the eval transform instead.
    worker_count: grain worker processes for reading, decoding and augmenting (0 = in-process threads).
    process_index, process_count: this process's shard (default ``jax.process_index()/process_count()``).
    start_state: a ``get_state()`` to resume from.

  Yields:
    ``{"image": uint8 (b, H, W, C), "label": int32 (b,)}`` with ``b = global_batch_size // process_count``.
  """
  dataset = catalog.resolve(name, data_dir)
  split = split or dataset.train_split
  index, count = _process_shard(process_index, process_count)
  local = _local_batch_size(global_batch_size, count)
  source = dataset.source(split)
  steps = len(source) // global_batch_size
  if steps == 0:
    raise ValueError(
        f"{dataset.name}[{split}] has {len(source)} examples, fewer than one global batch "
        f"({global_batch_size})."
    )
  index_batches = (
      grain.MapDataset.range(len(source))
      .shuffle(seed=derived_seed(seed, "shuffle"))
      .map_with_index(_position_and_index)
      .batch(local, drop_remainder=True)
  )
  batches = (
      index_batches[: steps * count][index::count]
      .repeat()
      .map(
          functools.partial(
              read_train_batch,
              source=source,
              augment_seed=derived_seed(seed, "augment") if augment else None,
              prep=dataset.preprocessing,
              image_key=dataset.image_key,
              label_key=dataset.label_key,
          )
      )
  )
  identity = {
      "dataset": dataset.name,
      "split": split,
      "seed": int(seed),
      "global_batch_size": int(global_batch_size),
      "augment": int(augment),
  }
  iterator = BatchIterator(
      batches, identity=identity, batches_per_epoch=steps, worker_count=worker_count
  )
  if start_state is not None:
    iterator.set_state(start_state)
  return iterator


def eval_loader(
    name: str,
    *,
    global_batch_size: int,
    data_dir: str | os.PathLike[str] | None = None,
    split: str | None = None,
    worker_count: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> BatchIterator:
  """One pass over a split in dataset order, this process's rows of every global batch.

  Global batch j holds examples ``[j*G, (j+1)*G)`` (G = ``global_batch_size``);
  process p gets rows ``[p*b, (p+1)*b)`` of it. The last global batch is padded;
  padded rows have ``valid=False``. Every process yields ``ceil(N / G)`` batches.

  Yields:
    ``{"image": uint8 (b, H, W, C), "label": int32 (b,), "valid": bool (b,)}``, plus
    ``"object_mask": uint8 (b, H, W)`` (1 = object) for datasets with masks.
  """
  dataset = catalog.resolve(name, data_dir)
  split = split or dataset.test_split
  index, count = _process_shard(process_index, process_count)
  local = _local_batch_size(global_batch_size, count)
  source = dataset.source(split)
  num_examples = len(source)
  if num_examples == 0:
    raise ValueError(f"{dataset.name}[{split}] is empty.")
  num_batches = -(-num_examples // global_batch_size)
  positions = grain.MapDataset.range(num_batches * global_batch_size).batch(local)[index::count]
  batches = positions.map(
      functools.partial(
          read_eval_batch,
          source=source,
          prep=dataset.preprocessing,
          image_key=dataset.image_key,
          label_key=dataset.label_key,
          mask_key=dataset.mask_key,
      )
  )
  identity = {"dataset": dataset.name, "split": split, "global_batch_size": int(global_batch_size)}
  return BatchIterator(
      batches, identity=identity, batches_per_epoch=num_batches, worker_count=worker_count
  )


def load_examples(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    indices: Sequence[int] | np.ndarray | None = None,
) -> dict[str, np.ndarray]:
  """Examples by index, under the eval transform.

  Args:
    name: dataset name.
    split: TFDS split.
    data_dir: TFDS data directory.
    indices: positions in the split (default: all of it), each in ``[0, N)``.

  Returns:
    ``{"image": uint8 (n, H, W, C), "label": int32 (n,)}``, plus ``"object_mask": uint8 (n, H, W)``
    for datasets with masks; row i is example ``indices[i]``.
  """
  dataset = catalog.resolve(name, data_dir)
  source = dataset.source(split)
  positions = (
      np.arange(len(source)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
  )
  if positions.size and (positions.min() < 0 or positions.max() >= len(source)):
    raise IndexError(
        f"indices must be in [0, {len(source)}) for {dataset.name}[{split}], got "
        f"[{positions.min()}, {positions.max()}]."
    )
  rows = [
      transform_example(
          example,
          prep=dataset.preprocessing,
          image_key=dataset.image_key,
          label_key=dataset.label_key,
          mask_key=dataset.mask_key,
      )
      for example in source.__getitems__(positions.tolist())
  ]
  if not rows:
    height, width, channels = dataset.preprocessing.image_shape
    empty = {
        "image": np.zeros((0, height, width, channels), np.uint8),
        "label": np.zeros((0,), np.int32),
    }
    return empty | (
        {"object_mask": np.zeros((0, height, width), np.uint8)} if dataset.mask_key else {}
    )
  return _stack(rows)
