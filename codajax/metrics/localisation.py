"""Grid pointing game ("localisation metric") of the CoDA-Net papers (CoDA Nets, CVPR 2021).

Protocol: :func:`select_confident_images` (steps 1-4) picks confidently and correctly classified
images in a seeded order; :func:`grid_indices` / :func:`make_grids` (steps 5-6) tile n x n of them
column-major into grid images; the attribution map of grid g for the class of its tile k is
scored by :func:`localisation_metric` (steps 7-10): the share of positive attribution inside
tile k. Cell and tile index k = column * n + row throughout.

Image selection and grid assembly are host-side numpy bookkeeping (a sequential walk over an
index list); the scoring is jit-able.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from codajax._checks import check_class_indices, check_float_array, check_int

Array = jax.Array


def select_confident_images(
    logits: np.ndarray, labels: np.ndarray, seed: int = 42, n_per_grid: int = 9
) -> np.ndarray:
  """Flat list of test-set indices in the reference's order: (M,) int64.

  1. keep correctly classified images with the logit of their (predicted = true) class;
  2. per class, sort by that logit, descending (stable: ties keep dataset order);
  3. a class is available while its next unused image has logit > 0 (sigmoid > 0.5);
  4. with numpy's legacy RNG seeded by ``seed`` (``np.random.seed(42)`` + ``np.random.choice`` in
     the reference; a ``RandomState(seed)`` draws the same numbers without touching the global
     state): while more than ``n_per_grid`` classes are available, draw ``n_per_grid`` distinct
     available classes (ascending class list, ``choice(..., replace=False)``) and append, in draw
     order, each drawn class's next image.

  Args: logits (N, K) of the whole test set in dataset order (finite); labels (N,).
  """
  where = "select_confident_images"
  logits = np.asarray(check_float_array(logits, "logits", where=where))
  labels = np.asarray(labels)
  if logits.ndim != 2 or labels.shape != logits.shape[:1]:
    raise ValueError(f"need logits (N, K) and labels (N,); got {logits.shape} and {labels.shape}")
  labels = check_class_indices(labels, where=where, name="labels", num_images=len(labels))
  seed = check_int(seed, "seed", where=where, minimum=0)
  n_per_grid = check_int(n_per_grid, "n_per_grid", where=where)
  predicted = logits.argmax(axis=1)
  correct = np.flatnonzero(predicted == labels)
  confidence = logits[correct, predicted[correct]]
  queues, queue_logits = [], []
  for cls in range(logits.shape[1]):
    members = labels[correct] == cls
    order = np.argsort(-confidence[members], kind="stable")
    queues.append(correct[members][order])
    queue_logits.append(confidence[members][order])
  next_unused = np.zeros(logits.shape[1], dtype=int)

  def available() -> np.ndarray:
    return np.array(
        [
            c
            for c in range(logits.shape[1])
            if next_unused[c] < len(queues[c]) and queue_logits[c][next_unused[c]] > 0
        ]
    )

  rng = np.random.RandomState(seed)
  selected = []
  while len(classes := available()) > n_per_grid:
    for cls in rng.choice(classes, n_per_grid, replace=False):
      selected.append(queues[cls][next_unused[cls]])
      next_unused[cls] += 1
  return np.asarray(selected, dtype=np.int64)


def grid_indices(
    labels: np.ndarray,
    order: np.ndarray,
    n_grids: int = 500,
    grid: int = 3,
    *,
    offset_quirk: bool = True,
) -> np.ndarray:
  """Dataset indices of the tiles of each grid: (n_grids, grid²), tile order k = col * grid + row.

  Step 5 of the protocol: from ``offset`` (initially 0) walk ``order`` taking images whose class
  is not yet in the grid until there are grid² of them; the next offset is
  ``offset + entries walked + 1`` with ``offset_quirk`` (the reference skips one entry after
  every grid), ``offset + entries walked`` without.

  Args: labels (N,) of the dataset; order (M,) dataset indices (:func:`select_confident_images`).
  """
  n_grids = check_int(n_grids, "n_grids", where="grid_indices", minimum=0)  # 0: none confident
  grid = check_int(grid, "grid", where="grid_indices")
  labels, order = np.asarray(labels), np.asarray(order)
  per_grid = grid * grid
  grids, offset = [], 0
  for _ in range(n_grids):
    tiles, classes, position = [], set(), offset
    while len(tiles) < per_grid:
      if position >= len(order):
        raise ValueError(
            f"the index list ({len(order)} entries) runs out after {len(grids)} of {n_grids} grids"
        )
      index = order[position]
      if labels[index] not in classes:
        tiles.append(index)
        classes.add(labels[index])
      position += 1
    grids.append(tiles)
    offset = position + (1 if offset_quirk else 0)
  return np.asarray(grids, dtype=np.int64).reshape(n_grids, per_grid)


def tile_grids(tiles: Array, grid: int = 3) -> Array:
  """Tiles (G, grid², H, W, C) -> grid images (G, grid·H, grid·W, C), column-major.

  Tile k goes to row k mod grid, column k div grid (step 6).
  """
  grid = check_int(grid, "grid", where="tile_grids")
  if np.ndim(tiles) != 5:
    raise ValueError(f"tile_grids: need tiles (G, grid², H, W, C), got shape {np.shape(tiles)}.")
  num, per_grid, height, width, channels = tiles.shape
  if per_grid != grid * grid:
    raise ValueError(f"expected {grid * grid} tiles per grid; got {per_grid}")
  by_column = tiles.reshape(num, grid, grid, height, width, channels)  # (G, col, row, H, W, C)
  return by_column.transpose(0, 2, 3, 1, 4, 5).reshape(num, grid * height, grid * width, channels)


class Grids(NamedTuple):
  """Grid images (G, n·H, n·W, C), their tiles' labels and dataset indices (G, n²)."""

  images: Array
  labels: np.ndarray
  indices: np.ndarray


def make_grids(
    images, labels, order, n_grids: int = 500, grid: int = 3, *, offset_quirk: bool = True
) -> Grids:
  """Steps 5-6: grid images (G, n·H, n·W, C) with their tile labels and indices (G, n²).

  Args: images (N, H, W, C) and labels (N,) of the dataset; order (M,) from
  :func:`select_confident_images`. See :func:`grid_indices` and :func:`tile_grids`.
  """
  indices = grid_indices(labels, order, n_grids=n_grids, grid=grid, offset_quirk=offset_quirk)
  tiles = jnp.asarray(np.asarray(images)[indices])
  return Grids(tile_grids(tiles, grid), np.asarray(labels)[indices], indices)


def localisation_scores(maps: Array, grid: int = 3) -> Array:
  """Share of positive attribution per grid cell: (G, n·H, n·W[, C]) -> (G, n²).

  Channels are summed, then negative values are dropped; cell k = col * n + row (column-major,
  so the cell index equals the tile index). A map without positive mass scores 0 everywhere.
  Concrete NaN/Inf maps are a ``ValueError``; under ``jit`` a map with a NaN scores 0 in every
  cell (its positive mass is not > 0).
  """
  return _localisation_scores(check_float_array(maps, "maps", where="localisation_scores"), grid)


def _localisation_scores(maps: Array, grid: int) -> Array:
  """:func:`localisation_scores` of checked maps."""
  grid = check_int(grid, "grid", where="localisation_scores")
  if maps.ndim == 4:
    maps = maps.sum(axis=-1)
  if maps.ndim != 3 or maps.shape[1] % grid or maps.shape[2] % grid:
    raise ValueError(
        f"need maps (G, n*H, n*W[, C]) with sides divisible by n={grid}; got {maps.shape}"
    )
  num, height, width = maps.shape
  positive = jax.nn.relu(maps)
  cells = positive.reshape(num, grid, height // grid, grid, width // grid).sum(
      axis=(2, 4)
  )  # (G, row, col)
  cells = cells.transpose(0, 2, 1).reshape(num, grid * grid)
  total = cells.sum(axis=1, keepdims=True)
  return jnp.where(total > 0, cells / jnp.where(total > 0, total, 1), 0.0)


def localisation_metric(maps: Array, grid: int = 3) -> Array:
  """The papers' scores: (G, n², n·H, n·W[, C]) maps for target tile k -> (G, n²).

  ``maps[g, k]`` is the attribution of grid image g for the class of its tile k; the score is
  that map's share of positive attribution in cell k. ``.reshape(-1)`` gives the reference's
  flat order (index = g * n² + k). Concrete NaN/Inf maps are a ``ValueError``; under ``jit`` a
  map with a NaN scores 0.
  """
  maps = check_float_array(maps, "maps", where="localisation_metric")
  grid = check_int(grid, "grid", where="localisation_metric")
  if maps.ndim not in (4, 5) or maps.shape[1] != grid * grid:
    raise ValueError(f"need maps (G, {grid * grid}, n*H, n*W[, C]); got {maps.shape}")
  num = maps.shape[0]
  shares = _localisation_scores(maps.reshape((num * grid * grid,) + maps.shape[2:]), grid)
  return jnp.diagonal(shares.reshape(num, grid * grid, grid * grid), axis1=1, axis2=2)
