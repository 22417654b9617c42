"""Replays training faults and bad inputs; prints ``case | outcome | nothing lost?``.

    python benchmarks/fault_replay.py [--data_dir DIR] [--keep] [--only CASE,CASE...]

Each case runs ``train.py`` (or ``tests/train_worker.py``, or ``eval.py`` on such a run) as a
subprocess on a tiny config (digits, tiny-3L, 6 steps, checkpoints every 2) in a temporary
directory. Faults pass when the run resumes (or stops) with nothing lost: the final parameters
equal an uninterrupted run's and nothing good was moved to ``corrupt/``; ``eval.py`` faults pass
with one line ``eval.py: error: ...`` (exit 2) and no ``report.json`` (a read-only or full output
directory), exit 130 and one line on Ctrl-C, and exit 0 on a run that ``train.py`` is writing.
Bad inputs pass with exit status 2 and a one-line ``train.py: error: ...``. Takes a few minutes
on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
STEPS = 6


def _env(devices: int | None = None) -> dict[str, str]:
  env = dict(
      os.environ,
      PYTHONUNBUFFERED="1",
      PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
  )
  if devices:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def _cmd(workdir: str, data_dir: str, *extra: str) -> list[str]:
  return [
      sys.executable,
      "train.py",
      "--config",
      "configs/digits.py",
      f"--workdir={workdir}",
      f"--config.data_dir={data_dir}",
      "--config.model.name=tiny-3L",
      "--config.model.temperature=10",
      "--config.batch_size=8",
      f"--config.max_steps={STEPS}",
      "--config.checkpoint_every_steps=2",
      "--config.log_every_steps=2",
      "--config.eval_every_epochs=100",
      *extra,
  ]


def _run(args: list[str], devices: int | None = None, timeout: int = 300, **env: str):
  return subprocess.run(
      args,
      cwd=ROOT,
      env={**_env(devices), **env},
      capture_output=True,
      text=True,
      timeout=timeout,
  )


def _params(workdir: str):
  from codajax.train import restore_params

  return restore_params(workdir)


def _same_as(reference: str, workdir: str) -> bool:
  import jax

  (a, step_a), (b, step_b) = _params(reference), _params(workdir)
  return step_a == step_b and all(
      np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


def _listing(workdir: str) -> list[str]:
  path = os.path.join(workdir, "checkpoints")
  return sorted(os.listdir(path)) if os.path.isdir(path) else []


def _error_lines(result) -> list[str]:
  """stderr without the progress bar (tqdm's ``train:`` lines and its blank clearing lines)."""
  return [
      line
      for line in result.stderr.splitlines()
      if line.strip() and not line.lstrip().startswith("train:")
  ]


def _one_line_error(result) -> bool:
  lines = _error_lines(result)
  return result.returncode == 2 and len(lines) == 1 and lines[0].startswith("train.py: error: ")


def _one_line_eval_error(result) -> bool:
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  return result.returncode == 2 and len(lines) == 1 and lines[0].startswith("eval.py: error: ")


# eval.py on accuracy and completeness only (seconds): the faults are in reading and writing.
EVAL_ACCURACY_ONLY = "--config.skip=localisation,depths,pixel_removal,ground_truth,figures"


def _wait_for(path: str, proc, timeout: float = 240) -> None:
  deadline = time.time() + timeout
  while not os.path.exists(path) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)


class Replay:
  """The cases; each returns ``(outcome, nothing_lost)``."""

  def __init__(self, tmp: str, data_dir: str):
    self.tmp, self.data_dir = tmp, data_dir
    self.reference = os.path.join(tmp, "reference")
    result = _run(_cmd(self.reference, data_dir))
    if result.returncode:
      raise SystemExit(f"the reference run failed:\n{result.stderr[-3000:]}")

  def _dir(self, name: str) -> str:
    return os.path.join(self.tmp, name)

  def _partial(self, name: str, steps: int = 4) -> str:
    """A run stopped at ``steps`` (checkpoints at 2 and 4)."""
    workdir = self._dir(name)
    result = _run(_cmd(workdir, self.data_dir, f"--config.max_steps={steps}"))
    assert result.returncode == 0, result.stderr[-2000:]
    return workdir

  def _resume_ok(self, workdir: str, *extra: str) -> bool:
    result = _run(_cmd(workdir, self.data_dir, *extra))
    return result.returncode == 0 and _same_as(self.reference, workdir)

  # ---- faults
  def sigkill_mid_run(self):
    workdir = self._dir("sigkill")
    proc = subprocess.Popen(
        _cmd(workdir, self.data_dir, "--config.max_steps=400"),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for(os.path.join(workdir, "checkpoints", "4"), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = _listing(workdir)
    ok = self._resume_ok(workdir) and not os.path.exists(os.path.join(workdir, "corrupt"))
    return f"killed with checkpoints {saved}; resumed", ok

  def sigint(self):
    workdir = self._dir("sigint")
    proc = subprocess.Popen(
        _cmd(
            workdir,
            self.data_dir,
            "--config.max_steps=100000",
            "--config.checkpoint_every_steps=100000",
        ),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(os.path.join(workdir, "metrics.jsonl"), proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    _, step = _params(workdir)
    return f"exit {proc.returncode}, saved step {step}", proc.returncode == 130 and step >= 2

  def _worker(self, where: str, want_step: int):
    workdir = self._dir(f"fail_{where}")
    result = _run(
        [sys.executable, "tests/train_worker.py", "fail_at", where, workdir, self.data_dir]
    )
    tmp = [n for n in _listing(workdir) if "tmp" in n]
    _, step = _params(workdir)
    return (
        f"exit {result.returncode}, latest step {step}, tmp dirs {tmp}",
        result.returncode == 3 and step == want_step and not tmp,
    )

  def nan_after_async_save(self):
    return self._worker("summarise", 2)

  def failing_final_eval(self):
    return self._worker("eval", 4)

  def changed_virtual_batch(self):
    workdir = self._partial("vbs")
    before = _listing(workdir)
    result = _run(_cmd(workdir, self.data_dir, "--config.virtual_batch_size=16"))
    ok = (
        _one_line_error(result)
        and _listing(workdir) == before
        and not os.path.exists(os.path.join(workdir, "corrupt"))
        and self._resume_ok(workdir)
    )
    return "refused: " + result.stderr.strip()[:70], ok

  def missing_run_json_foreign_config(self):
    workdir = self._partial("norun")
    os.remove(os.path.join(workdir, "run.json"))
    before = _listing(workdir)
    result = _run(_cmd(workdir, self.data_dir, "--config.virtual_batch_size=16"))
    ok = (
        _one_line_error(result)
        and _listing(workdir) == before
        and not os.path.exists(os.path.join(workdir, "corrupt"))
        and self._resume_ok(workdir)
    )
    return "refused: " + result.stderr.strip()[:70], ok

  def garbage_run_json(self):
    workdir = self._partial("garbage_run")
    with open(os.path.join(workdir, "run.json"), "w") as f:
      f.write("\x00garbage")
    result = _run(_cmd(workdir, self.data_dir))
    return (
        "refused: " + result.stderr.strip()[:70],
        _one_line_error(result) and "run.json" in result.stderr and _listing(workdir) == ["2", "4"],
    )

  def damaged_newest_checkpoint(self):
    workdir = self._partial("damaged")
    for root, _, files in os.walk(os.path.join(workdir, "checkpoints", "4", "state")):
      for name in files:
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"garbage")
    moved = lambda: sorted(n.split("-")[0] for n in os.listdir(os.path.join(workdir, "corrupt")))
    ok = self._resume_ok(workdir) and moved() == ["4"]
    return "fell back to step 2, moved 4 to corrupt/", ok

  def empty_data_metadata(self):
    workdir = self._partial("empty_meta")
    with open(os.path.join(workdir, "checkpoints", "4", "data", "metadata"), "w") as f:
      f.write("{}")
    ok = self._resume_ok(workdir) and len(os.listdir(os.path.join(workdir, "corrupt"))) == 1
    return "fell back to step 2", ok

  def eval_on_damaged_newest(self):
    workdir = self._partial("eval_damaged")
    for root, _, files in os.walk(os.path.join(workdir, "checkpoints", "4", "state")):
      for name in files:
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"garbage")
    from codajax.train import restore

    run = restore(workdir)
    return f"restore() used step {run.step}", run.step == 2 and _listing(workdir) == ["2", "4"]

  def _second_run_refused(self, name: str, between=lambda workdir: None):
    """A second train.py on a work directory a first one is training (after ``between(workdir)``
    once the first has started): refused in one line, and the first ends cleanly on SIGTERM."""
    workdir = self._dir(name)
    first = subprocess.Popen(
        _cmd(workdir, self.data_dir, "--config.max_steps=100000"),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for(os.path.join(workdir, "metrics.jsonl"), first)
    between(workdir)
    second = _run(_cmd(workdir, self.data_dir))
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=120)
    ok = _one_line_error(second) and "in use" in second.stderr and first.returncode == 0
    return "second refused: " + second.stderr.strip()[:60], ok

  def two_processes_one_workdir(self):
    return self._second_run_refused("two")

  def _tmpfs(self, name: str, size: str) -> str | None:
    """A small tmpfs mounted at a fresh folder (needs root), or None."""
    mount = self._dir(name)
    os.makedirs(mount)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mount], capture_output=True
    )
    return mount if done.returncode == 0 else None

  def _remount(self, mount: str, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", mount], check=True, capture_output=True)

  def read_only_workdir(self):
    mount = self._tmpfs("readonly_fs", "20M")
    if mount is None:
      if os.geteuid() == 0:
        return "skipped: root without mount (permissions are not enforced)", None
      workdir = self._partial("readonly")
      os.chmod(workdir, 0o555)
      try:
        result = _run(_cmd(workdir, self.data_dir))
      finally:
        os.chmod(workdir, 0o755)
      return "refused: " + result.stderr.strip()[:60], _one_line_error(result)
    try:
      workdir = os.path.join(mount, "run")
      assert _run(_cmd(workdir, self.data_dir, "--config.max_steps=4")).returncode == 0
      self._remount(mount, "ro")
      result = _run(_cmd(workdir, self.data_dir))
      self._remount(mount, "rw")
      ok = _one_line_error(result) and self._resume_ok(workdir)
      return "refused, then resumed: " + result.stderr.strip()[:50], ok
    finally:
      subprocess.run(["umount", mount], capture_output=True)

  def disk_full(self):
    mount = self._tmpfs("full_fs", "400K")  # two tiny-3L checkpoints, not three
    if mount is None:
      return "skipped: cannot mount a small tmpfs (needs root)", None
    try:
      workdir = os.path.join(mount, "run")
      result = _run(_cmd(workdir, self.data_dir))
      lines = _error_lines(result)
      stopped = (
          result.returncode == 2
          and len(lines) == 1
          and lines[0].startswith("train.py: error: disk full")
      )
      self._remount(mount, "size=20M")
      ok = stopped and self._resume_ok(workdir)
      return f"exit {result.returncode}: {lines[-1][:60] if lines else ''}; resumed", ok
    finally:
      subprocess.run(["umount", mount], capture_output=True)

  # ---- eval.py faults
  def _eval_cmd(self, workdir: str, out: str, skip: str = EVAL_ACCURACY_ONLY) -> list[str]:
    return [
        sys.executable,
        "eval.py",
        f"--workdir={workdir}",
        f"--config.out={out}",
        f"--config.data_dir={self.data_dir}",
        "--config.progress=False",
        skip,
    ]

  def eval_ctrl_c(self):
    out = self._dir("eval_ctrl_c")
    proc = subprocess.Popen(
        self._eval_cmd(self.reference, out, "--config.skip=depths,ground_truth,figures"),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal
    )
    for line in proc.stdout:
      if line.startswith("codajax eval:"):  # the evaluation has started
        break
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    lines = [line for line in rest.splitlines() if line.strip()]
    ok = (
        proc.returncode == 130
        and lines[-1:]
        == ["eval.py: interrupted; report.json was not written (it is written last)."]
        and "Traceback" not in rest
        and not os.path.exists(os.path.join(out, "report.json"))
    )
    return f"exit {proc.returncode}: {lines[-1][:70] if lines else ''}", ok

  def eval_read_only_output(self):
    mount = self._tmpfs("eval_ro_fs", "1M")
    if mount is None:
      return "skipped: cannot mount a tmpfs (needs root)", None
    try:
      self._remount(mount, "ro")
      result = _run(self._eval_cmd(self.reference, os.path.join(mount, "eval")))
      return "refused: " + result.stderr.strip()[:60], _one_line_eval_error(result)
    finally:
      subprocess.run(["umount", mount], capture_output=True)

  def eval_full_output(self):
    mount = self._tmpfs("eval_full_fs", "64K")
    if mount is None:
      return "skipped: cannot mount a tmpfs (needs root)", None
    try:
      with open(os.path.join(mount, "fill"), "wb") as f:
        f.write(bytes(60 * 1024))
      out = os.path.join(mount, "eval")
      result = _run(self._eval_cmd(self.reference, out))
      ok = _one_line_eval_error(result) and not os.path.exists(os.path.join(out, "report.json"))
      return "refused: " + result.stderr.strip()[:60], ok
    finally:
      subprocess.run(["umount", mount], capture_output=True)

  def eval_while_training(self):
    """eval.py three times on a run that train.py writes (a checkpoint every 2 steps, 2 kept):
    each evaluates a complete checkpoint, says which, and exits 0."""
    workdir = self._dir("eval_training")
    train = subprocess.Popen(
        _cmd(workdir, self.data_dir, "--config.max_steps=100000"),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
      _wait_for(os.path.join(workdir, "checkpoints", "4"), train)
      results = [_run(self._eval_cmd(workdir, self._dir(f"eval_training_{i}"))) for i in range(3)]
    finally:
      train.send_signal(signal.SIGTERM)
      train.wait(timeout=120)
    steps = [
        json.load(open(os.path.join(self._dir(f"eval_training_{i}"), "report.json")))["checkpoint"]
        for i, r in enumerate(results)
        if r.returncode == 0
    ]
    said = sum("is being written" in r.stdout or "was removed while" in r.stdout for r in results)
    ok = all(r.returncode == 0 and "Traceback" not in r.stderr for r in results)
    return f"steps {[s['step'] for s in steps]}; {said} said a newer save was in flight", ok

  def _final_ok(self, workdir: str) -> bool:
    """The run finished: same parameters as the reference, a best/ and the test eval logged."""
    from codajax.train.metrics_log import read_metrics

    records = read_metrics(workdir)
    return (
        _same_as(self.reference, workdir)
        and _params(workdir)[1] == STEPS
        and any("test/accuracy_best" in r for r in records)
    )

  def interrupted_best_save(self):
    """SIGKILL while best/6 was being saved at the end: its folder is left temporary."""
    workdir = self._partial("best_tmp", steps=STEPS)
    best = os.path.join(workdir, "best")
    os.rename(os.path.join(best, str(STEPS)), os.path.join(best, f"{STEPS}.orbax-checkpoint-tmp"))
    self._drop_test_metrics(workdir)
    result = _run(_cmd(workdir, self.data_dir))
    ok = result.returncode == 0 and os.listdir(best) == [str(STEPS)] and self._final_ok(workdir)
    return f"exit {result.returncode}, best/ {os.listdir(best)}", ok

  def killed_after_final_eval_line(self):
    """SIGKILL after the final validation line, before best/ got the state."""
    workdir = self._partial("best_missing", steps=STEPS)
    shutil.rmtree(os.path.join(workdir, "best", str(STEPS)))
    self._drop_test_metrics(workdir)
    result = _run(_cmd(workdir, self.data_dir))
    best = os.listdir(os.path.join(workdir, "best"))
    return f"exit {result.returncode}, best/ {best}", result.returncode == 0 and self._final_ok(
        workdir
    )

  def _drop_test_metrics(self, workdir: str) -> None:
    path = os.path.join(workdir, "metrics.jsonl")
    with open(path) as f:
      lines = [line for line in f if "test/" not in line]
    with open(path, "w") as f:
      f.writelines(lines)

  def flipped_bits_in_checkpoint(self):
    """16 bytes XOR-ed in the largest data file of checkpoint 4 (silent corruption)."""
    workdir = self._partial("bitflip")
    data = os.path.join(workdir, "checkpoints", "4", "state", "ocdbt.process_0", "d")
    name = max(os.listdir(data), key=lambda n: os.path.getsize(os.path.join(data, n)))
    with open(os.path.join(data, name), "r+b") as f:
      content = bytearray(f.read())
      middle = len(content) // 2
      content[middle : middle + 16] = bytes(b ^ 0xFF for b in content[middle : middle + 16])
      f.seek(0)
      f.write(content)
    from codajax.train import restore

    read_only = restore(workdir).step
    moved = lambda: sorted(n.split("-")[0] for n in os.listdir(os.path.join(workdir, "corrupt")))
    ok = read_only == 2 and self._resume_ok(workdir) and moved() == ["4"]
    return f"restore() used step {read_only}; resumed from 2, moved 4 to corrupt/", ok

  def every_checkpoint_damaged_best_ok(self):
    workdir = self._partial("only_best")
    for step in ("2", "4"):
      for root, _, files in os.walk(os.path.join(workdir, "checkpoints", step, "state")):
        for name in files:
          with open(os.path.join(root, name), "wb") as f:
            f.write(b"garbage")
    result = _run(_cmd(workdir, self.data_dir))
    said = [line for line in result.stdout.splitlines() if "resuming from" in line]
    ok = (
        result.returncode == 0
        and len(said) == 1
        and f"best{os.sep}4" in said[0]
        and _same_as(self.reference, workdir)
    )
    return (said[0][:90] if said else f"exit {result.returncode}, not said"), ok

  def damaged_metrics_lines(self):
    """metrics.jsonl with bytes that are not UTF-8, and a last line cut midway."""
    workdir = self._partial("bad_metrics")
    path = os.path.join(workdir, "metrics.jsonl")
    with open(path, "ab") as f:
      f.write(b'{"step": 4, "note": "\xff\xfe"}\n{"step": 4, "train/lo')
    result = _run(_cmd(workdir, self.data_dir))
    from codajax.train.metrics_log import read_metrics

    warned = "metrics.jsonl" in result.stderr
    with open(path, "rb") as f:
      repaired = b"\xff" not in f.read()
    ok = (
        result.returncode == 0
        and warned
        and repaired
        and len(read_metrics(workdir)) > 0
        and _same_as(self.reference, workdir)
    )
    return f"exit {result.returncode}, warned {warned}, repaired {repaired}", ok

  def immutable_checkpoints(self):
    """checkpoints/ made immutable (chattr +i): the error is printed and the process exits."""
    workdir = self._partial("immutable")
    folder = os.path.join(workdir, "checkpoints")
    if subprocess.run(["chattr", "+i", folder], capture_output=True).returncode:
      return "skipped: chattr +i not available here", None
    try:
      start = time.time()
      try:
        result = _run(_cmd(workdir, self.data_dir), timeout=240)
      except subprocess.TimeoutExpired:
        return "still running after 240 s", False
      took = time.time() - start
    finally:
      subprocess.run(["chattr", "-i", folder], capture_output=True)
    ok = _one_line_error(result) and self._resume_ok(workdir)
    return f"exit {result.returncode} after {took:.0f} s; resumed", ok

  def lock_file_deleted(self):
    """rm WD/train.lock.0 during a run: a second train.py is still refused."""
    return self._second_run_refused(
        "lock_deleted", lambda workdir: os.remove(os.path.join(workdir, "train.lock.0"))
    )

  def ascii_console(self):
    """PYTHONIOENCODING=ascii: the progress lines hold non-ASCII characters."""
    workdir = self._dir("ascii")
    result = _run(_cmd(workdir, self.data_dir), PYTHONIOENCODING="ascii")
    ok = result.returncode == 0 and _same_as(self.reference, workdir)
    return f"exit {result.returncode}", ok

  def state_settings_removed(self):
    """run.json without state_settings, resumed with another learning rate: refused."""
    workdir = self._partial("no_settings")
    path = os.path.join(workdir, "run.json")
    import json

    with open(path) as f:
      record = json.load(f)
    del record["state_settings"]
    with open(path, "w") as f:
      json.dump(record, f)
    before = _listing(workdir)
    result = _run(_cmd(workdir, self.data_dir, "--config.optimizer.learning_rate=0.5"))
    ok = _one_line_error(result) and "state_settings" in result.stderr
    return "refused: " + result.stderr.strip()[:70], ok and _listing(workdir) == before

  def lower_max_steps(self):
    workdir = self._partial("lower_max", steps=STEPS)
    before = _listing(workdir)
    result = _run(_cmd(workdir, self.data_dir, "--config.max_steps=4"))
    ok = _one_line_error(result) and "past this config's last step 4" in result.stderr
    return "refused: " + result.stderr.strip()[:70], ok and _listing(workdir) == before

  def concurrent_prepare(self):
    """Two processes preparing the same empty data dir at once."""
    data_dir = self._dir("fresh_tfds")
    command = [sys.executable, "-m", "codajax.data.prepare", "digits", "--data_dir", data_dir]
    procs = [
        subprocess.Popen(
            command,
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [proc.communicate(timeout=300) for proc in procs]
    codes = [proc.returncode for proc in procs]
    workdir = self._dir("fresh_run")
    ok = codes == [0, 0] and _run(_cmd(workdir, data_dir)).returncode == 0
    return f"exit codes {codes}" + ("" if ok else f": {outs[0][1][-60:]}"), ok

  # ---- bad inputs
  def _bad(self, *extra: str, devices: int | None = None):
    result = _run(_cmd(self._dir("bad"), self.data_dir, *extra), devices=devices)
    return result.stderr.strip()[:80], _one_line_error(result)

  def misspelled_key(self):
    return self._bad("--config.not_a_key=1")

  def model_kwargs_foo(self):
    return self._bad("--config.model.kwargs.foo=1")

  def batch_size_zero(self):
    return self._bad("--config.batch_size=0")

  def batch_not_divisible_by_devices(self):
    return self._bad("--config.batch_size=9", devices=2)

  def unknown_dataset(self):
    return self._bad("--config.dataset=nope")

  def infinite_temperature(self):
    return self._bad("--config.model.temperature=inf")


FAULTS = (
    "sigkill_mid_run",
    "sigint",
    "nan_after_async_save",
    "failing_final_eval",
    "changed_virtual_batch",
    "missing_run_json_foreign_config",
    "garbage_run_json",
    "damaged_newest_checkpoint",
    "empty_data_metadata",
    "eval_on_damaged_newest",
    "two_processes_one_workdir",
    "read_only_workdir",
    "disk_full",
    "interrupted_best_save",
    "killed_after_final_eval_line",
    "flipped_bits_in_checkpoint",
    "every_checkpoint_damaged_best_ok",
    "damaged_metrics_lines",
    "immutable_checkpoints",
    "lock_file_deleted",
    "ascii_console",
    "state_settings_removed",
    "lower_max_steps",
    "concurrent_prepare",
)
EVAL_FAULTS = (
    "eval_ctrl_c",
    "eval_read_only_output",
    "eval_full_output",
    "eval_while_training",
)
BAD_INPUTS = (
    "misspelled_key",
    "model_kwargs_foo",
    "batch_size_zero",
    "batch_not_divisible_by_devices",
    "unknown_dataset",
    "infinite_temperature",
)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: a temporary one)")
  parser.add_argument("--keep", action="store_true", help="keep the temporary work directories")
  parser.add_argument(
      "--only", default="", help="comma-separated case names to run (default: every case)"
  )
  args = parser.parse_args()
  only = set(filter(None, args.only.split(",")))
  cases = FAULTS + EVAL_FAULTS + BAD_INPUTS
  unknown = only - set(cases)
  if unknown:
    parser.error(f"unknown cases {sorted(unknown)}; the cases are {', '.join(cases)}")
  tmp = tempfile.mkdtemp(prefix="fault_replay_")
  data_dir = args.data_dir or os.path.join(tmp, "tfds")
  try:
    replay = Replay(tmp, data_dir)
    rows, totals = [], {"faults": [0, 0, 0], "bad inputs": [0, 0, 0]}
    for kind, names in (("faults", FAULTS + EVAL_FAULTS), ("bad inputs", BAD_INPUTS)):
      for name in names:
        if only and name not in only:
          continue
        start = time.time()
        try:
          outcome, ok = getattr(replay, name)()
        except Exception as error:  # noqa: BLE001  (a case that crashes counts as lost)
          outcome, ok = f"{type(error).__name__}: {error}"[:80], False
        verdict = "skipped" if ok is None else ("yes" if ok else "NO")
        totals[kind][0 if ok else (2 if ok is None else 1)] += 1
        rows.append((name, outcome.replace("\n", " "), verdict, time.time() - start))
        print(
            f"{name:34s} | {outcome.replace(chr(10), ' ')[:90]:90s} | {verdict} "
            f"({rows[-1][3]:.0f} s)",
            flush=True,
        )
    print()
    for kind, (ok, bad, skipped) in totals.items():
      label = "nothing lost" if kind == "faults" else "clear one-line error"
      print(f"{kind}: {ok}/{ok + bad} with {label} ({skipped} skipped)")
  finally:
    if not args.keep:
      shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
