"""Work directories and datasets on gs://, against a local Cloud Storage emulator.

train.py with ``--workdir gs://...`` (checkpoints, kill, bit-identical resume, restore), eval.py
writing its report and figures to the bucket, prepare + training from a gs:// data_dir, the
gs:// work-directory lease, and two processes on one gs:// work directory. The expected
values come from the same runs on local directories (the path code is what changes).
See tests/gcs_emulator.py for the variables set and what the emulator does not serve.
"""

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
from two_processes import fake_devices, run_two_processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))
import digits as digits_config  # noqa: E402  (configs/ is not a package)

BUCKET = "codajax-test"
LEASE_TTL_S = "4"  # seconds; the default (60) would make the resume after SIGKILL wait


@pytest.fixture(scope="module")
def emulator():
  import gc

  with running_emulator(BUCKET) as url:
    yield url
    # tensorboardX's GCS writer uploads again when collected: let it while the emulator runs.
    gc.collect()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _env(**extra):
  env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
  return env


def _train_cmd(workdir, data_dir, *extra):
  """train.py on digits, toy model, 12 steps, checkpoints every 3 (as tests/test_train.py)."""
  return [
      sys.executable,
      "train.py",
      "--config",
      "configs/digits.py",
      f"--workdir={workdir}",
      f"--config.data_dir={data_dir}",
      "--config.model.name=tiny-3L",
      "--config.model.temperature=10",
      "--config.max_steps=12",
      "--config.checkpoint_every_steps=3",
      "--config.eval_every_epochs=100",
      "--config.log_every_steps=3",
      *extra,
  ]


def _run(cmd, timeout=300, **env):
  return subprocess.run(
      cmd, cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=timeout
  )


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
  proc = subprocess.Popen(
      _train_cmd(workdir, data_dir),
      cwd=ROOT,
      env=_env(CODAJAX_LOCK_TTL_S=LEASE_TTL_S),
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
  )
  done = storage.join(workdir, "checkpoints", "6", "commit_success.txt")  # orbax on gs://
  deadline = time.time() + 240
  while not storage.exists(done) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  steps = sorted(
      int(s) for s in storage.listdir(storage.join(workdir, "checkpoints")) if s.isdigit()
  )
  assert steps and 6 <= max(steps) < 12, f"the run was not killed mid-way: {steps}"
  # The killed run's lease is left behind: the resume takes it over once it is LEASE_TTL_S old.
  assert storage.exists(storage.join(workdir, "train.lock.0"))
  time.sleep(float(LEASE_TTL_S))
  resumed = _run(_train_cmd(workdir, data_dir), CODAJAX_LOCK_TTL_S=LEASE_TTL_S)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  return workdir, steps, resumed.stdout


@pytest.mark.slow
def test_train_on_gs_resumes_bit_identically_after_sigkill(gs_run, local_run):
  workdir, steps_at_kill, output = gs_run
  assert "took over the abandoned lease" in output
  a, step_a = restore_params(local_run)
  b, step_b = restore_params(workdir)
  assert step_a == step_b == 12
  assert _params_equal(a, b)
  assert not storage.exists(storage.join(workdir, "corrupt"))  # resumed, nothing moved
  assert not storage.exists(storage.join(workdir, "train.lock.0"))  # released at the end
  run = restore(workdir)  # codajax.train.restore("gs://...")
  assert run.step == 12 and _params_equal(run.params, a)
  assert run.config.model.name == "tiny-3L"
  # The logs: the resumed run's records follow the killed run's (metrics.jsonl rewritten whole).
  local_steps = [r["step"] for r in read_metrics(local_run) if "train/loss" in r]
  gs_steps = [r["step"] for r in read_metrics(workdir) if "train/loss" in r]
  assert local_steps == [3, 6, 9, 12]
  assert sorted(set(gs_steps)) == local_steps and gs_steps[-1] == 12
  events = [
      e
      for name in storage.listdir(storage.join(workdir, "tensorboard"))
      for e in _events(storage.read_bytes(storage.join(workdir, "tensorboard", name)))
  ]
  logged = {e.step for e in events for v in e.summary.value if v.tag == "train/loss"}
  # The resumed run's TensorBoard file, readable record by record: every step after the last
  # checkpoint of the killed run (6 or 9, by when the kill landed) through 12.
  resumed_steps = {step for step in local_steps if step > max(steps_at_kill)}
  assert 12 in resumed_steps and resumed_steps <= logged
  assert storage.read_json(storage.join(workdir, "run.json"))["num_classes"] == 10


def test_gs_lease_refuses_a_second_run_and_is_taken_over_when_abandoned(
    emulator, data_dir, monkeypatch, capsys
):
  workdir = f"gs://{BUCKET}/leased"
  monkeypatch.setenv("CODAJAX_LOCK_TTL_S", "2")
  with storage.workdir_lock(workdir, "train.lock.0"):
    record = storage.read_json(storage.join(workdir, "train.lock.0"))
    assert record["owner"] == f"{os.getpid()}@{os.uname().nodename}"
    with pytest.raises(TrainingError, match="is in use by another train.py"):
      train_and_evaluate(_smoke(data_dir), workdir)
  assert not storage.exists(storage.join(workdir, "train.lock.0"))  # released
  # An abandoned lease (its owner died: never renewed) is taken over after the TTL.
  storage.write_json(storage.join(workdir, "train.lock.0"), {"owner": "1@lost-host"})
  with pytest.raises(storage.LockHeld, match="1@lost-host"):  # fresh: a live owner
    with storage.workdir_lock(workdir, "train.lock.0"):
      pass
  time.sleep(1.2)  # older than TTL / 2: its owner looks dead; wait until the TTL, take over
  started = time.monotonic()
  with storage.workdir_lock(workdir, "train.lock.0"):
    assert time.monotonic() - started >= 0.5  # waited for the lease to expire
    assert storage.read_json(storage.join(workdir, "train.lock.0"))["owner"] != "1@lost-host"
  assert "held by 1@lost-host" in capsys.readouterr().out


def _events(data: bytes):
  """The Event protos of a TensorBoard file, each record's length and checksums verified."""
  import struct

  from tensorboardX.proto import event_pb2
  from tensorboardX.record_writer import masked_crc32c

  events, offset = [], 0
  while offset < len(data):
    header = data[offset : offset + 8]
    (length,) = struct.unpack("Q", header)
    assert struct.unpack("I", data[offset + 8 : offset + 12])[0] == masked_crc32c(header)
    body = data[offset + 12 : offset + 12 + length]
    assert struct.unpack("I", data[offset + 12 + length : offset + 16 + length])[
        0
    ] == masked_crc32c(body)
    events.append(event_pb2.Event.FromString(body))
    offset += 16 + length
  return events


def _smoke(data_dir, **overrides):
  config = digits_config.get_config("smoke")
  config.data_dir = data_dir
  config.model.name = "tiny-3L"
  config.model.temperature = 10.0
  for key, value in overrides.items():
    config[key] = value
  return config


def test_gs_lease_has_one_winner_among_racing_processes(emulator):
  """Four acquirers at once: the create-if-absent precondition lets exactly one in."""
  import threading

  uri = f"gs://{BUCKET}/race/train.lock.0"
  start, results = threading.Barrier(4), []

  def acquire():
    lease = storage.ObjectLease(uri, ttl_s=30)
    start.wait()
    try:
      lease.acquire()
      results.append(lease)
    except storage.LockHeld:
      results.append(None)

  threads = [threading.Thread(target=acquire) for _ in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  winners = [lease for lease in results if lease is not None]
  assert len(results) == 4 and len(winners) == 1
  assert storage.read_json(uri)["token"] == winners[0].token
  winners[0].release()
  assert not storage.exists(uri)


@pytest.mark.slow
def test_eval_on_gs_writes_report_and_figures_to_the_bucket(gs_run, data_dir):
  from codajax import data

  workdir = gs_run[0]
  out = storage.join(workdir, "eval")
  result = _run(
      [
          sys.executable,
          "eval.py",
          f"--workdir={workdir}",
          "--config.methods=Ours",
          "--config.evals.localisation.n_grids=1",
          "--config.evals.pixel_removal.n_images=4",
          "--config.evals.ground_truth.n_images=4",
          "--config.evals.figures.n_images=2",
          "--config.batch_size=4",
          "--config.skip=depths",
          "--config.evals.completeness.n_images=4",
      ]
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"report: {out}/report.json" in result.stdout
  report = storage.read_json(storage.join(out, "report.json"))
  assert report["workdir"] == workdir and report["checkpoint"]["step"] == 12
  # The accuracy, recomputed here from the restored model (not the eval code).
  run = restore(workdir)
  test = data.load_examples("digits", "test", data_dir=data_dir)
  logits = np.asarray(run.model.apply(run.variables, test["image"].astype(np.float32) / 255))
  assert report["accuracy"]["top1"] == pytest.approx(
      np.mean(logits.argmax(1) == test["label"]), abs=1e-9
  )
  import io

  with np.load(io.BytesIO(storage.read_bytes(storage.join(out, "scores.npz")))) as scores:
    assert len(scores.files) > 0
  with Image.open(io.BytesIO(storage.read_bytes(storage.join(out, "contributions.png")))) as png:
    assert png.format == "PNG" and min(png.size) >= 100


@pytest.mark.slow
def test_prepare_and_two_processes_on_gs_match_one_local_process(emulator, data_dir, tmp_path):
  """``prepare`` into gs://BUCKET/tfds, then two processes x 2 fake devices training on that
  data into one gs:// work directory: the parameters of one local process with 4 devices."""
  args = ["--config.max_steps=4", "--config.batch_size=16", "--config.eval_every_epochs=100"]
  gs_data = f"gs://{BUCKET}/tfds"
  prepared = _run([sys.executable, "-m", "codajax.data.prepare", "digits", "--data_dir", gs_data])
  assert prepared.returncode == 0, prepared.stderr[-3000:]
  assert storage.exists(storage.join(gs_data, "codajax_digits", "1.0.0", "dataset_info.json"))

  single = _run(
      _train_cmd(tmp_path / "one", data_dir, *args),
      XLA_FLAGS=fake_devices(4),
  )
  assert single.returncode == 0, single.stderr[-3000:]

  workdir = f"gs://{BUCKET}/two"
  env = _env(
      XLA_FLAGS=fake_devices(2),
      CODAJAX_CACHE_DIR=str(tmp_path / "cache"),
  )  # both processes mirror into it
  run_two_processes(_train_cmd(workdir, gs_data, *args), cwd=ROOT, env=env, timeout=300)
  one, _ = restore_params(str(tmp_path / "one"))
  two, step = restore_params(workdir)
  assert step == 4
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert (tmp_path / "cache" / "datasets" / "gs" / BUCKET / "tfds" / "codajax_digits").is_dir()
  assert storage.listdir(workdir).count("train.lock.0") == 0  # both leases released
  assert "train.lock.1" not in storage.listdir(workdir)


def test_a_damaged_gs_checkpoint_is_moved_aside_and_the_previous_one_resumed(emulator, data_dir):
  """On gs:// the move to corrupt/ is a copy and a delete: the damaged step leaves checkpoints/."""
  workdir = f"gs://{BUCKET}/damaged"
  train_and_evaluate(_smoke(data_dir), workdir)  # 4 steps, checkpoints at 2 and 4
  storage.write_atomic(storage.join(workdir, "checkpoints", "4", "data", "metadata"), "{}")
  metrics = train_and_evaluate(_smoke(data_dir, max_steps=6), workdir)
  assert metrics["step"] == 6
  moved = storage.listdir(storage.join(workdir, "corrupt"))
  assert len(moved) == 1 and moved[0].startswith("4-")
  assert storage.exists(storage.join(workdir, "corrupt", moved[0], "state"))
  assert sorted(int(s) for s in storage.listdir(storage.join(workdir, "checkpoints"))) == [4, 6]
  assert restore_params(workdir)[1] == 6
