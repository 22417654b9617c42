"""Scores of studies/bcosify.md: test accuracy, the steps B-cosification needs, ground-truth scores.

For each seed: (a) the conventional ``resnet-<seed>`` run with post-hoc methods, (b) the B-cos
``bcos-<seed>`` run and (c) the B-cosified ``bcosify-<seed>`` run with their own contribution maps
("Ours", the encoded input's contributions summed over channels). Scores, all on the test split of
``shapes/train20000_test2000_seed0_light``, true class: grid localisation (``n_grids`` 3×3 grids of
confident images, the share of positive attribution in the explained tile), mask energy and the
pointing game on the first ``n_images`` test images; (c)'s accuracy right after conversion,
before any fine-tuning. Steps: the first logged step at which (c)'s
test accuracy (``evals/accuracy/top1``, every 25 steps) reaches (b)'s final test accuracy.

    python studies/bcosify_scores.py --out runs/bcosify --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from codajax import metrics
from codajax.attribution import METHODS
from codajax.data.pipeline import load_examples
from codajax.explain import explain
from codajax.runs import restore, start_params
from codajax.train.metrics_log import read_metrics

DATASET = "shapes/train20000_test2000_seed0_light"
POST_HOC = ("IxG", "IntGrad", "GCam", "Occ5")
SETTINGS = {"IntGrad": {"n_steps": 10}}


def _gcam_fn(model, feature_module: str):
  """Grad-CAM's ``(images, delta) -> (logits, features)`` at the output of ``feature_module``."""

  def fn(variables, images, delta):
    captured = {}

    def add_delta(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.method_name == "__call__" and context.module.name == feature_module:
        out = captured["features"] = out + delta
      return out

    with nn.intercept_methods(add_delta):
      logits = model.apply(variables, images)
    return logits, captured["features"]

  return fn


def _maps(run, method: str, images, targets):
  """(N, [T,] H, W) maps of ``targets`` ((N,) or (N, T) class indices)."""
  variables = run.variables
  if method == "Ours":
    return explain(run.model, variables, images, targets).contribution_map_sum
  if method == "GCam":
    last = f"stage_{len(run.model.spec.stage_sizes)}"
    fn = jax.tree_util.Partial(_gcam_fn(run.model, last), variables)
  else:
    fn = jax.tree_util.Partial(run.model.apply, variables)
  maps = METHODS[method](fn, images, targets, **SETTINGS.get(method, {}))
  return jnp.sum(maps, axis=-1)


def _logits(run, images, batch: int = 250):
  apply = jax.jit(run.model.apply)
  return np.concatenate(
      [
          np.asarray(apply(run.variables, images[i : i + batch]))
          for i in range(0, len(images), batch)
      ]
  )


def score(run, methods, test, n_images: int, n_grids: int, grid: int) -> dict:
  """Accuracy and, per method, localisation, mask energy and pointing game."""
  images, labels, masks = test
  logits = _logits(run, images)
  out = {"test_accuracy": float(np.mean(logits.argmax(-1) == labels))}
  order = metrics.select_confident_images(logits, labels)
  n_grids = min(n_grids, len(order) // (grid * grid))  # a weak model has fewer confident images
  out["n_grids"] = n_grids
  grids = metrics.make_grids(images, labels, order, n_grids=n_grids, grid=grid)
  first, first_labels = images[:n_images], labels[:n_images]
  for method in methods:
    localisation = jnp.nan
    if n_grids:
      if method == "Ours":  # explain takes (N,) targets: one call per tile
        tiles = [
            _maps(run, method, grids.images, jnp.asarray(grids.labels[:, k]))
            for k in range(grid * grid)
        ]
        tile_maps = jnp.stack(tiles, axis=1)
      else:  # (G, n²) targets: perturbation passes shared by the tiles' classes
        tile_maps = _maps(run, method, grids.images, jnp.asarray(grids.labels))
      localisation = metrics.localisation_metric(tile_maps, grid)
    maps = _maps(run, method, first, jnp.asarray(first_labels))
    out[method] = {
        "localisation": float(jnp.mean(localisation)),
        "mask_energy": float(jnp.mean(metrics.mask_energy(maps, masks[:n_images]))),
        "pointing_game": float(jnp.mean(metrics.pointing_game(maps, masks[:n_images]))),
    }
  return out


def steps_to_reach(workdir: str, target: float) -> tuple[int | None, list[tuple[int, float]]]:
  """The first step whose logged test accuracy is >= ``target``, and the whole curve."""
  curve = [
      (int(row["step"]), float(row["evals/accuracy/top1"]))
      for row in read_metrics(workdir)
      if "evals/accuracy/top1" in row
  ]
  reached = [step for step, accuracy in curve if accuracy >= target]
  return (reached[0] if reached else None), curve


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default="runs/bcosify")
  parser.add_argument("--seeds", default="0,1")
  parser.add_argument("--n_images", type=int, default=96)
  parser.add_argument("--n_grids", type=int, default=6)
  parser.add_argument("--grid", type=int, default=3)
  args = parser.parse_args()
  test = load_examples(DATASET, "test", data_dir=os.environ.get("CODAJAX_DATA_DIR"))
  test = (
      jnp.asarray(test["image"], jnp.float32) / 255.0,
      np.asarray(test["label"]),
      jnp.asarray(test["object_mask"], jnp.float32),
  )
  results = {}
  for seed in args.seeds.split(","):
    runs = {
        "conventional": (f"{args.out}/resnet-seed{seed}", POST_HOC),
        "bcos": (f"{args.out}/bcos-seed{seed}", ("Ours",)),
        "bcosify": (f"{args.out}/bcosify-seed{seed}", ("Ours",)),
    }
    seed_results = {}
    for name, (workdir, methods) in runs.items():
      run = restore(workdir)
      seed_results[name] = {
          "step": run.step,
          **score(run, methods, test, args.n_images, args.n_grids, args.grid),
      }
      print(name, seed, json.dumps(seed_results[name]), flush=True)
    converted = restore(runs["bcosify"][0])  # the model, with the conventional params converted
    converted.params = start_params(converted.model, restore(runs["conventional"][0]))
    seed_results["bcosify"]["converted_test_accuracy"] = float(
        np.mean(_logits(converted, test[0]).argmax(-1) == test[1])
    )
    target = seed_results["bcos"]["test_accuracy"]
    reached, curve = steps_to_reach(runs["bcosify"][0], target)
    seed_results["bcosify"]["steps_to_bcos_accuracy"] = reached
    seed_results["bcosify"]["curve"] = curve
    print(
        f"seed {seed}: B-cosified reaches {target:.4f} at step {reached} "
        f"(B-cos from scratch: {seed_results['bcos']['step']} steps)",
        flush=True,
    )
    results[seed] = seed_results
  with open(f"{args.out}/scores.json", "w") as f:
    json.dump(results, f, indent=1)
  print(f"wrote {args.out}/scores.json")


if __name__ == "__main__":
  main()
