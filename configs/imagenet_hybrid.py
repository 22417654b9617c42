"""ImageNet hybrids: ResNet-50 (ImageNet stem, GroupNorm) cut after stage k, then CoDA layers.

The TPAMI extension's claim (TPAMI 2022, arXiv:2109.13004) that hybrids scale CoDA layers
to the full ImageNet; its exact hybrid settings were not available, so the
CoDA part and temperatures are codajax's (``codajax.models.hybrid``,
``docs/hybrids.md``) and the optimisation is the CVPR ImageNet protocol
(the CVPR 2021 paper's ImageNet-100 setup): 240-px crops with RandAugment, Adam lr 2.5e-4 → 1e-3 over 15 epochs
then halved every 20, 60 epochs, batch 64, BCE, evaluation every 2 epochs.

``arg`` (comma-separated): the embedding stage ``s2 | s3 | s4`` (default
``s3``; ``s0`` = the pure 9L-L CoDA-Net at T = 100000 and ``s1`` are accepted
too), and/or ``smoke`` (a narrow ResNet-50 and a tiny CoDA part, 2 steps;
needs the data prepared).

Stage k keeps the stem and k bottleneck stages (embedding 512×30², 1024×15²,
2048×8² on 240-px crops for k = 2, 3, 4); the CoDA part (width 64, rank 128)
is a 1×1 entry layer, two 3×3 layers per replaced stage and a 1×1 class layer
(8×8 class map at 240 px); T = 100.

Data: all 1000 classes, ``python -m codajax.data.prepare imagenet_folder
--manual_dir IMAGENET_ROOT``.

    python train.py --config configs/imagenet_hybrid.py:s3
"""

from codajax.train.config import apply_smoke, base_config, parse_stage_arg

FAMILY = "resnet50-imagenet"
NUM_STAGES = 4
TINY_CODA_LAYERS = ((8, 4, 3, 1, 1), (8, 4, 3, 2, 1), (10, 4, 1, 1, 0))


def get_config(arg: str | None = None):
  stage, smoke = parse_stage_arg(arg, "s3", NUM_STAGES, "configs/imagenet_hybrid.py")
  config = base_config()
  config.name = f"imagenet_hybrid-{FAMILY}-s{stage}"
  config.description = f"ResNet-50 (ImageNet stem) cut after stage {stage}, CoDA layers on top."
  config.dataset = "imagenet_folder"
  config.model.name = f"hybrid-{FAMILY}"
  config.model.kwargs.embedding_stage = stage
  config.model.temperature = 100_000.0 if stage == 0 else 100.0
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
  if smoke:
    config.model.kwargs.backbone_widths = (4, 4, 8, 8)
    config.model.kwargs.coda_layers = TINY_CODA_LAYERS
    apply_smoke(config, steps=2, batch_size=4, eval_batch_size=8, temperature=10.0)
    config.worker_count = 0
  return config
