"""Figures of explanations and of their evaluation (matplotlib, Agg, PNG).

Colouring conventions:

* :func:`contribution_colormap`: signed maps in blue-white-red ("bwr") on a symmetric scale
  [-limit, limit], by default the 99.5th percentile of |map| over all maps given (a common scale,
  as the papers' figures).
* :func:`explanation_image`: the B-cos/CoDA "explanation image" of contributions to the encoded
  input [x, 1 - x]: colour = positive contribution of x over that of x and 1 - x per colour
  channel, opacity = positive channel-summed contribution scaled to its 99.5th percentile.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through
pyplot, so the global backend and pyplot's figure list are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure


def _new_figure(width: float, height: float) -> Figure:
    """A figure attached to an Agg canvas."""
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


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
        raise ValueError(f"need contributions (..., H, W, 2C) to the encoded input; got {contributions.shape}")
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


def _as_rgba_rows(maps, limit: float | None) -> dict[str, np.ndarray]:
    """Rows of RGBA images (N, H, W, 4) from an array or a {row label: array} mapping.

    Arrays (N, H, W) are colour-mapped with :func:`contribution_colormap` (one scale per row);
    arrays (N, H, W, 4) are taken as RGBA images.
    """
    rows = dict(maps) if isinstance(maps, Mapping) else {"": maps}
    rendered = {}
    for label, row in rows.items():
        row = np.asarray(row)
        if row.ndim == 4 and row.shape[-1] == 4:
            rendered[label] = row
        elif row.ndim == 3:
            rendered[label] = contribution_colormap(row, limit)
        else:
            raise ValueError(f"maps must be (N, H, W) or RGBA (N, H, W, 4); got {row.shape} for {label!r}")
    return rendered


def save_grid_figure(path, images, maps, *, titles: Sequence[str] | None = None, limit: float | None = None) -> None:
    """PNG with the images in the first row and one row of maps per method below.

    Args:
      path: output file.
      images: (N, H, W, C) in [0, 1], C = 1 or 3.
      maps: (N, H, W) signed maps, (N, H, W, 4) RGBA images (e.g. :func:`explanation_image`), or a
        mapping {method name: such an array} for several rows.
      titles: N column titles (e.g. class names); limit: colour limit of signed maps.
    """
    images = np.clip(np.asarray(images, dtype=np.float64), 0, 1)
    if images.ndim != 4:
        raise ValueError(f"need images (N, H, W, C); got {images.shape}")
    rows = _as_rgba_rows(maps, limit)
    num = images.shape[0]
    if any(len(row) != num for row in rows.values()) or (titles is not None and len(titles) != num):
        raise ValueError("images, every row of maps and titles need the same length")
    figure = _new_figure(1.6 * num, 1.6 * (len(rows) + 1))
    axes = figure.subplots(len(rows) + 1, num, squeeze=False)
    for column in range(num):
        image = images[column]
        axes[0, column].imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
        if titles is not None:
            axes[0, column].set_title(str(titles[column]), fontsize=8)
        for row_index, (label, row) in enumerate(rows.items(), start=1):
            axes[row_index, column].imshow(row[column])
            if column == 0 and label:
                axes[row_index, column].set_ylabel(label, fontsize=8)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(path, format="png")


def save_localisation_boxplot(path, scores_by_method: Mapping[str, np.ndarray], *, grid: int = 3) -> None:
    """PNG box plot of localisation scores per method, with the oracle (1) and uniform (1/grid²) lines.

    Args: path; scores_by_method {name: (n,) scores}, drawn in the given order; grid: n of n x n.
    """
    if not scores_by_method:
        raise ValueError("no scores to plot")
    names = list(scores_by_method)
    figure = _new_figure(max(4.0, 0.9 * len(names) + 1.5), 3.5)
    axis = figure.subplots()
    axis.boxplot([np.asarray(scores_by_method[name], dtype=np.float64).reshape(-1) for name in names], showfliers=False)
    axis.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
    axis.axhline(1.0, color="tab:green", linestyle="--", label="oracle")
    axis.axhline(1.0 / grid**2, color="tab:red", linestyle=":", label=f"uniform (1/{grid * grid})")
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("localisation score")
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")


def save_pixel_removal_curves(path, curves_by_method: Mapping[str, np.ndarray], fractions) -> None:
    """PNG of pixel-removal curves: probability of the true class vs the share of removed pixels.

    Args: path; curves_by_method {name: (n_masks,) curve}; fractions (n_masks,) removed shares
    (e.g. ``codajax.metrics.removal_fractions``), drawn in percent.
    """
    if not curves_by_method:
        raise ValueError("no curves to plot")
    fractions = np.asarray(fractions, dtype=np.float64)
    figure = _new_figure(4.5, 3.5)
    axis = figure.subplots()
    for name, curve in curves_by_method.items():
        curve = np.asarray(curve, dtype=np.float64)
        if curve.shape != fractions.shape:
            raise ValueError(f"curve {name!r} has shape {curve.shape}, fractions {fractions.shape}")
        axis.plot(100 * fractions, curve, label=name)
    axis.set_xlabel("pixels removed (%)")
    axis.set_ylabel("p(true class)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")
