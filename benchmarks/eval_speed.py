"""Evaluation speed per method, before and after the evaluators package (same process).

    python benchmarks/eval_speed.py --workdir runs/digits [--methods Ours,Grad,IxG,GCam,Occ5]
        [--n_grids 12] [--n_images 128] [--before bb71697]

"Before" is ``codajax/evaluation.py`` at git revision ``--before`` (loaded from git history):
one ``jax.jit`` per method, every batch's scores and maps copied to the host. "After" is
``codajax.evaluators``: programs compiled ahead of time once per shape, scores gathered once per
method, maps of the first grid only. For each method: localisation grids and pixel-removal
images (attribution + removal curve) per second, steady state (a second pass after the compiling
one), their ratio, and the compile count of the new programs. The machine may be shared:
compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from codajax import data, evaluators  # noqa: E402
from codajax.evaluators import localisation, pixel_removal  # noqa: E402


def _old_module(revision: str):
  """``codajax/evaluation.py`` of ``revision`` as a module (needs the git history)."""
  source = subprocess.run(
      ["git", "show", f"{revision}:codajax/evaluation.py"],
      cwd=ROOT,
      check=True,
      capture_output=True,
      text=True,
  ).stdout
  path = os.path.join(tempfile.mkdtemp(), "old_evaluation.py")
  with open(path, "w") as f:
    f.write(source)
  spec = importlib.util.spec_from_file_location("old_evaluation", path)
  module = importlib.util.module_from_spec(spec)
  sys.modules["old_evaluation"] = module  # dataclasses look their module up
  spec.loader.exec_module(module)
  return module


def _twice(fn):
  """Seconds of the first (compiling) and the second (steady) call of ``fn``."""
  times = []
  for _ in range(2):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return times


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="runs/digits")
  parser.add_argument("--methods", default="Ours,Grad,IxG,GCam,Occ5")
  parser.add_argument("--n_grids", type=int, default=12)
  parser.add_argument("--n_images", type=int, default=128)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--before", default="bb71697")
  args = parser.parse_args(argv)

  old = _old_module(args.before)
  run = evaluators.load_run(args.workdir)
  data_dir = run.config.data_dir or None
  spec = data.dataset_info(run.config.dataset, data_dir=data_dir)
  ctx = evaluators.make_context(
      run.model, run.params, spec, data_dir=data_dir, eval_batch_size=run.config.eval_batch_size
  )
  grid_set = localisation.grids(ctx, args.n_grids, 3)
  examples = pixel_removal.examples(ctx, min(args.n_images, ctx.num_test))
  n_points = pixel_removal.removal_points(spec.image_shape[:2])
  mesh, variables = ctx.mesh, ctx.variables
  info = old.inspect_model(run.model, variables, spec.image_shape)
  old_grids = old.GridSet(grid_set.images, grid_set.labels, grid_set.indices, grid_set.n_confident)
  grid_batch = old._device_batch_size(max(1, args.batch_size // 9), mesh)
  image_batch = old._device_batch_size(args.batch_size, mesh)
  removal = old.removal_step(run.model, info, n_points)
  print(
      f"{jax.device_count()} x {jax.devices()[0].device_kind}; {len(grid_set.images)} grids, "
      f"{len(examples['image'])} removal images, batch {args.batch_size}"
  )
  print(
      f"{'method':<8}{'grids/s before':>16}{'after':>9}{'ratio':>7}"
      f"{'images/s before':>17}{'after':>9}{'ratio':>7}{'compiles':>10}"
  )
  for method in evaluators.known_methods() if args.methods == "all" else args.methods.split(","):
    attribute = old.attribution_function(run.model, info, method, chunk=4)
    step = old.localisation_step(attribute, 3)
    _, loc_before = _twice(
        lambda: old.localisation(step, variables, old_grids, grid_batch, mesh, "before")
    )
    _, img_before = _twice(
        lambda: old.image_metrics(
            attribute, removal, variables, examples, image_batch, mesh, "before", False
        )[0]
    )
    loc_eval = localisation.Evaluator(
        n_grids=args.n_grids, methods=method, batch_size=args.batch_size
    )
    img_eval = pixel_removal.Evaluator(
        n_images=args.n_images, methods=method, batch_size=args.batch_size
    )
    fresh = lambda: ctx.with_variables(variables)  # same programs, no memoized results

    def after(evaluator):
      c = fresh()
      c.memo[("grids", args.n_grids, 3)] = grid_set
      c.memo[("examples", len(examples["image"]))] = examples
      return [v for _, v in evaluator.run(c) if isinstance(v, np.ndarray)]

    _, loc_after = _twice(lambda: after(loc_eval))
    _, img_after = _twice(lambda: after(img_eval))
    compiles = sum(n for label, n in ctx.programs.counts.items() if f"/{method}" in label)
    g, n = len(grid_set.images), len(examples["image"])
    print(
        f"{method:<8}{g / loc_before:>16.2f}{g / loc_after:>9.2f}{loc_before / loc_after:>7.2f}"
        f"{n / img_before:>17.1f}{n / img_after:>9.1f}{img_before / img_after:>7.2f}"
        f"{compiles:>10}",
        flush=True,
    )
  print("compiles per program:", ctx.programs.counts)


if __name__ == "__main__":
  main()
