"""Figures (PNG): contribution maps, the first localisation grid, localisation box plots (per
method and per depth) and pixel-removal curves, from what the other evaluators computed."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from codajax import storage
from codajax.evaluators import common
from codajax.evaluators.common import Context
from codajax.evaluators.depths import DepthsResult
from codajax.evaluators.localisation import LocalisationResult
from codajax.evaluators.methods import OURS, MethodsEvaluator
from codajax.evaluators.pixel_removal import PixelRemovalResult


def _first(results: Sequence[Any], kind: type) -> Any:
  """The first of ``results`` of type ``kind`` (None: none)."""
  return next((r for r in results if isinstance(r, kind)), None)


def figure_indices(grids, n_images: int, num_test: int) -> np.ndarray:
  """Test indices of the figure's images: the first grid's tiles (the most confident images of
  distinct classes, then the next grids'), else the first test images."""
  pool = np.arange(0) if grids is None else grids.indices.reshape(-1)
  return pool[:n_images] if len(pool) >= n_images else np.arange(min(n_images, num_test))


def save_figures(
    out: str,
    *,
    images: np.ndarray,
    labels: np.ndarray,
    maps: Mapping[str, np.ndarray],
    masks: np.ndarray | None,
    grid_image: np.ndarray | None,
    grid_labels: np.ndarray | None,
    grid_maps: Mapping[str, np.ndarray],
    localisation_scores: Mapping[str, np.ndarray],
    depth_scores: np.ndarray | None,
    removal_curves: Mapping[str, np.ndarray],
    fractions: np.ndarray | None,
    grid: int,
    removal_count: int | None = None,
) -> list[str]:
  """Writes the PNG figures; returns their file names.

  * ``contributions.png``: images (N, H, W, C) uint8 with, per method, the channel-summed map
    (blue-white-red, symmetric limit and colour bar per map; white-to-red from min to max for
    ``render.MIN_MAX_METHODS``); "Ours" also split into its
    contributions from ``x`` and from ``1 − x`` (the encoded input) and as the explanation image
    (on black); the object masks (N, H, W) when given. ``maps``: {method: (N, H, W, C') or (N, H, W)}.
  * ``localisation_grid.png``: the first grid image once, with tile outlines, and per method its
    map for each tile's class.
  * ``localisation.png``, ``localisation_depths.png``, ``pixel_removal.png``: box plots and curves
    with titles, n and the direction ("higher is better"; removal: least important first).
  """
  from codajax.explain import render  # matplotlib on first use: training hooks import this module

  written = []
  floats = images.astype(np.float32) / 255.0
  channels = images.shape[-1]
  rows: dict[str, np.ndarray] = {}
  for method, method_maps in maps.items():
    encoded = method_maps.ndim == 4 and method == OURS and method_maps.shape[-1] == 2 * channels
    if encoded:
      rows.update(render.contribution_rows(method_maps, channels, OURS))
    else:
      rows[method] = method_maps.sum(-1) if method_maps.ndim == 4 else method_maps
  if masks is not None:
    rows["object mask"] = np.concatenate(
        [np.repeat(masks[..., None].astype(np.float64), 3, -1), np.ones(masks.shape + (1,))], -1
    )
  if rows:
    render.save_grid_figure(
        storage.join(out, "contributions.png"),
        floats,
        rows,
        titles=[f"class {c}" for c in labels],
        dark_rows=(f"{OURS} (explanation)",),
        title=(
            f"Contribution maps for the true class, n = {len(labels)} test images.\nBlue-white-red, "
            "symmetric limit ±L per map (colour bar); GCam, Occ, RISE white-red from min to max.\n"
            "Ours (sum) = from x + from 1-x (the encoded input [x, 1-x]); explanation on black: "
            "white = evidence from bright pixels x"
        ),
    )
    written.append("contributions.png")
  if grid_image is not None and grid_maps:
    render.save_localisation_grid_figure(
        storage.join(out, "localisation_grid.png"),
        grid_image.astype(np.float32) / 255.0,
        grid_labels,
        dict(grid_maps),
        grid=grid,
        title=(
            f"The first localisation grid ({grid}x{grid}) and each method's map for each tile's "
            "class\n(target tile in green; blue-white-red, symmetric limit ±L per map; GCam, Occ, "
            "RISE white-red from min to max)"
        ),
    )
    written.append("localisation_grid.png")
  if localisation_scores:
    render.save_localisation_boxplot(
        storage.join(out, "localisation.png"), localisation_scores, grid=grid
    )
    written.append("localisation.png")
  if depth_scores is not None:
    layers = len(depth_scores)
    render.save_localisation_boxplot(
        storage.join(out, "localisation_depths.png"),
        {f"layer {l} (depth {layers - l})": s for l, s in enumerate(depth_scores)},
        grid=grid,
        title=(
            f"Localisation of Ours per layer on {grid}x{grid} grids (n = "
            f"{np.asarray(depth_scores[0]).size} scores per box; higher is better)"
        ),
    )
    written.append("localisation_depths.png")
  if removal_curves:
    render.save_pixel_removal_curves(
        storage.join(out, "pixel_removal.png"), removal_curves, fractions, n_images=removal_count
    )
    written.append("pixel_removal.png")
  return written


class Evaluator(MethodsEvaluator):
  """The figures; runs after the other evaluators and draws the results they returned
  (:class:`~codajax.evaluators.localisation.LocalisationResult`,
  :class:`~codajax.evaluators.depths.DepthsResult`,
  :class:`~codajax.evaluators.pixel_removal.PixelRemovalResult`), given to :meth:`run`.

  Args:
    n_images: images in ``contributions.png``.
    **kwargs: see :class:`codajax.evaluators.methods.MethodsEvaluator` (the same methods,
      batch size and settings as pixel removal reuse its compiled programs).
  """

  runs_last = True  # the driver passes it the results of the evaluators before it

  def __init__(self, n_images: int = 8, **kwargs):
    super().__init__(**kwargs)
    self.n_images = int(n_images)

  def run(self, ctx: Context, results: Sequence[Any] = ()) -> Iterator[tuple[str, Any]]:
    """Yields ``figures`` (file names); writes them (process 0) when the context has ``out``.

    ``results``: what the evaluators before it returned (others are ignored).
    """
    if ctx.probe or not ctx.out or self.n_images < 1:
      return
    located = _first(results, LocalisationResult)
    removal = _first(results, PixelRemovalResult)
    depths = _first(results, DepthsResult)
    grid_set = None if located is None else located.grids
    chosen = figure_indices(grid_set, self.n_images, ctx.num_test)
    shown = ctx.load(chosen)
    maps = {}
    for method in self.methods:
      if method == OURS and ctx.info.encoded_input:
        step = self.attribute(ctx, method)
        label = self.label("figure", method)
      else:
        attribute = self.attribute(ctx, method)
        step = lambda v, images, labels, attribute=attribute: attribute(v, images, labels).sum(-1)
        label = self.label("importance", method)
      maps[method] = common.map_batches(
          ctx,
          label,
          step,
          common.rows_of(shown),
          len(chosen),
          self.batch_size,
          ("image", "label"),
          truncate=False,
          unit=f"figures/{method}",
      )
    grid = 3 if located is None else located.grid
    written = []
    if common.is_main_process():
      written = save_figures(
          ctx.output_path(""),
          images=shown["image"],
          labels=shown["label"],
          maps=maps,
          masks=shown.get("object_mask") if ctx.spec.has_object_mask else None,
          grid_image=None if grid_set is None else grid_set.images[0],
          grid_labels=None if grid_set is None else grid_set.labels[0],
          grid_maps={} if located is None else located.first_grid_maps,
          localisation_scores={} if located is None else located.scores,
          depth_scores=None if depths is None else depths.scores,
          removal_curves={} if removal is None else removal.curves,
          fractions=None if removal is None else removal.fractions,
          grid=grid,
          removal_count=None if removal is None else removal.n_images,
      )
    yield "figures", written
