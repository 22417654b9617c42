"""ImageNet-100 9L-L of the CVPR paper: 9L-L-CoDA-SQ-100000 (CVPR 2021 paper, ImageNet experiments).

The first 100 sorted wnids of ILSVRC2012, 240-px crops (resize 256, random
crop, flip, RandAugment n=2 m=10), Adam with lr linear from 2.5e-4 to 1e-3
over 15 epochs then halved every 20, 60 epochs, T = 100000, evaluation every
2 epochs (top-1, top-5). The paper's batch 4 accumulated to 64 is one batch of
64 here (same update); ``--config.batch_size=4 --config.virtual_batch_size=64``
reproduces the accumulation.

Data: ``python -m codajax.data.prepare imagenet100 --manual_dir IMAGENET_ROOT``
(a folder with ``train/<wnid>/*.JPEG`` and ``val/``).

    python train.py --config configs/imagenet100.py
    python train.py --config configs/imagenet100.py:smoke
"""

from codajax.train.config import apply_smoke, base_config, config_tokens


def get_config(arg: str | None = None):
  config = base_config()
  config.name = "imagenet100_9L-L-CoDA-SQ-100000"
  config.dataset = "imagenet100"
  config.model.name = "9L-L"
  config.model.temperature = 100_000.0
  config.batch_size = 64
  config.eval_batch_size = 64
  config.num_epochs = 60
  config.optimizer.learning_rate = 2.5e-4
  config.optimizer.peak_learning_rate = 1e-3
  config.optimizer.schedule = "imagenet_warmup_halving"
  config.optimizer.warmup_epochs = 15
  config.optimizer.halve_every_epochs = 20
  config.eval_every_epochs = 2
  config.worker_count = 8
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  if "smoke" in config_tokens(arg, ("smoke",), "configs/imagenet100.py"):
    apply_smoke(config, steps=2, batch_size=4, eval_batch_size=8, model="tiny-3L", temperature=10.0)
    config.worker_count = 0
  return config
