"""Training: smoke runs, parallel equivalence, accumulation, exact resume, multi-host, errors."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from codajax.evaluators import TrainingEvaluators
from codajax.runs import RunDir
from codajax.train import TrainingError, restore, restore_params, train_and_evaluate
from codajax.train.config import validate_config
from codajax.train.metrics_log import read_metrics
from codajax.train.schedules import learning_rate_schedule

from two_processes import fake_devices, free_port, run_two_processes  # tests/ is on sys.path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))
import digits as digits_config  # noqa: E402  (configs/ is not a package)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _smoke(data_dir, **overrides):
  config = digits_config.get_config("smoke")
  config.data_dir = data_dir
  config.model.name = "tiny-3L"  # toy layers; the model adapts to digits' 1 channel
  config.model.temperature = 10.0
  return _override(config, **overrides)


def _override(config, **overrides):
  """Sets dotted keys, e.g. ``**{"model.temperature": 5.0}``."""
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def _run(args, env_devices=None, timeout=240, **kwargs):
  env = dict(os.environ)
  env["PYTHONUNBUFFERED"] = "1"
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
  if env_devices:
    env["XLA_FLAGS"] = fake_devices(env_devices)
  return subprocess.run(
      [sys.executable, *args],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=timeout,
      **kwargs,
  )


def _params_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _numpy_eval(run, data_dir, loss, split="train.validation"):
  """Accuracy, top-5 and mean loss of a restored run on a digits split (default: the
  validation split the training evals read), in float64 numpy from ``model.apply`` (not
  the eval step): the reference for the logged eval metrics."""
  from codajax.data import load_examples

  examples = load_examples("digits", split, data_dir=data_dir)
  logits = np.asarray(
      run.model.apply(run.variables, examples["image"] / np.float32(255)), np.float64
  )
  labels = examples["label"]
  top1 = logits.argmax(-1) == labels
  rank = (logits > logits[np.arange(len(labels)), labels][:, None]).sum(-1)
  if loss == "bce":
    onehot = np.eye(logits.shape[-1])[labels]
    losses = (np.logaddexp(0, logits) - onehot * logits).mean(-1)
  else:
    losses = np.logaddexp.reduce(logits, axis=-1) - logits[np.arange(len(labels)), labels]
  return top1.mean(), (rank < 5).mean(), losses.mean(), len(labels)


@pytest.fixture(scope="module")
def straight_run(data_dir, tmp_path_factory):
  """An uninterrupted smoke run (4 steps, checkpoints at 2 and 4): ``(workdir, metrics)``."""
  workdir = str(tmp_path_factory.mktemp("straight") / "run")
  return workdir, train_and_evaluate(_smoke(data_dir), workdir)


def _copy_run(workdir, tmp_path):
  import shutil

  target = str(tmp_path / "copy")
  shutil.copytree(workdir, target, ignore=shutil.ignore_patterns("train.lock.*"))
  return target


def test_smoke_training_writes_logs_checkpoints_and_evaluates(data_dir, straight_run):
  workdir, metrics = straight_run
  assert metrics["step"] == 4
  records = read_metrics(workdir)
  assert any("train/loss" in r for r in records) and any("eval/accuracy" in r for r in records)
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  run = restore(workdir)
  assert run.step == 4
  with open(os.path.join(workdir, "run.json")) as f:
    record = json.load(f)
  assert record["splits"] == {
      "train": "train.fit",
      "validation": "train.validation",
      "test": "test",
  }
  assert record["provenance"]["jax"] == jax.__version__
  assert record["provenance"]["device_count"] == jax.device_count()
  assert record["provenance"]["date"].startswith(time.strftime("%Y-", time.gmtime()))
  # The logged eval (200 validation examples in one padded batch of 512) equals numpy on the
  # restored model's logits: restore() gives the trained parameters and the eval step skips padding.
  accuracy, top5, loss, count = _numpy_eval(run, data_dir, "bce")
  assert metrics["eval/count"] == count == 200
  test_accuracy, test_top5, _, test_count = _numpy_eval(run, data_dir, "bce", split="test")
  assert metrics["test/count"] == test_count == 360
  np.testing.assert_allclose(metrics["test/accuracy_final"], test_accuracy, atol=1e-6)
  np.testing.assert_allclose(metrics["test/top5_final"], test_top5, atol=1e-6)
  np.testing.assert_allclose(metrics["eval/accuracy"], accuracy, atol=1e-6)
  np.testing.assert_allclose(metrics["eval/top5"], top5, atol=1e-6)
  np.testing.assert_allclose(metrics["eval/loss"], loss, rtol=1e-5)
  # Re-running the finished run resumes at its end and does nothing more.
  assert train_and_evaluate(_smoke(data_dir), workdir)["step"] == 4


@pytest.mark.slow
def test_jit_mesh_pmap_and_single_device_give_the_same_parameters(tmp_path):
  out = tmp_path / "params.npz"
  result = _run(["tests/train_worker.py", "parallel_equivalence", str(out)], env_devices=8)
  assert result.returncode == 0, result.stderr[-3000:]
  saved = np.load(out)
  assert int(saved["num_devices"]) == 8
  keys = [k[len("jit/") :] for k in saved.files if k.startswith("jit/")]
  assert keys
  for other in ("pmap", "single"):
    for key in keys:
      np.testing.assert_allclose(
          saved[f"{other}/{key}"],
          saved[f"jit/{key}"],
          rtol=1e-4,
          atol=1e-5,
          err_msg=f"{other} vs jit at {key}",
      )


def test_gradient_accumulation_equals_one_large_batch():
  from codajax.models import get_model

  model = get_model("tiny-3L")
  x = jax.random.uniform(jax.random.key(0), (8, 8, 8, 3))
  y = jnp.arange(8) % 10
  params = jax.jit(model.init)(jax.random.key(1), x[:1])["params"]

  @jax.jit
  def grad(p, x, y):
    def loss(p):
      logits = model.apply({"params": p}, x)
      return optax.sigmoid_binary_cross_entropy(logits, jax.nn.one_hot(y, 10)).mean()

    return jax.grad(loss)(p)

  # SGD shows the averaged gradient itself (Adam would amplify round-off where |g| ~ eps).
  big = optax.sgd(1.0)
  updates, _ = big.update(grad(params, x, y), big.init(params), params)
  want = optax.apply_updates(params, updates)

  acc = optax.MultiSteps(optax.sgd(1.0), every_k_schedule=2)
  state, got = acc.init(params), params
  for half in (slice(0, 4), slice(4, 8)):
    updates, state = acc.update(grad(got, x[half], y[half]), state, got)
    got = optax.apply_updates(got, updates)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert not _params_equal(got, params)


def test_virtual_batch_config_runs_with_multisteps(data_dir, tmp_path):
  config = _smoke(data_dir, virtual_batch_size=16)
  metrics = train_and_evaluate(config, str(tmp_path / "run"))
  assert metrics["step"] == 4


def _train_cmd(workdir, data_dir, *extra):
  """train.py on digits with a toy model (fast steps) for 24 steps, checkpoints every 3."""
  return [
      "train.py",
      "--config",
      "configs/digits.py",
      f"--workdir={workdir}",
      f"--config.data_dir={data_dir}",
      "--config.model.name=tiny-3L",
      "--config.model.temperature=10",
      "--config.max_steps=24",
      "--config.checkpoint_every_steps=3",
      "--config.eval_every_epochs=100",
      "--config.log_every_steps=3",
      *extra,
  ]


def _bcosify_cmd(workdir, data_dir, source):
  """train.py fine-tuning a B-cosified resnet-tiny from ``source`` for 24 steps (configs/bcosify.py)."""
  return [
      "train.py",
      "--config",
      "configs/bcosify.py:smoke",
      f"--workdir={workdir}",
      f"--config.data_dir={data_dir}",
      f"--config.init_from={source}",
      "--config.max_steps=24",
      "--config.checkpoint_every_steps=3",
      "--config.eval_every_epochs=100",
      "--config.log_every_steps=3",
  ]


@pytest.fixture(scope="module")
def conventional_run(data_dir, tmp_path_factory):
  """A 4-step configs/resnet_shapes.py:smoke run: the original that configs/bcosify.py converts."""
  workdir = tmp_path_factory.mktemp("resnet") / "run"
  cmd = ["train.py", "--config", "configs/resnet_shapes.py:smoke", f"--workdir={workdir}"]
  result = _run([*cmd, f"--config.data_dir={data_dir}"])
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


def test_init_from_a_run_of_another_model_is_refused(data_dir, tmp_path, conventional_run):
  """init_from a resnet-tiny run into the digits toy model: one TrainingError, nothing trained."""
  config = _smoke(data_dir, init_from=str(conventional_run))
  with pytest.raises(TrainingError, match="init_from: the params of .* do not fit"):
    train_and_evaluate(config, str(tmp_path / "run"))
  checkpoints = tmp_path / "run" / "checkpoints"
  assert not (checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir()))
  assert not (tmp_path / "run" / "run.json").exists()  # no record: the directory stays reusable


@pytest.mark.parametrize("config", ["digits", "bcosify"])
def test_resume_after_sigkill_is_bit_identical(data_dir, tmp_path, request, config):
  """SIGKILL after the step-6 checkpoint, re-run: the same params as an uninterrupted run (the
  digits toy model; a B-cosified ResNet fine-tuned from a conventional run)."""
  if config == "digits":
    command = lambda workdir: _train_cmd(workdir, data_dir)
  else:
    source = request.getfixturevalue("conventional_run")
    command = lambda workdir: _bcosify_cmd(workdir, data_dir, source)
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  result = _run(command(straight))
  assert result.returncode == 0, result.stderr[-3000:]

  env = dict(os.environ, PYTHONUNBUFFERED="1")
  proc = subprocess.Popen(
      [sys.executable, *command(killed)],
      cwd=ROOT,
      env=env,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
  )
  checkpoint = killed / "checkpoints" / "6"
  deadline = time.time() + 180
  while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  steps = sorted(int(s) for s in os.listdir(killed / "checkpoints") if s.isdigit())
  assert steps and max(steps) < 24, f"the run was not killed mid-way: {steps}"

  result = _run(command(killed))
  assert result.returncode == 0, result.stderr[-3000:]
  a, step_a = restore_params(str(straight))
  b, step_b = restore_params(str(killed))
  assert step_a == step_b == 24
  assert _params_equal(a, b)
  assert not (killed / "corrupt").exists()  # resumed, not restarted over moved checkpoints


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_saves_and_exits_cleanly(data_dir, tmp_path, signum):
  """SIGTERM and a first Ctrl-C save the current step and exit (status 0 / 130)."""
  workdir = tmp_path / "run"
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  proc = subprocess.Popen(
      [
          sys.executable,
          *_train_cmd(
              workdir,
              data_dir,
              "--config.max_steps=100000",
              "--config.checkpoint_every_steps=100000",
          ),
      ],
      cwd=ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
  )
  deadline = time.time() + 180
  while not (workdir / "metrics.jsonl").exists() and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signum)
  output, _ = proc.communicate(timeout=120)
  assert proc.returncode == (0 if signum == signal.SIGTERM else 130), output[-3000:]
  assert f"{signal.Signals(signum).name}: saved step" in output
  _, step = restore_params(str(workdir))
  assert 3 <= step < 100000
  assert f"saved step {step} " in output


@pytest.mark.slow
def test_two_processes_match_one_process_with_four_devices(data_dir, tmp_path):
  args = ["--config.max_steps=4", "--config.batch_size=16", "--config.eval_every_epochs=100"]
  single = _run(_train_cmd(tmp_path / "one", data_dir, *args), env_devices=4)
  assert single.returncode == 0, single.stderr[-3000:]

  env = dict(os.environ, PYTHONUNBUFFERED="1", XLA_FLAGS=fake_devices(2))
  run_two_processes(
      [sys.executable, *_train_cmd(tmp_path / "two", data_dir, *args)],
      cwd=ROOT,
      env=env,
      timeout=240,
  )
  one, _ = restore_params(str(tmp_path / "one"))
  two, step = restore_params(str(tmp_path / "two"))
  assert step == 4
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_missing_peer_ends_the_run_within_the_timeout(data_dir, tmp_path):
  start = time.time()
  result = _run(
      [
          *_train_cmd(tmp_path / "run", data_dir),
          "--multihost",
          f"--coordinator_address=127.0.0.1:{free_port()}",
          "--num_processes=2",
          "--process_id=0",
          "--init_timeout=3",
      ],
      timeout=90,
  )
  assert result.returncode != 0
  assert "waiting up to 3 s for 2 processes" in result.stdout
  assert time.time() - start < 60


def test_restore_onto_another_device_count(data_dir, tmp_path):
  workdir = tmp_path / "run"
  first = _run(_train_cmd(workdir, data_dir, "--config.max_steps=3"), env_devices=2)
  assert first.returncode == 0, first.stderr[-3000:]
  config = _override(
      digits_config.get_config(),
      data_dir=data_dir,
      max_steps=6,
      checkpoint_every_steps=3,
      eval_every_epochs=100,
      log_every_steps=3,
      **{"model.name": "tiny-3L", "model.temperature": 10.0},
  )
  hooks = [TrainingEvaluators]  # the default config's evals, as train.py runs them
  metrics = train_and_evaluate(config, str(workdir), hooks)  # this process has one device
  assert metrics["step"] == 6
  assert not (workdir / "corrupt").exists()
  # Resumed from step 3, not restarted: the parameters match an uninterrupted 6-step run
  # (up to the round-off of a 2-device vs 1-device reduction in the first 3 steps).
  straight = str(tmp_path / "straight")
  train_and_evaluate(config, straight, hooks)
  a, b = restore_params(str(workdir))[0], restore_params(straight)[0]
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
  # A silent restart from 0 would have logged the training of step 3 a second time.
  logged = [r["step"] for r in read_metrics(str(workdir)) if "train/loss" in r]
  assert logged == [3, 6], logged


def test_bad_configs_and_workdirs_fail_clearly(data_dir, tmp_path):
  with pytest.raises(ValueError, match="model.name: Unknown architecture 'ResNet' .*9L-S"):
    validate_config(_smoke(data_dir, **{"model.name": "ResNet"}))
  with pytest.raises(ValueError, match="loss must be one of"):
    validate_config(_smoke(data_dir, loss="hinge"))
  with pytest.raises(ValueError, match="multiple of batch_size"):
    validate_config(_smoke(data_dir, virtual_batch_size=12))
  with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
    validate_config(_smoke(data_dir, batch_size=0))
  with pytest.raises(ValueError, match="temperature must be finite"):
    validate_config(_smoke(data_dir, **{"model.temperature": float("inf")}))
  with pytest.raises(ValueError, match="learning_rate must be finite and > 0"):
    validate_config(_smoke(data_dir, **{"optimizer.learning_rate": float("nan")}))
  with pytest.raises(ValueError, match="seed must be >= 0"):
    validate_config(_smoke(data_dir, seed=-1))
  config = _smoke(data_dir)
  config.model.kwargs.foo = 1
  with pytest.raises(ValueError, match=r"model settings \{.*'foo': 1\} are not accepted"):
    validate_config(config)
  result = _run(["train.py", "--config.not_a_key=1", f"--workdir={tmp_path / 'x'}"], timeout=60)
  assert result.returncode != 0 and "not_a_key" in result.stderr

  workdir = str(tmp_path / "run")
  train_and_evaluate(_smoke(data_dir, max_steps=2), workdir)
  with pytest.raises(TrainingError, match="different config.*model"):
    train_and_evaluate(_smoke(data_dir, **{"model.temperature": 5.0}), workdir)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, monkeypatch):
  from codajax.train import step as step_module

  workdir = str(tmp_path / "run")
  train_and_evaluate(_smoke(data_dir, max_steps=2), workdir)
  finite_loss = step_module.classification_loss
  monkeypatch.setattr(
      step_module, "classification_loss", lambda *args: finite_loss(*args) * jnp.nan
  )
  with pytest.raises(TrainingError, match="Non-finite training metrics"):
    train_and_evaluate(_smoke(data_dir, max_steps=8), workdir)
  params, step = restore_params(workdir)
  assert step == 2
  assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(params))


def _damage(checkpoint_dir):
  for root, _, files in os.walk(checkpoint_dir):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(data_dir, straight_run, tmp_path):
  from pathlib import Path

  workdir = Path(_copy_run(straight_run[0], tmp_path))  # checkpoints at 2 and 4
  _damage(workdir / "checkpoints" / "4" / "state")
  # eval's loader (restore) falls back too, read-only: nothing is moved.
  params, step = restore_params(str(workdir))
  assert step == 2 and not (workdir / "corrupt").exists()
  assert restore(str(workdir)).step == 2
  metrics = train_and_evaluate(_smoke(data_dir), str(workdir))
  assert metrics["step"] == 4  # from best/4 (complete, newer than checkpoints/2)
  assert [name.split("-")[0] for name in os.listdir(workdir / "corrupt")] == ["4"]
  assert _params_equal(restore_params(str(workdir))[0], restore_params(straight_run[0])[0])


def test_empty_data_metadata_falls_back_like_a_damaged_checkpoint(data_dir, straight_run, tmp_path):
  from pathlib import Path

  workdir = Path(_copy_run(straight_run[0], tmp_path))
  (workdir / "checkpoints" / "4" / "data" / "metadata").write_text("{}")
  metrics = train_and_evaluate(_smoke(data_dir), str(workdir))
  assert metrics["step"] == 4
  assert [name.split("-")[0] for name in os.listdir(workdir / "corrupt")] == ["4"]
  assert _params_equal(restore_params(str(workdir))[0], restore_params(straight_run[0])[0])


def test_an_interrupted_best_save_is_made_again_and_the_run_finishes(
    data_dir, straight_run, tmp_path
):
  """SIGKILL while best/4 was being saved (left as a temporary folder): the re-run of the
  finished run saves it again from checkpoint 4; a best/ that holds only a damaged checkpoint
  is moved aside and re-created."""
  from pathlib import Path

  workdir = Path(_copy_run(straight_run[0], tmp_path))
  best = workdir / "best"
  os.rename(best / "4", best / "4.orbax-checkpoint-tmp")
  metrics = train_and_evaluate(_smoke(data_dir), str(workdir))
  assert metrics["test/best_step"] == 4 and sorted(os.listdir(best)) == ["4"]
  want, _ = restore_params(straight_run[0], "best")
  assert _params_equal(restore_params(str(workdir), "best")[0], want)
  _damage(best / "4" / "state")
  metrics = train_and_evaluate(_smoke(data_dir), str(workdir))
  assert metrics["test/best_step"] == 4
  assert [n.split("-")[1] for n in os.listdir(workdir / "corrupt")] == ["4"]  # best-4-<time>
  assert _params_equal(restore_params(str(workdir), "best")[0], want)


def test_a_lower_max_steps_than_the_runs_step_is_refused(data_dir, straight_run, tmp_path):
  workdir = _copy_run(straight_run[0], tmp_path)
  before = _checkpoint_listing(workdir)
  with pytest.raises(TrainingError, match="at step 4, past this config's last step 2"):
    train_and_evaluate(_smoke(data_dir, max_steps=2), workdir)
  assert _checkpoint_listing(workdir) == before and not os.path.exists(f"{workdir}/corrupt")


def test_paper_schedules():
  from codajax.train.config import base_config

  opt = base_config().optimizer
  opt.schedule = "cifar_step"
  schedule = learning_rate_schedule(opt, updates_per_epoch=10, total_updates=2000, batch_size=16)
  lrs = [float(schedule(epoch * 10)) for epoch in (0, 29, 30, 60, 199)]
  np.testing.assert_allclose(
      lrs, [2.5e-4, 2.5e-4, 2.5e-4 / 1.5, 2.5e-4 / 1.5**2, 2.5e-4 / 1.5**6], rtol=1e-6
  )
  opt.schedule, opt.warmup_epochs = "imagenet_warmup_halving", 15
  schedule = learning_rate_schedule(opt, updates_per_epoch=10, total_updates=600, batch_size=64)
  lrs = [float(schedule(epoch * 10)) for epoch in (0, 7, 14, 15, 19, 20, 40, 59)]
  want = [2.5e-4, 2.5e-4 + 7 * 7.5e-4 / 14, 1e-3, 1e-3, 1e-3, 5e-4, 2.5e-4, 2.5e-4]
  np.testing.assert_allclose(lrs, want, rtol=1e-6)


# ---- restore: incompatible vs damaged ------------------------------------------------------


def _checkpoint_listing(workdir):
  return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


def test_a_changed_virtual_batch_is_refused_and_nothing_moves(data_dir, straight_run, tmp_path):
  from codajax.train import IncompatibleCheckpointError

  workdir = _copy_run(straight_run[0], tmp_path)
  before = _checkpoint_listing(workdir)
  with pytest.raises(TrainingError, match="accumulation_steps 1 -> 2"):
    train_and_evaluate(_smoke(data_dir, virtual_batch_size=16, max_steps=8), workdir)
  # Without run.json the checkpoints' own structure is compared: still refused, and the
  # foreign config's run.json is not written.
  os.remove(os.path.join(workdir, "run.json"))
  with pytest.raises(IncompatibleCheckpointError, match="opt_state/acc_grads.*Nothing was moved"):
    train_and_evaluate(_smoke(data_dir, virtual_batch_size=16, max_steps=8), workdir)
  assert not os.path.exists(os.path.join(workdir, "corrupt"))
  assert not os.path.exists(os.path.join(workdir, "run.json"))
  assert _checkpoint_listing(workdir) == before
  # The original config still resumes (at its end) from the untouched checkpoints.
  assert train_and_evaluate(_smoke(data_dir), workdir)["step"] == 4
  assert _params_equal(restore_params(workdir)[0], restore_params(straight_run[0])[0])


def test_a_garbage_run_file_is_an_error_naming_it(data_dir, straight_run, tmp_path):
  workdir = _copy_run(straight_run[0], tmp_path)
  path = os.path.join(workdir, "run.json")
  with open(path, "w") as f:
    f.write("{not json")
  with pytest.raises(TrainingError, match=f"{path} is not readable JSON"):
    train_and_evaluate(_smoke(data_dir), workdir)
  with pytest.raises(TrainingError, match=f"{path} is not readable JSON"):
    restore(workdir)
  with open(path, "w") as f:
    f.write("[1, 2]")
  with pytest.raises(TrainingError, match=f"{path} is not a codajax run record"):
    train_and_evaluate(_smoke(data_dir), workdir)
  assert not os.path.exists(os.path.join(workdir, "corrupt"))


def test_a_checkpoint_of_another_shape_is_incompatible(straight_run):
  from codajax.train import IncompatibleCheckpointError

  saved, _ = restore_params(straight_run[0])
  wrong = jax.tree.map(lambda x: jax.ShapeDtypeStruct((*x.shape, 2), x.dtype), saved)
  with pytest.raises(IncompatibleCheckpointError, match="in the checkpoint"):
    restore_params(straight_run[0], like=wrong)


def test_transient_io_errors_are_retried_and_never_taken_for_damage(
    straight_run, tmp_path, monkeypatch
):
  import errno

  from codajax import checkpoints as checkpoint_module
  from codajax.train import CheckpointIOError, Checkpointer

  monkeypatch.setattr(checkpoint_module, "RETRY_DELAY_S", 0.0)
  calls = []

  def flaky():
    calls.append(1)
    if len(calls) < 3:
      raise OSError(errno.EIO, "Input/output error")
    return "ok"

  assert checkpoint_module.with_retries(flaky, "x") == "ok" and len(calls) == 3
  with pytest.raises(ValueError):  # not transient: raised at once, not retried
    checkpoint_module.with_retries(lambda: (_ for _ in ()).throw(ValueError("bad")), "x")

  workdir = _copy_run(straight_run[0], tmp_path)
  before = _checkpoint_listing(workdir)
  checkpointer = Checkpointer(RunDir(workdir))

  def failing_restore(*args, **kwargs):
    raise OSError(errno.EIO, "Input/output error")

  monkeypatch.setattr(checkpointer.latest, "restore", failing_restore)
  try:
    with pytest.raises(
        CheckpointIOError, match="failed 4 times with I/O errors.*nothing was moved"
    ):
      checkpointer.restore_latest(_state_like(workdir))
  finally:
    checkpointer.close()
  assert _checkpoint_listing(workdir) == before
  assert not os.path.exists(os.path.join(workdir, "corrupt"))


def _state_like(workdir):
  """The abstract TrainState of a smoke run's work directory."""
  from codajax import parallel
  from codajax.train import build_optimizer
  from codajax.train.loop import _abstract, _init_state

  run = restore(workdir)
  spec = type("Spec", (), {"image_shape": run.image_shape})
  tx = build_optimizer(run.config, 22, 22 * run.config.num_epochs)
  state = _init_state(run.model, tx, spec, 0, parallel.make_mesh(), "jit")
  return jax.tree.map(_abstract, state)


# ---- no save in flight is dropped; one process per work directory --------------------------


@pytest.mark.parametrize("where", ["summarise", "eval"])
def test_a_failing_run_waits_for_its_saves(data_dir, tmp_path, where):
  """A NaN stop at step 4 (save of step 2 in flight) keeps step 2; a failing final eval
  comes after the final checkpoint (step 4), which is written before the process ends."""
  workdir = tmp_path / "run"
  result = _run(["tests/train_worker.py", "fail_at", where, str(workdir), data_dir])
  assert result.returncode == 3, result.stdout[-2000:] + result.stderr[-3000:]
  assert "failed:" in result.stdout
  names = os.listdir(workdir / "checkpoints")
  assert not [n for n in names if "tmp" in n], names
  _, step = restore_params(str(workdir))
  assert step == (2 if where == "summarise" else 4)
  if where == "eval":  # re-running the finished run does the final eval it missed
    metrics = train_and_evaluate(_smoke(data_dir), str(workdir))
    assert metrics["step"] == 4 and metrics["eval/count"] == 200  # the validation split


def test_a_second_process_on_one_workdir_is_refused(data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  with RunDir(workdir).lock():
    with pytest.raises(TrainingError, match=f"{workdir} is in use by another train.py"):
      train_and_evaluate(_smoke(data_dir), workdir)
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))
  assert train_and_evaluate(_smoke(data_dir, max_steps=1), workdir)["step"] == 1  # released


def test_train_py_errors_are_one_line_with_exit_status_2(data_dir, tmp_path):
  args = _train_cmd(
      tmp_path / "run", data_dir, "--config.batch_size=9", "--config.eval_batch_size=10"
  )
  result = _run(args, env_devices=2, timeout=120)
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.strip().splitlines() == [
      "train.py: error: batch_size 9 is not divisible by the 2 devices; use a multiple of 2."
  ]
  result = _run([*args, "--verbosity=1"], env_devices=2, timeout=120)
  assert result.returncode == 2 and "Traceback" in result.stderr
  result = _run(
      ["train.py", "--config.model.kwargs.foo=1", f"--workdir={tmp_path / 'x'}"], timeout=60
  )
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "train.py: error: unknown config key config.model.kwargs.foo (model.kwargs has no keys); "
      "model.kwargs takes no new keys on the command line; add them to the config file's "
      "config.model.kwargs."
  ]


# ---- untested paths --------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["bce", "softmax"])
def test_eval_step_on_padded_batches_matches_numpy(loss):
  from codajax.models import get_model
  from codajax import parallel
  from codajax.accuracy import make_eval_step

  model = get_model("tiny-3L", num_classes=7)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
  labels = rng.integers(0, 7, (12,), dtype=np.int32)
  valid = np.arange(12) < 9  # the last 3 rows are padding
  images[9:], labels[9:] = images[0], 6  # padding copies a real row, another label
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
  step = make_eval_step(model, loss=loss, mesh=parallel.make_mesh())
  sums = jax.device_get(
      step(
          params,
          parallel.shard_batch(
              {"image": images, "label": labels, "valid": valid}, parallel.make_mesh()
          ),
      )
  )

  logits = np.asarray(model.apply({"params": params}, images / np.float32(255)), np.float64)
  logits, y = logits[valid], labels[valid]
  rank = (logits > logits[np.arange(9), y][:, None]).sum(-1)
  if loss == "bce":
    losses = (np.logaddexp(0, logits) - np.eye(7)[y] * logits).mean(-1)
  else:
    losses = np.logaddexp.reduce(logits, axis=-1) - logits[np.arange(9), y]
  assert sums["count"] == 9
  assert sums["top1"] == (rank == 0).sum() and sums["top5"] == (rank < 5).sum()
  np.testing.assert_allclose(sums["loss"], losses.sum(), rtol=1e-5)
  np.testing.assert_array_equal(sums["class_count"], np.bincount(y, minlength=7))
  np.testing.assert_array_equal(sums["class_top1"], np.bincount(y[rank == 0], minlength=7))


def test_softmax_loss_trains_end_to_end(data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  metrics = train_and_evaluate(_smoke(data_dir, loss="softmax", max_steps=2), workdir)
  run = restore(workdir)
  assert run.config.loss == "softmax" and run.step == 2
  accuracy, _, loss, _ = _numpy_eval(run, data_dir, "softmax")
  np.testing.assert_allclose(metrics["eval/loss"], loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["eval/accuracy"], accuracy, atol=1e-6)
  # Softmax CE of 10 classes starts near log(10), far from BCE's ~0.69·(1/10 + ...) scale.
  assert abs(metrics["train/loss"] - np.log(10)) < 0.5


def test_warmup_cosine_and_lr_batch_scaling_follow_their_closed_forms():
  import math

  from codajax.train.config import base_config

  opt = base_config().optimizer
  opt.schedule, opt.warmup_epochs, opt.peak_learning_rate = "warmup_cosine", 2, 1e-3
  schedule = learning_rate_schedule(opt, updates_per_epoch=10, total_updates=100, batch_size=16)

  def closed_form(t, peak=1e-3, warmup=20, total=100):
    if t < warmup:
      return peak * t / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(t - warmup, total - warmup) / (total - warmup)))

  for t in (0, 5, 19, 20, 21, 50, 99, 100, 150):
    np.testing.assert_allclose(
        float(schedule(t)), closed_form(t), rtol=1e-5, atol=1e-9, err_msg=f"update {t}"
    )
  opt.lr_batch_scaling, opt.reference_batch_size = True, 16
  scaled = learning_rate_schedule(opt, updates_per_epoch=10, total_updates=100, batch_size=256)
  for t in (5, 20, 60):
    np.testing.assert_allclose(float(scaled(t)), 16 * closed_form(t), rtol=1e-5)
  opt.schedule = "constant"
  constant = learning_rate_schedule(opt, updates_per_epoch=10, total_updates=100, batch_size=64)
  np.testing.assert_allclose(float(constant(7)), opt.learning_rate * 64 / 16, rtol=1e-6)


def test_best_checkpoint_is_kept_when_later_evals_are_worse(straight_run, tmp_path):
  from codajax.train import Checkpointer

  workdir = _copy_run(straight_run[0], tmp_path)
  best_before = restore(workdir, which="best")
  accuracy = straight_run[1]["eval/accuracy"]
  assert best_before.step == 4
  params, _ = restore_params(workdir)
  worse = jax.tree.map(lambda x: np.asarray(x) + 1.0, params)
  better = jax.tree.map(lambda x: np.asarray(x) - 1.0, params)
  full = {"params": worse, "step": np.int32(5)}
  checkpointer = Checkpointer(RunDir(workdir))
  try:
    checkpointer.save_best(5, full, {}, {"eval/accuracy": accuracy - 0.05})
    checkpointer.wait()
    run = restore(workdir, which="best")
    assert run.step == 4 and _params_equal(run.params, best_before.params)
    checkpointer.save_best(
        6, {"params": better, "step": np.int32(6)}, {}, {"eval/accuracy": accuracy + 0.05}
    )
  finally:
    checkpointer.close()
  run = restore(workdir, which="best")
  assert run.step == 6 and _params_equal(run.params, better)
  assert restore(workdir).step == 4  # latest is unaffected


def test_l1_matrix_regulariser_trains_end_to_end(data_dir, straight_run, tmp_path):
  workdir = str(tmp_path / "run")
  metrics = train_and_evaluate(
      _smoke(data_dir, l1_matrix_weight=0.5, max_steps=2, checkpoint_every_steps=1), workdir
  )
  assert metrics["step"] == 2
  assert np.isfinite(metrics["train/l1_matrix"]) and metrics["train/l1_matrix"] > 0
  # Step 2 differs from the unregularised run's step 2 (same data, same seed).
  plain = str(tmp_path / "plain")
  train_and_evaluate(_smoke(data_dir, max_steps=2, checkpoint_every_steps=1), plain)
  assert not _params_equal(restore_params(workdir)[0], restore_params(plain)[0])


def test_pmap_folds_the_device_index_into_the_regulariser_rng(tmp_path):
  out = tmp_path / "rng.npz"
  result = _run(["tests/train_worker.py", "pmap_regulariser_rng", str(out)], env_devices=2)
  assert result.returncode == 0, result.stderr[-3000:]
  saved = np.load(out)
  assert int(saved["num_devices"]) == 2
  key = jax.random.fold_in(jax.random.wrap_key_data(jnp.asarray(saved["key_data"])), 0)
  per_device = [float(jax.random.uniform(jax.random.fold_in(key, d))) for d in range(2)]
  assert per_device[0] != per_device[1]
  np.testing.assert_allclose(float(saved["penalty"]), np.mean(per_device), rtol=1e-6)


def test_preemption_is_exchanged_only_at_sync_steps(monkeypatch):
  from codajax.train import loop

  calls = []
  monkeypatch.setattr(loop.jax, "process_count", lambda: 2)
  monkeypatch.setattr(
      loop.multihost_utils, "process_allgather", lambda x: (calls.append(1), np.array([x, True]))[1]
  )
  preemption = loop._Preemption()
  assert preemption.poll(sync=False) is False and not calls  # no per-step collective
  assert preemption.poll(sync=True) is True and len(calls) == 1  # a peer was preempted
