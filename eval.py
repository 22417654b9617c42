"""Evaluates a trained run: ``python eval.py --workdir DIR [--config configs/eval/NAME.py] [...]``.

Loads the latest (or best) checkpoint that ``train.py`` wrote to DIR and runs the evaluators of
an eval config (default ``configs/eval/quick.py``: minutes on a CPU; ``configs/eval/paper.py``:
the papers' protocol with a duration estimate first): accuracy, localisation per method and per
depth, pixel removal, ground truth (datasets with object masks), completeness, figures. Writes
``report.json``, ``scores.npz`` and PNG figures to ``DIR/eval`` (see docs/evaluation.md).

Config values are overridden with ``--config.x=y`` (e.g. ``--config.methods=Ours,Grad``,
``--config.evals.localisation.n_grids=50``, ``--config.skip=depths,figures``,
``--config.checkpoint=best``, ``--config.out=DIR``); ``--method_setting METHOD.key=value`` sets a
post-hoc method's preset. Multi-host: add ``--multihost`` on every host, as for train.py.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from codajax import cli

_HERE = os.path.dirname(os.path.abspath(__file__))

config_flags.DEFINE_config_file(
    "config",
    os.path.join(_HERE, "configs", "eval", "quick.py"),
    "Eval config file (configs/eval/*.py), optionally with ':arg'.",
    lock_config=True,
)
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


def main(argv):
  del argv
  if not FLAGS["verbosity"].present:  # orbax logs every restore at INFO
    logging.set_verbosity(logging.WARNING)
  from codajax import evaluators

  try:
    with FLAGS.config.unlocked():
      config = add_method_settings(
          FLAGS.config, evaluators.parse_method_settings(FLAGS.method_setting)
      )
  except evaluators.EvaluationError as error:
    sys.exit(f"eval.py: error: {error}")
  if FLAGS.print_config:
    print(config)
    return
  if not FLAGS.workdir:
    sys.exit("eval.py: error: --workdir is required (the directory train.py wrote).")
  cli.join_multihost_run(FLAGS)
  try:
    report = evaluators.evaluate_run(FLAGS.workdir, config)
  except evaluators.EvaluationError as error:
    sys.exit(f"eval.py: error: {error}")
  import jax

  if jax.process_index() == 0:
    print(evaluators.summary_table(report))
    from codajax.runs import RunDir

    out = config.out or RunDir(FLAGS.workdir).eval_dir
    print(f"report: {out}/{evaluators.REPORT_FILE} ({report['timings_s']['total']:.1f} s)")


HELP_ARGS = ("-h", "-?", "--help", "--helpshort", "--helpfull")
CONFIG_HELP = (
    "Config fields: configs/eval/eval_base.py:base_config documents every key and the "
    "evaluators' arguments (codajax/evaluators/); set them with --config.KEY=VALUE; "
    "--print_config prints the resolved config and exits."
)


def parse_flags(argv):
  """absl's flag parsing; ``--help`` prints the usage and where the config fields are
  documented, and exits 0."""
  if any(arg in HELP_ARGS for arg in argv[1:]):
    print(f"{__doc__}\n{CONFIG_HELP}\n\nflags:\n{FLAGS.main_module_help()}")
    sys.exit(0)
  return FLAGS(argv)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
