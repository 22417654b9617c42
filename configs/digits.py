"""The default run: a small CoDA-Net (digits-5L) on the embedded 16×16 digits data.

Not a paper setting: scikit-learn's 1,797 handwritten digits, a CPU-sized model
that reaches >= 97 % test accuracy in a few minutes on 2 cores.

    python train.py                                   # this config
    python train.py --config configs/digits.py:smoke  # seconds, for tests
    python train.py --config configs/digits.py:quick  # 80 steps (~a minute): a model to explain
"""

from codajax.train.config import apply_smoke, base_config, config_tokens


def get_config(arg: str | None = None):
  config = base_config()
  config.name = "digits"
  config.dataset = "digits"
  config.model.name = "digits-5L"
  config.model.temperature = 100.0
  config.batch_size = 64
  config.num_epochs = 30
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "warmup_cosine"
  config.optimizer.peak_learning_rate = 1e-3
  config.optimizer.warmup_epochs = 2
  config.eval_every_epochs = 5
  config.log_every_steps = 20
  config.checkpoint_every_steps = 200
  # Interpretability during training: "Ours" localisation on a few grids every 10 epochs
  # (logged as evals/methods/Ours/localisation/mean; see docs/evaluation.md).
  config.evals.localisation = dict(every_steps=220, n_grids=8, methods="Ours")
  tokens = config_tokens(arg, ("smoke", "quick"), "configs/digits.py")
  if "smoke" in tokens or "quick" in tokens:
    apply_smoke(config, steps=4, batch_size=8, eval_batch_size=512)
    config.evals = {}
  if "quick" in tokens:  # confident enough for localisation grids (the quick-start notebook)
    config.name = "digits_quick"
    config.update(batch_size=64, max_steps=80, num_epochs=10, checkpoint_every_steps=1000)
    config.update(eval_every_epochs=100)
    config.optimizer.update(schedule="constant", learning_rate=3e-3)
  return config
