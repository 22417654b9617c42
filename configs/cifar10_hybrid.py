"""CIFAR-10 hybrids: ResNet-18 (CIFAR stem, GroupNorm) cut after stage k, then CoDA layers.

The TPAMI extension's hybrid idea (TPAMI 2022, arXiv:2109.13004) at three embedding depths;
the paper's exact hybrid tables were not available, so the CoDA part and the
temperatures are codajax's (``codajax.models.hybrid``, ``docs/hybrids.md``).

``arg`` (comma-separated): the embedding stage ``s1 | s2 | s3`` (default
``s2``; ``s0`` = the pure 9L-S CoDA-Net, ``s4`` = ResNet-18 with a CoDA head
are accepted too), and/or ``smoke`` (a narrow ResNet-18 and a tiny CoDA part,
2 steps; needs the data prepared).

Stage k keeps the stem and k residual stages (embedding 64×32², 128×16²,
256×8² for k = 1, 2, 3); the CoDA part (width 64, rank 64) is a 1×1 entry
layer, two 3×3 layers per replaced stage and a 1×1 class layer (4×4 class
map); T = 100 (1000 for s0). Training follows the paper's CIFAR protocol:
Adam lr 2.5e-4 · 1.5^−⌊epoch/30⌋, 200 epochs, batch 16, BCE, crop + flip.

    python train.py --config configs/cifar10_hybrid.py:s2
    python train.py --config configs/cifar10_hybrid.py:s2 --config.model.kwargs.embedding_stage=3
"""

from codajax.train.config import apply_smoke, base_config, parse_stage_arg

FAMILY = "resnet18-cifar"
NUM_STAGES = 4
TINY_CODA_LAYERS = ((8, 4, 3, 1, 1), (8, 4, 3, 2, 1), (10, 4, 1, 1, 0))


def get_config(arg: str | None = None):
  stage, smoke = parse_stage_arg(arg, "s2", NUM_STAGES, "configs/cifar10_hybrid.py")
  config = base_config()
  config.name = f"cifar10_hybrid-{FAMILY}-s{stage}"
  config.description = f"ResNet-18 (CIFAR stem) cut after stage {stage}, CoDA layers on top."
  config.dataset = "cifar10"
  config.model.name = f"hybrid-{FAMILY}"
  config.model.kwargs.embedding_stage = stage
  config.model.temperature = 1000.0 if stage == 0 else 100.0
  config.batch_size = 16
  config.num_epochs = 200
  config.optimizer.learning_rate = 2.5e-4
  config.optimizer.schedule = "cifar_step"
  config.optimizer.decay_every_epochs = 30
  config.optimizer.decay_factor = 1.5
  config.eval_every_epochs = 1
  config.log_every_steps = 200
  config.checkpoint_every_steps = 5000
  if smoke:
    config.model.kwargs.backbone_widths = (4, 8, 8, 8)
    config.model.kwargs.coda_layers = TINY_CODA_LAYERS
    apply_smoke(config, steps=2, batch_size=8, eval_batch_size=64, temperature=10.0)
  return config
