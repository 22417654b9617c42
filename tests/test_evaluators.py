"""codajax.evaluators in process: ground truth on the shapes run, evaluations during training,
the estimate, the presets and every method on the trained digits run, refusals."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codajax import data, evaluators
from codajax.explain import explain
from codajax.train import TrainingError, restore, train_and_evaluate
from codajax.train.metrics_log import read_metrics

from eval_common import (  # tests/ is on sys.path
    assert_png,
    digits_config,
    paper_config,
    quick_config,
    quick_eval_config,
    shapes_config,
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def digits_run(quick_digits_run):
  """digits-5L trained for 80 steps on the 1,237 fit images (``configs/digits.py:quick``, shared
  with the notebook test): enough confident images for a few grids."""
  return quick_digits_run[0]


@pytest.fixture(scope="module")
def shapes_run(data_dir, tmp_path_factory):
  """The shapes smoke run (tiny-3L, 4 steps): object masks, too weak for localisation grids."""
  config = shapes_config.get_config("smoke")
  config.data_dir = data_dir
  workdir = str(tmp_path_factory.mktemp("shapes_run"))
  train_and_evaluate(config, workdir)
  return workdir


@pytest.mark.slow
def test_ground_truth_scores_on_shapes_and_too_few_grids(shapes_run, tmp_path, capsys):
  out = str(tmp_path / "eval")
  config = quick_eval_config(
      out,
      "Ours,IxG,Occ5",
      localisation=dict(n_grids=2),
      depths=None,
      pixel_removal=dict(n_images=8),
      ground_truth=dict(n_images=8),
      completeness=None,
      figures=dict(n_images=2),
  )
  config.batch_size = 8
  report = evaluators.evaluate_run(shapes_run, config)
  # An untrained model classifies nothing confidently: localisation is skipped with a message.
  assert "only 0 of the requested 2" in capsys.readouterr().out
  assert report["protocol"]["localisation"]["n_grids"] == 0 and "depths" not in report
  gt = report["protocol"]["ground_truth"]
  assert gt["n_images"] == 8 and gt["targets"] == "true class"
  run = restore(shapes_run)
  shown = data.load_examples(
      run.config.dataset, "test", data_dir=run.config.data_dir, indices=np.arange(8)
  )
  masks = shown["object_mask"].astype(bool)
  assert gt["mask_fraction"] == pytest.approx(masks.mean())
  assert 0.0 < gt["mask_fraction"] < 0.5
  scores = np.load(os.path.join(out, "scores.npz"))
  x = jnp.asarray(shown["image"].astype(np.float32) / 255)
  maps = {
      "Ours": explain(run.model, run.variables, x, targets=shown["label"])["contribution_map_sum"],
      "IxG": np.stack(
          [
              np.asarray(
                  x[i]
                  * jax.grad(
                      lambda image, i=i: run.model.apply(run.variables, image[None])[
                          0, shown["label"][i]
                      ]
                  )(x[i])
              ).sum(-1)
              for i in range(8)
          ]
      ),
  }
  for method in ("Ours", "IxG", "Occ5"):
    result = report["methods"][method]
    assert "localisation" not in result
    assert len(result["pixel_removal"]["curve"]) == 129  # 32x32: the papers' 129 points
    if method not in maps:
      continue
    m = np.asarray(maps[method], np.float64)
    positive = np.maximum(m, 0)
    energy = (positive * masks).sum((1, 2)) / positive.sum((1, 2))
    pointing = masks.reshape(8, -1)[np.arange(8), m.reshape(8, -1).argmax(1)]
    np.testing.assert_allclose(scores[f"mask_energy/{method}"], energy, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(scores[f"pointing_game/{method}"], pointing.astype(np.float32))
    assert result["ground_truth"]["mask_energy"]["mean"] == pytest.approx(energy.mean(), abs=1e-5)
    assert result["ground_truth"]["pointing_game"] == pytest.approx(pointing.mean())
  assert scores["mask_energy/Ours"].shape == (8,)
  assert set(report["figures"]) == {"contributions.png", "pixel_removal.png"}
  assert_png(os.path.join(out, "contributions.png"))


@pytest.mark.slow
def test_eval_during_training_is_logged(data_dir, tmp_path):
  config = digits_config.get_config("smoke")
  config.data_dir, config.max_steps = data_dir, 4
  config.evals.pixel_removal = dict(every_steps=2, n_images=4, methods="Ours", batch_size=4)
  config.evals.completeness = dict(every_steps=4, n_images=4, batch_size=4)
  workdir = str(tmp_path / "run")
  train_and_evaluate(config, workdir, hooks=[evaluators.TrainingEvaluators])
  with pytest.raises(TrainingError, match="config.evals is set but no evaluation hook"):
    train_and_evaluate(config, str(tmp_path / "no_hooks"))
  records = [r for r in read_metrics(workdir) if "evals/methods/Ours/pixel_removal/mean" in r]
  assert [r["step"] for r in records] == [2, 4]
  assert "evals/completeness/max" in records[-1] and "evals/completeness/max" not in records[0]
  # The logged value at step 4 is what an evaluation of the step-4 checkpoint gives.
  offline = evaluators.evaluate_run(
      workdir,
      quick_eval_config(
          tmp_path / "eval",
          "Ours",
          accuracy=None,
          localisation=None,
          depths=None,
          ground_truth=None,
          completeness=None,
          figures=None,
          pixel_removal=dict(n_images=4),
      ),
  )
  assert records[-1]["evals/methods/Ours/pixel_removal/mean"] == pytest.approx(
      offline["methods"]["Ours"]["pixel_removal"]["mean"], abs=1e-6
  )
  assert os.listdir(os.path.join(workdir, "tensorboard"))


def test_missing_checkpoint_names_train_py(tmp_path):
  with pytest.raises(evaluators.EvaluationError, match="python train.py --workdir"):
    evaluators.evaluate_run(str(tmp_path / "nothing"), quick_eval_config(tmp_path / "out"))


def test_a_garbage_run_json_is_an_evaluation_error_naming_it(tmp_path):
  (tmp_path / "run.json").write_text("garbage{")
  with pytest.raises(evaluators.EvaluationError, match="run.json is not readable JSON"):
    evaluators.load_run(str(tmp_path))


# ----------------------------------------------------- on the trained digits run (shared fixture)


def test_estimate_reuses_the_timed_first_batches(digits_run, tmp_path, capsys):
  """An estimated run (first batch of each unit timed, then reused) gives the same numbers."""
  entries = dict(
      localisation=dict(n_grids=3),
      depths=None,
      completeness=None,
      accuracy=None,
      pixel_removal=dict(n_images=20),
      figures=None,
  )
  plain = quick_eval_config(tmp_path / "plain", "Ours,GCam", **entries)
  plain.batch_size = 9  # 1 grid or 9 images per call: several batches per unit
  estimated = quick_eval_config(tmp_path / "estimated", "Ours,GCam", **entries)
  estimated.batch_size, estimated.estimate = 9, True
  a = evaluators.evaluate_run(digits_run, plain)
  assert "estimate:" not in capsys.readouterr().out
  b = evaluators.evaluate_run(digits_run, estimated)
  printed = capsys.readouterr().out
  # Per method: 3 batches of 1 grid, 3 of attributions and 3 of removal on 9 + 9 + 2 images.
  assert "estimate: 18 batches" in printed
  for key in ("methods", "protocol"):
    assert a[key] == b[key]
  sa, sb = np.load(tmp_path / "plain" / "scores.npz"), np.load(
      tmp_path / "estimated" / "scores.npz"
  )
  assert set(sa) == set(sb)
  for name in sa:
    np.testing.assert_array_equal(sa[name], sb[name])
  assert set(b["compiles"].values()) == {1}


def test_presets_build_and_validate(digits_run):
  run = restore(digits_run)
  spec = data.dataset_info("digits", data_dir=run.config.data_dir)
  ctx = evaluators.make_context(run.model, run.params, spec, data_dir=run.config.data_dir)
  for config, expected in (
      (quick_config.get_config(), None),
      (paper_config.get_config(), 500),
      (paper_config.get_config("2x2"), 500),
  ):
    shared = {
        "methods": config.methods,
        "batch_size": config.batch_size,
        "items_per_pass": config.items_per_pass,
        "method_settings": config.method_settings,
    }
    entries = evaluators.from_config(config.evals, shared)
    assert [e.name for e in entries][-1] == "figures"
    assert {e.name for e in entries} == set(evaluators.EVALUATORS)
    for entry in entries:
      if hasattr(entry.evaluator, "check"):
        entry.evaluator.check(ctx)
    if expected:
      byname = {e.name: e.evaluator for e in entries}
      assert byname["localisation"].n_grids == 500 and byname["pixel_removal"].n_images == 1024
      assert byname["localisation"].methods == evaluators.known_methods()
      assert byname["localisation"].method_settings == {} and config.estimate
  quick = {
      e.name: e.evaluator
      for e in evaluators.from_config(
          quick_config.get_config().evals, {"methods": quick_config.get_config().methods}
      )
  }
  assert {"Ours", "Grad", "IxG", "GCam", "Occ5"} <= set(quick["localisation"].methods)
  assert paper_config.get_config("2x2").evals.localisation.grid == 2
  with pytest.raises(evaluators.EvaluationError, match="unknown setting n_grid;"):
    evaluators.from_config({"localisation": {"n_grid": 3}})
  with pytest.raises(evaluators.EvaluationError, match="unknown evaluator 'lime'"):
    evaluators.from_config({"x": {"type": "lime"}})


def test_ground_truth_on_a_dataset_without_masks_is_refused(digits_run, tmp_path):
  config = quick_eval_config(tmp_path, ground_truth=dict(n_images=8, when="on"))
  with pytest.raises(evaluators.EvaluationError, match="'digits' has no object masks"):
    evaluators.evaluate_run(digits_run, config)
  assert not os.listdir(tmp_path)  # refused before any work


@pytest.mark.slow
def test_every_method_runs_on_a_tiny_evaluation(digits_run, tmp_path):
  config = quick_eval_config(
      tmp_path,
      "",
      localisation=dict(n_grids=1),
      depths=None,
      completeness=None,
      # Pixel removal and figures only add a one-target call of each method (one more compile
      # each): tests/test_attribution.py checks that call per method, the CLI test the evaluators.
      pixel_removal=None,
      figures=None,
      accuracy=None,  # no method in it; the CLI test checks it
  )
  config.batch_size = 9
  config.method_settings = {"RISE": {"n_masks": 300}, "SmoothGrad": {"nt_samples": 8}}
  report = evaluators.evaluate_run(digits_run, config)
  assert list(report["methods"]) == list(evaluators.known_methods())
  assert report["protocol"]["method_settings"]["RISE"]["n_masks"] == 300
  for result in report["methods"].values():
    assert result["localisation"]["count"] == 9
  assert set(report["compiles"].values()) == {1}
