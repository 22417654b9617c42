"""Tests of codajax.explain.render: colours and PNG files."""

import matplotlib.image
import numpy as np
import pytest
from PIL import Image

from codajax.explain import render


def read_png(path):
  with Image.open(path) as image:
    assert image.format == "PNG"
    size = image.size
  pixels = matplotlib.image.imread(path)
  assert pixels.ndim == 3 and pixels.shape[:2] == size[::-1]
  return pixels


def test_colormap_is_symmetric_and_white_at_zero():
  maps = np.random.default_rng(0).normal(size=(3, 5, 5))
  colours = render.contribution_colormap(maps, limit=2.0)
  mirrored = render.contribution_colormap(-maps, limit=2.0)
  assert colours.shape == (3, 5, 5, 4)
  np.testing.assert_allclose(colours[..., [2, 1, 0]], mirrored[..., :3], atol=2 / 255 + 1e-6)
  np.testing.assert_allclose(
      render.contribution_colormap(np.zeros((1, 2, 2)), limit=1.0)[..., :3], 1.0, atol=2 / 255
  )
  extremes = render.contribution_colormap(np.array([[[-5.0, 5.0]]]), limit=1.0)[0, 0, :, :3]
  np.testing.assert_allclose(extremes, [[0, 0, 1], [1, 0, 0]])  # clipped to pure blue / red


def test_colormap_default_limit_is_the_percentile_of_absolute_values():
  maps = np.linspace(-10, 10, 2001).reshape(1, 1, -1)
  limit = render.symmetric_limit(maps)
  assert limit == pytest.approx(np.percentile(np.abs(maps), 99.5))
  np.testing.assert_allclose(
      render.contribution_colormap(maps), render.contribution_colormap(maps, limit=limit)
  )
  assert not np.allclose(
      render.contribution_colormap(maps), render.contribution_colormap(maps, limit=10.0)
  )


def test_explanation_image_colour_and_opacity():
  contributions = np.zeros((2, 2, 6))
  contributions[0, 0] = [3, 0, 1, 1, 0, 1]  # r: 3/(3+1), g: none, b: 1/2; sum 6
  contributions[0, 1] = [1, 1, 1, -9, 0, 0]  # negative sum -> transparent
  contributions[1, 0] = [0.5, 0, 0, 0, 0, 0]  # sum 0.5
  image = render.explanation_image(contributions, percentile=100)
  assert image.shape == (2, 2, 4)
  np.testing.assert_allclose(image[0, 0], [0.75, 0.0, 0.5, 1.0])
  assert image[0, 1, 3] == 0
  np.testing.assert_allclose(image[1, 0], [1.0, 0.0, 0.0, 0.5 / 6])
  batch = render.explanation_image(np.stack([contributions, 2 * contributions]), percentile=100)
  np.testing.assert_allclose(batch[1], image)  # opacity is scaled per image
  with pytest.raises(ValueError):
    render.explanation_image(np.zeros((2, 2, 5)))


def test_save_grid_figure_writes_png(tmp_path):
  rng = np.random.default_rng(1)
  images = rng.uniform(size=(3, 8, 8, 3))
  signed = rng.normal(size=(3, 8, 8))
  rgba = render.explanation_image(rng.normal(size=(3, 8, 8, 6)))
  render.save_grid_figure(tmp_path / "one.png", images, signed, titles=["a", "b", "c"])
  render.save_grid_figure(tmp_path / "rows.png", images[..., :1], {"Ours": rgba, "IxG": signed})
  one, rows = read_png(tmp_path / "one.png"), read_png(tmp_path / "rows.png")
  assert rows.shape[0] > one.shape[0]  # one more row of panels
  with pytest.raises(ValueError):
    render.save_grid_figure(tmp_path / "bad.png", images, signed[:2])


def test_save_localisation_boxplot_writes_png(tmp_path):
  rng = np.random.default_rng(2)
  render.save_localisation_boxplot(
      tmp_path / "box.png", {"Ours": rng.uniform(0.8, 1, 90), "Grad": rng.uniform(0, 0.3, 90)}
  )
  assert read_png(tmp_path / "box.png").std() > 0


def test_save_pixel_removal_curves_writes_png(tmp_path):
  fractions = np.arange(129) * 2 / 1024
  curves = {"Ours": 0.9 + 0.05 * np.sin(fractions), "IxG": 0.9 - 2 * fractions}
  render.save_pixel_removal_curves(tmp_path / "curves.png", curves, fractions)
  assert read_png(tmp_path / "curves.png").std() > 0
  with pytest.raises(ValueError):
    render.save_pixel_removal_curves(tmp_path / "bad.png", {"x": np.zeros(3)}, fractions)


def _image_axes(figure):
  """The axes that show an image, and their colour limits (colour-bar axes excluded)."""
  bars = {
      id(image.colorbar.ax)
      for axis in figure.axes
      for image in axis.images
      if image.colorbar is not None
  }
  return [axis for axis in figure.axes if axis.images and id(axis) not in bars]


def test_contribution_figure_layout_and_symmetric_per_map_limits(tmp_path):
  rng = np.random.default_rng(3)
  images = rng.uniform(size=(4, 8, 8, 1))
  signed = rng.normal(size=(4, 8, 8)) * np.array([1, 10, 100, 1000])[:, None, None]
  rise = rng.uniform(0.2, 0.3, size=(4, 8, 8))  # non-negative, a narrow range
  rgba = render.explanation_image(rng.normal(size=(4, 8, 8, 2)))
  figure = render.save_grid_figure(
      tmp_path / "c.png",
      images,
      {"Ours": signed, "RISE": rise, "expl": rgba},
      title="t",
      dark_rows=("expl",),
  )
  read_png(tmp_path / "c.png")
  panels = _image_axes(figure)
  assert len(panels) == 4 * 4  # images + 3 rows, 4 columns
  limits = [axis.images[0].get_clim() for axis in panels if axis.images[0].colorbar is not None]
  assert len(limits) == 2 * 4  # a colour bar on every map
  signed_limits, rise_limits = limits[:4], limits[4:]  # row by row: Ours, then RISE
  for low, high in signed_limits:
    assert low == -high and high > 0
  # Each signed map has its own limit: the 99.5th percentile of its |values| (numpy here).
  np.testing.assert_allclose(
      [high for _, high in signed_limits],
      [np.percentile(np.abs(m), 99.5) for m in signed],
      rtol=1e-12,
  )
  # RISE (non-negative, a narrow range) spans each map's own minimum to its maximum, white-red.
  np.testing.assert_allclose(rise_limits, [(m.min(), m.max()) for m in rise], rtol=1e-12)
  assert {axis.images[0].get_cmap().name for axis in panels[8:12]} == {"Reds"}


def test_localisation_grid_figure_shows_one_grid_and_a_map_per_method_and_tile(tmp_path):
  rng = np.random.default_rng(4)
  grid_image = rng.uniform(size=(12, 12, 3))
  maps = {"Ours": rng.normal(size=(4, 12, 12)), "GCam": rng.uniform(size=(4, 12, 12))}
  figure = render.save_localisation_grid_figure(
      tmp_path / "g.png", grid_image, [3, 1, 4, 1], maps, grid=2, title="t"
  )
  read_png(tmp_path / "g.png")
  panels = _image_axes(figure)
  assert len(panels) == 1 + 2 * 4
  assert sum(axis.images[0].colorbar is None for axis in panels) == 1  # the grid image, once
  for axis in panels[1:5]:  # Ours: signed, symmetric
    low, high = axis.images[0].get_clim()
    assert low == -high > -np.inf and high > 0
  for axis, tile_map in zip(panels[5:], maps["GCam"], strict=True):  # GCam: min..max
    np.testing.assert_allclose(axis.images[0].get_clim(), (tile_map.min(), tile_map.max()))
  for axis in panels[1:]:
    assert len(axis.patches) == 4  # the tile outlines
  with pytest.raises(ValueError):
    render.save_localisation_grid_figure(tmp_path / "bad.png", grid_image, [1, 2, 3], maps, grid=2)


def test_plots_state_n_and_the_direction(tmp_path):
  fractions = np.arange(5) / 10
  figure = render.save_pixel_removal_curves(
      tmp_path / "r.png", {"Ours": np.ones(5)}, fractions, n_images=7
  )
  axis = figure.axes[0]
  assert "least important" in axis.get_title() and "n = 7" in axis.get_title()
  assert "higher is better" in axis.get_ylabel()
  box = render.save_localisation_boxplot(
      tmp_path / "b.png", {"Ours": np.ones(6), "Grad": np.zeros(6)}
  )
  assert "n = 6 scores" in box.axes[0].get_title() and "higher is better" in box.axes[0].get_title()
  grids = render.save_localisation_boxplot(tmp_path / "g.png", {"Ours": np.ones((2, 9))})
  assert "n = 2 grids x 9 tiles" in grids.axes[0].get_title()


@pytest.mark.parametrize("lines", [1, 3, 5])
def test_a_title_of_several_lines_covers_no_panel_or_column_title(tmp_path, lines):
  rng = np.random.default_rng(5)
  title = "\n".join(f"line {k} of the figure's title" for k in range(lines))
  figures = [
      render.save_grid_figure(  # as tall as eval.py's figure with every method
          tmp_path / "c.png",
          rng.uniform(size=(8, 8, 8, 3)),
          {f"method {k}": rng.normal(size=(8, 8, 8)) for k in range(12)},
          titles=[f"class {k}" for k in range(8)],
          title=title,
      ),
      render.save_localisation_grid_figure(
          tmp_path / "g.png",
          rng.uniform(size=(12, 12, 3)),
          [3, 1, 4, 1],
          {"Ours": rng.normal(size=(4, 12, 12))},
          grid=2,
          title=title,
      ),
  ]
  for figure in figures:
    renderer = figure.canvas.get_renderer()
    title_box = figure._suptitle.get_window_extent(renderer)
    assert title_box.y1 <= figure.bbox.y1 + 0.5  # inside the figure
    for axis in figure.axes:  # every panel with its column title and colour bar ticks
      assert axis.get_tightbbox(renderer).y1 <= title_box.y0, axis.get_title()
