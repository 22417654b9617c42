"""Train-step time with the dynamic-matrix L1 regulariser (λ > 0) against a plain step (λ = 0).

    python benchmarks/regularizer_step.py --archs digits-5L,9L-S --batch 16

Three steps are timed in the same process (Adam, BCE loss, the same batch):

* ``plain``: λ = 0, ``model.apply`` only;
* ``old``: λ > 0 as codajax formerly ran it, kept here for the ratio: logits from
  ``model.apply``, every layer input from a second pass
  (``explanation_inputs``), then the VJP of the weights-input stream;
* ``new``: λ > 0 with :func:`codajax.regularizers.logits_and_dynamic_matrix_l1`
  (one forward pass gives the logits and every layer input; the rows come
  from ``jax.linear_transpose`` of the stream).

Prints JSON lines and the ``old_over_plain`` / ``new_over_plain`` step-time ratios.

``--stream_forms explicit,implicit`` instead compiles the ``new`` step once per DAU form of the
weights-input stream (``codajax.regularizers.STREAM_FORM``, the form its transpose runs in) and
times them and ``plain`` in alternation (``common.time_interleaved``):

    python benchmarks/regularizer_step.py --archs 9L-S --batch 8 --stream_forms explicit,implicit
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax

from codajax import regularizers
from codajax.models import ARCHITECTURES, get_model
from codajax.regularizers import logits_and_dynamic_matrix_l1, regularised_classes
from common import compile_and_time, emit, throughput_record, time_interleaved

WEIGHT = 1.0


def old_logits_and_l1(model, params, images, labels, key):
  """The former regulariser: three passes (forward, layer inputs, stream VJP)."""
  variables = {"params": params}
  logits = model.apply(variables, images)
  classes = regularised_classes(labels, model.num_classes, key)
  inputs = model.apply(variables, images, method="explanation_inputs")
  evidence, vjp = jax.vjp(
      lambda h: model.apply(variables, h, 0, inputs, False, method="forward_with_weights_from"),
      jax.lax.stop_gradient(inputs[0]),
  )
  one_hots = jax.nn.one_hot(classes.T, evidence.shape[-1], dtype=evidence.dtype)
  rows = jax.vmap(lambda c: vjp(c)[0])(one_hots)
  return logits, jnp.mean(jnp.abs(rows))


def make_step(model, tx, kind):
  def loss_fn(params, images, labels, key):
    if kind == "plain":
      logits, penalty = model.apply({"params": params}, images), 0.0
    elif kind == "old":
      logits, penalty = old_logits_and_l1(model, params, images, labels, key)
    else:
      logits, penalty = logits_and_dynamic_matrix_l1(model, params, images, labels, key)
    bce = optax.sigmoid_binary_cross_entropy(
        logits, jax.nn.one_hot(labels, logits.shape[-1])
    ).mean()
    return bce + WEIGHT * penalty

  @jax.jit
  def step(state, images, labels, key):
    params, opt_state = state
    grads = jax.grad(loss_fn)(params, images, labels, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  return step


def compare_stream_forms(model, params, images, labels, forms, rounds: int, steps: int) -> dict:
  """Median step ms of ``plain`` and of ``new`` with each stream form, timed in alternation."""
  tx = optax.adam(1e-3)
  key = jax.random.key(3)
  library = regularizers.STREAM_FORM
  calls, flops = {}, {}
  for name, form in [("plain", None)] + [(f"new/{form}", form) for form in forms]:
    regularizers.STREAM_FORM = form or library  # read when the step is traced
    try:
      compiled = (
          make_step(model, tx, "plain" if form is None else "new")
          .lower((params, tx.init(params)), images, labels, key)
          .compile()
      )
    finally:
      regularizers.STREAM_FORM = library
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops[name] = float(cost["flops"]) if cost and "flops" in cost else None
    state = (params, tx.init(params))
    calls[name] = lambda compiled=compiled, state=state: compiled(state, images, labels, key)
  seconds = time_interleaved(calls, rounds=rounds, steps=steps)
  batch = images.shape[0]
  record = {"batch": batch, "calls_each": rounds * steps}
  for name, s in seconds.items():
    record[f"{name}_ms"] = round(1e3 * s, 1)
    if flops[name] is not None:
      record[f"{name}_gflop_per_img"] = round(flops[name] / batch / 1e9, 3)
    if name != "plain":
      record[f"{name}_over_plain"] = round(s / seconds["plain"], 3)
  return record


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--archs", default="digits-5L,9L-S")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--stream_forms", default="", help="e.g. explicit,implicit (see above)")
  parser.add_argument("--rounds", type=int, default=3, help="with --stream_forms")
  args = parser.parse_args()
  for arch in args.archs.split(","):
    spec = ARCHITECTURES[arch]
    model = get_model(arch)
    shape = (args.batch, spec.image_size, spec.image_size, spec.image_channels)
    images = jax.random.uniform(jax.random.key(1), shape)
    labels = jax.random.randint(jax.random.key(2), (args.batch,), 0, model.num_classes)
    params = jax.jit(model.init)(jax.random.key(0), images[:1])["params"]
    if args.stream_forms:
      record = compare_stream_forms(
          model, params, images, labels, args.stream_forms.split(","), args.rounds, args.steps
      )
      emit({"name": f"{arch}/train_step/stream_forms", **record})
      continue
    tx = optax.adam(1e-3)
    times = {}
    for kind in ("plain", "old", "new"):
      timing = compile_and_time(
          make_step(model, tx, kind),
          (params, tx.init(params)),
          images,
          labels,
          jax.random.key(3),
          steps=args.steps,
      )
      times[kind] = timing["step_s"]
      emit(throughput_record(f"{arch}/train_step/{kind}", args.batch, timing, kind=kind))
    emit(
        {
            "name": f"{arch}/train_step/ratios",
            "batch": args.batch,
            "old_over_plain": round(times["old"] / times["plain"], 3),
            "new_over_plain": round(times["new"] / times["plain"], 3),
            "old_over_new": round(times["old"] / times["new"], 3),
        }
    )


if __name__ == "__main__":
  main()
