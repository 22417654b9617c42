"""Figures of explanations for a notebook: ``plot`` and ``plot_attributions`` return a Figure.

Drawn by :mod:`codajax.explain.render`, the code of ``eval.py``'s figures (colour bars, the split
into the contributions of ``x`` and ``1 − x``, the explanation image; RISE, Grad-CAM and
Occlusion from each map's minimum to its maximum). The figures live on an Agg canvas, outside
pyplot: a notebook with the inline backend (Jupyter's default; ``%matplotlib inline``) shows a
returned figure, ``figure.savefig(path)`` writes it. matplotlib is imported on the first call,
so ``import codajax.explain`` stays light.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _render():
  """:mod:`codajax.explain.render`, imported on first use (it imports matplotlib)."""
  from codajax.explain import render  # a light `import codajax.explain` keeps matplotlib out

  return render


def _as_images(images) -> np.ndarray:
  images = np.asarray(images, dtype=np.float64)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"need images (N, H, W, C) with C = 1 or 3; got {images.shape}")
  return images


def _summed(name: str, maps, num: int) -> np.ndarray:
  """(N, H, W) from an attribution (N, H, W, C) or (N, H, W), checked against N images."""
  maps = np.asarray(maps, dtype=np.float64)
  if maps.ndim == 4:
    maps = maps.sum(-1)
  if maps.ndim != 3 or len(maps) != num:
    raise ValueError(
        f"maps of {name!r} must be ({num}, H, W) or ({num}, H, W, C); got {np.shape(maps)}"
    )
  return maps


def explanation_rows(explanation: Any, images, *, name: str = "Ours") -> dict[str, np.ndarray]:
  """The figure rows of an :class:`~codajax.explain.Explanation` of ``images`` (N, H, W, C).

  One class per image, at the input (contributions (N, H, W, 2C) to ``[x, 1 − x]``): the channel
  sum, its parts from ``x`` and from ``1 − x`` and the explanation image
  (:func:`codajax.explain.render.contribution_rows`). At a layer (``layer > 0``): the channel
  sum of the contributions of its input features. Every class (``targets="all"``, maps
  (N, K, ...)): one row of channel sums per class, ``"<name> (class k)"``.
  """
  render = _render()
  images = _as_images(images)
  contributions = np.asarray(explanation["contribution_map"], dtype=np.float64)
  classes = np.asarray(explanation["explained_class_idx"])
  if len(contributions) != len(images):
    raise ValueError(f"the explanation has {len(contributions)} images, the images {len(images)}")
  if classes.ndim == 2:
    return {f"{name} (class {k})": contributions[:, k].sum(-1) for k in range(classes.shape[1])}
  channels = images.shape[-1]
  at_input = contributions.shape[1:] == (*images.shape[1:3], 2 * channels)
  if at_input:
    return render.contribution_rows(contributions, channels, name)
  return {f"{name} (layer input, sum)": contributions.sum(-1)}


def plot(
    explanation: Any,
    images,
    *,
    baselines: Mapping[str, Any] | None = None,
    titles: Sequence[str] | None = None,
    title: str | None = None,
    name: str = "Ours",
):
  """A figure of an explanation of ``images``, with baseline maps below it when given.

  Args:
    explanation: what :func:`codajax.explain.explain` returned for ``images``.
    images: (N, H, W, C) in [0, 1], C = 1 or 3.
    baselines: ``{method name: maps (N, H, W, C) or (N, H, W)}``, e.g. from
      ``codajax.attribution.METHODS``; channels are summed. Rows of "RISE", "GCam", "Occ5",
      "Occ9" are drawn from each map's minimum to its maximum.
    titles: N column titles (default: the predicted and the explained class).
    title: the figure's title (default: what the colours mean).
    name: the explanation's name in the row labels.

  Returns:
    A ``matplotlib.figure.Figure``: the images, then the rows of :func:`explanation_rows`, then
    one row per baseline; signed maps blue-white-red on their own ``±L`` with a colour bar.
  """
  render = _render()
  images = _as_images(images)
  rows = explanation_rows(explanation, images, name=name)
  for method, maps in (baselines or {}).items():
    rows[method] = _summed(method, maps, len(images))
  if titles is None:
    predicted = np.asarray(explanation["prediction"])
    classes = np.asarray(explanation["explained_class_idx"])
    titles = [
        f"predicted {p}" + ("" if classes.ndim == 2 else f", explained {c}")
        for p, c in zip(predicted, classes)
    ]
  return render.grid_figure(
      images,
      rows,
      titles=titles,
      title=_default_title(rows) if title is None else title,
      dark_rows=(f"{name} (explanation)",),
  )


def plot_attributions(
    maps,
    images,
    *,
    method: str = "",
    titles: Sequence[str] | None = None,
    title: str | None = None,
):
  """A figure of attribution maps (a baseline's) of ``images``: the images, then the maps.

  Args:
    maps: (N, H, W, C) or (N, H, W) maps of one method (channels are summed), or
      ``{method name: such maps}`` for a row per method.
    images: (N, H, W, C) in [0, 1]; method: the row label of a single array (a name of
      ``render.MIN_MAX_METHODS`` draws it from each map's minimum to its maximum).
    titles: N column titles; title: the figure's title (default: what the colours mean).

  Returns:
    A ``matplotlib.figure.Figure`` (signed maps blue-white-red on their own ``±L``).
  """
  render = _render()
  images = _as_images(images)
  by_method = maps if isinstance(maps, Mapping) else {method: maps}
  rows = {label: _summed(label, row, len(images)) for label, row in by_method.items()}
  return render.grid_figure(
      images, rows, titles=titles, title=_default_title(rows) if title is None else title
  )


def _default_title(rows: Mapping[str, np.ndarray]) -> str:
  """What the colours of ``rows`` mean."""
  render = _render()
  lines = ["Blue-white-red: signed maps on their own limit ±L (colour bar)."]
  if any(render.is_min_max(label) for label in rows):
    lines.append("White-red (RISE, GCam, Occ): from each map's minimum to its maximum.")
  if any(label.endswith(" (explanation)") for label in rows):
    lines.append("Explanation on black: white = evidence from bright pixels x.")
  return "\n".join(lines)
