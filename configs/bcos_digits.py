"""A small B-cos ResNet (``bcos-resnet-tiny``) on the embedded 16×16 digits data.

Not a paper setting: scikit-learn's 1,797 handwritten digits and the CPU-sized B-cos
ResNet of :mod:`codajax.bcos.resnet` (three one-block stages 16/32/64, B = 2, the
statistics-free uncentred layer norm, so ``train.py`` needs no batch statistics). The
B-cos recipe: sigmoid BCE on one-hot targets, Adam, the logit bias ``log(1/(K − 1))``
and no logit temperature (``model.temperature = 1``).

    python train.py --config configs/bcos_digits.py          # >= 95 % test accuracy, CPU minutes
    python train.py --config configs/bcos_digits.py:smoke    # seconds, for tests
"""

from codajax.train.config import apply_smoke, base_config, config_tokens


def get_config(arg: str | None = None):
  config = base_config()
  config.name = "bcos-digits"
  config.dataset = "digits"
  config.model.name = "bcos-resnet-tiny"
  config.model.temperature = 1.0  # the released B-cos models use none
  config.loss = "bce"
  config.batch_size = 64
  config.num_epochs = 30
  config.optimizer.schedule = "warmup_cosine"
  config.optimizer.peak_learning_rate = 3e-3
  config.optimizer.warmup_epochs = 2
  config.eval_every_epochs = 5
  config.log_every_steps = 20
  config.checkpoint_every_steps = 200
  if "smoke" in config_tokens(arg, ("smoke",), "configs/bcos_digits.py"):
    apply_smoke(config, steps=4, batch_size=8, eval_batch_size=512)
  return config
