"""A conventional ResNet (``resnet-tiny``) on the embedded 32×32 shapes: the "pretrained" model of
``configs/bcosify.py``.

The same data, steps and optimiser as ``configs/bcos_shapes.py`` (its B-cos counterpart of the
same size): three one-block GroupNorm ResNet stages 16/32/64 with ReLU, a global average pool
and a dense classifier (:mod:`codajax.models.conventional`), Adam with cosine decay from 1e-3,
2 epochs, and the loss conventional classifiers are trained with, softmax cross-entropy (with
the B-cos recipe's sigmoid BCE and no logit bias it reached 0.69 / 0.67 test accuracy, seeds 0 /
1, ``studies/bcosify.md``). Not explainable by itself: post-hoc methods explain it.

    python train.py --config configs/resnet_shapes.py
    python train.py --config configs/resnet_shapes.py:smoke
"""

from codajax.train.config import apply_smoke, base_config, config_tokens

DATASET = "shapes/train20000_test2000_seed0_light"


def get_config(arg: str | None = None):
  tokens = config_tokens(arg, ("smoke",), "configs/resnet_shapes.py")
  config = base_config()
  config.name = "resnet-shapes"
  config.dataset = DATASET
  config.model.name = "resnet-tiny"
  config.model.temperature = 1.0  # a conventional classifier has none
  config.loss = "softmax"
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
