"""Contribution-map throughput (maps/s) of ``codajax.explain``: old path vs new, DAU forms.

    python benchmarks/explain_throughput.py --batches 8 --layers 0,4          # CPU
    python benchmarks/explain_throughput.py --batches 256 --layers 0,4        # GPU

One map = one (image, class) contribution map over the explained layer's
input. For ``all`` a batch of N images gives N·K maps. Every setting is timed
in the same process for

* ``old``: the former two-pass path, kept here for the comparison: all layer
  inputs from ``explanation_inputs``, then a VJP of ``forward_from`` (the
  model's own DAU form);
* ``new/<form>``: :func:`codajax.explain.explain` with ``form`` = ``model``
  (the model's implicit form), ``explicit`` and ``auto`` (the per-call rule:
  explicit for ``targets="all"``, the model's form otherwise).

Prints JSON lines, then ``new_auto_over_old`` and ``explicit_over_implicit``
ratios per (layer, targets).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from codajax.explain import explain
from codajax.models import ARCHITECTURES, get_model
from common import compile_and_time, emit, throughput_record


def old_explain(model, variables, images, targets, layer):
  """The contribution maps as codajax formerly computed them (for the ratio)."""
  inputs = model.apply(variables, images, method="explanation_inputs")
  h = jax.lax.stop_gradient(inputs[layer])
  evidence, vjp = jax.vjp(
      lambda h: model.apply(variables, h, layer, True, False, method="forward_from"), h
  )
  batch, num_classes = evidence.shape
  if targets == "all":
    one_hots = jnp.broadcast_to(
        jnp.eye(num_classes, dtype=evidence.dtype)[:, None], (num_classes, batch, num_classes)
    )
    weights = jnp.moveaxis(jax.vmap(lambda c: vjp(c)[0])(one_hots), 0, 1)
    contributions = weights * h[:, None]
  else:
    weights = vjp(jax.nn.one_hot(jnp.argmax(evidence, -1), num_classes))[0]
    contributions = weights * h
  return jnp.sum(contributions, axis=-1)


def time_path(arch: str, path: str, targets: str, layer: int, batch: int, steps: int) -> dict:
  size = ARCHITECTURES[arch].image_size
  images = jax.random.uniform(jax.random.key(1), (batch, size, size, 3))
  model = get_model(arch)
  variables = jax.jit(model.init)(jax.random.key(0), images[:1])
  mode = None if targets == "predicted" else "all"

  if path == "old":

    def maps(variables, images):
      return old_explain(model, variables, images, targets, layer)

  else:
    form = path.split("/")[1]

    def maps(variables, images):
      return explain(model, variables, images, mode, layer=layer, form=form)["contribution_map_sum"]

  run = jax.jit(lambda variables, images: (variables, maps(variables, images)))
  timing = compile_and_time(run, variables, images, steps=steps)
  maps_per_batch = batch * (model.num_classes if mode == "all" else 1)
  record = throughput_record(
      f"{arch}/explain/layer{layer}/{targets}/{path}",
      batch,
      timing,
      path=path,
      targets=targets,
      layer=layer,
  )
  record["maps_per_s"] = round(maps_per_batch / timing["step_s"], 2)
  return record


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--arch", default="9L-S")
  parser.add_argument("--batches", default="8")
  parser.add_argument("--layers", default="0,4")
  parser.add_argument("--targets", default="predicted,all")
  parser.add_argument("--paths", default="old,new/model,new/explicit,new/auto")
  parser.add_argument("--steps", type=int, default=5)
  args = parser.parse_args()
  paths = args.paths.split(",")
  for batch in map(int, args.batches.split(",")):
    for layer in map(int, args.layers.split(",")):
      for targets in args.targets.split(","):
        records = {p: time_path(args.arch, p, targets, layer, batch, args.steps) for p in paths}
        for record in records.values():
          emit(record)
        rate = {p: r["maps_per_s"] for p, r in records.items()}
        name = f"{args.arch}/explain/layer{layer}/{targets}"
        if "old" in rate and "new/auto" in rate:
          emit(
              {
                  "name": f"{name}/new_auto_over_old",
                  "batch": batch,
                  "ratio": round(rate["new/auto"] / rate["old"], 3),
              }
          )
        if "new/model" in rate and "new/explicit" in rate:
          emit(
              {
                  "name": f"{name}/explicit_over_implicit",
                  "batch": batch,
                  "ratio": round(rate["new/explicit"] / rate["new/model"], 3),
              }
          )


if __name__ == "__main__":
  main()
