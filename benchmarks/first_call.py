"""The first minute of a user: first and later call times of eager vs jitted explanations.

For ``explain`` (predicted class, every class, the predicted class at a middle layer) and every
preset of ``codajax.attribution.METHODS``, each row is measured twice, eagerly
(``explain(...)``, ``METHODS[name](Partial(model.apply, variables), ...)``) and jitted
(``explain_jit``, ``jax.jit`` with the parameters as an argument), each in a fresh child process
(no compiled program shared) with JAX's persistent compilation cache off: "first" is the first
call (tracing and compiling included). "later" is the median of further calls on other images of
the same shape, measured in a third child process that runs both entries once and then calls them
in alternation (eager then jitted, jitted then eager, ...; at least 3 rounds, more while the
later calls of the row have taken under 4 s, at most 30), so a change of load on the machine
falls on both alike.

The model: the trained digits run (``codajax.train.restore("runs/digits")``) when it exists,
else freshly initialised digits-5L parameters (same shapes, so the same programs); 4 test-size
images of 16×16 from scikit-learn's digits. The table says which model was used.

    python benchmarks/first_call.py                  # the whole table (~ a few minutes idle)
    python benchmarks/first_call.py --rows IntGrad   # some rows
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from codajax.attribution import METHODS

ROWS = ("explain predicted", "explain all", "explain layer", *METHODS)
RUN = "runs/digits"
MIN_ROUNDS, MAX_ROUNDS, LATER_BUDGET_S = 3, 30, 4.0  # later calls, one eager and one jitted a round


def _setup():
  """``(model, variables, batches, which model)``: 4 batches of 4 digits images (4, 16, 16, 1)."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from codajax.data.builders.digits import upsampled_digits
  from codajax.models import get_model

  if os.path.exists(os.path.join(RUN, "run.json")):
    from codajax import train

    run = train.restore(RUN)
    model, variables, which = run.model, run.variables, f"trained {RUN} (step {run.step})"
  else:
    model = get_model("digits-5L")
    variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 1)))
    which = "freshly initialised digits-5L (no runs/digits)"
  images = upsampled_digits()[0][-16:].astype(np.float32) / 255
  return model, variables, [jnp.asarray(images[i : i + 4]) for i in range(0, 16, 4)], which


def _call(row: str, mode: str, model, variables):
  """``batch -> result`` of ``row`` called ``mode`` ("eager" or "jit")."""
  import jax

  from codajax import attribution
  from codajax.explain import explain, explain_jit

  if row.startswith("explain"):
    targets = "all" if row == "explain all" else None
    layer = model.num_explainable_layers // 2 if row == "explain layer" else 0
    entry = explain if mode == "eager" else explain_jit
    return lambda x: entry(model, variables, x, targets, layer=layer)
  method = attribution.METHODS[row]
  if method.method is attribution.grad_cam:
    last = f"layer_{model.num_explainable_layers - 1}"
    layer = lambda module, name: name == "__call__" and module.path[-1:] == (last,)
    apply = lambda v, x, d: attribution.layer_function(model, v, layer)(x, d)
  else:
    apply = model.apply
  targets = jax.numpy.arange(4) % 10
  if mode == "eager":
    return lambda x: method(jax.tree_util.Partial(apply, variables), x, targets)
  jitted = jax.jit(lambda v, x, t: method(jax.tree_util.Partial(apply, v), x, t))
  return lambda x: jitted(variables, x, targets)


def _child(row: str, mode: str) -> dict:
  """Times one row in this (fresh) process: the first call of ``mode``, or (``mode="later"``)
  later calls of both entries in alternation."""
  import jax

  model, variables, batches, which = _setup()
  if mode != "later":
    call = _call(row, mode, model, variables)
    start = time.perf_counter()
    jax.block_until_ready(call(batches[0]))
    return dict(row=row, mode=mode, first_s=time.perf_counter() - start, model=which)
  calls = {entry: _call(row, entry, model, variables) for entry in ("eager", "jit")}
  for call in calls.values():
    jax.block_until_ready(call(batches[0]))
  later = {"eager": [], "jit": []}
  rounds = 0
  while rounds < MIN_ROUNDS or (
      rounds < MAX_ROUNDS and sum(later["eager"]) + sum(later["jit"]) < LATER_BUDGET_S
  ):
    batch = batches[1 + rounds % (len(batches) - 1)]
    for entry in ("eager", "jit") if rounds % 2 == 0 else ("jit", "eager"):
      start = time.perf_counter()
      jax.block_until_ready(calls[entry](batch))
      later[entry].append(time.perf_counter() - start)
    rounds += 1
  medians = {f"{entry}_later_s": statistics.median(times) for entry, times in later.items()}
  return dict(row=row, mode=mode, rounds=rounds, model=which, **medians)


def _measure(row: str, mode: str) -> dict:
  """Runs :func:`_child` in a fresh process, persistent compilation cache off."""
  env = {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"}
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  done = subprocess.run(
      [sys.executable, __file__, "--child", row, "--mode", mode],
      env=env,
      capture_output=True,
      text=True,
      check=True,
  )
  return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=ROWS)
  parser.add_argument("--child", choices=ROWS, help=argparse.SUPPRESS)
  parser.add_argument("--mode", choices=("eager", "jit", "later"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(_child(args.child, args.mode)))
    return
  print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
  print(
      "| call | eager first | jitted first | ratio | eager later | jitted later | ratio | rounds |"
  )
  print("|---|---|---|---|---|---|---|---|")
  which = None
  for row in args.rows:
    eager, jitted, later = (_measure(row, mode) for mode in ("eager", "jit", "later"))
    which = eager["model"]
    print(
        f"| {row} | {eager['first_s']:.2f} s | {jitted['first_s']:.2f} s | "
        f"{eager['first_s'] / jitted['first_s']:.2f} | {later['eager_later_s']:.3f} s | "
        f"{later['jit_later_s']:.3f} s | {later['eager_later_s'] / later['jit_later_s']:.2f} | "
        f"{later['rounds']} |",
        flush=True,
    )
  print(f"model: {which}; load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
  main()
