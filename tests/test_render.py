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
    np.testing.assert_allclose(render.contribution_colormap(np.zeros((1, 2, 2)), limit=1.0)[..., :3], 1.0, atol=2 / 255)
    extremes = render.contribution_colormap(np.array([[[-5.0, 5.0]]]), limit=1.0)[0, 0, :, :3]
    np.testing.assert_allclose(extremes, [[0, 0, 1], [1, 0, 0]])  # clipped to pure blue / red


def test_colormap_default_limit_is_the_percentile_of_absolute_values():
    maps = np.linspace(-10, 10, 2001).reshape(1, 1, -1)
    limit = render.symmetric_limit(maps)
    assert limit == pytest.approx(np.percentile(np.abs(maps), 99.5))
    np.testing.assert_allclose(render.contribution_colormap(maps), render.contribution_colormap(maps, limit=limit))
    assert not np.allclose(render.contribution_colormap(maps), render.contribution_colormap(maps, limit=10.0))


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
    render.save_localisation_boxplot(tmp_path / "box.png", {"Ours": rng.uniform(0.8, 1, 90), "Grad": rng.uniform(0, 0.3, 90)})
    assert read_png(tmp_path / "box.png").std() > 0


def test_save_pixel_removal_curves_writes_png(tmp_path):
    fractions = np.arange(129) * 2 / 1024
    curves = {"Ours": 0.9 + 0.05 * np.sin(fractions), "IxG": 0.9 - 2 * fractions}
    render.save_pixel_removal_curves(tmp_path / "curves.png", curves, fractions)
    assert read_png(tmp_path / "curves.png").std() > 0
    with pytest.raises(ValueError):
        render.save_pixel_removal_curves(tmp_path / "bad.png", {"x": np.zeros(3)}, fractions)
