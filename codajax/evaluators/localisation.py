"""Grid localisation per method (CoDA Nets, CVPR 2021): confident test images tiled into n × n
grids; each map for the class of tile k is scored by the share of its positive mass inside tile k.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from codajax import metrics
from codajax.evaluators import common
from codajax.evaluators.common import Context, EvaluationError
from codajax.evaluators.methods import AttributionFn, MethodsEvaluator

SELECTION_SEED = 42


class GridSet(NamedTuple):
  """Localisation grids: images uint8 (G, n·H, n·W, C), tile labels and test indices (G, n²)."""

  images: np.ndarray
  labels: np.ndarray
  indices: np.ndarray
  n_confident: int


class LocalisationResult(NamedTuple):
  """What :class:`Evaluator` measured: the grids, per method its scores (G, n²) and its summed
  maps (n², n·H, n·W) on the first grid."""

  grids: GridSet
  grid: int
  scores: dict[str, np.ndarray]
  first_grid_maps: dict[str, np.ndarray]


def test_logits(ctx: Context, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """Logits (N, K) and labels (N,) of the whole test split in dataset order (memoized)."""

  def compute():
    def forward(variables, images, labels):
      return {
          "logits": ctx.model.apply(variables, images.astype(jnp.float32) / 255.0),
          "label": labels,
      }

    out = common.map_batches(
        ctx,
        "test_logits",
        forward,
        common.test_examples(ctx, np.arange(ctx.num_test)),
        ctx.num_test,
        batch_size,
        ("image", "label"),
        truncate=False,
    )
    return out["logits"], out["label"]

  return ctx.memoized("test_logits", compute)


def count_grids(labels: np.ndarray, order: np.ndarray, grid: int, limit: int) -> int:
  """How many of ``limit`` grids :func:`codajax.metrics.grid_indices` can build from ``order``."""
  low, high = 0, limit
  while low < high:  # grids are built in sequence, so feasibility is monotone in their number
    middle = (low + high + 1) // 2
    try:
      metrics.grid_indices(labels, order, n_grids=middle, grid=grid)
      low = middle
    except ValueError:
      high = middle - 1
  return low


def grids(ctx: Context, n_grids: int, grid: int) -> GridSet:
  """Steps 1–6 of :mod:`codajax.metrics.localisation` (memoized): confident correct images, seeded
  class draws, column-major grids. At most ``n_grids``; fewer (with a message) when the confident
  images run out."""

  def compute():
    logits, labels = test_logits(ctx, ctx.eval_batch_size)
    order = metrics.select_confident_images(
        logits, labels, seed=SELECTION_SEED, n_per_grid=grid * grid
    )
    available = count_grids(labels, order, grid, n_grids)
    if available < n_grids and common.is_main_process():
      print(
          f"localisation: only {available} of the requested {n_grids} {grid}x{grid} grids can "
          f"be built from the {len(order)} confidently and correctly classified test images "
          f"(each grid needs {grid * grid} distinct classes); evaluating {available}.",
          flush=True,
      )
    indices = metrics.grid_indices(labels, order, n_grids=available, grid=grid)
    tiles = ctx.load(indices.reshape(-1))
    images = tiles["image"].reshape(indices.shape + tiles["image"].shape[1:])
    return GridSet(
        np.asarray(metrics.tile_grids(images, grid)), labels[indices], indices, len(order)
    )

  return ctx.memoized(("grids", n_grids, grid), compute)


def summary(scores: np.ndarray) -> dict[str, Any]:
  """:func:`codajax.metrics.summarise` of the flat scores, plus the mean per tile position."""
  return {
      **metrics.summarise(scores),
      "per_tile_mean": np.mean(scores, 0).round(6).tolist(),
      "count": int(scores.size),
  }


def check_grid(ctx: Context, n_grids: int, grid: int) -> None:
  """Refuses impossible grid settings before any work."""
  if grid < 2:
    raise EvaluationError(f"grid must be at least 2; got {grid}")
  if n_grids < 1:
    raise EvaluationError(
        f"n_grids must be >= 1 (leave the evaluator out to skip it); " f"got {n_grids}"
    )
  if ctx.spec.num_classes <= grid * grid:
    raise EvaluationError(
        f"a {grid}x{grid} grid needs more than {grid * grid} classes; "
        f"{ctx.spec.name} has {ctx.spec.num_classes}"
    )


def protocol(ctx: Context, grid_set: GridSet, n_grids: int, grid: int) -> dict[str, Any]:
  """The protocol record of the grids (report ``protocol/localisation``)."""
  return {
      "n_grids_requested": n_grids,
      "n_grids": len(grid_set.images),
      "grid": grid,
      "selection_seed": SELECTION_SEED,
      "offset_quirk": True,
      "targets": "class of each tile",
      "n_confident_images": grid_set.n_confident,
      "uniform": 1.0 / grid**2,
      "oracle": 1.0,
  }


def grid_program(attribute: AttributionFn, grid: int) -> Callable[..., dict[str, Any]]:
  """The evaluator's program for one method (jitted by ``common.map_batches``).

  ``(variables, images uint8 (B, n·H, n·W, C), tile labels (B, n²)) -> {"scores": (B, n²),
  "first_maps": (B, n·H, n·W)}``: each grid's map for the class of every tile, scored.
  """

  def step(variables, images, labels):
    maps = attribute(variables, images, labels)
    return {
        "scores": metrics.localisation_metric(maps, grid),
        common.FIRST + "maps": maps.sum(-1),
    }

  return step


class Evaluator(MethodsEvaluator):
  """The localisation metric of every method on up to ``n_grids`` n × n grids.

  Args:
    n_grids: grids requested (papers: 500).
    grid: n (papers: 3).
    **kwargs: see :class:`codajax.evaluators.methods.MethodsEvaluator`.
  """

  def __init__(self, n_grids: int = 500, grid: int = 3, **kwargs):
    super().__init__(**kwargs)
    self.n_grids, self.grid = int(n_grids), int(grid)

  def check(self, ctx: Context) -> None:
    check_grid(ctx, self.n_grids, self.grid)

  def run(self, ctx: Context) -> Generator[tuple[str, Any], None, LocalisationResult | None]:
    """Yields ``protocol/localisation``; per method ``methods/<m>/localisation`` (summary),
    ``localisation/<m>`` (scores (G, n²), to scores.npz) and ``timings_s/methods/<m>/localisation``;
    ``grid_indices`` (G, n²). Returns a :class:`LocalisationResult` (None: no grid)."""
    grid_set = grids(ctx, self.n_grids, self.grid)
    yield "protocol/localisation", protocol(ctx, grid_set, self.n_grids, self.grid)
    if len(grid_set.images) == 0:
      return None
    result = LocalisationResult(grid_set, self.grid, {}, {})
    yield "grid_indices", grid_set.indices
    grid_batch = max(1, self.batch_size // (self.grid * self.grid))
    for method in self.methods:
      step = grid_program(self.attribute(ctx, method), self.grid)
      label = self.label(f"localisation{self.grid}", method)
      out, seconds = common.timed(
          lambda: common.map_batches(
              ctx,
              label,
              step,
              common.rows_of({"image": grid_set.images, "label": grid_set.labels}),
              len(grid_set.images),
              grid_batch,
              ("image", "label"),
          )
      )
      result.scores[method] = out["scores"]
      result.first_grid_maps[method] = out[common.FIRST + "maps"][0]
      yield f"methods/{method}/localisation", summary(out["scores"])
      yield f"localisation/{method}", out["scores"]
      yield f"timings_s/methods/{method}/localisation", seconds
    return result
