"""Scoring explanations.

Arguments: ``images`` (N, H, W, C) float in [0, 1], ``targets`` (N,) int class indices, ``maps``
attribution or contribution maps (N, H, W[, C]) and ``masks`` (N, H, W) object masks. Where a
metric mirrors Quantus it says so and keeps Quantus' argument order (``x_batch, y_batch, a_batch,
s_batch`` = ``images, targets, maps, masks``).

* localisation: the papers' grid pointing game (image selection, grids, per-tile scores);
* pixel removal: probability of the true class while removing the least important pixels;
* ground truth: mask energy and pointing game against object masks;
* completeness of contribution maps, and a summary of metric values.

An empty batch (N = 0) gives an empty result for the per-image scores (``mask_energy``,
``pointing_game``, ``contribution_sum_error``, ``localisation_scores``/``localisation_metric``,
``pixel_removal_probabilities``: shape (0, ...)); the aggregates (``pixel_removal_curve``,
``summarise``) raise ``ValueError``, as a mean over no images is undefined.

Bad input is one error naming the argument (``TypeError`` for a wrong type, ``ValueError`` for
a wrong value): settings out of range (``fraction=2.0``, ``n_points=0``, ``grid=0``) and, when
the arrays are concrete, NaN/Inf maps, soft object masks (values other than 0 and 1) and class
labels outside ``[0, K)``. Under ``jax.jit`` values are not inspected; each metric's docstring
says what a NaN map, a soft mask or an out-of-range label gives there.
"""

from codajax.metrics.completeness import contribution_sum_error
from codajax.metrics.ground_truth import mask_energy, pointing_game
from codajax.metrics.localisation import (
    Grids,
    grid_indices,
    localisation_metric,
    localisation_scores,
    make_grids,
    select_confident_images,
    tile_grids,
)
from codajax.metrics.pixel_removal import (
    pixel_removal_curve,
    pixel_removal_probabilities,
    removal_fractions,
    removal_masks,
    removal_rank,
    removal_steps,
)
from codajax.metrics.summary import summarise

__all__ = [
    "Grids",
    "contribution_sum_error",
    "grid_indices",
    "localisation_metric",
    "localisation_scores",
    "make_grids",
    "mask_energy",
    "pixel_removal_curve",
    "pixel_removal_probabilities",
    "pointing_game",
    "removal_fractions",
    "removal_masks",
    "removal_rank",
    "removal_steps",
    "select_confident_images",
    "summarise",
    "tile_grids",
]
