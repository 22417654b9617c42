"""B-cosification: fine-tune a trained conventional ResNet as a B-cos network (``docs/bcos.md``).

Starts from the work directory ``init_from`` of a ``configs/resnet_shapes.py`` run (its latest
params), converts it with :func:`codajax.bcos.bcosify` (``bcosified-resnet-tiny``: the same network
run as a B-cos network, ``B = 2``, biases and centring removed, the first convolution on
``[x, 1 − x]``) and fine-tunes it on the same data with the recipe of B-cosification (Arya et al.,
NeurIPS 2024): Adam with cosine decay from a tenth of the from-scratch learning rate (1e-4 against
the 1e-3 of ``configs/bcos_shapes.py``), sigmoid BCE, the logit bias ``−ln(K − 1)``. Resumes,
multi-host and ``eval.py`` work as for every run; a resumed run ignores ``init_from``.

    python train.py --config configs/resnet_shapes.py                       # the original
    python train.py --config configs/bcosify.py                             # its B-cosified twin
    python train.py --config configs/bcosify.py --config.init_from=runs/other-resnet-run
    python train.py --config configs/bcosify.py:smoke    # after resnet_shapes.py:smoke (seconds)
    python train.py --config configs/bcosify.py:curve    # + test accuracy every 25 steps (the study)
"""

from codajax.train.config import apply_smoke, base_config, config_tokens

DATASET = "shapes/train20000_test2000_seed0_light"


def get_config(arg: str | None = None):
  tokens = config_tokens(arg, ("curve", "smoke"), "configs/bcosify.py")
  config = base_config()
  config.name = "bcosify-shapes"
  config.init_from = "runs/resnet-shapes"
  config.dataset = DATASET
  config.model.name = "bcosified-resnet-tiny"
  config.model.kwargs.image_size = 32
  config.model.temperature = 1.0
  config.loss = "bce"
  config.batch_size = 64
  config.num_epochs = 2
  config.optimizer.schedule = "warmup_cosine"
  config.optimizer.peak_learning_rate = 1e-4
  config.optimizer.warmup_epochs = 0
  config.eval_every_epochs = 1
  config.checkpoint_every_steps = 500
  if "curve" in tokens:  # studies/bcosify.md: the steps to reach the from-scratch accuracy
    config.evals.accuracy = dict(every_steps=25)
  if "smoke" in tokens:
    config.init_from = "runs/resnet-shapes_smoke"
    config.dataset = "shapes/train256_test64_seed0_light"
    apply_smoke(config, steps=4, batch_size=8, eval_batch_size=64)
  return config
