"""Trains a CoDA-Net from a config: ``python train.py [--config configs/X.py[:arg]] [--workdir DIR]``.

With no argument it trains the embedded default (digits) on the local devices.
Re-running the same command in the same work directory resumes. Multi-host
(TPU pods, clusters): add ``--multihost`` on every host (see ``docs/training.md``).

Errors (bad config or flags, unprepared or corrupt data, a work directory in use, a full
disk, ...) print one line ``train.py: error: ...`` and exit with status 2; the traceback
is printed too with ``--verbosity=1`` or ``CODAJAX_TRACEBACK=1``.
"""

import os
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


def error_message(error: BaseException) -> str:
  """The one-line (or few-line) explanation of ``error`` for the user."""
  full = cli.disk_full(error)
  if full is not None:
    where = getattr(full, "filename", None) or "the work directory"
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
  if cli.wants_traceback(argv):
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


def fail(error: BaseException, argv) -> None:
  """Prints ``train.py: error: ...`` (and the traceback if asked) and exits with status 2."""
  if cli.wants_traceback(argv):
    traceback.print_exception(error)
  cli.fail("train.py", error_message(error), argv)


DEFAULT_CONFIG = os.path.join(_HERE, "configs", "digits.py")
CONFIG_HELP = (
    "Config fields: every key of codajax/train/config.py:base_config (with its default and "
    "a comment), set by the config file and overridden with --config.KEY=VALUE; "
    "--print_config prints the resolved config and exits."
)
FLAG_NAMES = (
    "--config FILE[:ARG]",
    "--config.KEY=VALUE",
    "--workdir DIR",
    "--print_config",
    "--multihost",
)


def parse_flags(argv):
  """absl's flag parsing, with a bad flag, config file, config argument, config override or a
  positional argument as one ``error:`` line; ``--help`` prints the usage and where the config
  fields are documented, and exits 0."""
  return cli.parse_flags("train.py", argv, f"{__doc__}\n{CONFIG_HELP}", DEFAULT_CONFIG, FLAG_NAMES)


# Defined last: ml_collections already applies the command line's overrides here.
try:
  config_flags.DEFINE_config_file(
      "config",
      DEFAULT_CONFIG,
      "Training config file (configs/*.py), optionally with ':arg'.",
      lock_config=True,
  )
except Exception as _error:  # noqa: BLE001
  cli.fail("train.py", cli.flag_error(_error, sys.argv, DEFAULT_CONFIG), sys.argv)


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
  cli.tolerant_console()
  app.run(main, flags_parser=parse_flags)
