"""Test-session settings: a persistent XLA compilation cache shared by every test.

Many tests compile the same small programs (train/eval steps of the toy models),
in this process and in the subprocesses they start (which inherit the
environment). A per-session cache directory turns those repeats into cache hits.
Under pytest-xdist (``-n 2``) every worker of one run shares that directory
(keyed by the run's ``PYTEST_XDIST_TESTRUNUID``).
"""

import fcntl
import os
import tempfile

import pytest


def _cache_dir() -> str:
  run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
  if run_id is None:
    return tempfile.mkdtemp(prefix="codajax-jax-cache-")
  path = os.path.join(tempfile.gettempdir(), f"codajax-jax-cache-{run_id}")
  os.makedirs(path, exist_ok=True)
  return path


_CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _cache_dir())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


@pytest.fixture(scope="session")
def quick_digits_run(tmp_path_factory) -> tuple[str, str]:
  """``configs/digits.py:quick`` (digits-5L, 80 steps) trained once per test run:
  ``(workdir, data_dir)``.

  Under pytest-xdist every worker of one run shares it: the first to ask trains it under a file
  lock in the run's temporary folder, the others wait for it and reuse it (the evaluation tests and
  the quick-start notebook).
  """
  shared = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    shared = shared.parent  # .../pytest-N, one per run; the workers' own folders are below it
  workdir, data_dir, done = (
      shared / "quick_digits_run",
      shared / "quick_digits_tfds",
      shared / "quick_digits_run.done",
  )
  with open(shared / "quick_digits_run.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the worker dies
    if not done.exists():
      import importlib.util  # configs/ is not a package; jax loads only once a test needs it

      from codajax.train import train_and_evaluate

      spec = importlib.util.spec_from_file_location(
          "digits_config", os.path.join(os.path.dirname(__file__), "..", "configs", "digits.py")
      )
      digits = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(digits)
      config = digits.get_config("quick")
      config.data_dir = str(data_dir)
      train_and_evaluate(config, str(workdir))
      done.touch()
  return str(workdir), str(data_dir)
