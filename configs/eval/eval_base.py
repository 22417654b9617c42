"""The eval-config schema shared by ``configs/eval/*.py`` (see docs/evaluation.md).

``python eval.py --workdir DIR --config configs/eval/quick.py --config.evals.localisation.n_grids=50``
"""

import ml_collections

from codajax.train.config import config_tokens  # noqa: F401  (the presets check their argument)

# Every method the evaluation knows (codajax.evaluators.known_methods()).
ALL_METHODS = "Ours,Grad,IxG,IntGrad,SmoothGrad,GCam,Occ5,Occ9,RISE"


def base_config() -> ml_collections.ConfigDict:
  """Options shared by every evaluator entry; ``evals`` is filled by the preset."""
  config = ml_collections.ConfigDict()
  config.checkpoint = "latest"  # "latest" or "best" (by validation accuracy)
  config.data_dir = ""  # "" = the run's
  config.out = ""  # "" = WORKDIR/eval
  config.methods = ALL_METHODS  # comma-separated; evaluators that score methods use these
  config.method_settings = ml_collections.ConfigDict()  # {"RISE": {"n_masks": 1000}}
  config.batch_size = 32  # images per attribution call (a grid counts as n² images)
  config.items_per_pass = 4  # IntGrad steps / SmoothGrad samples per pass (memory only)
  config.skip = ""  # comma-separated evaluators of the preset to leave out, e.g. "depths,figures"
  config.estimate = False  # time each unit's first batch and print the total first
  config.progress = True  # one progress bar over the whole job
  config.evals = ml_collections.ConfigDict()
  return config
