"""CIFAR-10 9L-S with the dynamic-matrix L1 regulariser, 9L-S-CoDA-SQ-lambda-λ (CVPR 2021 paper, CIFAR-10 experiments).

``arg`` (comma-separated): λ, the weight of ``mean |W_c(x)|`` over the true
class and one random other class per image (the paper's runs: ``0 | 0.1 |
0.25 | 0.5 | 1``; any λ >= 0 is accepted; default ``0.1``), and/or ``smoke``
(tiny-3L, 2 steps; needs the data prepared).

Paper setting: 9L-S, squashing, T = 64 ("T = 1 with average pooling" over the
8×8 class map), BCE + λ·L1, Adam lr 2.5e-4 · 1.5^−⌊epoch/30⌋, 200 epochs,
batch 8 accumulated to 16 (one batch of 16 here, the same update). codajax
penalises the exact effective map (norm factors and 1/T included); the
reference's reverse path omits the norm factors and never ran for λ > 0 (see
``codajax.regularizers`` and ``docs/hybrids.md``), so λ > 0 has no reference
numbers. λ = 0 is plain BCE at T = 64.

    python train.py --config configs/cifar10_lambda.py:0.25
    python train.py --config configs/cifar10_lambda.py:0.25,smoke
"""

from codajax.train.config import ConfigArgumentError, apply_smoke, base_config, config_tokens

PAPER_LAMBDAS = (0.0, 0.1, 0.25, 0.5, 1.0)


def get_config(arg: str | None = None):
  tokens = config_tokens(arg)
  values = [t for t in tokens if t != "smoke"]
  if len(values) > 1:
    raise ConfigArgumentError(f"cifar10_lambda takes one λ (and/or 'smoke'), got {values}.")
  text = values[0] if values else "0.1"
  try:
    weight = float(text)
  except ValueError:
    raise ConfigArgumentError(
        f"cifar10_lambda: λ must be a number >= 0 (the paper's: {PAPER_LAMBDAS}), " f"got {text!r}."
    ) from None
  if weight < 0:
    raise ConfigArgumentError(f"cifar10_lambda: λ must be >= 0, got {weight}.")

  config = base_config()
  config.name = f"cifar10_9L-S-CoDA-SQ-lambda-{text}"
  config.description = f"9L-S, T=64, BCE + {text} · mean|W_c(x)| (true + one random class)."
  config.dataset = "cifar10"
  config.model.name = "9L-S"
  config.model.temperature = 64.0
  config.model.norm = "squash"
  config.loss = "bce"
  config.l1_matrix_weight = weight
  config.batch_size = 16
  config.num_epochs = 200
  config.optimizer.learning_rate = 2.5e-4
  config.optimizer.schedule = "cifar_step"
  config.optimizer.decay_every_epochs = 30
  config.optimizer.decay_factor = 1.5
  config.eval_every_epochs = 1
  config.log_every_steps = 200
  config.checkpoint_every_steps = 5000
  if "smoke" in tokens:
    apply_smoke(config, steps=2, batch_size=8, eval_batch_size=64, model="tiny-3L")
  return config
