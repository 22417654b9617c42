"""eval.py end to end on the trained digits run, in one process with 2 devices and in two
processes, against values computed here independently (numpy, direct model calls); its command
line's refusals."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codajax import data
from codajax.explain import explain, explain_jit
from codajax.train import restore

from eval_common import ROOT, assert_png, eval_cli  # tests/ is on sys.path
from two_processes import fake_devices, run_two_processes


@pytest.fixture(scope="module")
def digits_run(quick_digits_run):
  """digits-5L trained for 80 steps on the 1,237 fit images (``configs/digits.py:quick``, shared
  with the notebook test): enough confident images for a few grids."""
  return quick_digits_run[0]


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
CLI_DEVICES = 2  # the one-process run has the device count of the two-process run (2 x 1)


@pytest.fixture(scope="module")
def cli_eval(digits_run, tmp_path_factory):
  """``eval.py`` on the digits run in one process, 2 fake CPU devices: (output dir, result)."""
  out = str(tmp_path_factory.mktemp("cli_eval"))
  result = eval_cli(
      "--workdir",
      digits_run,
      *CLI_ARGS,
      f"--config.out={out}",
      env={"XLA_FLAGS": fake_devices(CLI_DEVICES)},
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
  # Compiled, the variables passed as arguments (closed over, XLA would constant-fold them).
  apply = jax.jit(run.model.apply, static_argnames="method")
  logits = np.asarray(apply(run.variables, test["image"].astype(np.float32) / 255))
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
      lambda v, x, t: explain(run.model, v, x, targets=t)["contribution_map"].sum(-1)
  )
  grad_maps = jax.jit(
      lambda v, x, t: jnp.abs(
          jax.grad(lambda x: run.model.apply(v, x)[jnp.arange(len(t)), t].sum())(x)
      ).sum(-1)
  )  # the images of a batch are independent: each row is the gradient of its own logit
  for g in range(2):
    x = jnp.repeat(jnp.asarray(grids[g : g + 1]), 9, axis=0)
    t = jnp.asarray(labels[g])
    np.testing.assert_allclose(
        scores["localisation/Ours"][g],
        _localisation_numpy(ours_maps(run.variables, x, t), 3),
        rtol=1e-4,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        scores["localisation/Grad"][g],
        _localisation_numpy(grad_maps(run.variables, x, t), 3),
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
  explained = {  # layer: explanation of the true classes
      layer: explain_jit(run.model, run.variables, x, first8["label"], layer=layer)
      for layer in (0, 3)
  }
  importance = np.asarray(explained[0]["contribution_map_sum"]).reshape(8, -1)
  encoded = np.asarray(apply(run.variables, x, method="explanation_inputs")[0])
  keep = np.ones((8, 256), np.float32)
  for i in range(8):
    keep[i, np.argsort(importance[i], kind="stable")[:64]] = 0
  removed = encoded * keep.reshape(8, 16, 16, 1)
  last = jax.nn.sigmoid(
      np.asarray(apply(run.variables, jnp.asarray(removed), method="forward_from"))[
          np.arange(8), first8["label"]
      ]
  )
  np.testing.assert_allclose(scores["pixel_removal/Ours"][:, -1], last, rtol=1e-4, atol=1e-6)

  # Completeness: every layer's contributions against the plain forward pass, in float64. Both
  # sides are float32 round-off of two different programs (eval.py's padded, sharded batch and
  # this unpadded one), so they agree in size, not digit for digit: each within 8 float32 eps
  # (a wrong class, layer or bias is off by orders of magnitude).
  errors = scores["completeness_errors"]
  assert errors.shape == (5, 8)
  round_off = 8 * np.finfo(np.float32).eps
  for layer in (0, 3):
    maps = np.asarray(explained[layer]["contribution_map"], np.float64).reshape(8, -1)
    target = logits[np.arange(8), first8["label"]] - float(run.model.logit_bias)
    expected = np.abs(maps.sum(1) - target) / np.abs(maps).sum(1)
    assert np.all(expected <= round_off), expected
  assert np.all(errors <= round_off), errors  # eval.py's, every layer
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
    assert_png(os.path.join(out, name))


@pytest.mark.slow
def test_two_processes_give_the_report_of_one(digits_run, cli_eval, tmp_path):
  one_dir, one = cli_eval  # one process, 2 devices, CLI_METHODS
  assert one.returncode == 0, one.stderr[-3000:]
  env = dict(os.environ, PYTHONUNBUFFERED="1", XLA_FLAGS=fake_devices(1))
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
  assert a["device"].startswith(f"{CLI_DEVICES} x") and b["device"].startswith(f"{CLI_DEVICES} x")
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
  result = eval_cli("--workdir", str(tmp_path), "--config.methods=Ours,LIME", timeout=120)
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert "unknown method 'LIME'" in result.stderr
  assert (
      "known methods: Ours, Grad, IxG, IntGrad, SmoothGrad, GCam, Occ5, Occ9, RISE" in result.stderr
  )


def test_a_bad_method_setting_is_refused_at_parse_time(tmp_path):
  result = eval_cli(
      "--workdir", str(tmp_path / "none"), "--method_setting", "RISE.n_masks=abc", timeout=120
  )
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert "RISE.n_masks='abc': must be an integer" in result.stderr
  assert "not a codajax run" not in result.stderr  # refused before looking for the run
