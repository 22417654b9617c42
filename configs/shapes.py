"""A pure CoDA-Net (shapes-5L) on the embedded synthetic shapes data (object masks as ground truth).

Not a paper setting: 32×32 images of 10 shape classes on textured, coloured backgrounds with
distractor strokes, for measuring whether explanations point at the object. The default data is
the ``_light`` variant: every object is brighter than its background (hues random), while the
background texture and the clutter strokes (random colours, some as bright as the object) stay.
On the original ``shapes`` (object darker or lighter at random) the pure CoDA-Net stays at chance
at T = 500; at T = 10 it learns them (88.7 % test accuracy after the same 2 epochs, 94.1 % after
3; its maps there lose to Grad-CAM and occlusion on the object masks, ``studies/shapes_pure.md``):
``:original --config.model.temperature=10``.

    python train.py --config configs/shapes.py            # 2 epochs, >= 90 % test accuracy
    python train.py --config configs/shapes.py:original --config.model.temperature=10  # original data
    python train.py --config configs/shapes.py:smoke
"""

from codajax.train.config import apply_smoke, base_config, config_tokens

DATASET = "shapes/train20000_test2000_seed0_light"


def get_config(arg: str | None = None):
  tokens = config_tokens(arg, ("original", "smoke"), "configs/shapes.py")
  config = base_config()
  config.name = "shapes"
  config.dataset = "shapes" if "original" in tokens else DATASET
  config.model.name = "shapes-5L"
  config.model.temperature = 500.0
  config.batch_size = 64
  config.num_epochs = 2
  config.optimizer.schedule = "warmup_cosine"
  config.optimizer.peak_learning_rate = 1e-3
  config.optimizer.warmup_epochs = 0  # one warm-up step, then cosine from the peak
  config.eval_every_epochs = 1
  config.checkpoint_every_steps = 500
  if "smoke" in tokens:
    config.dataset = "shapes/train256_test64_seed0_light"
    apply_smoke(
        config, steps=4, batch_size=8, eval_batch_size=64, model="tiny-3L", temperature=10.0
    )
  return config
