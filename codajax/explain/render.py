"""Figures of explanations and of their evaluation (matplotlib, Agg, PNG).

Colouring conventions (as the CoDA-Net papers' qualitative figures: CVPR 2021 Fig. 1 and 6,
TPAMI 2022 qualitative figures):

* :func:`contribution_colormap`: signed maps in blue-white-red ("bwr") on a symmetric scale
  [-limit, limit], by default the 99.5th percentile of |map| over all maps given.
* The figures (:func:`grid_figure`, :func:`save_grid_figure`,
  :func:`save_localisation_grid_figure`) scale every signed map on its own symmetric limit
  ``±L`` (:func:`per_image_limits`; white = 0, red = positive) and draw a colour bar with ``±L``
  next to it. Maps of the methods in :data:`MIN_MAX_METHODS` (RISE, Grad-CAM, Occlusion: non-negative,
  or nearly) are drawn white-to-red from their minimum to their maximum instead (colour bar:
  min, max), so maps that are positive everywhere, such as RISE's, show their structure rather
  than a uniform red.
* :func:`explanation_image`: the B-cos/CoDA "explanation image" of contributions to the encoded
  input [x, 1 - x]: colour = positive contribution of x over that of x and 1 - x per colour
  channel, opacity = positive channel-summed contribution scaled to its 99.5th percentile.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through
pyplot, so the global backend and pyplot's figure list are left alone.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from codajax import storage


def _save_png(figure: Figure, path) -> None:
  """``figure`` as PNG at ``path`` (a local path or URI), written atomically."""
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png")
  storage.write_atomic(path, buffer.getvalue())


def _new_figure(width: float, height: float) -> Figure:
  """A figure attached to an Agg canvas."""
  figure = Figure(figsize=(width, height), dpi=100)
  FigureCanvasAgg(figure)
  return figure


_TITLE_POINTS = 8


def _title_inches(title: str | None) -> float:
  """Height a ``suptitle`` of ``_TITLE_POINTS`` needs: its lines plus a margin (0 without title)."""
  return 0.0 if not title else (title.count("\n") + 1) * _TITLE_POINTS * 1.3 / 72 + 0.15


def _layout(figure: Figure, title: str | None) -> None:
  """Tight layout below the figure's title, so a title of several lines never covers a panel."""
  figure.tight_layout(rect=(0, 0, 1, 1 - _title_inches(title) / figure.get_figheight()))
  if title:  # after the layout, which would otherwise reserve the title's space a second time
    figure.suptitle(title, fontsize=_TITLE_POINTS, y=0.995, va="top")


def symmetric_limit(maps, percentile: float = 99.5) -> float:
  """The ``percentile`` of |maps| (1.0 if that is 0), the default colour scale limit."""
  limit = float(np.percentile(np.abs(np.asarray(maps, dtype=np.float64)), percentile))
  return limit if limit > 0 else 1.0


def contribution_colormap(maps, limit: float | None = None, *, cmap: str = "bwr") -> np.ndarray:
  """RGBA colours of signed maps: (N, H, W) -> (N, H, W, 4) floats in [0, 1].

  Values map linearly from [-limit, limit] (clipped) to the colormap, 0 to its centre (white
  for "bwr"); ``limit`` defaults to :func:`symmetric_limit` of all maps.
  """
  maps = np.asarray(maps, dtype=np.float64)
  limit = symmetric_limit(maps) if limit is None else float(limit)
  return colormaps[cmap](Normalize(-limit, limit, clip=True)(maps))


def explanation_image(contributions, *, percentile: float = 99.5) -> np.ndarray:
  """Explanation image of contributions to [x, 1 - x]: (..., H, W, 2C) -> (..., H, W, 4) in [0, 1].

  rgb = c+[..., :C] / (c+[..., :C] + c+[..., C:]) with c+ = max(c, 0) (0 where both are 0; a
  single channel is repeated to grey); alpha = max(sum of c over channels, 0) divided by its
  ``percentile`` over each image's pixels, clipped to [0, 1].
  """
  contributions = np.asarray(contributions, dtype=np.float64)
  if contributions.ndim < 3 or contributions.shape[-1] % 2:
    raise ValueError(
        f"need contributions (..., H, W, 2C) to the encoded input; got {contributions.shape}"
    )
  channels = contributions.shape[-1] // 2
  positive = np.maximum(contributions, 0)
  signal, inverse = positive[..., :channels], positive[..., channels:]
  denominator = signal + inverse
  rgb = np.divide(signal, denominator, out=np.zeros_like(signal), where=denominator > 0)
  if channels == 1:
    rgb = np.repeat(rgb, 3, axis=-1)
  elif channels != 3:
    raise ValueError(f"need 1 or 3 image channels (2 or 6 encoded); got {2 * channels}")
  evidence = np.maximum(contributions.sum(axis=-1), 0)
  scale = np.percentile(evidence, percentile, axis=(-2, -1), keepdims=True)
  alpha = np.clip(np.divide(evidence, scale, out=np.zeros_like(evidence), where=scale > 0), 0, 1)
  return np.concatenate([rgb, alpha[..., None]], axis=-1)


def contribution_rows(contributions, channels: int, name: str = "Ours") -> dict[str, np.ndarray]:
  """Rows of a figure for contributions to the encoded input ``[x, 1 − x]``.

  Args:
    contributions: (N, H, W, 2C) contributions to the encoded image.
    channels: C, the image's channels.
    name: the method's name in the row labels.

  Returns:
    ``{"<name> (sum)": (N, H, W), "<name>: from x": (N, H, W), "<name>: from 1-x": (N, H, W),
    "<name> (explanation)": (N, H, W, 4) RGBA}``: the channel sum, its split into the
    contributions of ``x`` and of ``1 − x``, and :func:`explanation_image` (drawn on black).
  """
  contributions = np.asarray(contributions)
  if contributions.ndim != 4 or contributions.shape[-1] != 2 * channels:
    raise ValueError(
        f"need contributions (N, H, W, {2 * channels}) to the encoded input; "
        f"got {contributions.shape}"
    )
  return {
      f"{name} (sum)": contributions.sum(-1),
      f"{name}: from x": contributions[..., :channels].sum(-1),
      f"{name}: from 1-x": contributions[..., channels:].sum(-1),
      f"{name} (explanation)": explanation_image(contributions),
  }


def per_image_limits(maps, percentile: float = 99.5) -> np.ndarray:
  """Symmetric colour limit of each map: (N, H, W) -> (N,), :func:`symmetric_limit` per image."""
  maps = np.asarray(maps, dtype=np.float64)
  return np.array([symmetric_limit(m, percentile) for m in maps.reshape(len(maps), -1)])


#: Methods whose maps are (mostly) non-negative: drawn from their minimum to their maximum.
MIN_MAX_METHODS = ("GCam", "Occ5", "Occ9", "RISE")


def _draw_signed(figure: Figure, axis, image: np.ndarray, limit: float) -> None:
  """``image`` (H, W) in bwr on [-limit, limit] with a colour bar showing ±limit."""
  shown = axis.imshow(image, cmap="bwr", vmin=-limit, vmax=limit)
  bar = figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.03, ticks=[-limit, 0, limit])
  bar.ax.set_yticklabels([f"{-limit:.2g}", "0", f"{limit:.2g}"], fontsize=5)
  bar.ax.tick_params(length=1.5, pad=1)


def min_max_limits(image) -> tuple[float, float]:
  """``(min, max)`` of a map, widened to ``(min, min + 1)`` for a constant map."""
  image = np.asarray(image, dtype=np.float64)
  low, high = float(image.min()), float(image.max())
  return (low, high) if high > low else (low, low + 1.0)


def _draw_min_max(figure: Figure, axis, image: np.ndarray) -> None:
  """``image`` (H, W) white-to-red ("Reds") from its minimum to its maximum, with a colour bar."""
  low, high = min_max_limits(image)
  shown = axis.imshow(image, cmap="Reds", vmin=low, vmax=high)
  bar = figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.03, ticks=[low, high])
  bar.ax.set_yticklabels([f"{low:.2g}", f"{high:.2g}"], fontsize=5)
  bar.ax.tick_params(length=1.5, pad=1)


def is_min_max(label: str) -> bool:
  """Whether maps of row ``label`` are drawn min..max: its first word names a
  :data:`MIN_MAX_METHODS` method ("RISE", "GCam (class 3)", ...)."""
  return label.split(" ")[0].rstrip(":") in MIN_MAX_METHODS


def _draw_map(figure: Figure, axis, image: np.ndarray, limit: float | None, min_max: bool) -> None:
  """One map: min..max (``min_max``) or signed on ``±limit`` (default: its own limit)."""
  if min_max:
    _draw_min_max(figure, axis, image)
  else:
    _draw_signed(figure, axis, image, symmetric_limit(image) if limit is None else float(limit))


def _rows(maps) -> dict[str, np.ndarray]:
  """{row label: (N, H, W) signed maps or (N, H, W, 4) RGBA images}, checked."""
  rows = {
      label: np.asarray(row)
      for label, row in (maps.items() if isinstance(maps, Mapping) else [("", maps)])
  }
  for label, row in rows.items():
    if not (row.ndim == 3 or (row.ndim == 4 and row.shape[-1] == 4)):
      raise ValueError(
          f"maps must be (N, H, W) or RGBA (N, H, W, 4); got {row.shape} for {label!r}"
      )
  return rows


def save_grid_figure(
    path,
    images,
    maps,
    *,
    titles: Sequence[str] | None = None,
    limit: float | None = None,
    title: str | None = None,
    dark_rows: Sequence[str] = (),
) -> Figure:
  """:func:`grid_figure` written as a PNG to ``path`` (a local path or URI); returns the figure."""
  figure = grid_figure(images, maps, titles=titles, limit=limit, title=title, dark_rows=dark_rows)
  _save_png(figure, path)
  return figure


def grid_figure(
    images,
    maps,
    *,
    titles: Sequence[str] | None = None,
    limit: float | None = None,
    title: str | None = None,
    dark_rows: Sequence[str] = (),
) -> Figure:
  """The images in the first row and one row of maps per method below.

  Signed maps are drawn in blue-white-red with a symmetric limit per image (``±L`` of
  :func:`per_image_limits`, or ``±limit`` for all when given) and a colour bar each; rows of a
  :data:`MIN_MAX_METHODS` method white-to-red from each map's minimum to its maximum (see
  :func:`is_min_max`); RGBA rows are drawn as they are (on black for the
  rows named in ``dark_rows``, e.g. explanation images whose bright-pixel evidence is white).

  Args:
    images: (N, H, W, C) in [0, 1], C = 1 or 3.
    maps: (N, H, W) signed maps, (N, H, W, 4) RGBA images (e.g. :func:`explanation_image`), or a
      mapping {method name: such an array} for several rows.
    titles: N column titles (e.g. class names); limit: one colour limit for every signed map;
    title: the figure's title (what is shown, n, the scale).

  Returns:
    The figure on an Agg canvas (``(rows + 1) × N`` image panels; maps also have a colour bar
    axis); a notebook with the inline backend shows it.
  """
  images = np.clip(np.asarray(images, dtype=np.float64), 0, 1)
  if images.ndim != 4:
    raise ValueError(f"need images (N, H, W, C); got {images.shape}")
  rows = _rows(maps)
  num = images.shape[0]
  if any(len(row) != num for row in rows.values()) or (titles is not None and len(titles) != num):
    raise ValueError("images, every row of maps and titles need the same length")
  min_max = {label: row.ndim == 3 and is_min_max(label) for label, row in rows.items()}
  figure = _new_figure(1.9 * num + 0.8, 1.6 * (len(rows) + 1) + _title_inches(title))
  axes = figure.subplots(len(rows) + 1, num, squeeze=False)
  for column in range(num):
    image = images[column]
    axes[0, column].imshow(
        image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1
    )
    if titles is not None:
      axes[0, column].set_title(str(titles[column]), fontsize=8)
    for row_index, (label, row) in enumerate(rows.items(), start=1):
      axis = axes[row_index, column]
      if row.ndim == 3:
        _draw_map(figure, axis, row[column], limit, min_max[label])
      else:
        if label in dark_rows:
          axis.set_facecolor("black")
        axis.imshow(row[column])
      if column == 0 and label:
        axis.set_ylabel(label, fontsize=7)
  for axis in axes.flat:
    axis.set_xticks([])
    axis.set_yticks([])
  _layout(figure, title)
  return figure


def _outline_tiles(axis, grid: int, height: int, width: int, highlight: int | None = None) -> None:
  """Tile boundaries of an n×n grid image (tile k at row k % n, column k // n); ``highlight`` in green."""
  from matplotlib.patches import Rectangle

  for k in range(grid * grid):
    row, col = k % grid, k // grid
    chosen = k == highlight
    axis.add_patch(
        Rectangle(
            (col * width - 0.5, row * height - 0.5),
            width,
            height,
            fill=False,
            edgecolor="lime" if chosen else "black",
            linewidth=1.6 if chosen else 0.5,
        )
    )


def save_localisation_grid_figure(
    path,
    grid_image,
    labels,
    maps_by_method: Mapping[str, np.ndarray],
    *,
    grid: int,
    title: str | None = None,
) -> Figure:
  """PNG of one localisation grid: the grid image once (tile outlines, each tile's class), then
  per method a row of its maps for each tile's class (the target tile outlined in green).

  Args:
    grid_image: (nH, nW, C) in [0, 1]; labels: (n²,) classes of the tiles (column-major order);
    maps_by_method: {method: (n², nH, nW) signed maps, map k for class ``labels[k]``};
    grid: n; title: the figure's title.

  Returns:
    The figure: 1 + len(maps_by_method) · n² image panels (maps with colour bars, per-map
    symmetric limits, or min..max for the methods of :func:`is_min_max`).
  """
  image = np.clip(np.asarray(grid_image, dtype=np.float64), 0, 1)
  labels = np.asarray(labels).reshape(-1)
  tiles = grid * grid
  if image.ndim != 3 or len(labels) != tiles:
    raise ValueError(
        f"need a grid image (nH, nW, C) and {tiles} labels; got {image.shape}, {labels.shape}"
    )
  for name, maps in maps_by_method.items():
    if np.shape(maps) != (tiles, *image.shape[:2]):
      raise ValueError(
          f"maps of {name!r} must be ({tiles}, {image.shape[0]}, {image.shape[1]}); "
          f"got {np.shape(maps)}"
      )
  height, width = image.shape[0] // grid, image.shape[1] // grid
  methods = list(maps_by_method)
  figure = _new_figure(1.9 * tiles + 0.8, 1.7 * len(methods) + 2.3 + _title_inches(title))
  spec = figure.add_gridspec(1 + len(methods), tiles, height_ratios=[1.5] + [1] * len(methods))
  top = figure.add_subplot(spec[0, :])
  top.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
  _outline_tiles(top, grid, height, width)
  for k, label in enumerate(labels):
    top.text(
        k // grid * width + 1,
        k % grid * height + 1,
        f"{k}: {label}",
        color="yellow",
        fontsize=6,
        va="top",
        ha="left",
        bbox=dict(facecolor="black", alpha=0.5, pad=0.5, linewidth=0),
    )
  top.set_title("grid image (tile k: its class)", fontsize=8)
  for row, name in enumerate(methods, start=1):
    maps = np.asarray(maps_by_method[name], dtype=np.float64)
    for k in range(tiles):
      axis = figure.add_subplot(spec[row, k])
      _draw_map(figure, axis, maps[k], None, is_min_max(name))
      _outline_tiles(axis, grid, height, width, highlight=k)
      if row == 1:
        axis.set_title(f"class {labels[k]} (tile {k})", fontsize=7)
      if k == 0:
        axis.set_ylabel(name, fontsize=8)
  for axis in figure.axes:
    if axis.images:
      axis.set_xticks([])
      axis.set_yticks([])
  _layout(figure, title)
  _save_png(figure, path)
  return figure


def save_localisation_boxplot(
    path, scores_by_method: Mapping[str, np.ndarray], *, grid: int = 3, title: str | None = None
) -> Figure:
  """PNG box plot of localisation scores per method, with the oracle (1) and uniform (1/grid²) lines.

  Args: path; scores_by_method {name: (n,) scores}, drawn in the given order; grid: n of n x n;
  title: the plot's title (default: the score, n and "higher is better").
  """
  if not scores_by_method:
    raise ValueError("no scores to plot")
  names = list(scores_by_method)
  figure = _new_figure(max(5.0, 0.9 * len(names) + 2.5), 3.5)
  axis = figure.subplots()
  axis.boxplot(
      [np.asarray(scores_by_method[name], dtype=np.float64).reshape(-1) for name in names],
      showfliers=False,
  )
  axis.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
  axis.axhline(1.0, color="tab:green", linestyle="--", label="oracle")
  axis.axhline(1.0 / grid**2, color="tab:red", linestyle=":", label=f"uniform (1/{grid * grid})")
  axis.set_ylim(0, 1.05)
  axis.set_ylabel("localisation score (higher is better)")
  first = np.asarray(next(iter(scores_by_method.values())))
  count = (
      f"{first.shape[0]} grids x {first.shape[1]} tiles"
      if first.ndim == 2
      else f"{first.size} scores"
  )
  axis.set_title(
      title or f"Localisation on {grid}x{grid} grids (n = {count} per box; " "higher is better)",
      fontsize=8,
  )
  axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
  figure.tight_layout()
  _save_png(figure, path)
  return figure


def save_pixel_removal_curves(
    path, curves_by_method: Mapping[str, np.ndarray], fractions, *, n_images: int | None = None
) -> Figure:
  """PNG of pixel-removal curves: probability of the true class vs the share of removed pixels,
  the least important pixels (by each method) removed first; higher is better.

  Args: path; curves_by_method {name: (n_masks,) curve}; fractions (n_masks,) removed shares
  (e.g. ``codajax.metrics.removal_fractions``), drawn in percent; n_images: images averaged.
  """
  if not curves_by_method:
    raise ValueError("no curves to plot")
  fractions = np.asarray(fractions, dtype=np.float64)
  figure = _new_figure(5.5, 3.5)
  axis = figure.subplots()
  for name, curve in curves_by_method.items():
    curve = np.asarray(curve, dtype=np.float64)
    if curve.shape != fractions.shape:
      raise ValueError(f"curve {name!r} has shape {curve.shape}, fractions {fractions.shape}")
    axis.plot(100 * fractions, curve, label=name)
  axis.set_xlabel("pixels removed, least important first (%)")
  axis.set_ylabel("mean p(true class) (higher is better)")
  count = "" if n_images is None else f", n = {n_images} images"
  axis.set_title(f"Pixel removal: least important pixels first{count}", fontsize=8)
  axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
  figure.tight_layout()
  _save_png(figure, path)
  return figure
