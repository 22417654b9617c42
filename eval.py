"""Evaluates a trained run: ``python eval.py --workdir DIR [--config configs/eval/NAME.py] [...]``.

Loads the latest (or best) checkpoint that ``train.py`` wrote to DIR and runs the evaluators of
an eval config (default ``configs/eval/quick.py``: minutes on a CPU; ``configs/eval/paper.py``:
the papers' protocol with a duration estimate first): accuracy, localisation per method and per
depth, pixel removal, ground truth (datasets with object masks), completeness, figures. Writes
``report.json``, ``scores.npz`` and PNG figures to ``DIR/eval`` (see docs/evaluation.md).

Config values are overridden with ``--config.x=y`` (e.g. ``--config.evals.localisation.n_grids=50``);
the older flags (``--methods``, ``--n_grids``, ``--n_removal``, ...) still work and set the same
config values (``eval.py --help``). Multi-host: add ``--multihost`` on every host, as for train.py.
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
    "Print the resolved eval config (file + overrides + the " "older flags) and exit.",
)
flags.DEFINE_enum(
    "checkpoint", None, ["latest", "best"], "Which checkpoint to evaluate (= --config.checkpoint)."
)
flags.DEFINE_list(
    "methods",
    None,
    "Methods to evaluate (= --config.methods): Ours and the keys of "
    "codajax.attribution.METHODS (Grad, IxG, IntGrad, SmoothGrad, GCam, Occ5, Occ9, "
    "RISE).",
)
flags.DEFINE_multi_string(
    "method_setting",
    [],
    "METHOD.key=value: override a post-hoc preset, "
    "e.g. RISE.n_masks=1000 or IntGrad.n_steps=50 (repeatable; checked at "
    "once; = --config.method_settings.METHOD.key).",
)
flags.DEFINE_integer(
    "n_grids",
    None,
    "Localisation grids, for the localisation and depth " "evaluators (0 removes both).",
)
flags.DEFINE_integer("grid", None, "Grid size n of the n x n localisation grids (papers: 3).")
flags.DEFINE_integer(
    "n_removal", None, "First test images for pixel removal and ground truth " "(0 removes both)."
)
flags.DEFINE_enum(
    "ground_truth",
    None,
    ["auto", "on", "off"],
    "Ground-truth localisation (off removes it; on requires object masks).",
)
flags.DEFINE_enum(
    "depths",
    None,
    ["auto", "on", "off"],
    "Localisation per explainable depth (off removes it; on requires > 1 layer).",
)
flags.DEFINE_integer("batch_size", None, "Images per attribution call (= --config.batch_size).")
flags.DEFINE_integer(
    "items_per_pass",
    None,
    "IntGrad steps / SmoothGrad samples per pass (= --config.items_per_pass; memory only).",
)
flags.DEFINE_integer("n_figure", None, "Images in the contribution figure (0 removes figures).")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default: the run's).")
flags.DEFINE_string("out", None, "Output directory (default: WORKDIR/eval).")
cli.define_multihost_flags()
FLAGS = flags.FLAGS


def _set_entries(evals, names, key, value):
  for name in names:
    if name in evals:
      evals[name][key] = value


def _drop(evals, names):
  for name in names:
    if name in evals:
      del evals[name]


def apply_flags(config, values, parse_method_settings):
  """The older flags (``values``: name -> value, ``None`` = not given) as config changes."""
  evals = config.evals
  if values.get("checkpoint") is not None:
    config.checkpoint = values["checkpoint"]
  if values.get("methods") is not None:
    config.methods = ",".join(values["methods"])
  for method, settings in parse_method_settings(values.get("method_setting") or []).items():
    if method not in config.method_settings:
      config.method_settings[method] = {}
    for key, value in settings.items():
      config.method_settings[method][key] = value
  for name in ("batch_size", "items_per_pass", "data_dir", "out"):
    if values.get(name) is not None:
      config[name] = values[name]
  if values.get("grid") is not None:
    _set_entries(evals, ("localisation", "depths"), "grid", values["grid"])
  if values.get("n_grids") is not None:
    _set_entries(evals, ("localisation", "depths"), "n_grids", values["n_grids"])
    if values["n_grids"] == 0:
      _drop(evals, ("localisation", "depths"))
  if values.get("n_removal") is not None:
    _set_entries(evals, ("pixel_removal", "ground_truth"), "n_images", values["n_removal"])
    if values["n_removal"] == 0:
      _drop(evals, ("pixel_removal", "ground_truth"))
  for name in ("ground_truth", "depths"):
    choice = values.get(name)
    if choice == "off":
      _drop(evals, (name,))
    elif choice is not None:
      if name not in evals:
        evals[name] = (
            {"n_images": values.get("n_removal") or 1024}
            if name == "ground_truth"
            else {"n_grids": values.get("n_grids") or 500, "grid": values.get("grid") or 3}
        )
      evals[name]["when"] = choice
  if values.get("n_figure") is not None:
    _set_entries(evals, ("figures",), "n_images", values["n_figure"])
    if values["n_figure"] == 0:
      _drop(evals, ("figures",))
  return config


def main(argv):
  del argv
  if not FLAGS["verbosity"].present:  # orbax logs every restore at INFO
    logging.set_verbosity(logging.WARNING)
  from codajax import evaluators

  names = (
      "checkpoint",
      "methods",
      "method_setting",
      "n_grids",
      "grid",
      "n_removal",
      "ground_truth",
      "depths",
      "batch_size",
      "items_per_pass",
      "n_figure",
      "data_dir",
      "out",
  )
  try:
    with FLAGS.config.unlocked():
      config = apply_flags(
          FLAGS.config, {n: FLAGS[n].value for n in names}, evaluators.parse_method_settings
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
    from codajax import storage

    out = config.out or storage.join(FLAGS.workdir, "eval")
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
