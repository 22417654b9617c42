"""The papers' protocol exactly (CVPR 2021 CoDA-Net paper, interpretability evaluation): 500 localisation grids of 3 × 3,
1,024 pixel-removal images, every method with the papers' settings (RISE 6,000 masks, SmoothGrad
50 samples, IntGrad 20 steps, Occlusion 5 and 9 with stride 2).

Hours on a CPU (RISE dominates): it first times one batch of every method and metric and prints
the estimated duration, then shows one progress bar over the whole job.

    python eval.py --workdir runs/cifar10 --config configs/eval/paper.py
    python eval.py --workdir runs/cifar10 --config configs/eval/paper.py:2x2   # the 500_2x2 grids
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# configs/ is not a package: eval_base is imported from this folder.
from eval_base import ALL_METHODS, base_config, config_tokens  # noqa: E402


def get_config(arg=None):
  grid = 2 if "2x2" in config_tokens(arg, ("2x2",), "configs/eval/paper.py") else 3
  config = base_config()
  config.methods = ALL_METHODS
  config.estimate = True
  config.evals.accuracy = dict()
  config.evals.localisation = dict(n_grids=500, grid=grid)
  config.evals.depths = dict(n_grids=500, grid=grid)
  config.evals.pixel_removal = dict(n_images=1024)
  config.evals.ground_truth = dict(n_images=1024)
  config.evals.completeness = dict(n_images=1024)
  config.evals.figures = dict(n_images=8)
  return config
