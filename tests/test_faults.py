"""Faults that must lose nothing: silent corruption, damaged checkpoints, ``best/`` as a resume
source, a failed save that must not keep the process alive, damaged ``metrics.jsonl`` lines,
the work-directory lock, the run record's settings and concurrent dataset preparation.

Direct calls on tiny pytrees (no training): each test takes well under a second or two.
"""

import json
import logging
import os
import threading
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codajax import checkpoints, runs, storage
from codajax.checkpoints import Checkpointer
from codajax.runs import RunDir
from codajax.train import TrainingError
from codajax.train.metrics_log import MetricsLogger, parse_metrics, read_metrics


def _state(seed: int) -> dict:
  """A tiny 'train state': a step, params with an array big enough for a data file, an rng."""
  rng = np.random.default_rng(seed)
  return {
      "step": jnp.asarray(seed, jnp.int32),
      "params": {
          "w": jnp.asarray(rng.standard_normal((128, 128)), jnp.float32),
          "b": jnp.asarray(rng.standard_normal(7), jnp.bfloat16),
      },
      "rng": jnp.asarray(rng.integers(0, 2**31, 2), jnp.uint32),
  }


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


DATA = {"next_batch": 0, "seed": 0}


def _saved_run(tmp_path, steps=(2, 4), best=()):
  """A run directory whose ``checkpoints/`` holds ``_state(step)`` at ``steps`` (and ``best/``
  at ``best``), each with its checksums."""
  run = RunDir(str(tmp_path / "run"))
  checkpointer = Checkpointer(run, keep=5)
  for step in steps:
    checkpointer.save(step, _state(step), {**DATA, "next_batch": step})
    if step in best:
      checkpointer.save_best(
          step, _state(step), {**DATA, "next_batch": step}, {"eval/accuracy": 0.5}
      )
  checkpointer.close()
  return run


def _restore(run):
  checkpointer = Checkpointer(run, keep=5)
  try:
    return checkpointer.restore_latest(_abstract(_state(0)), expected_data=DATA)
  finally:
    checkpointer.close()


def _equal(a, b):
  return all(
      np.array_equal(np.asarray(x), np.asarray(y))
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


def _metadata_file(run, step, which="latest"):
  return os.path.join(run.checkpoints_dir(which), str(step), "_CHECKPOINT_METADATA")


def _moved(run):
  return sorted(n.rsplit("-", 1)[0] for n in storage.listdir(run.corrupt_dir()))


# ---- checksums -------------------------------------------------------------------------------


def test_checksums_are_the_crc32_of_each_arrays_bytes():
  state = _state(3)
  sums = checkpoints.array_checksums(state)
  assert set(sums) == {"step", "params/w", "params/b", "rng"}
  w = np.asarray(state["params"]["w"])
  assert sums["params/w"] == f"{zlib.crc32(w.tobytes()):08x}"
  assert sums["params/b"] == f"{zlib.crc32(np.asarray(state['params']['b']).tobytes()):08x}"
  assert checkpoints.checksum_mismatches(sums, state) == []
  changed = jax.tree.map(lambda x: x, state)
  changed["params"]["w"] = state["params"]["w"].at[5, 7].add(1e-6)
  assert checkpoints.checksum_mismatches(sums, changed) == ["params/w"]
  # The params alone, against the state's sums (as restore_params checks them).
  assert checkpoints.checksum_mismatches(sums, changed["params"], "params/") == ["params/w"]
  assert checkpoints.checksum_mismatches({}, changed) == []  # nothing recorded: not checked


def test_each_save_records_the_checksums_of_what_it_saved(tmp_path):
  run = _saved_run(tmp_path, steps=(2,))
  with open(_metadata_file(run, 2)) as f:
    recorded = json.load(f)["custom_metadata"][checkpoints.CHECKSUMS_KEY]
  assert recorded == checkpoints.array_checksums(_state(2))


def _flip_recorded_sum(run, step, which="latest", key="params/w"):
  """A value that differs from the stored array's: what a flipped bit in the data would give."""
  path = _metadata_file(run, step, which)
  with open(path) as f:
    metadata = json.load(f)
  sums = metadata["custom_metadata"][checkpoints.CHECKSUMS_KEY]
  sums[key] = f"{int(sums[key], 16) ^ 1:08x}"
  with open(path, "w") as f:
    json.dump(metadata, f)


def test_an_array_that_fails_its_checksum_is_damage_with_the_same_fallback(tmp_path, capsys):
  run = _saved_run(tmp_path)
  _flip_recorded_sum(run, 4)
  # restore_params (eval.py, restore()) skips it, read-only.
  params, step = runs.restore_params(run)
  assert step == 2 and _equal(params, _state(2)["params"])
  assert not os.path.exists(run.corrupt_dir())
  # Training moves it to corrupt/ and resumes from step 2.
  state, data_state, step = _restore(run)
  assert step == 2 and _equal(state, _state(2)) and data_state["next_batch"] == 2
  assert _moved(run) == ["4"]
  assert "differ from the checksums recorded when it was saved (e.g. params/w)" in (
      capsys.readouterr().out
  )


def test_flipped_bytes_in_a_data_file_are_never_restored(tmp_path):
  """16 bytes XOR-ed in the largest data file of step 4: a decode error or a checksum mismatch,
  either way step 4 is damage and step 2 is used."""
  run = _saved_run(tmp_path)
  files = storage.files_under(os.path.join(run.checkpoints_dir(), "4", "state"))
  name = max((n for n in files if "/d/" in f"/{n}"), key=files.get)
  path = os.path.join(run.checkpoints_dir(), "4", "state", name)
  with open(path, "r+b") as f:
    data = bytearray(f.read())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0x5A for b in data[middle : middle + 16])
    f.seek(0)
    f.write(data)
  assert runs.restore_params(run)[1] == 2
  state, _, step = _restore(run)
  assert step == 2 and _equal(state, _state(2)) and _moved(run) == ["4"]


def test_every_checkpoint_damaged_resumes_from_best_and_says_so(tmp_path, capsys):
  run = _saved_run(tmp_path, steps=(2, 4, 6), best=(4,))
  for step in (2, 4, 6):
    _flip_recorded_sum(run, step)
  state, data_state, step = _restore(run)
  assert step == 4 and _equal(state, _state(4)) and data_state["next_batch"] == 4
  lines = [l for l in capsys.readouterr().out.splitlines() if "resuming from" in l]
  assert len(lines) == 1 and f"resuming from {run.best_dir}/4" in lines[0]
  # Newest first: 6 and 4 are moved aside; best/4 (complete) comes before checkpoints/2.
  assert _moved(run) == ["4", "6"]
  # eval's restore() of "latest" takes best/ too when checkpoints/ has nothing restorable.
  assert runs.restore_params(run)[1] == 4


def test_a_damaged_best_is_moved_aside_and_the_state_starts_over(tmp_path):
  run = _saved_run(tmp_path, steps=(2,), best=(2,))
  _flip_recorded_sum(run, 2)
  _flip_recorded_sum(run, 2, which="best")
  assert _restore(run) is None
  assert _moved(run) == ["2", "best-2"]


# ---- a failed save ends; nothing waits forever ---------------------------------------------


def _orbax_save_threads():
  from orbax.checkpoint._src.futures import future

  return [
      t for t in threading.enumerate() if isinstance(t, future._SignalingThread) and t.is_alive()
  ]


def test_a_save_that_cannot_create_its_directory_fails_and_leaves_no_waiting_thread(
    tmp_path, monkeypatch
):
  """As with an immutable checkpoints/ (chattr +i): the background directory creation fails,
  and orbax's threads waiting for it would keep the process alive for its barrier timeout."""
  from orbax.checkpoint._src.path import atomicity

  async def refused(*args, **kwargs):
    raise PermissionError(1, "Operation not permitted", "checkpoints/2.orbax-checkpoint-tmp")

  run = RunDir(str(tmp_path / "run"))
  checkpointer = Checkpointer(run)
  monkeypatch.setattr(atomicity, "_create_tmp_directory", refused)
  with pytest.raises(PermissionError, match="Operation not permitted"):
    try:
      checkpointer.save(2, _state(2), DATA)
      checkpointer.wait()
    finally:
      checkpointer.close()
  assert _orbax_save_threads() == []


def test_a_save_raising_at_once_still_closes_both_managers(tmp_path, monkeypatch):
  checkpointer = Checkpointer(RunDir(str(tmp_path / "run")))

  def refused(*args, **kwargs):
    raise PermissionError(1, "Operation not permitted")

  monkeypatch.setattr(checkpointer.latest, "save", refused)
  with pytest.raises(PermissionError):
    checkpointer.save(2, _state(2), DATA)
  checkpointer.close()
  assert _orbax_save_threads() == []


# ---- metrics.jsonl ---------------------------------------------------------------------------


def _metrics_bytes():
  good = [json.dumps({"step": s, "train/loss": 1.0 / s}) for s in (2, 4, 6)]
  return (
      good[0].encode()
      + b"\n"
      + b'{"step": 3, "x": "\xff\xfe"}\n'
      + good[1].encode()
      + b"\n"
      + b"[1, 2]\n"
      + good[2].encode()
      + b"\n"
      + b'{"step": 8, "train/lo'
  )


def test_damaged_metrics_lines_are_skipped_with_a_warning_naming_the_file(tmp_path, caplog):
  records, damaged = parse_metrics(_metrics_bytes(), "WD/metrics.jsonl")
  assert [r["step"] for r in records] == [2, 4, 6] and damaged == [2, 4, 6]
  run = RunDir(str(tmp_path / "run"))
  storage.write_atomic(run.metrics_file, _metrics_bytes())
  with caplog.at_level(logging.WARNING):
    assert [r["step"] for r in read_metrics(run)] == [2, 4, 6]
  assert sum(run.metrics_file in m and "damaged line" in m for m in caplog.messages) == 3
  assert storage.read_bytes(run.metrics_file) == _metrics_bytes()  # a reader changes nothing


def test_the_logger_repairs_a_damaged_metrics_file_and_goes_on(tmp_path):
  run = RunDir(str(tmp_path / "run"))
  storage.write_atomic(run.metrics_file, _metrics_bytes())
  logger = MetricsLogger(run)
  want = [json.dumps({"step": s, "train/loss": 1.0 / s}) for s in (2, 4, 6)]
  assert storage.read_text(run.metrics_file).splitlines() == want  # repaired before any write
  logger.write(10, {"train/loss": 0.5})
  logger.close()
  assert [r["step"] for r in read_metrics(run)] == [2, 4, 6, 10]


# ---- the lock, the run record ----------------------------------------------------------------


def test_deleting_the_lock_file_does_not_release_the_work_directory(tmp_path):
  workdir = str(tmp_path / "run")
  with RunDir(workdir).lock():
    os.remove(os.path.join(workdir, "train.lock.0"))
    with pytest.raises(TrainingError, match="is in use by another train.py"):
      with RunDir(workdir).lock():
        pass
  with RunDir(workdir).lock():  # released with the block
    pass


def _config():
  from codajax.train.config import base_config

  return base_config()


def test_a_run_record_without_state_settings_is_refused_as_damaged(tmp_path):
  config = _config()
  record = runs.new_record(config, num_classes=10, image_shape=(8, 8, 1), splits={})
  assert runs.record_conflicts(record, config, "WD") is None
  del record["state_settings"]
  problem = runs.record_conflicts(record, config, "WD")
  assert "WD/run.json has no record of the settings its checkpoints depend on" in problem
  assert "state_settings is missing" in problem and "\n" not in problem
  record["state_settings"] = "lr=1"
  assert "state_settings is not an object" in runs.record_conflicts(record, config, "WD")


# ---- one preparation of a dataset at a time ----------------------------------------------------


class _SlowBuilder:
  """A builder stand-in: preparing takes a while and writes the version folder."""

  prepared_by: list = []

  def __init__(self, version_dir):
    self.data_dir = version_dir

  def is_prepared(self):
    return os.path.isdir(self.data_dir)

  def download_and_prepare(self, **kwargs):
    import time

    os.makedirs(f"{self.data_dir}.incomplete")  # what TFDS renames into place
    time.sleep(0.3)
    os.rename(f"{self.data_dir}.incomplete", self.data_dir)  # fails for a second writer
    self.prepared_by.append(self)


def test_two_preparations_of_one_dataset_at_once_prepare_it_once(tmp_path):
  from codajax.data import catalog

  version_dir = str(tmp_path / "tfds" / "digits" / "1.0.0")
  builders = [_SlowBuilder(version_dir) for _ in range(2)]
  errors = []

  def prepare(builder):
    try:
      catalog._download_and_prepare(builder, manual_dir=None)
    except Exception as error:  # noqa: BLE001
      errors.append(error)

  threads = [threading.Thread(target=prepare, args=(b,)) for b in builders]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert errors == [] and len(_SlowBuilder.prepared_by) == 1 and os.path.isdir(version_dir)
