"""Training: smoke runs, parallel equivalence, accumulation, exact resume, multi-host, errors."""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from codajax.train import TrainingError, restore, restore_params, train_and_evaluate
from codajax.train.config import validate_config
from codajax.train.metrics_log import read_metrics
from codajax.train.schedules import learning_rate_schedule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))
import digits as digits_config  # noqa: E402  (configs/ is not a package)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _smoke(data_dir, **overrides):
  config = digits_config.get_config("smoke")
  config.data_dir = data_dir
  config.model.name = "tiny-3L"   # toy layers; the model adapts to digits' 1 channel
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
  if env_devices:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={env_devices}"
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout, **kwargs)


def _params_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_smoke_training_writes_logs_checkpoints_and_evaluates(data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  metrics = train_and_evaluate(_smoke(data_dir), workdir)
  assert metrics["step"] == 4
  assert 0.0 <= metrics["eval/accuracy"] <= 1.0 and metrics["eval/count"] == 360
  records = read_metrics(workdir)
  assert any("train/loss" in r for r in records) and any("eval/accuracy" in r for r in records)
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  run = restore(workdir)
  assert run.step == 4
  logits = run.model.apply(run.variables, jnp.zeros((2, 16, 16, 1)))
  assert logits.shape == (2, 10)
  # Re-running the finished run resumes at its end and does nothing more.
  assert train_and_evaluate(_smoke(data_dir), workdir)["step"] == 4


def test_jit_mesh_pmap_and_single_device_give_the_same_parameters(tmp_path):
  out = tmp_path / "params.npz"
  result = _run(["tests/train_worker.py", "parallel_equivalence", str(out)], env_devices=8)
  assert result.returncode == 0, result.stderr[-3000:]
  saved = np.load(out)
  assert int(saved["num_devices"]) == 8
  keys = [k[len("jit/"):] for k in saved.files if k.startswith("jit/")]
  assert keys
  for other in ("pmap", "single"):
    for key in keys:
      np.testing.assert_allclose(saved[f"{other}/{key}"], saved[f"jit/{key}"], rtol=1e-4,
                                 atol=1e-5, err_msg=f"{other} vs jit at {key}")


def test_gradient_accumulation_equals_one_large_batch():
  from codajax.models import get_model

  model = get_model("tiny-3L")
  x = jax.random.uniform(jax.random.key(0), (8, 8, 8, 3))
  y = jnp.arange(8) % 10
  params = model.init(jax.random.key(1), x[:1])["params"]

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
  return ["train.py", "--config", "configs/digits.py", f"--workdir={workdir}",
          f"--config.data_dir={data_dir}", "--config.model.name=tiny-3L",
          "--config.model.temperature=10", "--config.max_steps=24",
          "--config.checkpoint_every_steps=3", "--config.eval_every_epochs=100",
          "--config.log_every_steps=3", *extra]


def test_resume_after_sigkill_is_bit_identical(data_dir, tmp_path):
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  result = _run(_train_cmd(straight, data_dir))
  assert result.returncode == 0, result.stderr[-3000:]

  env = dict(os.environ, PYTHONUNBUFFERED="1")
  proc = subprocess.Popen([sys.executable, *_train_cmd(killed, data_dir)], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoint = killed / "checkpoints" / "6"
  deadline = time.time() + 180
  while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  steps = sorted(int(s) for s in os.listdir(killed / "checkpoints") if s.isdigit())
  assert steps and max(steps) < 24, f"the run was not killed mid-way: {steps}"

  result = _run(_train_cmd(killed, data_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  a, step_a = restore_params(str(straight))
  b, step_b = restore_params(str(killed))
  assert step_a == step_b == 24
  assert _params_equal(a, b)


def test_sigterm_saves_and_exits_cleanly(data_dir, tmp_path):
  workdir = tmp_path / "run"
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  proc = subprocess.Popen(
      [sys.executable, *_train_cmd(workdir, data_dir, "--config.max_steps=100000",
                                   "--config.checkpoint_every_steps=100000")],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 180
  while not (workdir / "metrics.jsonl").exists() and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  output, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, output[-3000:]
  assert "SIGTERM: saved step" in output
  _, step = restore_params(str(workdir))
  assert 3 <= step < 100000


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process_with_four_devices(data_dir, tmp_path):
  args = ["--config.max_steps=4", "--config.batch_size=16", "--config.eval_every_epochs=100"]
  single = _run(_train_cmd(tmp_path / "one", data_dir, *args), env_devices=4)
  assert single.returncode == 0, single.stderr[-3000:]

  port = _free_port()
  env = dict(os.environ, PYTHONUNBUFFERED="1",
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  procs = [subprocess.Popen(
      [sys.executable, *_train_cmd(tmp_path / "two", data_dir, *args), "--multihost",
       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}",
       "--init_timeout=60"],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  try:
    outputs = [p.communicate(timeout=240)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  one, _ = restore_params(str(tmp_path / "one"))
  two, step = restore_params(str(tmp_path / "two"))
  assert step == 4
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_missing_peer_ends_the_run_within_the_timeout(data_dir, tmp_path):
  start = time.time()
  result = _run([*_train_cmd(tmp_path / "run", data_dir), "--multihost",
                 f"--coordinator_address=127.0.0.1:{_free_port()}", "--num_processes=2",
                 "--process_id=0", "--init_timeout=3"], timeout=90)
  assert result.returncode != 0
  assert "waiting up to 3 s for 2 processes" in result.stdout
  assert time.time() - start < 60


def test_restore_onto_another_device_count(data_dir, tmp_path):
  workdir = tmp_path / "run"
  first = _run(_train_cmd(workdir, data_dir, "--config.max_steps=3"), env_devices=2)
  assert first.returncode == 0, first.stderr[-3000:]
  config = _override(digits_config.get_config(), data_dir=data_dir, max_steps=6,
                     checkpoint_every_steps=3, eval_every_epochs=100, log_every_steps=3,
                     **{"model.name": "tiny-3L", "model.temperature": 10.0})
  metrics = train_and_evaluate(config, str(workdir))   # this process has one device
  assert metrics["step"] == 6


def test_bad_configs_and_workdirs_fail_clearly(data_dir, tmp_path):
  with pytest.raises(ValueError, match="model.name 'ResNet' is unknown; known: .*9L-S"):
    validate_config(_smoke(data_dir, **{"model.name": "ResNet"}))
  with pytest.raises(ValueError, match="loss must be one of"):
    validate_config(_smoke(data_dir, loss="hinge"))
  with pytest.raises(ValueError, match="multiple of batch_size"):
    validate_config(_smoke(data_dir, virtual_batch_size=12))
  result = _run(["train.py", "--config.not_a_key=1", f"--workdir={tmp_path / 'x'}"], timeout=60)
  assert result.returncode != 0 and "not_a_key" in result.stderr

  workdir = str(tmp_path / "run")
  train_and_evaluate(_smoke(data_dir, max_steps=2), workdir)
  with pytest.raises(TrainingError, match="different config.*model"):
    train_and_evaluate(_smoke(data_dir, **{"model.temperature": 5.0}), workdir)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path,
                                                                   monkeypatch):
  from codajax.train import step as step_module

  workdir = str(tmp_path / "run")
  train_and_evaluate(_smoke(data_dir, max_steps=2), workdir)
  finite_loss = step_module.classification_loss
  monkeypatch.setattr(step_module, "classification_loss",
                      lambda *args: finite_loss(*args) * jnp.nan)
  with pytest.raises(TrainingError, match="Non-finite training metrics"):
    train_and_evaluate(_smoke(data_dir, max_steps=8), workdir)
  params, step = restore_params(workdir)
  assert step == 2
  assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(params))


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(data_dir, tmp_path):
  workdir = tmp_path / "run"
  train_and_evaluate(_smoke(data_dir), str(workdir))          # checkpoints at 2 and 4
  newest = workdir / "checkpoints" / "4" / "state"
  for root, _, files in os.walk(newest):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  metrics = train_and_evaluate(_smoke(data_dir), str(workdir))
  assert metrics["step"] == 4                                   # redone from step 2
  assert os.listdir(workdir / "corrupt")


def test_paper_schedules():
  from codajax.train.config import base_config

  opt = base_config().optimizer
  opt.schedule = "cifar_step"
  schedule = learning_rate_schedule(opt, updates_per_epoch=10, total_updates=2000, batch_size=16)
  lrs = [float(schedule(epoch * 10)) for epoch in (0, 29, 30, 60, 199)]
  np.testing.assert_allclose(lrs, [2.5e-4, 2.5e-4, 2.5e-4 / 1.5, 2.5e-4 / 1.5**2,
                                   2.5e-4 / 1.5**6], rtol=1e-6)
  opt.schedule, opt.warmup_epochs = "imagenet_warmup_halving", 15
  schedule = learning_rate_schedule(opt, updates_per_epoch=10, total_updates=600, batch_size=64)
  lrs = [float(schedule(epoch * 10)) for epoch in (0, 7, 14, 15, 19, 20, 40, 59)]
  want = [2.5e-4, 2.5e-4 + 7 * 7.5e-4 / 14, 1e-3, 1e-3, 1e-3, 5e-4, 2.5e-4, 2.5e-4]
  np.testing.assert_allclose(lrs, want, rtol=1e-6)
