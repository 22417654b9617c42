"""eval.py and codajax.evaluation: end to end on small trained runs, depth analysis, errors."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from codajax import evaluation
from codajax.explain import explain
from codajax.models import get_model
from codajax.train import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))
import digits as digits_config  # noqa: E402  (configs/ is not a package)
import shapes as shapes_config  # noqa: E402


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def digits_run(data_dir, tmp_path_factory):
  """digits-5L trained for 40 steps (~80 % accuracy): enough confident images for a few grids."""
  config = digits_config.get_config("smoke")
  config.data_dir = data_dir
  config.batch_size = 64
  config.max_steps = 40
  config.num_epochs = 10
  config.optimizer.schedule = "constant"
  config.optimizer.learning_rate = 3e-3
  config.checkpoint_every_steps = 1000
  config.eval_every_epochs = 100
  workdir = str(tmp_path_factory.mktemp("digits_run"))
  train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def shapes_run(data_dir, tmp_path_factory):
  """The shapes smoke run (tiny-3L, 4 steps): object masks, too weak for localisation grids."""
  config = shapes_config.get_config("smoke")
  config.data_dir = data_dir
  workdir = str(tmp_path_factory.mktemp("shapes_run"))
  train_and_evaluate(config, workdir)
  return workdir


def _eval_cli(*args, timeout=300):
  return subprocess.run([sys.executable, os.path.join(ROOT, "eval.py"), *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout,
                        env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _assert_png(path):
  assert os.path.getsize(path) > 1000, path
  with Image.open(path) as image:
    image.verify()
  with Image.open(path) as image:
    assert image.format == "PNG" and min(image.size) >= 100


def _assert_summary(summary, count):
  assert summary["count"] == count
  assert 0.0 <= summary["min"] <= summary["p25"] <= summary["median"] <= summary["p75"] \
      <= summary["max"] <= 1.0
  assert summary["min"] <= summary["mean"] <= summary["max"]


def test_eval_cli_end_to_end_on_digits(digits_run, tmp_path):
  methods = ["Ours", "Grad", "GCam"]
  out = str(tmp_path / "eval")
  result = _eval_cli("--workdir", digits_run, "--methods", ",".join(methods), "--n_grids", "2",
                     "--n_removal", "8", "--batch_size", "9", "--n_figure", "3", "--out", out,
                     "--method_setting", "Grad.abs=True")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "report:" in result.stdout and "Ours" in result.stdout

  with open(os.path.join(out, "report.json")) as f:
    report = json.load(f)
  assert report["checkpoint"] == {"which": "latest", "step": 40}
  assert report["dataset"] == "digits" and report["explainable_layers"] == 5
  acc = report["accuracy"]
  assert acc["count"] == 360 and 0.5 < acc["top1"] <= acc["top5"] <= 1.0
  assert len(acc["per_class"]) == 10 and all(0 <= a <= 1 for a in acc["per_class"])

  protocol = report["protocol"]
  assert protocol["method_settings"] == {"Grad": {"abs": True}, "GCam": {
      "relu_attributions": True, "upsample": True}}
  assert protocol["localisation"]["n_grids"] == 2 and protocol["localisation"]["grid"] == 3
  removal = protocol["pixel_removal"]
  assert removal["mode"] == "zero_encoded" and removal["n_images"] == 8
  assert removal["n_points"] == 64 and len(removal["fractions"]) == 65  # 25 % of 16x16 = 64 px
  assert "ground_truth" not in protocol   # digits has no masks; "auto" skips it

  assert list(report["methods"]) == methods
  for method in methods:
    result_m = report["methods"][method]
    _assert_summary(result_m["localisation"], 2 * 9)
    assert len(result_m["localisation"]["per_tile_mean"]) == 9
    curve = np.asarray(result_m["pixel_removal"]["curve"])
    assert curve.shape == (65,) and np.all((curve >= 0) & (curve <= 1))
    assert result_m["pixel_removal"]["mean"] == pytest.approx(curve.mean(), abs=1e-5)
    assert "ground_truth" not in result_m
    assert set(report["timings_s"]["methods"][method]) == {"localisation", "attribution",
                                                           "pixel_removal"}
  # Every curve starts from the same unperturbed images.
  starts = {report["methods"][m]["pixel_removal"]["curve"][0] for m in methods}
  assert max(starts) - min(starts) < 1e-5

  depths = report["depths"]
  assert [d["layer"] for d in depths] == [0, 1, 2, 3, 4]
  assert [d["interpretable_depth"] for d in depths] == [5, 4, 3, 2, 1]
  # Layer 0 is "Ours"; the last layer's contributions (a 1x1 CoDA layer) sum to the class map
  # o^L_c / T, whose positive part is Grad-CAM's map: the same localisation scores.
  assert depths[0]["localisation"]["mean"] == pytest.approx(
      report["methods"]["Ours"]["localisation"]["mean"], abs=1e-5)
  assert depths[4]["localisation"]["mean"] == pytest.approx(
      report["methods"]["GCam"]["localisation"]["mean"], abs=1e-4)

  scores = np.load(os.path.join(out, "scores.npz"))
  assert scores["localisation/Ours"].shape == (2, 9)
  assert scores["localisation_depths"].shape == (5, 2, 9)
  assert scores["pixel_removal/GCam"].shape == (8, 65)
  assert np.mean(scores["localisation/Grad"]) == pytest.approx(
      report["methods"]["Grad"]["localisation"]["mean"], abs=1e-6)

  expected = {"contributions.png", "localisation_grid.png", "localisation.png",
              "localisation_depths.png", "pixel_removal.png"}
  assert set(report["figures"]) == expected
  for name in expected:
    _assert_png(os.path.join(out, name))


def test_ground_truth_scores_on_shapes_and_too_few_grids(shapes_run, tmp_path, capsys):
  out = str(tmp_path / "eval")
  report = evaluation.run_evaluation(shapes_run, methods=("Ours", "IxG", "Occ5"), n_grids=2,
                                     n_removal=8, batch_size=8, n_figure=2, out=out)
  # An untrained model classifies nothing confidently: localisation is skipped with a message.
  assert "only 0 of the requested 2" in capsys.readouterr().out
  assert report["protocol"]["localisation"]["n_grids"] == 0 and "depths" not in report
  gt = report["protocol"]["ground_truth"]
  assert gt["n_images"] == 8 and gt["targets"] == "true class"
  assert 0.0 < gt["mask_fraction"] < 0.5
  for method in ("Ours", "IxG", "Occ5"):
    result = report["methods"][method]
    assert "localisation" not in result
    energy = result["ground_truth"]["mask_energy"]
    assert 0.0 <= energy["min"] <= energy["mean"] <= energy["max"] <= 1.0
    assert result["ground_truth"]["pointing_game"] in {k / 8 for k in range(9)}
    assert len(result["pixel_removal"]["curve"]) == 129   # 32x32: the papers' 129 points
  scores = np.load(os.path.join(out, "scores.npz"))
  assert scores["mask_energy/Ours"].shape == (8,)
  assert np.mean(scores["mask_energy/IxG"]) == pytest.approx(
      report["methods"]["IxG"]["ground_truth"]["mask_energy"]["mean"], abs=1e-6)
  assert set(report["figures"]) == {"contributions.png", "pixel_removal.png"}
  _assert_png(os.path.join(out, "contributions.png"))


def test_unknown_method_lists_the_known_ones(tmp_path):
  result = _eval_cli("--workdir", str(tmp_path), "--methods", "Ours,LIME", timeout=120)
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert "unknown method 'LIME'" in result.stderr
  assert "known methods: Ours, Grad, IxG, IntGrad, SmoothGrad, GCam, Occ5, Occ9, RISE" \
      in result.stderr


def test_method_settings_reach_the_attributions():
  model = get_model("tiny-3L", num_classes=10, image_channels=3)
  images = jax.random.randint(jax.random.key(1), (2, 8, 8, 3), 0, 256).astype(jnp.uint8)
  variables = jax.jit(model.init)(jax.random.key(0), images.astype(jnp.float32) / 255)
  info = evaluation.inspect_model(model, variables, (8, 8, 3))
  targets = jnp.array([1, 4])
  signed = evaluation.attribution_function(model, info, "Grad")(variables, images, targets)
  absolute = evaluation.attribution_function(model, info, "Grad", settings={"abs": True})(
      variables, images, targets)
  assert float(signed.min()) < 0.0
  np.testing.assert_allclose(absolute, jnp.abs(signed), rtol=1e-6)


def test_method_settings_are_parsed_and_checked():
  assert evaluation.parse_method_settings(
      ["RISE.n_masks=1000", "RISE.p1=0.2", "Occ5.reference_window_quirk=False"]) == {
          "RISE": {"n_masks": 1000, "p1": 0.2}, "Occ5": {"reference_window_quirk": False}}
  with pytest.raises(evaluation.EvaluationError, match="not METHOD.key=value"):
    evaluation.parse_method_settings(["RISE:n_masks=10"])
  with pytest.raises(evaluation.EvaluationError, match="'Ours' is not a post-hoc method"):
    evaluation.parse_method_settings(["Ours.n_masks=10"])
  with pytest.raises(evaluation.EvaluationError, match=r"RISE \(rise\) takes .*n_masks"):
    evaluation.parse_method_settings(["RISE.masks=10"])
  with pytest.raises(evaluation.EvaluationError, match="settings given for RISE, which is not"):
    evaluation.run_evaluation("unused", methods=("Ours",),
                              method_settings={"RISE": {"n_masks": 10}})


def test_missing_checkpoint_names_train_py(tmp_path):
  with pytest.raises(evaluation.EvaluationError, match="python train.py --workdir"):
    evaluation.run_evaluation(str(tmp_path / "nothing"), methods=("Ours",))


def test_ground_truth_on_a_dataset_without_masks_is_refused(digits_run, tmp_path):
  with pytest.raises(evaluation.EvaluationError, match="'digits' has no object masks"):
    evaluation.run_evaluation(digits_run, methods=("Ours",), ground_truth="on",
                              out=str(tmp_path))
  assert not os.listdir(tmp_path)   # refused before any work


def test_depth_maps_without_the_hybrid_helpers_match_them(monkeypatch):
  model = get_model("tiny-3L", num_classes=10, image_channels=3)
  images = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3))
  variables = jax.jit(model.init)(jax.random.key(0), images)
  targets = jnp.array([3, 7])
  depth_maps = lambda: jax.jit(
      lambda v, x, t: evaluation.contributions_at_depths(model, v, x, t))(variables, images, targets)
  with_helpers = depth_maps()
  monkeypatch.setattr(evaluation, "explain_at_depths", None)
  monkeypatch.setattr(evaluation, "upsample_to_image", None)
  generic = depth_maps()
  assert generic.shape == (3, 2, 8, 8)
  np.testing.assert_allclose(generic, with_helpers, rtol=1e-5, atol=1e-7)
  # Every depth's map sums to the explained logit minus the bias.
  evidence = explain(model, variables, images, targets)["evidence"][jnp.arange(2), targets]
  np.testing.assert_allclose(generic.sum(axis=(2, 3)), jnp.broadcast_to(evidence, (3, 2)),
                             rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_every_method_runs_on_a_tiny_evaluation(digits_run, tmp_path):
  report = evaluation.run_evaluation(digits_run, n_grids=1, n_removal=2, batch_size=9,
                                     n_figure=1, depths="off", out=str(tmp_path),
                                     method_settings={"RISE": {"n_masks": 300},
                                                      "SmoothGrad": {"nt_samples": 8}})
  assert list(report["methods"]) == list(evaluation.known_methods())
  assert report["protocol"]["method_settings"]["RISE"]["n_masks"] == 300
  for result in report["methods"].values():
    _assert_summary(result["localisation"], 9)
    assert 0.0 <= result["pixel_removal"]["mean"] <= 1.0


def test_hybrid_with_a_cnn_embedding_is_explained_over_the_image():
  model = get_model("hybrid-shapes-s2", num_classes=10, temperature=10.0,
                    backbone_widths=(4, 8, 8), coda_layers=((8, 4, 3, 1, 1), (10, 4, 1, 1, 0)))
  images = jax.random.randint(jax.random.key(1), (2, 16, 16, 3), 0, 256).astype(jnp.uint8)
  variables = jax.jit(model.init)(jax.random.key(0), images.astype(jnp.float32) / 255)
  info = evaluation.inspect_model(model, variables, (16, 16, 3))
  assert info == evaluation.ModelInfo(num_layers=2, encoded_input=False)

  targets = jnp.array([[1, 4, 9], [0, 2, 5]])
  ours = evaluation.attribution_function(model, info, "Ours")(variables, images, targets)
  assert ours.shape == (2, 3, 16, 16, 1)
  evidence = explain(model, variables, images.astype(jnp.float32) / 255, "all")["evidence"]
  np.testing.assert_allclose(ours.sum(axis=(2, 3, 4)), jnp.take_along_axis(evidence, targets, 1),
                             rtol=1e-4, atol=1e-6)   # upsampling keeps every map's total
  gcam = evaluation.attribution_function(model, info, "GCam")(variables, images, targets[:, 0])
  assert gcam.shape == (2, 16, 16, 1) and float(gcam.min()) >= 0.0

  removal = evaluation.removal_step(model, info, evaluation.removal_points((16, 16)))
  probabilities = removal(variables, images, targets[:, 0], ours[:, 0, ..., 0])
  assert probabilities.shape == (2, 65)
  np.testing.assert_allclose(probabilities[:, 0], jax.nn.sigmoid(
      jnp.take_along_axis(evidence + model.logit_bias, targets[:, :1], 1)[:, 0]), rtol=1e-5)
