"""Per-layer cost of the two DAU forms in a train step, from XLA's cost analysis.

    python benchmarks/form_per_layer.py --arch 9L-S --batch 8 [--time_steps 3] [--fusions]

For every CoDA layer of the architecture, at its input shape for ``--batch`` images, compiles the
layer's forward + backward (gradients with respect to the parameters and the input, as inside a
train step) in the implicit and the explicit form and prints XLA's FLOPs and bytes accessed for
each, the form with fewer FLOPs, and (with ``--time_steps``) the measured time of each layer's
step in the same process, so the FLOP-based choice can be checked against the clock.

``--fusions`` also lists, for the implicit form, every convolution of the compiled step with the
size of its output (MB) and the other operations XLA fused with it (``[]``: the convolution is
alone in its fusion, so its whole output is written to memory and read back by its consumer).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time

import jax
import jax.numpy as jnp

from codajax.models import ARCHITECTURES
from codajax.nn import dau


def layer_step(form: str, stride: int, padding: int | None):
  """``(params, x) -> (grads, dx)`` of ``sum(dau_conv(params, x)²)`` in ``form``."""

  def loss(params, x):
    out = dau.dau_conv(params, x, stride=stride, padding=padding, form=form)
    return jnp.sum(jnp.square(out))

  return jax.jit(jax.grad(loss, argnums=(0, 1)))


def cost(compiled) -> tuple[float, float]:
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, list) else analysis
  return float(analysis.get("flops", 0.0)), float(analysis.get("bytes accessed", 0.0))


_BOOKKEEPING_OPS = {"parameter", "constant", "bitcast", "tuple", "get-tuple-element", "convolution"}


def convolution_fusions(compiled) -> list[dict]:
  """Every convolution of the optimised HLO: output MB and the other ops of its fusion."""
  found = []
  for computation in compiled.as_text().split("\n\n"):
    outputs = re.findall(r"= f32\[([\d,]+)\]\S* convolution\(", computation)
    if not outputs:
      continue
    fused = "fused" in computation.lstrip().split("\n", 1)[0]  # else the entry computation
    ops = set(re.findall(r"= \S+ ([a-z][\w-]*)\(", computation)) if fused else set()
    ops -= _BOOKKEEPING_OPS
    for shape in outputs:
      numbers = [int(n) for n in shape.split(",")]
      megabytes = 4 * math.prod(numbers) / 1e6  # float32
      found.append({"output": numbers, "mb": round(megabytes, 2), "fused_with": sorted(ops)})
  return found


def seconds_per_call(fn, *args, steps: int) -> float:
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(steps):
    jax.block_until_ready(fn(*args))
  return (time.perf_counter() - start) / steps


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--arch", default="9L-S")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--time_steps", type=int, default=0)
  parser.add_argument(
      "--fusions", action="store_true", help="list the implicit step's convolutions"
  )
  args = parser.parse_args()
  arch = ARCHITECTURES[args.arch]
  size, channels = arch.image_size, 2 * arch.image_channels
  key = jax.random.PRNGKey(0)
  totals = {"implicit": [0.0, 0.0], "explicit": [0.0, 0.0]}
  for index, spec in enumerate(arch.layers):
    key, k_params, k_x = jax.random.split(key, 3)
    params = dau.init_dau_params(k_params, channels, spec.features, spec.rank, spec.kernel_size)
    x = jax.random.uniform(k_x, (args.batch, size, size, channels))
    record = {
        "layer": index,
        "in": [size, size, channels],
        "features": spec.features,
        "rank": spec.rank,
        "k": spec.kernel_size,
        "patch": channels * spec.kernel_size**2,
    }
    for form in ("implicit", "explicit"):
      step = layer_step(form, spec.stride, spec.padding)
      compiled = step.lower(params, x).compile()
      flops, bytes_ = cost(compiled)
      if args.fusions and form == "implicit":
        record["implicit_convolutions"] = convolution_fusions(compiled)
      record[f"{form}_gflop"] = round(flops / 1e9, 4)
      record[f"{form}_mb"] = round(bytes_ / 1e6, 2)
      if args.time_steps:
        seconds = seconds_per_call(step, params, x, steps=args.time_steps)
        record[f"{form}_ms"] = round(1e3 * seconds, 2)
        totals[form][1] += seconds
      totals[form][0] += flops
    record["fewer_flops"] = min(("implicit", "explicit"), key=lambda f: record[f"{f}_gflop"])
    if args.time_steps:
      record["faster"] = min(("implicit", "explicit"), key=lambda f: record[f"{f}_ms"])
    print(json.dumps(record), flush=True)
    size = dau.output_size(
        size, spec.kernel_size, spec.stride, dau.resolve_padding(spec.padding, spec.kernel_size)
    )
    channels = spec.features
  print(
      json.dumps(
          {
              "total_gflop": {f: round(v[0] / 1e9, 3) for f, v in totals.items()},
              "total_ms": {f: round(1e3 * v[1], 1) for f, v in totals.items()},
          }
      )
  )


if __name__ == "__main__":
  main()
