"""A small B-cos ResNet (``bcos-resnet-tiny``) on the embedded 32×32 shapes (object masks).

The B-cos counterpart of ``configs/shapes.py`` (a pure CoDA-Net) for
``studies/bcos_vs_coda.md``: the same data (the ``_light`` variant by default: every object
brighter than its textured, cluttered background), the CPU-sized B-cos ResNet of
:mod:`codajax.bcos.resnet` (three one-block stages 16/32/64, B = 2, uncentred layer norm),
sigmoid BCE, Adam, the logit bias ``log(1/(K − 1))`` and no logit temperature.

    python train.py --config configs/bcos_shapes.py            # >= 90 % test accuracy, CPU minutes
    python train.py --config configs/bcos_shapes.py:original   # the original shapes
    python train.py --config configs/bcos_shapes.py:smoke
"""

from codajax.train.config import apply_smoke, base_config, config_tokens

DATASET = "shapes/train20000_test2000_seed0_light"


def get_config(arg: str | None = None):
  tokens = config_tokens(arg, ("original", "smoke"), "configs/bcos_shapes.py")
  config = base_config()
  config.name = "bcos-shapes"
  config.dataset = "shapes" if "original" in tokens else DATASET
  config.model.name = "bcos-resnet-tiny"
  config.model.temperature = 1.0  # the released B-cos models use none
  config.loss = "bce"
  config.batch_size = 64
  config.num_epochs = 2
  config.optimizer.schedule = "warmup_cosine"
  config.optimizer.peak_learning_rate = 1e-3
  config.optimizer.warmup_epochs = 0
  config.eval_every_epochs = 1
  config.checkpoint_every_steps = 500
  if "smoke" in tokens:
    config.dataset = "shapes/train256_test64_seed0_light"
    apply_smoke(config, steps=4, batch_size=8, eval_batch_size=64)
  return config
