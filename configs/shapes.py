"""A CoDA-Net (shapes-7L) on the embedded synthetic shapes data (object masks as ground truth).

Not a paper setting: 32×32 images of 10 shape classes on cluttered textured
backgrounds, for measuring whether explanations point at the object.

    python train.py --config configs/shapes.py
    python train.py --config configs/shapes.py:smoke
"""

from codajax.train.config import apply_smoke, base_config, config_tokens


def get_config(arg: str | None = None):
  config = base_config()
  config.name = "shapes"
  config.dataset = "shapes"
  config.model.name = "shapes-7L"
  config.model.temperature = 500.0
  config.batch_size = 64
  config.num_epochs = 20
  config.optimizer.schedule = "warmup_cosine"
  config.optimizer.peak_learning_rate = 1e-3
  config.optimizer.warmup_epochs = 1
  config.eval_every_epochs = 2
  config.checkpoint_every_steps = 500
  if "smoke" in config_tokens(arg):
    config.dataset = "shapes/train256_test64_seed0"
    apply_smoke(config, steps=4, batch_size=8, eval_batch_size=64, model="tiny-3L",
                temperature=10.0)
  return config
