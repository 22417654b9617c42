"""Localisation at every explainable depth: the CoDA contributions of each layer's input, spread
over the grid image (total kept), scored on the localisation grids."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from codajax import metrics
from codajax.evaluators import common, localisation
from codajax.evaluators.common import Context, EvaluationError
from codajax.evaluators.methods import contributions_at_depths, over_targets

CHOICES = ("auto", "on")


class DepthsResult(NamedTuple):
  """What :class:`Evaluator` measured: localisation scores (L, G, n²) of the contributions at
  every explainable layer, on n × n grids."""

  scores: np.ndarray
  grid: int


class Evaluator:
  """Localisation scores of layer l's contributions (interpretable depth L − l) for every l.

  Args:
    n_grids, grid: the localisation grids (shared with the localisation evaluator).
    batch_size: images per call (a grid counts as n² images).
    when: ``"auto"`` (models with more than one explainable layer) or ``"on"`` (required).
  """

  def __init__(self, n_grids: int = 500, grid: int = 3, batch_size: int = 32, when: str = "auto"):
    if when not in CHOICES:
      raise EvaluationError(f"depths: when must be one of {', '.join(CHOICES)}; got {when!r}")
    self.n_grids, self.grid, self.batch_size, self.when = (
        int(n_grids),
        int(grid),
        int(batch_size),
        when,
    )

  def check(self, ctx: Context) -> None:
    localisation.check_grid(ctx, self.n_grids, self.grid)
    if self.when == "on" and ctx.info.num_layers < 2:
      raise EvaluationError(
          "depth analysis requested but the model has a single explainable " "layer"
      )

  def run(self, ctx: Context) -> Generator[tuple[str, Any], None, DepthsResult | None]:
    """Yields ``depths`` [{layer, interpretable_depth, localisation}], ``localisation_depths``
    (L, G, n²) and ``timings_s/depths``. Returns a :class:`DepthsResult` (None: nothing
    measured)."""
    if ctx.info.num_layers < 2:
      return None
    grid_set = localisation.grids(ctx, self.n_grids, self.grid)
    if len(grid_set.images) == 0:
      return None
    grid, model = self.grid, ctx.model

    def step(variables, images, labels):
      images = images.astype(jnp.float32) / 255.0
      maps = over_targets(
          lambda t: contributions_at_depths(model, variables, images, t), labels, axis=2
      )  # (L, B, n², nH, nW)
      return jnp.moveaxis(jax.vmap(lambda m: metrics.localisation_metric(m, grid))(maps), 0, 1)

    scores, seconds = common.timed(
        lambda: common.map_batches(
            ctx,
            f"depths{grid}",
            step,
            common.rows_of({"image": grid_set.images, "label": grid_set.labels}),
            len(grid_set.images),
            max(1, self.batch_size // (grid * grid)),
            ("image", "label"),
        )
    )
    scores = scores.transpose(1, 0, 2)  # (L, G, n²)
    layers = ctx.info.num_layers
    yield "depths", [
        {
            "layer": layer,
            "interpretable_depth": layers - layer,
            "localisation": localisation.summary(s),
        }
        for layer, s in enumerate(scores)
    ]
    yield "localisation_depths", scores
    yield "timings_s/depths", seconds
    return DepthsResult(scores, grid)
