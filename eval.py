"""Evaluates a trained run: ``python eval.py --workdir DIR [--config configs/eval/NAME.py] [...]``.

Loads the latest (or best) checkpoint that ``train.py`` wrote to DIR and runs the evaluators of
an eval config (default ``configs/eval/quick.py``: minutes on a CPU; ``configs/eval/paper.py``:
the papers' protocol with a duration estimate first): accuracy, localisation per method and per
depth, pixel removal, ground truth (datasets with object masks), completeness, figures. Writes
``report.json`` (last, atomically), ``scores.npz`` and PNG figures to ``DIR/eval`` (see
docs/evaluation.md). On a run that ``train.py`` is still writing it evaluates the newest complete
checkpoint and says which.

Config values are overridden with ``--config.x=y`` (e.g. ``--config.methods=Ours,Grad``,
``--config.evals.localisation.n_grids=50``, ``--config.skip=depths,figures``,
``--config.checkpoint=best``, ``--config.out=DIR``); ``--method_setting METHOD.key=value`` sets a
post-hoc method's preset. Multi-host: add ``--multihost`` on every host, as for train.py.

Errors (a bad flag, config file, config key or method setting, a directory without a run, an
output or data directory that cannot be used, a full disk, ...) print one line
``eval.py: error: ...`` and exit with status 2, before any work where they can be known then;
Ctrl-C exits with status 130. ``--verbosity=1`` or ``CODAJAX_TRACEBACK=1`` adds the traceback.
"""

import os
import signal
import sys


def _interrupted_early(signum, frame):
  """Ctrl-C while the libraries load or the flags are parsed: nothing was written yet."""
  del signum, frame
  print("eval.py: interrupted before the evaluation started; nothing was written.", file=sys.stderr)
  sys.stderr.flush()
  os._exit(130)  # noqa: SLF001  (imports may swallow KeyboardInterrupt)


_CATCHES_SIGINT = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
if _CATCHES_SIGINT:  # installed before the heavy imports below
  signal.signal(signal.SIGINT, _interrupted_early)

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from codajax import cli  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(_HERE, "configs", "eval", "quick.py")

try:
  config_flags.DEFINE_config_file(
      "config",
      DEFAULT_CONFIG,
      "Eval config file (configs/eval/*.py), optionally with ':arg'.",
      lock_config=True,
  )
except Exception as _error:  # noqa: BLE001  (the default config is read here with the overrides)
  cli.fail("eval.py", cli.flag_error(_error, sys.argv, DEFAULT_CONFIG), sys.argv)
flags.DEFINE_string("workdir", None, "Work directory written by train.py (required).")
flags.DEFINE_bool(
    "print_config",
    False,
    "Print the resolved eval config (file + overrides) and exit.",
)
flags.DEFINE_multi_string(
    "method_setting",
    [],
    "METHOD.key=value: override a post-hoc preset, e.g. RISE.n_masks=1000 or IntGrad.n_steps=50 "
    "(repeatable; checked at once; the config's method_settings take no new keys from "
    "--config.*).",
)
cli.define_multihost_flags()
FLAGS = flags.FLAGS


def add_method_settings(config, settings):
  """``config.method_settings`` updated with ``settings`` ({method: {key: value}}, parsed)."""
  for method, values in settings.items():
    if method not in config.method_settings:
      config.method_settings[method] = {}
    for key, value in values.items():
      config.method_settings[method][key] = value
  return config


def error_message(error: BaseException, out: str | None) -> str:
  """The one-line explanation of ``error``; ``out``: the output directory, if known."""
  full = cli.disk_full(error)
  if full is not None:
    where = getattr(full, "filename", None) or out or "the output directory"
    return (
        f"disk full while writing {where}; report.json was not written. Free some space (or "
        "give another --config.out) and run again."
    )
  from codajax.data import errors as data_errors
  from codajax.evaluators import EvaluationError
  from codajax.train import TrainingError

  text = " ".join(str(error).split()) or type(error).__name__
  if isinstance(error, (EvaluationError, TrainingError, data_errors.UnknownDatasetError)):
    return text
  if isinstance(error, (data_errors.DatasetNotPreparedError, data_errors.DatasetCorruptError)):
    return text
  if isinstance(error, OSError) and error.filename:
    return f"cannot use {error.filename}: {error.strerror or text}"
  return f"{type(error).__name__}: {text}"


def main(argv):
  del argv
  if not FLAGS["verbosity"].present:  # orbax logs every restore at INFO
    logging.set_verbosity(logging.WARNING)
  out = FLAGS.config.get("out") or None
  if _CATCHES_SIGINT:  # from here Ctrl-C is a KeyboardInterrupt, handled below
    signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    _main()
  except KeyboardInterrupt:
    print(
        "eval.py: interrupted; report.json was not written (it is written last).", file=sys.stderr
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)  # noqa: SLF001  (no interpreter shutdown under running XLA threads)
  except Exception as error:  # noqa: BLE001  (every error becomes one line)
    if cli.wants_traceback(sys.argv):
      import traceback

      traceback.print_exception(error)
    cli.fail("eval.py", error_message(error, out), sys.argv)


def _main():
  from codajax import evaluators

  with FLAGS.config.unlocked():
    config = add_method_settings(
        FLAGS.config, evaluators.parse_method_settings(FLAGS.method_setting)
    )
  if FLAGS.print_config:
    print(config)
    return
  if not FLAGS.workdir:
    raise evaluators.EvaluationError("--workdir is required (the directory train.py wrote).")
  cli.join_multihost_run(FLAGS)
  report = evaluators.evaluate_run(FLAGS.workdir, config)
  import jax

  if jax.process_index() == 0:
    print(evaluators.summary_table(report))
    from codajax.runs import RunDir

    out = config.out or RunDir(FLAGS.workdir).eval_dir
    print(f"report: {out}/{evaluators.REPORT_FILE} ({report['timings_s']['total']:.1f} s)")


CONFIG_HELP = (
    "Config fields: configs/eval/eval_base.py:base_config documents every key and the "
    "evaluators' arguments (codajax/evaluators/); set them with --config.KEY=VALUE; "
    "--print_config prints the resolved config and exits."
)
FLAG_NAMES = (
    "--workdir DIR",
    "--config FILE[:ARG]",
    "--config.KEY=VALUE",
    "--method_setting METHOD.key=value",
    "--print_config",
    "--multihost",
)


def parse_flags(argv):
  """absl's flag parsing, every bad flag, config file, config argument, config key or positional
  argument one ``eval.py: error:`` line (exit 2); ``--help`` prints the usage and where the config
  fields are documented, and exits 0."""
  return cli.parse_flags("eval.py", argv, f"{__doc__}\n{CONFIG_HELP}", DEFAULT_CONFIG, FLAG_NAMES)


if __name__ == "__main__":
  cli.tolerant_console()
  app.run(main, flags_parser=parse_flags)
