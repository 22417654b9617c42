"""The default evaluation: minutes on a CPU, every metric, the cheap methods.

Accuracy; "Ours", Grad, IxG, Grad-CAM and Occlusion (5 × 5) on localisation (a few grids),
pixel removal and ground truth (where the dataset has object masks); the depth analysis; the
completeness check; the figures. On the default digits run it takes about two minutes on the
2-core CPU (``benchmarks/RESULTS.md``). For the papers' protocol use ``configs/eval/paper.py``.

    python eval.py --workdir runs/digits                    # this config
    python eval.py --workdir runs/digits --config.evals.localisation.n_grids=30
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_base import base_config, config_tokens  # noqa: E402  (configs/ is not a package)


def get_config(arg=None):
  config_tokens(arg, (), "configs/eval/quick.py")
  config = base_config()
  config.methods = "Ours,Grad,IxG,GCam,Occ5"
  config.evals.accuracy = dict()
  config.evals.localisation = dict(n_grids=12, grid=3)
  config.evals.depths = dict(n_grids=12, grid=3)
  config.evals.pixel_removal = dict(n_images=128)
  config.evals.ground_truth = dict(n_images=128)
  config.evals.completeness = dict(n_images=64)
  config.evals.figures = dict(n_images=8)
  return config
