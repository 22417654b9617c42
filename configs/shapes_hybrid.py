"""Hybrids on the embedded synthetic shapes data (CPU-sized; not a paper setting).

A three-stage GroupNorm ResNet (one basic block per stage, widths 16/32/64)
cut after stage k, then CoDA layers (width 32, rank 16) and the CoDA head:
the interpretable-depth experiment in miniature, with object masks as ground
truth for the localisation of the contributions.

``arg`` (comma-separated): the embedding stage ``s0 | s1 | s2 | s3`` (default
``s2``; ``s0`` = the pure shapes-7L CoDA-Net at T = 500), and/or ``smoke``
(256 training images, a narrow backbone, 4 steps: seconds on a CPU).

Embeddings: 16×32², 32×16², 64×8² for k = 1, 2, 3; the class map is 8×8.

    python train.py --config configs/shapes_hybrid.py:s2
    python train.py --config configs/shapes_hybrid.py:s1,smoke
"""

from codajax.train.config import apply_smoke, base_config, parse_stage_arg

FAMILY = "shapes"
NUM_STAGES = 3


def get_config(arg: str | None = None):
  stage, smoke = parse_stage_arg(arg, "s2", NUM_STAGES, "configs/shapes_hybrid.py")
  config = base_config()
  config.name = f"shapes_hybrid-s{stage}"
  config.description = f"Tiny ResNet cut after stage {stage}, CoDA layers on top (shapes)."
  config.dataset = "shapes"
  config.model.name = f"hybrid-{FAMILY}"
  config.model.kwargs.embedding_stage = stage
  config.model.temperature = 500.0 if stage == 0 else 100.0
  config.batch_size = 64
  config.num_epochs = 20
  config.optimizer.schedule = "warmup_cosine"
  config.optimizer.peak_learning_rate = 1e-3
  config.optimizer.warmup_epochs = 1
  config.eval_every_epochs = 2
  config.checkpoint_every_steps = 500
  if smoke:
    config.dataset = "shapes/train256_test64_seed0"
    config.model.kwargs.backbone_widths = (4, 8, 8)
    config.model.kwargs.coda_layers = (
        ((8, 4, 3, 2, 1), (10, 4, 1, 1, 0)) if stage < 2 else ((8, 4, 3, 1, 1), (10, 4, 1, 1, 0))
    )
    apply_smoke(config, steps=4, batch_size=8, eval_batch_size=64, temperature=10.0)
  return config
