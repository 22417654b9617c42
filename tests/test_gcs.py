"""Work directories and datasets on gs://, against a local Cloud Storage emulator.

train.py with ``--workdir gs://...`` (checkpoints, kill, bit-identical resume, restore), eval.py
writing its report and figures to the bucket, prepare + training from a gs:// data_dir, the
gs:// work-directory lease, and two processes on one gs:// work directory. The expected
values come from the same runs on local directories (the path code is what changes).
See tests/gcs_emulator.py for the variables set and what the emulator does not serve.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

from codajax import storage
from codajax.train import TrainingError, restore, restore_params, train_and_evaluate
from codajax.train.metrics_log import read_metrics

from gcs_emulator import running_emulator  # tests/ is on sys.path (rootdir conftest)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))
import digits as digits_config  # noqa: E402  (configs/ is not a package)

BUCKET = "codajax-test"
LEASE_TTL_S = "4"   # seconds; the default (60) would make the resume after SIGKILL wait


@pytest.fixture(scope="module")
def emulator():
  with running_emulator(BUCKET) as url:
    yield url


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _env(**extra):
  env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
  return env


def _train_cmd(workdir, data_dir, *extra):
  """train.py on digits, toy model, 12 steps, checkpoints every 3 (as tests/test_train.py)."""
  return [sys.executable, "train.py", "--config", "configs/digits.py", f"--workdir={workdir}",
          f"--config.data_dir={data_dir}", "--config.model.name=tiny-3L",
          "--config.model.temperature=10", "--config.max_steps=12",
          "--config.checkpoint_every_steps=3", "--config.eval_every_epochs=100",
          "--config.log_every_steps=3", *extra]


def _run(cmd, timeout=300, **env):
  return subprocess.run(cmd, cwd=ROOT, env=_env(**env), capture_output=True, text=True,
                        timeout=timeout)


def _params_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def local_run(data_dir, tmp_path_factory):
  """The reference: the same training, uninterrupted, in a local work directory."""
  workdir = str(tmp_path_factory.mktemp("local") / "run")
  result = _run(_train_cmd(workdir, data_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


@pytest.fixture(scope="module")
def gs_run(emulator, data_dir, local_run):
  """train.py on gs://BUCKET/run, SIGKILLed after its step-6 checkpoint, then resumed."""
  workdir = f"gs://{BUCKET}/run"
  proc = subprocess.Popen(_train_cmd(workdir, data_dir), cwd=ROOT,
                          env=_env(CODAJAX_LOCK_TTL_S=LEASE_TTL_S),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  done = storage.join(workdir, "checkpoints", "6", "commit_success.txt")   # orbax on gs://
  deadline = time.time() + 240
  while not storage.exists(done) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  steps = sorted(int(s) for s in storage.listdir(storage.join(workdir, "checkpoints"))
                 if s.isdigit())
  assert steps and 6 <= max(steps) < 12, f"the run was not killed mid-way: {steps}"
  # The killed run's lease is left behind: the resume takes it over once it is LEASE_TTL_S old.
  assert storage.exists(storage.join(workdir, "train.lock.0"))
  time.sleep(float(LEASE_TTL_S))
  resumed = _run(_train_cmd(workdir, data_dir), CODAJAX_LOCK_TTL_S=LEASE_TTL_S)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  return workdir, steps, resumed.stdout


def test_train_on_gs_resumes_bit_identically_after_sigkill(gs_run, local_run):
  workdir, steps_at_kill, output = gs_run
  assert "took over the abandoned lease" in output
  a, step_a = restore_params(local_run)
  b, step_b = restore_params(workdir)
  assert step_a == step_b == 12
  assert _params_equal(a, b)
  assert not storage.exists(storage.join(workdir, "corrupt"))   # resumed, nothing moved
  assert not storage.exists(storage.join(workdir, "train.lock.0"))   # released at the end
  run = restore(workdir)   # codajax.train.restore("gs://...")
  assert run.step == 12 and _params_equal(run.params, a)
  assert run.config.model.name == "tiny-3L"
  # The logs: the resumed run's records follow the killed run's (metrics.jsonl rewritten whole).
  local_steps = [r["step"] for r in read_metrics(local_run) if "train/loss" in r]
  gs_steps = [r["step"] for r in read_metrics(workdir) if "train/loss" in r]
  assert local_steps == [3, 6, 9, 12]
  assert sorted(set(gs_steps)) == local_steps and gs_steps[-1] == 12
  assert storage.listdir(storage.join(workdir, "tensorboard"))
  assert storage.read_json(storage.join(workdir, "run.json"))["num_classes"] == 10


def test_gs_lease_refuses_a_second_run_and_is_taken_over_when_abandoned(emulator, data_dir,
                                                                       monkeypatch):
  workdir = f"gs://{BUCKET}/leased"
  monkeypatch.setenv("CODAJAX_LOCK_TTL_S", "2")
  with storage.workdir_lock(workdir, "train.lock.0"):
    record = storage.read_json(storage.join(workdir, "train.lock.0"))
    assert record["owner"] == f"{os.getpid()}@{os.uname().nodename}"
    with pytest.raises(TrainingError, match="is in use by another train.py"):
      train_and_evaluate(_smoke(data_dir), workdir)
  assert not storage.exists(storage.join(workdir, "train.lock.0"))   # released
  # An abandoned lease (its owner died: never renewed) is taken over after the TTL.
  storage.write_json(storage.join(workdir, "train.lock.0"), {"owner": "1@lost-host"})
  with pytest.raises(storage.LockHeld, match="1@lost-host"):   # fresh: a live owner
    with storage.workdir_lock(workdir, "train.lock.0"):
      pass
  time.sleep(1.2)   # older than TTL / 2: its owner looks dead; wait until the TTL, take over
  started = time.monotonic()
  with storage.workdir_lock(workdir, "train.lock.0"):
    assert time.monotonic() - started >= 0.5   # waited for the lease to expire
    assert storage.read_json(storage.join(workdir, "train.lock.0"))["owner"] != "1@lost-host"


def _smoke(data_dir, **overrides):
  config = digits_config.get_config("smoke")
  config.data_dir = data_dir
  config.model.name = "tiny-3L"
  config.model.temperature = 10.0
  for key, value in overrides.items():
    config[key] = value
  return config
