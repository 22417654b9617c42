"""eval.py and codajax.evaluators: end to end on small trained runs, against values computed here
independently (numpy, direct model calls), presets, estimates, errors, training, two processes."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from codajax import data, evaluators
from codajax.evaluators import methods as eval_methods
from codajax.evaluators import pixel_removal
from codajax.explain import explain
from codajax.models import get_model
from codajax.train import TrainingError, restore, train_and_evaluate
from codajax.train.metrics_log import read_metrics

from two_processes import run_two_processes  # tests/ is on sys.path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))
sys.path.insert(0, os.path.join(ROOT, "configs", "eval"))
import digits as digits_config  # noqa: E402  (configs/ is not a package)
import paper as paper_config  # noqa: E402
import quick as quick_config  # noqa: E402
import shapes as shapes_config  # noqa: E402


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


def _eval_cli(*args, timeout=300, env=None):
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, "eval.py"), *args],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=timeout,
      env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
  )


def _quick(out, methods="Ours", **evals):
  """The quick preset with ``methods``, output ``out`` and entries replaced by ``evals``."""
  config = quick_config.get_config()
  config.methods, config.out, config.progress = methods, str(out), False
  for name, entry in evals.items():
    if entry is None:
      del config.evals[name]
    else:
      config.evals[name] = entry
  return config


def _assert_png(path):
  assert os.path.getsize(path) > 1000, path
  with Image.open(path) as image:
    image.verify()
  with Image.open(path) as image:
    assert image.format == "PNG" and min(image.size) >= 100


def _assert_provenance(record, device_count=None):
  """Versions, commit, date and devices of this process (``device_count`` devices) and checkout."""
  import datetime

  import codajax

  assert (record["codajax"], record["jax"]) == (codajax.__version__, jax.__version__)
  assert (record["device_kind"], record["device_count"]) == (
      jax.devices()[0].device_kind,
      device_count or jax.device_count(),
  )
  head = subprocess.run(
      ["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True
  ).stdout.strip()
  assert record["git_commit"].split("+")[0] == head and len(head) == 40
  age = datetime.datetime.now(datetime.timezone.utc) - datetime.datetime.fromisoformat(
      record["date"]
  )
  assert datetime.timedelta(0) <= age < datetime.timedelta(hours=1)


def _grid_images(run, indices, grid):
  """Column-major grid images (G, nH, nW, C) in [0, 1], built here from the test images."""
  tiles = (
      data.load_examples(
          "digits", "test", data_dir=run.config.data_dir, indices=indices.reshape(-1)
      )["image"].astype(np.float32)
      / 255
  )
  height, width = tiles.shape[1:3]
  out = np.zeros((len(indices), grid * height, grid * width, tiles.shape[-1]), np.float32)
  for g in range(len(indices)):
    for k in range(grid * grid):
      row, col = k % grid, k // grid
      out[g, row * height : (row + 1) * height, col * width : (col + 1) * width] = tiles[
          g * grid * grid + k
      ]
  return out


def _localisation_numpy(maps, grid):
  """Share of the positive mass of each map (n², nH, nW) inside its own tile k: (n²,)."""
  height, width = maps.shape[1] // grid, maps.shape[2] // grid
  scores = []
  for k, m in enumerate(np.maximum(np.asarray(maps, np.float64), 0)):
    row, col = k % grid, k // grid
    inside = m[row * height : (row + 1) * height, col * width : (col + 1) * width].sum()
    scores.append(inside / m.sum())
  return np.array(scores)


# eval.py's command line for the digits run, shared by the end-to-end and the two-process tests.
CLI_METHODS = ["Ours", "Grad", "GCam"]
CLI_SHARED_ARGS = [  # the one-process and the two-process runs
    "--config.evals.localisation.n_grids=2",
    "--config.evals.depths.n_grids=2",
    "--config.evals.pixel_removal.n_images=8",
    "--config.evals.ground_truth.n_images=8",
    "--config.batch_size=9",
    "--config.evals.figures.n_images=3",
    "--config.evals.completeness.n_images=8",
    "--config.progress=False",
]
CLI_ARGS = [
    f"--config.methods={','.join(CLI_METHODS)}",
    "--method_setting",
    "Grad.abs=True",
    *CLI_SHARED_ARGS,
]
# The two-process run evaluates Ours only: every evaluator still runs on two processes, and the
# methods share one batching and gathering path, so one covers it at a third of the cost.
TWO_PROCESS_ARGS = ["--config.methods=Ours", *CLI_SHARED_ARGS]
CLI_DEVICES = 4  # the one-process run has the device count of the two-process run


@pytest.fixture(scope="module")
def cli_eval(digits_run, tmp_path_factory):
  """``eval.py`` on the digits run in one process with 4 (fake CPU) devices: (output dir, result)."""
  out = str(tmp_path_factory.mktemp("cli_eval"))
  result = _eval_cli(
      "--workdir",
      digits_run,
      *CLI_ARGS,
      f"--config.out={out}",
      env={"XLA_FLAGS": f"--xla_force_host_platform_device_count={CLI_DEVICES}"},
  )
  return out, result


@pytest.mark.slow
def test_eval_cli_end_to_end_on_digits(digits_run, cli_eval):
  methods = CLI_METHODS
  out, result = cli_eval
  assert result.returncode == 0, result.stderr[-3000:]
  assert "report:" in result.stdout and "Ours" in result.stdout

  with open(os.path.join(out, "report.json")) as f:
    report = json.load(f)
  assert report["checkpoint"] == {"which": "latest", "step": 80}
  assert report["dataset"] == "digits" and report["explainable_layers"] == 5
  run = restore(digits_run)
  test = data.load_examples("digits", "test", data_dir=run.config.data_dir)
  logits = np.asarray(run.model.apply(run.variables, test["image"].astype(np.float32) / 255))
  acc = report["accuracy"]
  assert acc["count"] == 360 and 0.5 < acc["top1"] <= acc["top5"] <= 1.0
  assert acc["top1"] == pytest.approx(np.mean(logits.argmax(1) == test["label"]), abs=1e-9)
  per_class = [np.mean(logits[test["label"] == c].argmax(1) == c) for c in range(10)]
  np.testing.assert_allclose(acc["per_class"], per_class, atol=1e-6)

  protocol = report["protocol"]
  assert protocol["method_settings"] == {
      "Grad": {"abs": True},
      "GCam": {"relu_attributions": True, "upsample": True},
  }
  assert protocol["localisation"]["n_grids"] == 2 and protocol["localisation"]["grid"] == 3
  removal = protocol["pixel_removal"]
  assert removal["mode"] == "zero_encoded" and removal["n_images"] == 8
  assert removal["n_points"] == 64 and len(removal["fractions"]) == 65  # 25 % of 16x16 = 64 px
  assert "ground_truth" not in protocol  # digits has no masks; "auto" skips it

  assert list(report["methods"]) == methods
  scores = np.load(os.path.join(out, "scores.npz"))
  indices = scores["grid_indices"]
  assert indices.shape == (2, 9)
  for method in methods:
    result_m = report["methods"][method]
    assert result_m["localisation"]["count"] == 2 * 9
    assert len(result_m["localisation"]["per_tile_mean"]) == 9
    curve = np.asarray(result_m["pixel_removal"]["curve"])
    assert curve.shape == (65,) and np.all((curve >= 0) & (curve <= 1))
    assert result_m["pixel_removal"]["mean"] == pytest.approx(curve.mean(), abs=1e-5)
    assert "ground_truth" not in result_m
    assert set(report["timings_s"]["methods"][method]) == {
        "localisation",
        "attribution",
        "pixel_removal",
    }
  # Every curve starts from the same unperturbed images: the sigmoid of the true-class logit.
  first8 = {k: v[:8] for k, v in test.items()}
  p0 = float(jax.nn.sigmoid(logits[np.arange(8), first8["label"]]).mean())
  for method in methods:
    assert report["methods"][method]["pixel_removal"]["curve"][0] == pytest.approx(p0, abs=1e-5)

  # Localisation of "Ours" and Grad, recomputed here on grids built here.
  grids = _grid_images(run, indices, 3)
  labels = test["label"][indices]
  # Each grid repeated once per tile: row k is explained for the class of tile k.
  ours_maps = jax.jit(
      lambda x, t: explain(run.model, run.variables, x, targets=t)["contribution_map"].sum(-1)
  )
  grad_maps = jax.jit(
      lambda x, t: jnp.abs(
          jax.grad(lambda x: run.model.apply(run.variables, x)[jnp.arange(len(t)), t].sum())(x)
      ).sum(-1)
  )  # the images of a batch are independent: each row is the gradient of its own logit
  for g in range(2):
    x = jnp.repeat(jnp.asarray(grids[g : g + 1]), 9, axis=0)
    t = jnp.asarray(labels[g])
    np.testing.assert_allclose(
        scores["localisation/Ours"][g],
        _localisation_numpy(ours_maps(x, t), 3),
        rtol=1e-4,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        scores["localisation/Grad"][g],
        _localisation_numpy(grad_maps(x, t), 3),
        rtol=1e-3,
        atol=1e-5,
    )
  assert report["methods"]["Ours"]["localisation"]["mean"] == pytest.approx(
      scores["localisation/Ours"].mean(), abs=1e-6
  )
  assert report["methods"]["Ours"]["localisation"]["median"] == pytest.approx(
      np.median(scores["localisation/Ours"]), abs=1e-6
  )

  # Pixel removal of "Ours", last point: the 64 least important pixels zeroed in [x, 1 - x].
  x = jnp.asarray(first8["image"].astype(np.float32) / 255)
  importance = np.asarray(
      explain(run.model, run.variables, x, targets=first8["label"])["contribution_map_sum"]
  ).reshape(8, -1)
  encoded = np.asarray(run.model.apply(run.variables, x, method="explanation_inputs")[0])
  keep = np.ones((8, 256), np.float32)
  for i in range(8):
    keep[i, np.argsort(importance[i], kind="stable")[:64]] = 0
  removed = encoded * keep.reshape(8, 16, 16, 1)
  last = jax.nn.sigmoid(
      np.asarray(run.model.apply(run.variables, jnp.asarray(removed), method="forward_from"))[
          np.arange(8), first8["label"]
      ]
  )
  np.testing.assert_allclose(scores["pixel_removal/Ours"][:, -1], last, rtol=1e-4, atol=1e-6)

  # Completeness: every layer's contributions against the plain forward pass, in float64.
  errors = scores["completeness_errors"]
  assert errors.shape == (5, 8)
  for layer in (0, 3):
    maps = np.asarray(
        explain(run.model, run.variables, x, targets=first8["label"], layer=layer)[
            "contribution_map"
        ],
        np.float64,
    ).reshape(8, -1)
    target = logits[np.arange(8), first8["label"]] - float(run.model.logit_bias)
    expected = np.abs(maps.sum(1) - target) / np.abs(maps).sum(1)
    np.testing.assert_allclose(errors[layer], expected, rtol=0.2, atol=2e-7)
  assert report["completeness"]["max"] == pytest.approx(errors.max())
  assert report["methods"]["Ours"]["completeness_error"]["max"] == pytest.approx(errors.max())
  _assert_provenance(report["provenance"], device_count=CLI_DEVICES)

  depths = report["depths"]
  assert [d["layer"] for d in depths] == [0, 1, 2, 3, 4]
  assert [d["interpretable_depth"] for d in depths] == [5, 4, 3, 2, 1]
  # Layer 0 is "Ours"; the last layer's contributions (a 1x1 CoDA layer) sum to the class map
  # o^L_c / T, whose positive part is Grad-CAM's map: the same localisation scores.
  assert depths[0]["localisation"]["mean"] == pytest.approx(
      report["methods"]["Ours"]["localisation"]["mean"], abs=1e-5
  )
  assert depths[4]["localisation"]["mean"] == pytest.approx(
      report["methods"]["GCam"]["localisation"]["mean"], abs=1e-4
  )

  assert scores["localisation/Ours"].shape == (2, 9)
  assert scores["localisation_depths"].shape == (5, 2, 9)
  assert scores["pixel_removal/GCam"].shape == (8, 65)
  assert np.mean(scores["localisation/Grad"]) == pytest.approx(
      report["methods"]["Grad"]["localisation"]["mean"], abs=1e-6
  )
  # Each program compiles once (fixed, padded batch shapes).
  assert set(report["compiles"].values()) == {1}

  expected = {
      "contributions.png",
      "localisation_grid.png",
      "localisation.png",
      "localisation_depths.png",
      "pixel_removal.png",
  }
  assert set(report["figures"]) == expected
  for name in expected:
    _assert_png(os.path.join(out, name))


@pytest.mark.slow
def test_ground_truth_scores_on_shapes_and_too_few_grids(shapes_run, tmp_path, capsys):
  out = str(tmp_path / "eval")
  config = _quick(
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
  _assert_png(os.path.join(out, "contributions.png"))


def test_estimate_reuses_the_timed_first_batches(digits_run, tmp_path, capsys):
  """A run with the estimate (first batch of each unit timed, then reused) gives the same numbers."""
  entries = dict(
      localisation=dict(n_grids=3),
      depths=None,
      completeness=None,
      accuracy=None,
      pixel_removal=dict(n_images=20),
      figures=None,
  )
  plain = _quick(tmp_path / "plain", "Ours,GCam", **entries)
  plain.batch_size = 9  # 1 grid or 9 images per call: several batches per unit
  estimated = _quick(tmp_path / "estimated", "Ours,GCam", **entries)
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
      _quick(
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


@pytest.mark.slow
def test_two_processes_give_the_report_of_one(digits_run, cli_eval, tmp_path):
  one_dir, one = cli_eval  # one process, 4 devices, CLI_METHODS
  assert one.returncode == 0, one.stderr[-3000:]
  env = dict(os.environ, PYTHONUNBUFFERED="1", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  outputs = run_two_processes(
      [
          sys.executable,
          "eval.py",
          "--workdir",
          digits_run,
          *TWO_PROCESS_ARGS,
          f"--config.out={tmp_path / 'two'}",
      ],
      cwd=ROOT,
      env=env,
      timeout=300,
  )
  assert "report:" in outputs[0] and "report:" not in outputs[1]  # process 0 writes
  reports = []
  for path in (one_dir, tmp_path / "two"):
    with open(os.path.join(path, "report.json")) as f:
      reports.append(json.load(f))
  a, b = reports
  assert (a["processes"], b["processes"]) == (1, 2)
  assert a["device"].startswith("4 x") and b["device"].startswith("4 x")
  assert list(b["methods"]) == ["Ours"]
  for key in ("accuracy", "depths", "completeness"):
    assert _close(a[key], b[key]), key
  assert _close(a["methods"]["Ours"], b["methods"]["Ours"])
  settings = lambda protocol: {k: v for k, v in protocol.items() if k != "method_settings"}
  assert settings(a["protocol"]) == settings(b["protocol"]) and a["figures"] == b["figures"]
  sa = np.load(os.path.join(one_dir, "scores.npz"))
  sb = np.load(tmp_path / "two" / "scores.npz")
  assert set(sb) == {name for name in sa if not name.endswith(("/Grad", "/GCam"))}
  for name in sb:
    np.testing.assert_allclose(sa[name], sb[name], rtol=1e-5, atol=1e-6, err_msg=name)


def _close(a, b):
  """Nested reports equal up to float round-off."""
  if isinstance(a, dict):
    return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
  if isinstance(a, list):
    return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
  if isinstance(a, float):
    return b == pytest.approx(a, rel=1e-5, abs=1e-6)
  return a == b


def test_unknown_method_lists_the_known_ones(tmp_path):
  result = _eval_cli("--workdir", str(tmp_path), "--config.methods=Ours,LIME", timeout=120)
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert "unknown method 'LIME'" in result.stderr
  assert (
      "known methods: Ours, Grad, IxG, IntGrad, SmoothGrad, GCam, Occ5, Occ9, RISE" in result.stderr
  )


def test_a_bad_method_setting_is_refused_at_parse_time(tmp_path):
  result = _eval_cli(
      "--workdir", str(tmp_path / "none"), "--method_setting", "RISE.n_masks=abc", timeout=120
  )
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert "RISE.n_masks='abc': must be an integer" in result.stderr
  assert "not a codajax run" not in result.stderr  # refused before looking for the run


def test_method_settings_reach_the_attributions():
  model = get_model("tiny-3L", num_classes=10, image_channels=3)
  images = jax.random.randint(jax.random.key(1), (2, 8, 8, 3), 0, 256).astype(jnp.uint8)
  variables = jax.jit(model.init)(jax.random.key(0), images.astype(jnp.float32) / 255)
  info = eval_methods.inspect_model(model, variables, (8, 8, 3))
  targets = jnp.array([1, 4])
  signed = jax.jit(eval_methods.attribution_function(model, info, "Grad"))(
      variables, images, targets
  )
  absolute = jax.jit(
      eval_methods.attribution_function(model, info, "Grad", settings={"abs": True})
  )(variables, images, targets)
  assert float(signed.min()) < 0.0
  np.testing.assert_allclose(absolute, jnp.abs(signed), rtol=1e-6)


def test_method_settings_are_parsed_and_checked():
  assert evaluators.parse_method_settings(
      ["RISE.n_masks=1000", "RISE.p1=0.2", "Occ5.reference_window_quirk=False"]
  ) == {"RISE": {"n_masks": 1000, "p1": 0.2}, "Occ5": {"reference_window_quirk": False}}
  with pytest.raises(evaluators.EvaluationError, match="not METHOD.key=value"):
    evaluators.parse_method_settings(["RISE:n_masks=10"])
  with pytest.raises(evaluators.EvaluationError, match="'Ours' is not a post-hoc method"):
    evaluators.parse_method_settings(["Ours.n_masks=10"])
  with pytest.raises(evaluators.EvaluationError, match=r"RISE \(rise\) takes .*n_masks"):
    evaluators.parse_method_settings(["RISE.masks=10"])
  for bad, message in (
      ("RISE.n_masks=abc", "must be an integer"),
      ("RISE.n_masks=0", "must be an integer >= 1"),
      ("RISE.n_masks=1.5", "must be an integer"),
      ("IntGrad.n_steps=True", "must be an integer"),
      ("Grad.abs=1", "must be True or False"),
      ("RISE.p1=high", "must be a number"),
  ):
    with pytest.raises(evaluators.EvaluationError, match=message):
      evaluators.parse_method_settings([bad])
  with pytest.raises(evaluators.EvaluationError, match="settings given for RISE, which is not"):
    evaluators.from_config(
        {"localisation": {}}, {"methods": "Ours", "method_settings": {"RISE": {"n_masks": 10}}}
    )


def test_missing_checkpoint_names_train_py(tmp_path):
  with pytest.raises(evaluators.EvaluationError, match="python train.py --workdir"):
    evaluators.evaluate_run(str(tmp_path / "nothing"), _quick(tmp_path / "out"))


def test_a_garbage_run_json_is_an_evaluation_error_naming_it(tmp_path):
  (tmp_path / "run.json").write_text("garbage{")
  with pytest.raises(evaluators.EvaluationError, match="run.json is not readable JSON"):
    evaluators.load_run(str(tmp_path))


def test_ground_truth_on_a_dataset_without_masks_is_refused(digits_run, tmp_path):
  config = _quick(tmp_path, ground_truth=dict(n_images=8, when="on"))
  with pytest.raises(evaluators.EvaluationError, match="'digits' has no object masks"):
    evaluators.evaluate_run(digits_run, config)
  assert not os.listdir(tmp_path)  # refused before any work


@pytest.mark.slow
def test_every_method_runs_on_a_tiny_evaluation(digits_run, tmp_path):
  config = _quick(
      tmp_path,
      "",
      localisation=dict(n_grids=1),
      depths=None,
      completeness=None,
      # Pixel removal and figures only add a one-target call of each method (one more compile
      # each): tests/test_attribution.py checks that call per method, the CLI test the evaluators.
      pixel_removal=None,
      figures=None,
  )
  config.batch_size = 9
  config.method_settings = {"RISE": {"n_masks": 300}, "SmoothGrad": {"nt_samples": 8}}
  report = evaluators.evaluate_run(digits_run, config)
  assert list(report["methods"]) == list(evaluators.known_methods())
  assert report["protocol"]["method_settings"]["RISE"]["n_masks"] == 300
  for result in report["methods"].values():
    assert result["localisation"]["count"] == 9
  assert set(report["compiles"].values()) == {1}


@pytest.mark.slow
def test_hybrid_with_a_cnn_embedding_is_explained_over_the_image():
  model = get_model(
      "hybrid-shapes-s2",
      num_classes=10,
      temperature=10.0,
      backbone_widths=(4, 8, 8),
      coda_layers=((8, 4, 3, 1, 1), (10, 4, 1, 1, 0)),
  )
  images = jax.random.randint(jax.random.key(1), (2, 16, 16, 3), 0, 256).astype(jnp.uint8)
  variables = jax.jit(model.init)(jax.random.key(0), images.astype(jnp.float32) / 255)
  info = eval_methods.inspect_model(model, variables, (16, 16, 3))
  assert info == eval_methods.ModelInfo(num_layers=2, encoded_input=False)

  targets = jnp.array([[1, 4, 9], [0, 2, 5]])
  ours = jax.jit(eval_methods.attribution_function(model, info, "Ours"))(variables, images, targets)
  assert ours.shape == (2, 3, 16, 16, 1)
  evidence = explain(model, variables, images.astype(jnp.float32) / 255, "all")["evidence"]
  np.testing.assert_allclose(
      ours.sum(axis=(2, 3, 4)), jnp.take_along_axis(evidence, targets, 1), rtol=1e-4, atol=1e-6
  )  # upsampling keeps every map's total
  gcam = jax.jit(eval_methods.attribution_function(model, info, "GCam"))(
      variables, images, targets[:, 0]
  )
  assert gcam.shape == (2, 16, 16, 1) and float(gcam.min()) >= 0.0

  removal = jax.jit(pixel_removal.removal_step(model, info, pixel_removal.removal_points((16, 16))))
  probabilities = removal(variables, images, targets[:, 0], ours[:, 0, ..., 0])
  assert probabilities.shape == (2, 65)
  np.testing.assert_allclose(
      probabilities[:, 0],
      jax.nn.sigmoid(jnp.take_along_axis(evidence + model.logit_bias, targets[:, :1], 1)[:, 0]),
      rtol=1e-5,
  )


# ------------------------------------------------------------- refused before any work, one line


def _record_only_run(path, **model):
  """A run directory with a run.json (digits-5L on 16 x 16 x 1 digits) and no checkpoint."""
  from codajax.train.config import base_config

  config = base_config().to_dict()
  config["model"].update(model)
  record = {
      "config": config,
      "num_classes": 10,
      "image_shape": [16, 16, 1],
      "splits": {"train": "train", "test": "test"},
  }
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "run.json"), "w") as f:
    json.dump(record, f)
  return str(path)


@pytest.mark.parametrize(
    "setting,message",
    [
        ({"Occ5": {"strides": 20}}, r"Occ5.strides=20: .*stride=20, size=16 \(images of 16x16x1\)"),
        ({"Occ5": {"sliding_window_shapes": 1}}, "Occ5.sliding_window_shapes=1: .*empty masks"),
    ],
)
def test_a_method_setting_the_images_do_not_allow_fails_before_any_work(tmp_path, setting, message):
  workdir = _record_only_run(tmp_path / "run")
  config = _quick(tmp_path / "out", "Ours,Occ5")
  config.method_settings = setting
  with pytest.raises(evaluators.EvaluationError, match=message):
    evaluators.evaluate_run(workdir, config)
  assert not os.path.exists(tmp_path / "out")
  # Checked and accepted, the same request goes on to look for a checkpoint: there is none.
  config.method_settings = {"Occ5": {"strides": 3}}
  with pytest.raises(evaluators.EvaluationError, match="no restorable checkpoint|No checkpoints"):
    evaluators.evaluate_run(workdir, config)


@pytest.mark.parametrize(
    "item,message",
    [
        ("Occ5.strides=0", "Occ5.strides=0: must be an integer >= 1"),
        ("Occ5.sliding_window_shapes=0", "Occ5.sliding_window_shapes=0: must be an integer >= 1"),
        ("RISE.p1=2.0", r"RISE.p1=2.0: must be a number in \(0, 1\]"),
        ("SmoothGrad.stdevs=-0.1", "SmoothGrad.stdevs=-0.1: must be a number >= 0"),
    ],
)
def test_method_settings_out_of_range_are_refused_when_parsed(item, message):
  with pytest.raises(evaluators.EvaluationError, match=message):
    evaluators.parse_method_settings([item])
  with pytest.raises(evaluators.EvaluationError, match="must be a finite number"):
    eval_methods.check_setting("RISE", "p1", float("nan"))


def test_unusable_output_data_and_run_json_are_refused_before_any_work(tmp_path):
  workdir = _record_only_run(tmp_path / "run")
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  config = _quick(a_file)
  with pytest.raises(evaluators.EvaluationError, match="output directory .*a_file is a file"):
    evaluators.evaluate_run(workdir, config)
  config = _quick(tmp_path / "out")
  config.data_dir = str(a_file)
  with pytest.raises(evaluators.EvaluationError, match="data directory .*a_file is a file"):
    evaluators.evaluate_run(workdir, config)
  for model, message in (
      (
          {"name": "digits-9Z"},
          r"model.name: Unknown architecture 'digits-9Z' \(did you mean digits-5L\?\)",
      ),
      ({"temperature": "10"}, "model.temperature must be finite and > 0 \\(a number\\), got '10'"),
      ({"temperature": -1.0}, "model.temperature must be finite and > 0 \\(a number\\), got -1.0"),
  ):
    bad = _record_only_run(tmp_path / f"bad_{len(message)}", **model)
    with pytest.raises(evaluators.EvaluationError, match="run.json records a model that cannot"):
      evaluators.evaluate_run(bad, _quick(tmp_path / "out"))
    with pytest.raises(evaluators.EvaluationError, match=message):
      evaluators.evaluate_run(bad, _quick(tmp_path / "out"))


def test_a_checkpoint_rotated_away_while_read_is_replaced_by_the_newest(
    tmp_path, monkeypatch, capsys
):
  from codajax import runs
  from codajax.evaluators import driver

  workdir = str(tmp_path)
  checkpoints = tmp_path / "checkpoints"
  for step in (2, 4):
    (checkpoints / str(step)).mkdir(parents=True)
  calls = []

  def rotating_restore(where, which):
    """The first read loses its checkpoint to train.py's rotation (4 and 2 go, 6 and 8 come)."""
    calls.append(which)
    if len(calls) == 1:
      for step in (2, 4):
        (checkpoints / str(step)).rmdir()
      for step in (6, 8):
        (checkpoints / str(step)).mkdir()
      raise FileNotFoundError(f"No such file or directory: {checkpoints}/4/state")
    (checkpoints / "10.orbax-checkpoint-tmp-1").mkdir(exist_ok=True)  # a save in flight
    return runs.RestoredRun(None, None, {}, 8, 10, (16, 16, 1), runs.RunDir(workdir))

  monkeypatch.setattr(runs, "restore", rotating_restore)
  assert driver.load_run(workdir).step == 8 and calls == ["latest", "latest"]
  said = capsys.readouterr().out
  assert f"checkpoint 2, 4 in {checkpoints} was removed while being read" in said
  assert "reading step 8, the newest now" in said
  assert "(newer: 10.orbax-checkpoint-tmp-1); evaluating the complete checkpoint of step 8" in said

  calls.clear()  # a checkpoint that fails without being rotated away is not retried

  def failing_restore(where, which):
    calls.append(which)
    raise FileNotFoundError(f"{checkpoints} holds no restorable checkpoint")

  monkeypatch.setattr(runs, "restore", failing_restore)
  with pytest.raises(evaluators.EvaluationError, match="holds no restorable checkpoint"):
    driver.load_run(workdir)
  assert calls == ["latest"]
