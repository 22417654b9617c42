"""Evaluates a trained run: ``python eval.py --workdir DIR [--methods Ours,Grad,...] [...]``.

Loads the latest (or best) checkpoint that ``train.py`` wrote to DIR and measures accuracy, the
papers' localisation and pixel-removal metrics for the CoDA contributions ("Ours") and the
post-hoc baselines, ground-truth localisation on datasets with object masks, and the
localisation at every explainable depth. Writes PNG figures, ``report.json`` and ``scores.npz``
to ``DIR/eval`` (see docs/evaluation.md).
"""

import sys

from absl import app, flags, logging

flags.DEFINE_string("workdir", None, "Work directory written by train.py.", required=True)
flags.DEFINE_enum("checkpoint", "latest", ["latest", "best"], "Which checkpoint to evaluate.")
flags.DEFINE_list("methods", [], "Methods to evaluate (default: all): Ours and the keys of "
                  "codajax.attribution.METHODS (Grad, IxG, IntGrad, SmoothGrad, GCam, Occ5, Occ9, "
                  "RISE).")
flags.DEFINE_multi_string("method_setting", [], "METHOD.key=value: override a post-hoc preset, "
                          "e.g. RISE.n_masks=1000 or IntGrad.n_steps=50 (repeatable; recorded "
                          "in report.json).")
flags.DEFINE_integer("n_grids", 500, "Localisation grids (papers: 500; fewer when the confident "
                     "test images run out; 0 skips localisation).")
flags.DEFINE_integer("grid", 3, "Grid size n of the n x n localisation grids (papers: 3; or 2).")
flags.DEFINE_integer("n_removal", 1024, "First test images for pixel removal and ground truth "
                     "(papers: 1024; 0 skips both).")
flags.DEFINE_enum("ground_truth", "auto", ["auto", "on", "off"],
                  "Ground-truth localisation against object masks (auto: where the dataset has them).")
flags.DEFINE_enum("depths", "auto", ["auto", "on", "off"],
                  "Localisation at every explainable depth (auto: models with more than one layer).")
flags.DEFINE_integer("batch_size", 32, "Images per attribution call (a grid counts as n² images).")
flags.DEFINE_integer("chunk", 4, "Integration steps (IntGrad) or noise samples (SmoothGrad) "
                     "per pass: bounds their memory, does not change the results.")
flags.DEFINE_integer("n_figure", 8, "Images in the contribution-map figure (0: no figures).")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default: the run's).")
flags.DEFINE_string("out", None, "Output directory (default: WORKDIR/eval).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS["verbosity"].present:  # orbax logs every restore at INFO
    logging.set_verbosity(logging.WARNING)
  from codajax import evaluation

  try:
    method_settings = evaluation.parse_method_settings(FLAGS.method_setting)
    report = evaluation.run_evaluation(
        FLAGS.workdir, methods=tuple(FLAGS.methods), checkpoint=FLAGS.checkpoint,
        n_grids=FLAGS.n_grids, grid=FLAGS.grid, n_removal=FLAGS.n_removal,
        ground_truth=FLAGS.ground_truth, depths=FLAGS.depths, batch_size=FLAGS.batch_size,
        chunk=FLAGS.chunk, n_figure=FLAGS.n_figure, data_dir=FLAGS.data_dir, out=FLAGS.out,
        method_settings=method_settings)
  except evaluation.EvaluationError as error:
    sys.exit(f"eval.py: error: {error}")
  print(evaluation.summary_table(report))
  out = FLAGS.out or f"{FLAGS.workdir}/eval"
  print(f"report: {out}/{evaluation.REPORT_FILE} ({report['timings_s']['total']:.1f} s)")


if __name__ == "__main__":
  app.run(main)
