"""CIFAR-10 9L-S of the CVPR paper (CVPR 2021 paper, CIFAR-10 experiments).

``arg`` (comma-separated) picks the experiment of the paper's list:

* a temperature ``10 | 50 | 100 | 500 | 1000 | 5000 | 10000``: 9L-S-CoDA-SQ-T
  (default 1000, the evaluated model);
* ``l2``: 9L-S-CoDA-L2-1000 (the intended ``u/‖w‖``; the reference's is broken);
* ``rank-4 | rank-8 | rank-16 | rank-144``: the rank ablations at T = 1000;
* ``smoke``: a tiny model and 2 steps (tests; needs the data prepared).

Paper recipe: Adam lr 2.5e-4 · 1.5^−⌊epoch/30⌋, 200 epochs, BCE on one-hot
targets, random crop (pad 4) + flip, batch 8 accumulated to a virtual batch
of 16. Here one batch of 16 gives the same update; ``--config.batch_size=8
--config.virtual_batch_size=16`` reproduces the accumulation. For fast GPU
runs: ``--config.batch_size=1024 --config.optimizer.lr_batch_scaling=True
--config.optimizer.schedule=warmup_cosine --config.optimizer.warmup_epochs=5``
(documented large-batch option; not the paper's setting).

Data: ``python -m codajax.data.prepare cifar10 --manual_dir DIR`` with
``cifar-10-python.tar.gz`` in DIR.
"""

from codajax.train.config import apply_smoke, base_config, config_tokens

TEMPERATURES = (10, 50, 100, 500, 1000, 5000, 10000)
RANKS = ("rank-4", "rank-8", "rank-16", "rank-144")


def get_config(arg: str | None = None):
  tokens = config_tokens(
      arg, (*map(str, TEMPERATURES), "l2", *RANKS, "smoke"), "configs/cifar10.py"
  )
  config = base_config()
  config.dataset = "cifar10"
  config.model.name = "9L-S"
  config.model.temperature = 1000.0
  config.batch_size = 16
  config.num_epochs = 200
  config.optimizer.learning_rate = 2.5e-4
  config.optimizer.schedule = "cifar_step"
  config.optimizer.decay_every_epochs = 30
  config.optimizer.decay_factor = 1.5
  config.eval_every_epochs = 1
  config.log_every_steps = 200
  config.checkpoint_every_steps = 5000
  name = "9L-S-CoDA-SQ-1000"
  for token in tokens:
    if token.isdigit():
      config.model.temperature = float(token)
      name = f"9L-S-CoDA-SQ-{token}"
    elif token == "l2":
      config.model.norm = "l2"
      name = "9L-S-CoDA-L2-1000"
    elif token in RANKS:
      config.model.name = f"9L-S-{token}"
      name = f"9L-S-CoDA-SQ-{token}"
  config.name = f"cifar10_{name}"
  if "smoke" in tokens:
    apply_smoke(config, steps=2, batch_size=8, eval_batch_size=64, model="tiny-3L")
  return config
