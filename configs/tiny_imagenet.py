"""TinyImageNet (200 classes, 64×64) with a 9L-S CoDA-Net.

The paper reports TinyImageNet accuracy but the authors released no config for
it; this one is ours: the 9L-S layers on 64-px images (a 16×16 class map),
T = 1000, the CIFAR recipe (Adam 2.5e-4 · 1.5^−⌊epoch/30⌋, crop + flip), 100
epochs, batch 64.

Data: ``python -m codajax.data.prepare tiny_imagenet --manual_dir DIR`` with the
released ``tiny-imagenet-200`` folder in DIR.
"""

from codajax.train.config import apply_smoke, base_config, config_tokens


def get_config(arg: str | None = None):
  config = base_config()
  config.name = "tiny_imagenet_9L-S-CoDA-SQ-1000"
  config.dataset = "tiny_imagenet"
  config.model.name = "9L-S"
  config.model.temperature = 1000.0
  config.batch_size = 64
  config.num_epochs = 100
  config.optimizer.learning_rate = 2.5e-4
  config.optimizer.schedule = "cifar_step"
  config.eval_every_epochs = 2
  config.log_every_steps = 200
  config.checkpoint_every_steps = 2000
  if "smoke" in config_tokens(arg, ("smoke",), "configs/tiny_imagenet.py"):
    apply_smoke(
        config, steps=2, batch_size=8, eval_batch_size=64, model="tiny-3L", temperature=10.0
    )
  return config
