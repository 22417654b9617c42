"""Trains a CoDA-Net from a config: ``python train.py [--config configs/X.py[:arg]] [--workdir DIR]``.

With no argument it trains the embedded default (digits) on the local devices.
Re-running the same command in the same work directory resumes. Multi-host
(TPU pods, clusters): add ``--multihost`` on every host (see ``docs/training.md``).

Errors (bad config or flags, unprepared or corrupt data, a work directory in use, a full
disk, ...) print one line ``train.py: error: ...`` and exit with status 2; the traceback
is printed too with ``--verbosity=1`` or ``CODAJAX_TRACEBACK=1``.
"""

import errno
import os
import re
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from codajax import cli

_HERE = os.path.dirname(os.path.abspath(__file__))

flags.DEFINE_string(
    "workdir",
    None,
    "Work directory: a local path or gs://BUCKET/PATH (default: runs/<config.name>).",
)
cli.define_multihost_flags()
flags.DEFINE_bool("print_config", False, "Print the resolved config (file + overrides) and exit.")
FLAGS = flags.FLAGS


TRACEBACK_ENV = "CODAJAX_TRACEBACK"
_VERBOSITY_ARG = re.compile(r"^--?(?:verbosity|v)=(-?\d+)$")


def _wants_traceback(argv) -> bool:
  """``CODAJAX_TRACEBACK=1`` in the environment, or ``--verbosity=N`` (N >= 1) on the command line."""
  if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
    return True
  argv = list(argv)
  for i, arg in enumerate(argv):
    if arg in ("--verbosity", "-verbosity", "-v", "--v") and i + 1 < len(argv):
      arg = f"{arg}={argv[i + 1]}"
    match = _VERBOSITY_ARG.match(arg)
    if match and int(match.group(1)) >= 1:
      return True
  return False


def _chain(error: BaseException):
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def error_message(error: BaseException) -> str:
  """The one-line (or few-line) explanation of ``error`` for the user."""
  for link in _chain(error):
    if (
        isinstance(link, OSError) and link.errno == errno.ENOSPC
    ) or "No space left on device" in str(link):
      where = getattr(link, "filename", None) or "the work directory"
      if where == "the work directory" and FLAGS.is_parsed():
        from codajax import storage

        where = os.fspath(storage.path(FLAGS.workdir or "runs"))
      return (
          f"disk full while writing {where}. Free some space and re-run the same command: "
          "it resumes from the last complete checkpoint."
      )
  from codajax.data import errors as data_errors
  from codajax.train import TrainingError

  known = (
      TrainingError,
      data_errors.UnknownDatasetError,
      data_errors.DatasetNotPreparedError,
      data_errors.ManualDataNotFoundError,
      FileNotFoundError,
      PermissionError,
      ValueError,
  )
  text = str(error).strip() or type(error).__name__
  if isinstance(error, known) or isinstance(error, getattr(data_errors, "DatasetCorruptError", ())):
    return text
  return f"{type(error).__name__}: {text}"


class _OneLineRecords:
  """A logging filter: records lose their tracebacks, and orbax's errors from its
  background save threads are dropped (the main thread reports them as one line)."""

  def filter(self, record) -> bool:
    if record.levelno >= 40 and "orbax" in (record.pathname or ""):
      return False
    record.exc_info, record.exc_text, record.stack_info = None, None, None
    return True


def quiet_background_errors(argv) -> None:
  """Without ``--verbosity=1``/``CODAJAX_TRACEBACK``: no tracebacks from background threads,
  ``atexit`` callbacks or log records (a failed save, a full disk when tensorboard flushes);
  the error reaches the main thread and is printed there as one line."""
  if _wants_traceback(argv):
    return
  import logging as std_logging
  import threading

  import warnings

  threading.excepthook = lambda args: None
  sys.unraisablehook = lambda unraisable: None
  # A failed save leaves orbax coroutines that were never run: not the user's concern.
  warnings.filterwarnings(
      "ignore", message="coroutine .* was never awaited", category=RuntimeWarning
  )
  quiet = _OneLineRecords()
  for handler in [*std_logging.getLogger().handlers, logging.get_absl_handler()]:
    handler.addFilter(quiet)


def tolerant_console() -> None:
  """Console output never fails for its encoding (e.g. ``PYTHONIOENCODING=ascii``): characters
  the stream cannot encode are written as backslash escapes."""
  for stream in (sys.stdout, sys.stderr):
    if hasattr(stream, "reconfigure"):
      stream.reconfigure(errors="backslashreplace")


EXIT_GRACE_S = 30.0


def exit_bounded(status: int, grace_s: float = EXIT_GRACE_S) -> None:
  """Exits with ``status`` once the other non-daemon threads end, waiting ``grace_s`` seconds at
  most: a background thread stuck on a failed save (its waits already done or failed) must not
  keep the process alive."""
  import threading
  import time

  deadline = time.monotonic() + grace_s
  for thread in threading.enumerate():
    if thread is not threading.current_thread() and not thread.daemon:
      thread.join(max(0.0, deadline - time.monotonic()))
  if any(
      t.is_alive() and not t.daemon
      for t in threading.enumerate()
      if t is not threading.current_thread()
  ):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
  sys.exit(status)


def fail(error: BaseException, argv) -> None:
  """Prints ``train.py: error: ...`` (and the traceback if asked) and exits with status 2."""
  if _wants_traceback(argv):
    traceback.print_exception(error)
  print(f"train.py: error: {error_message(error)}", file=sys.stderr, flush=True)
  exit_bounded(2)


def _flag_error(error: Exception, argv) -> Exception:
  """A config override naming an unknown key -> a ``ValueError`` that says which and why."""
  if not isinstance(error, (AttributeError, KeyError)):
    return error
  key = str(error).strip().strip('"').strip("'")
  overrides = [
      a.split("=")[0]
      for a in argv[1:]
      if a.startswith("--config.") and a.split("=")[0].endswith("." + key)
  ]
  where = overrides[0][len("--") :] if overrides else key
  hint = (
      "model.kwargs takes no new keys on the command line; add them to the config "
      "file's config.model.kwargs"
      if where.startswith("config.model.kwargs.")
      else "check the spelling; see the config file for the keys"
  )
  return ValueError(f"unknown config key {where} ({hint}).")


HELP_ARGS = ("-h", "-?", "--help", "--helpshort", "--helpfull")
CONFIG_HELP = (
    "Config fields: every key of codajax/train/config.py:base_config (with its default and "
    "a comment), set by the config file and overridden with --config.KEY=VALUE; "
    "--print_config prints the resolved config and exits."
)


def parse_flags(argv):
  """absl's flag parsing, with a bad flag or config override as one ``error:`` line;
  ``--help`` prints the usage and where the config fields are documented, and exits 0."""
  if any(arg in HELP_ARGS for arg in argv[1:]):
    print(f"{__doc__}\n{CONFIG_HELP}\n\nflags:\n{FLAGS.main_module_help()}")
    sys.exit(0)
  try:
    return FLAGS(argv)
  except Exception as error:  # noqa: BLE001  (flags and ml_collections raise many types)
    fail(_flag_error(error, argv), argv)


# Defined last: ml_collections already applies the command line's overrides here.
try:
  config_flags.DEFINE_config_file(
      "config",
      os.path.join(_HERE, "configs", "digits.py"),
      "Training config file (configs/*.py), optionally with ':arg'.",
      lock_config=True,
  )
except Exception as _error:  # noqa: BLE001
  fail(_flag_error(_error, sys.argv), sys.argv)


def main(argv):
  if FLAGS.print_config:
    print(FLAGS.config)
    return
  try:
    _main()
  except KeyboardInterrupt:
    print(
        "train.py: interrupted (saves in flight were written); re-run the same command to "
        "resume.",
        file=sys.stderr,
    )
    sys.exit(130)
  except Exception as error:  # noqa: BLE001  (every error becomes one line)
    fail(error, sys.argv)


def _main():
  quiet_background_errors(sys.argv)
  if not FLAGS["verbosity"].present:  # orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  cli.join_multihost_run(FLAGS)

  from codajax.evaluators import TrainingEvaluators
  from codajax.runs import RunDir
  from codajax.train import train_and_evaluate

  config = FLAGS.config
  workdir = RunDir(FLAGS.workdir or os.path.join("runs", config.name))
  metrics = train_and_evaluate(config, workdir, hooks=[TrainingEvaluators])
  if metrics.get("interrupted") == "SIGINT":
    print(
        f"train.py: interrupted at step {metrics['step']} (saved); re-run the same command to "
        "resume.",
        file=sys.stderr,
    )
    sys.exit(130)
  if "eval/accuracy" in metrics:
    import jax

    if jax.process_index() == 0:
      tests = (
          f"; test accuracy: final model {metrics['test/accuracy_final']:.4f}, best-on-validation "
          f"model (step {metrics['test/best_step']}) {metrics['test/accuracy_best']:.4f}"
          if "test/accuracy_final" in metrics
          else ""
      )
      print(
          f"done: step {metrics['step']}, validation accuracy {metrics['eval/accuracy']:.4f}{tests}; "
          f"work directory {workdir}"
      )


if __name__ == "__main__":
  tolerant_console()
  app.run(main, flags_parser=parse_flags)
