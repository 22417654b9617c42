"""Test-session settings: a persistent XLA compilation cache shared by every test.

Many tests compile the same small programs (train/eval steps of the toy models),
in this process and in the subprocesses they start (which inherit the
environment). A per-session cache directory turns those repeats into cache hits.
Under pytest-xdist (``-n 2``) every worker of one run shares that directory
(keyed by the run's ``PYTEST_XDIST_TESTRUNUID``).
"""

import os
import tempfile


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
