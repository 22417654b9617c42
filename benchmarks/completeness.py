"""Completeness of CoDA contribution maps: Σ contributions vs logit − bias, per layer and target.

    python benchmarks/completeness.py --arch 9L-S --batch 8

Prints JSON lines with the largest error relative to Σ|contributions| (what
``codajax.explain.completeness_error`` returns) and relative to |logit − bias|.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from codajax.explain import completeness_error, explain
from codajax.models import ARCHITECTURES, get_model
from common import emit


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--arch", default="9L-S")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--form", default="implicit")
  args = parser.parse_args()
  size = ARCHITECTURES[args.arch].image_size
  model = get_model(args.arch, form=args.form)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, size, size, 3)))
  images = jax.random.uniform(jax.random.key(1), (args.batch, size, size, 3))
  for layer in range(len(model.layers)):
    for targets in (None, "all"):
      e = explain(model, variables, images, targets, layer=layer)
      idx = e["explained_class_idx"]
      evidence = jnp.take_along_axis(e["evidence"], idx.reshape(args.batch, -1), 1).reshape(
          idx.shape
      )
      total = jnp.sum(e["contribution_map_sum"], axis=(-2, -1))
      emit(
          {
              "name": f"{args.arch}/completeness/{args.form}",
              "layer": layer,
              "targets": targets or "predicted",
              "max_error_rel_l1": float(completeness_error(e).max()),
              "max_error_rel_evidence": float(
                  (jnp.abs(total - evidence) / jnp.abs(evidence)).max()
              ),
          }
      )


if __name__ == "__main__":
  main()
