"""XLA CPU flags a user can set, measured on the 9L-S train step, the λ > 0 step and the maps.

    PYTHONPATH=.:benchmarks python benchmarks/xla_cpu_flags.py --rounds 2 --steps 4
    PYTHONPATH=.:benchmarks python benchmarks/xla_cpu_flags.py --settings baseline,onednn

``XLA_FLAGS`` is read once per process, so every setting runs in its own child process; the
parent runs the settings in alternation (``--rounds`` times, the order rotated each round), so a
change of machine load hits all of them alike. Each child compiles and times, on the same random
9L-S weights and batch:

* ``train``: the plain Adam/BCE train step (``benchmarks/dau_forms.py``'s);
* ``lambda``: the step with the dynamic-matrix L1 regulariser (``benchmarks/regularizer_step.py``'s
  ``new``), so ``lambda_over_train`` is the λ-step ratio under that setting;
* ``maps``: contribution maps of the predicted class at the input (``codajax.explain.explain``);
* ``eager``: the first eager ``model.apply`` on the batch (one small program per operation,
  each compiled on first use: how most test code runs), compile included.

It also records the logits, and the parent reports each setting's largest logit difference
from the baseline's (a flag that changes the numbers is not "safe"). Per setting the parent
prints the median step times and the median over rounds of the per-round ratio to the baseline
(``speedup`` > 1: faster than without flags), and the same for each program's compile time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SETTINGS = {
    "baseline": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "no_xnnpack": "--xla_cpu_use_xnnpack=false",
    "xnn_dot": "--xla_cpu_experimental_xnn_fusion_type=dot",
    "xnn_graph": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "fast_runtime": "--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_RUNTIME",
    "no_multi_thread_eigen": "--xla_cpu_multi_thread_eigen=false",
    # tests/conftest.py's flag: the suite is compile-bound, so it uses the older loop emitters
    # for fusions (faster to compile).
    "test_suite": "--xla_cpu_use_fusion_emitters=false",
}
WORKLOADS = ("train", "lambda", "maps", "eager", "train_compile", "lambda_compile", "maps_compile")


def child(arch: str, batch: int, steps: int, logits_path: str) -> dict:
  """Times the workloads in this process (its ``XLA_FLAGS`` already set); returns step seconds."""
  import jax
  import numpy as np
  import optax

  import dau_forms
  import regularizer_step
  from codajax.explain import explain
  from codajax.models import ARCHITECTURES, get_model
  from common import compile_and_time

  spec = ARCHITECTURES[arch]
  shape = (batch, spec.image_size, spec.image_size, spec.image_channels)
  images = jax.random.uniform(jax.random.key(1), shape)
  model = get_model(arch)
  labels = jax.random.randint(jax.random.key(2), (batch,), 0, model.num_classes)
  params = jax.jit(model.init)(jax.random.key(0), images[:1])["params"]
  np.save(logits_path, np.asarray(jax.jit(model.apply)({"params": params}, images)))
  tx = optax.adam(2.5e-4)

  def state():
    return jax.tree.map(jax.numpy.copy, (params, tx.init(params)))

  maps = jax.jit(
      lambda variables, images: (
          variables,
          explain(model, variables, images)["contribution_map_sum"],
      )
  )
  timings = {
      "train": compile_and_time(
          dau_forms.make_train_step(model, tx), state(), images, labels, steps=steps
      ),
      "lambda": compile_and_time(
          regularizer_step.make_step(model, tx, "new"),
          state(),
          images,
          labels,
          jax.random.key(3),
          steps=steps,
      ),
      "maps": compile_and_time(maps, {"params": params}, images, steps=steps),
  }
  start = time.perf_counter()
  jax.block_until_ready(model.apply({"params": params}, images))
  eager_s = time.perf_counter() - start
  return {
      **{name: t["step_s"] for name, t in timings.items()},
      **{f"{name}_compile": t["compile_s"] for name, t in timings.items()},
      "eager": eager_s,
  }


def run_child(setting: str, args, logits_path: str) -> dict:
  """One child process under ``SETTINGS[setting]``; its JSON result."""
  env = dict(os.environ, XLA_FLAGS=SETTINGS[setting])
  command = [
      sys.executable,
      __file__,
      "--child",
      "--arch",
      args.arch,
      "--batch",
      str(args.batch),
      "--steps",
      str(args.steps),
      "--logits",
      logits_path,
  ]
  out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--arch", default="9L-S")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--steps", type=int, default=4)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--settings", default=",".join(SETTINGS))
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--logits", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.arch, args.batch, args.steps, args.logits)))
    return

  import numpy as np

  settings = args.settings.split(",")
  unknown = sorted(set(settings) - set(SETTINGS))
  if unknown or settings[0] != "baseline":
    raise SystemExit(f"settings must start with baseline and be among {list(SETTINGS)}: {unknown}")
  runs = {s: [] for s in settings}
  with tempfile.TemporaryDirectory() as tmp:
    logits = {s: os.path.join(tmp, f"{s}.npy") for s in settings}
    for round_index in range(args.rounds):
      shift = round_index % len(settings)
      for setting in settings[shift:] + settings[:shift]:
        result = run_child(setting, args, logits[setting])
        runs[setting].append(result)
        print(json.dumps({"round": round_index, "setting": setting, **result}), flush=True)
    reference = np.load(logits["baseline"]).astype(np.float64)
    differences = {
        s: float(np.abs(np.load(logits[s]) - reference).max() / np.abs(reference).max())
        for s in settings
    }
  for setting in settings:
    record = {"setting": setting, "xla_flags": SETTINGS[setting]}
    for workload in WORKLOADS:
      times = [r[workload] for r in runs[setting]]
      ratios = [b[workload] / r[workload] for b, r in zip(runs["baseline"], runs[setting])]
      record[f"{workload}_ms"] = round(1e3 * float(np.median(times)), 1)
      record[f"{workload}_speedup"] = round(float(np.median(ratios)), 3)
    record["lambda_over_train"] = round(
        float(np.median([r["lambda"] / r["train"] for r in runs[setting]])), 3
    )
    record["logits_max_relative_difference"] = differences[setting]
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
  main()
