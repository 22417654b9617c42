"""``codajax.explain.plot``/``plot_attributions``: figures for a notebook, drawn as eval.py's."""

import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

from codajax.explain import Explanation, plot, plot_attributions, render

N, H, W = 3, 6, 5


def _explanation(contributions, classes, predicted) -> Explanation:
  """An Explanation holding ``contributions`` (only the fields the figures read are real)."""
  zeros = np.zeros((len(contributions), 4))
  return Explanation(
      logits=zeros,
      evidence=zeros,
      prediction=np.asarray(predicted),
      explained_class_idx=np.asarray(classes),
      dynamic_linear_weights=contributions,
      contribution_map=contributions,
      contribution_map_sum=contributions.sum(-1),
  )


def _image_axes(figure):
  bars = {id(image.colorbar.ax) for a in figure.axes for image in a.images if image.colorbar}
  return [axis for axis in figure.axes if axis.images and id(axis) not in bars]


def test_plot_shows_the_split_the_explanation_image_and_baselines_scaled_by_kind():
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(N, H, W, 1))
  contributions = rng.normal(size=(N, H, W, 2))
  ixg = rng.normal(size=(N, H, W, 1))
  rise = rng.uniform(0.5, 0.6, size=(N, H, W, 1))
  figure = plot(
      _explanation(contributions, [2, 0, 1], [2, 3, 1]),
      images,
      baselines={"IxG": ixg, "RISE": rise},
  )
  assert isinstance(figure, Figure)
  labels = [axis.get_ylabel() for axis in _image_axes(figure)[N::N]]
  assert labels == [
      "Ours (sum)",
      "Ours: from x",
      "Ours: from 1-x",
      "Ours (explanation)",
      "IxG",
      "RISE",
  ]
  rows = np.array(_image_axes(figure)).reshape(7, N)
  assert [axis.get_title() for axis in rows[0]] == [
      "predicted 2, explained 2",
      "predicted 3, explained 0",
      "predicted 1, explained 1",
  ]
  for column in range(N):  # each panel shows its own numbers, computed here with numpy
    np.testing.assert_allclose(rows[1, column].images[0].get_array(), contributions[column].sum(-1))
    np.testing.assert_allclose(rows[2, column].images[0].get_array(), contributions[column, ..., 0])
    np.testing.assert_allclose(rows[3, column].images[0].get_array(), contributions[column, ..., 1])
    np.testing.assert_allclose(
        rows[4, column].images[0].get_array(), render.explanation_image(contributions[column])
    )
    low, high = rows[5, column].images[0].get_clim()
    assert low == -high == -np.percentile(np.abs(ixg[column]), 99.5)
    np.testing.assert_allclose(
        rows[6, column].images[0].get_clim(), (rise[column].min(), rise[column].max())
    )
  assert rows[6, 0].images[0].get_cmap().name == "Reds"
  assert "minimum to its maximum" in figure.texts[0].get_text()


def test_plot_of_every_class_has_a_row_per_class_and_a_layer_plot_one_row():
  rng = np.random.default_rng(1)
  images = rng.uniform(size=(N, H, W, 3))
  every = rng.normal(size=(N, 4, H, W, 6))
  figure = plot(_explanation(every, np.tile(np.arange(4), (N, 1)), [0, 1, 2]), images)
  rows = np.array(_image_axes(figure)).reshape(5, N)
  assert [row[0].get_ylabel() for row in rows[1:]] == [f"Ours (class {k})" for k in range(4)]
  np.testing.assert_allclose(rows[3, 1].images[0].get_array(), every[1, 2].sum(-1))
  at_layer = rng.normal(size=(N, 3, 2, 7))  # the input of a deeper layer: 7 feature channels
  figure = plot(_explanation(at_layer, [0, 0, 0], [0, 0, 0]), images, titles=["a", "b", "c"])
  rows = np.array(_image_axes(figure)).reshape(2, N)
  assert rows[1, 0].get_ylabel() == "Ours (layer input, sum)"
  np.testing.assert_allclose(rows[1, 2].images[0].get_array(), at_layer[2].sum(-1))
  with pytest.raises(ValueError, match="images"):
    plot(_explanation(at_layer, [0, 0, 0], [0, 0, 0]), images[:2])


def test_plot_attributions_of_one_method_or_several():
  rng = np.random.default_rng(2)
  images = rng.uniform(size=(N, H, W, 3))
  gcam = rng.uniform(2.0, 3.0, size=(N, H, W, 1))
  figure = plot_attributions(gcam, images, method="GCam")
  panel = _image_axes(figure)[N]
  assert panel.get_ylabel() == "GCam"
  np.testing.assert_allclose(panel.images[0].get_clim(), (gcam[0].min(), gcam[0].max()))
  grads = rng.normal(size=(N, H, W, 3))
  figure = plot_attributions({"Grad": grads, "Occ5": gcam[..., 0]}, images)
  rows = np.array(_image_axes(figure)).reshape(3, N)
  np.testing.assert_allclose(rows[1, 1].images[0].get_array(), grads[1].sum(-1))
  assert rows[2, 0].images[0].get_cmap().name == "Reds"
  with pytest.raises(ValueError, match="Grad"):
    plot_attributions({"Grad": grads[:2]}, images)


def test_importing_codajax_explain_stays_light():
  code = (
      "import sys, codajax.explain\n"
      "heavy = ('orbax', 'tensorstore', 'gcsfs', 'grain', 'matplotlib')\n"
      "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
  )
  loaded = subprocess.run(
      [sys.executable, "-c", code], capture_output=True, text=True, check=True
  ).stdout.strip()
  assert loaded == "[]", loaded
