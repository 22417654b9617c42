"""Contribution-map throughput (maps/s) of ``codajax.explain``, implicit vs explicit form.

    python benchmarks/explain_throughput.py --batches 8 --targets predicted,all     # CPU
    python benchmarks/explain_throughput.py --batches 256 --targets predicted,all   # GPU

One map = one (image, class) contribution map over the encoded input. For
``all`` a batch of N images gives N·K maps. Prints JSON lines and the
implicit/explicit ratio per setting.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp

from codajax.explain import explain
from codajax.models import ARCHITECTURES, get_model
from common import compile_and_time, emit, throughput_record


def time_explain(arch: str, form: str, targets: str, batch: int, steps: int) -> dict:
  size = ARCHITECTURES[arch].image_size
  images = jax.random.uniform(jax.random.key(1), (batch, size, size, 3))
  model = get_model(arch, form=form)
  variables = jax.jit(model.init)(jax.random.key(0), images[:1])
  mode = None if targets == "predicted" else "all"

  @jax.jit
  def run(variables, images):
    maps = explain(model, variables, images, mode)["contribution_map_sum"]
    return variables, maps

  timing = compile_and_time(run, variables, images, steps=steps)
  maps_per_batch = batch * (model.num_classes if mode == "all" else 1)
  record = throughput_record(f"{arch}/explain/{targets}/{form}", batch, timing, form=form,
                             targets=targets)
  record["maps_per_s"] = round(maps_per_batch / timing["step_s"], 2)
  return record


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--arch", default="9L-S")
  parser.add_argument("--batches", default="8")
  parser.add_argument("--targets", default="predicted,all")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--skip_explicit", action="store_true")
  args = parser.parse_args()
  for batch in map(int, args.batches.split(",")):
    for targets in args.targets.split(","):
      forms = ("implicit",) if args.skip_explicit else ("explicit", "implicit")
      records = {form: time_explain(args.arch, form, targets, batch, args.steps) for form in forms}
      for record in records.values():
        emit(record)
      if "explicit" in records:
        emit({"name": f"{args.arch}/explain/{targets}/implicit_over_explicit", "batch": batch,
              "ratio": round(records["implicit"]["maps_per_s"] / records["explicit"]["maps_per_s"], 3)})


if __name__ == "__main__":
  main()
