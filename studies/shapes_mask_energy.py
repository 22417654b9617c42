"""Where the positive attribution outside the object mask lies: Ours vs IxG vs IntGrad.

    python studies/shapes_mask_energy.py runs/pure/shapes-T10 runs/pure/shapes-T100 runs/pure/shapes-T1000

For each run, on the first ``--n`` test images (true class), prints the mask energy (share of the
positive channel-summed attribution inside the object mask) against the mask grown by 0, 1 and 2
pixels (a diagnostic: the papers' metric is the 0-px column), and for "Ours" how the positive mass
outside the mask splits between the ``x`` and ``1 − x`` input channels. Settings as the study's
eval (IntGrad with 10 steps).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this clone

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from codajax import data
from codajax.evaluators.methods import attribution_function, inspect_model
from codajax.train import restore


def grown(masks: np.ndarray, pixels: int) -> np.ndarray:
  """Masks (N, H, W) dilated by ``pixels`` (8-connected)."""
  if pixels == 0:
    return masks
  structure = np.ones((3, 3), bool)
  return np.stack([ndimage.binary_dilation(m, structure, iterations=pixels) for m in masks])


def energy(maps: np.ndarray, masks: np.ndarray) -> float:
  """Mean over images of the positive mass inside ``masks``: maps (N, H, W), masks (N, H, W)."""
  positive = np.maximum(maps, 0)
  total = positive.sum(axis=(1, 2))
  inside = (positive * masks).sum(axis=(1, 2))
  return float(np.mean(np.where(total > 0, inside / np.where(total > 0, total, 1), 0)))


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("runs", nargs="+")
  parser.add_argument("--n", type=int, default=128)
  args = parser.parse_args()
  print(
      "| run | method | mask energy, mask +0 px | +1 px | +2 px | Ours: outside mass in x / 1 − x |"
  )
  print("|---|---|---|---|---|---|")
  for workdir in args.runs:
    run = restore(workdir)
    examples = data.load_examples(run.config.dataset, "test", indices=np.arange(args.n))
    images, labels = jnp.asarray(examples["image"]), jnp.asarray(examples["label"])
    masks = examples["object_mask"].astype(bool)
    variables = {"params": run.params}
    info = inspect_model(run.model, variables, images.shape[1:])
    for method, settings in (("Ours", None), ("IxG", None), ("IntGrad", {"n_steps": 10})):
      fn = jax.jit(attribution_function(run.model, info, method, settings=settings))
      maps = np.asarray(fn(variables, images, labels))  # (N, H, W, C')
      summed = maps.sum(axis=-1)
      scores = [energy(summed, grown(masks, p)) for p in (0, 1, 2)]
      split = ""
      if method == "Ours":
        outside = ~masks
        positive = np.maximum(summed, 0) * outside
        share = maps * (summed > 0)[..., None] * outside[..., None]
        channels = maps.shape[-1] // 2
        direct, inverse = share[..., :channels].sum(), share[..., channels:].sum()
        split = f"{direct / positive.sum():.2f} / {inverse / positive.sum():.2f}"
      print(
          f"| {os.path.basename(workdir.rstrip('/'))} | {method} | "
          + " | ".join(f"{s:.3f}" for s in scores)
          + f" | {split} |",
          flush=True,
      )


if __name__ == "__main__":
  main()
