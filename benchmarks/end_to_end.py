"""End-to-end training throughput with the real input pipeline vs the step alone.

    python benchmarks/end_to_end.py --dataset shapes --arch 9L-S --batch 32 --steps 10
    python benchmarks/end_to_end.py --dataset cifar10 --batch 1024 --workers 8 --steps 50

Runs the jitted, donated, mesh-sharded train step of ``codajax.train`` (a) on
one fixed device batch and (b) fed by ``codajax.data.train_loader`` (uint8
batches, host→device transfer, augmentation), and prints both img/s and their
ratio: a ratio near 1 means the pipeline keeps up with the step.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import optax

from codajax import data
from codajax.models import get_model
from codajax import parallel
from codajax.train.step import TrainState, make_train_step
from common import emit


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dataset", default="shapes")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--arch", default="9L-S")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--workers", type=int, default=0)
  parser.add_argument("--dtype", default="float32")
  args = parser.parse_args()

  spec = data.dataset_info(args.dataset, data_dir=args.data_dir)
  model = get_model(
      args.arch,
      num_classes=spec.num_classes,
      image_channels=spec.image_shape[-1],
      dtype=jnp.bfloat16 if args.dtype == "bfloat16" else None,
  )
  mesh = parallel.make_mesh()
  tx = optax.adam(2.5e-4)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, *spec.image_shape)))["params"]
  state = parallel.replicate(
      TrainState(
          step=jnp.zeros((), jnp.int32),
          params=params,
          opt_state=tx.init(params),
          rng=jax.random.key_data(jax.random.key(1)),
      ),
      mesh,
  )
  step = make_train_step(model, tx, mesh=mesh)
  loader = data.train_loader(
      args.dataset,
      global_batch_size=args.batch,
      seed=0,
      data_dir=args.data_dir,
      worker_count=args.workers,
  )

  fixed = parallel.shard_batch(next(loader), mesh)
  state, _ = step(state, fixed)  # compile
  jax.block_until_ready(state)

  start = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = step(state, fixed)
  jax.block_until_ready(metrics)
  step_only = args.batch * args.steps / (time.perf_counter() - start)

  start = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = step(state, parallel.shard_batch(next(loader), mesh))
  jax.block_until_ready(metrics)
  end_to_end = args.batch * args.steps / (time.perf_counter() - start)
  loader.close()

  common = {
      "arch": args.arch,
      "dataset": args.dataset,
      "batch": args.batch,
      "workers": args.workers,
      "dtype": args.dtype,
  }
  emit({"name": "train/step_only", "img_per_s": round(step_only, 2), **common})
  emit({"name": "train/end_to_end", "img_per_s": round(end_to_end, 2), **common})
  emit(
      {
          "name": "train/end_to_end_over_step_only",
          "ratio": round(end_to_end / step_only, 3),
          **common,
      }
  )


if __name__ == "__main__":
  main()
