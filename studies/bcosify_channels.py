"""studies/bcosify.md: the contributions of the `x` and `1 − x` channels, B-cos against B-cosified.

    CODAJAX_DATA_DIR=runs/data python studies/bcosify_channels.py [--out runs/bcosify --seed 0]

Prints, on the first 96 test images (true class, layer 0), the largest logit, the mask energy of
the summed map, of the `x` channels and of the `1 − x` channels, and the `x` channels' share of
the positive evidence.
"""

import argparse
import os

import jax
import jax.numpy as jnp

from codajax import metrics
from codajax.data.pipeline import load_examples
from codajax.explain import explain
from codajax.runs import restore

DATASET = "shapes/train20000_test2000_seed0_light"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default="runs/bcosify")
  parser.add_argument("--seed", default="0")
  args = parser.parse_args()
  test = load_examples(
      DATASET, "test", data_dir=os.environ.get("CODAJAX_DATA_DIR"), indices=range(96)
  )
  images = jnp.asarray(test["image"], jnp.float32) / 255.0
  labels, masks = jnp.asarray(test["label"]), jnp.asarray(test["object_mask"], jnp.float32)
  for name in (f"bcos-seed{args.seed}", f"bcosify-seed{args.seed}"):
    run = restore(f"{args.out}/{name}")
    e = explain(run.model, run.variables, images, labels)
    c = e.contribution_map
    half = c.shape[-1] // 2
    x_part, inverse = c[..., :half].sum(-1), c[..., half:].sum(-1)
    positive = lambda m: float(jax.nn.relu(m).sum())
    print(
        f"{name}: largest logit {float(e.logits.max()):.3f}; mask energy "
        f"{float(metrics.mask_energy(c.sum(-1), masks).mean()):.3f} (x channels "
        f"{float(metrics.mask_energy(x_part, masks).mean()):.3f}, 1 - x channels "
        f"{float(metrics.mask_energy(inverse, masks).mean()):.3f}); x channels' share of the "
        f"positive evidence {positive(x_part) / (positive(x_part) + positive(inverse)):.3f}"
    )


if __name__ == "__main__":
  main()
