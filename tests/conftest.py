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
# Programs that compile in under 0.1 s (eager ops, mostly) recompile faster than the cache
# writes and reads them back.
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# The suite is compile-bound: about half of a file's time is XLA compiling (many small programs,
# each compiled once). The older loop emitters for fusions compile faster and leave the tests'
# programs and their float32 round-off as the tests expect (LLVM -O1 would halve the compile
# time again but moves round-off enough to break comparisons calibrated at the default -O3);
# ``benchmarks/xla_cpu_flags.py --settings baseline,test_suite`` measures the setting. The
# subprocesses the tests start inherit it; ``two_processes.fake_devices`` adds a device count to
# it, never replaces it.
TEST_XLA_FLAGS = "--xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = " ".join(filter(None, [TEST_XLA_FLAGS, os.environ.get("XLA_FLAGS")]))

# The slowest files (measured on the 2-core CPU), longest first. The README runs the suite
# with ``-n 2 --dist loadscope``: each file goes whole to one worker, in collection order here
# (``pytest_configure`` turns off xdist's reordering by test count, which would send these
# few-test files last), so the long files start first and the two workers finish together.
SLOWEST_FIRST = (
    "test_eval.py",  # the digits training (shared), the 2-device and the two-process eval.py
    "test_train.py",
    "test_evaluators.py",
    "test_explain.py",
    "test_bcos_models.py",
    "test_bcos_vit.py",
    "test_bcosify.py",
    "test_nnx.py",
    "test_regularizer.py",
    "test_eval_methods.py",
    "test_notebook.py",  # waits for the shared digits training: after its first users
)


def pytest_configure(config):
  if hasattr(config.option, "loadscopereorder"):  # pytest-xdist >= 3.8
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
  """The files of ``SLOWEST_FIRST`` first, in that order; the others after them, as collected."""
  rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort


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
