"""Train-step throughput of the explicit and implicit DAU forms, in one run.

    python benchmarks/dau_forms.py --batches 8 --steps 5                       # CPU, 9L-S
    python benchmarks/dau_forms.py --batches 16,64,256,1024 --dtypes float32,bfloat16
    python benchmarks/dau_forms.py --arch 9L-L --batches 8,32
    python benchmarks/dau_forms.py --batches 8 --steps 5 --norm_impls qr,gram  # norm before/after
    python benchmarks/dau_forms.py --batches 8 --steps 3 --interleaved_rounds 4  # same, alternated

Prints one JSON line per (form, dtype, batch) with img/s, step time, compile
time, GFLOP per image (XLA cost analysis), MFU (against the chip's bfloat16
peak, when known) and peak device memory; then the implicit/explicit ratio at
each batch. The explicit form (the reference's algorithm) is the in-run
baseline; ``--skip_explicit_above N`` skips it for batches over N (it needs
~57 MB per 9L-S image).

``--norm_impls qr,gram`` times the implicit form twice: with its norm
``‖w_d‖ = ‖R_d [z; 1]‖`` (``qr``, the library's) and with the former Gram
expansion ``zᵀ(A_dᵀA_d)z + 2(A_dᵀb_d)·z + ‖b_d‖²`` (``gram``, kept here only
for this comparison; it loses accuracy when ``‖w_d‖`` is small), and prints
the qr/gram ratio of each.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import time

import jax
import jax.numpy as jnp
import optax

from codajax.models import ARCHITECTURES, get_model
from codajax.nn import dau
from common import compile_and_time, emit, throughput_record


def gram_squared_norms(a, b, z):
  """The former implicit-form norm ``zᵀ(AᵀA)z + 2(Aᵀb)·z + ‖b‖²``, clamped at 0.

  a: ``(P, D, r)``, b: ``(P, D)``, z: ``(..., r)`` -> ``(..., D)``. Cancels
  catastrophically when ``‖Az + b‖`` is small against ``‖Az‖`` and ``‖b‖``.
  """
  gram = jnp.einsum("pdr,pds->drs", a, a)
  cross = jnp.einsum("pdr,pd->dr", a, b)
  bias_sq = jnp.sum(jnp.square(b), axis=0)
  squared_norm = (
      jnp.einsum("...r,drs,...s->...d", z, gram, z)
      + 2.0 * jnp.einsum("...r,dr->...d", z, cross)
      + bias_sq
  )
  return jnp.maximum(squared_norm, 0.0)


@contextlib.contextmanager
def norm_impl(name: str):
  """Traces the implicit form with the library's norm (``qr``) or the former ``gram`` one."""
  library = dau._squared_norms
  if name == "gram":
    dau._squared_norms = gram_squared_norms
  elif name != "qr":
    raise ValueError(f"Unknown norm implementation {name!r}; known: qr, gram.")
  try:
    yield
  finally:
    dau._squared_norms = library


def make_train_step(model, tx):
  """A donated Adam step of the BCE loss: ``((params, opt_state), images, labels) -> (state, loss)``."""

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state, images, labels):
    params, opt_state = state

    def loss_fn(params):
      logits = model.apply({"params": params}, images)
      targets = jax.nn.one_hot(labels, logits.shape[-1])
      return optax.sigmoid_binary_cross_entropy(logits, targets).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  return step


def time_train_step(arch: str, form: str, dtype: str, batch: int, steps: int) -> dict:
  """One benchmark record of the train step of ``arch``."""
  size = ARCHITECTURES[arch].image_size
  images = jax.random.uniform(jax.random.key(1), (batch, size, size, 3))
  model = get_model(arch, form=form, compute_dtype=jnp.bfloat16 if dtype == "bfloat16" else None)
  labels = jax.random.randint(jax.random.key(2), (batch,), 0, model.num_classes)
  tx = optax.adam(2.5e-4)
  params = jax.jit(model.init)(jax.random.key(0), images[:1])["params"]
  timing = compile_and_time(
      make_train_step(model, tx), (params, tx.init(params)), images, labels, steps=steps
  )
  return throughput_record(f"{arch}/train/{form}/{dtype}", batch, timing, form=form, dtype=dtype)


def interleaved_norm_comparison(arch: str, batch: int, steps: int, rounds: int) -> dict:
  """Median step time of the implicit float32 train step with each norm, timed in alternation.

  Both steps are compiled first; then ``rounds`` times, ``steps`` calls of the ``qr`` step and
  ``steps`` of the ``gram`` step (order alternating per round), so a change of machine load
  hits both alike. Returns ``{"qr_step_ms", "gram_step_ms", "qr_over_gram"}`` (throughput ratio).
  """
  size = ARCHITECTURES[arch].image_size
  images = jax.random.uniform(jax.random.key(1), (batch, size, size, 3))
  model = get_model(arch, form="implicit")
  labels = jax.random.randint(jax.random.key(2), (batch,), 0, model.num_classes)
  tx = optax.adam(2.5e-4)
  params = jax.jit(model.init)(jax.random.key(0), images[:1])["params"]
  compiled, states = {}, {}
  for impl in ("qr", "gram"):
    with norm_impl(impl):
      state = (params, tx.init(params))
      compiled[impl] = make_train_step(model, tx).lower(state, images, labels).compile()
    states[impl] = jax.tree.map(jnp.copy, (params, tx.init(params)))
  times = {"qr": [], "gram": []}
  for round_index in range(rounds):
    for impl in ("qr", "gram") if round_index % 2 == 0 else ("gram", "qr"):
      for i in range(steps + 1):  # the first call of a round is a warm-up
        start = time.perf_counter()
        states[impl], loss = compiled[impl](states[impl], images, labels)
        jax.block_until_ready((states[impl], loss))
        if i:
          times[impl].append(time.perf_counter() - start)
  median = {impl: sorted(t)[len(t) // 2] for impl, t in times.items()}
  return {
      "name": f"{arch}/train/implicit_float32_norm_qr_vs_gram_interleaved",
      "batch": batch,
      "calls_each": len(times["qr"]),
      "qr_step_ms": round(1e3 * median["qr"], 1),
      "gram_step_ms": round(1e3 * median["gram"], 1),
      "qr_over_gram": round(median["gram"] / median["qr"], 3),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--arch", default="9L-S")
  parser.add_argument("--batches", default="8", help="comma-separated batch sizes")
  parser.add_argument("--dtypes", default="float32", help="float32 and/or bfloat16")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--skip_explicit_above", type=int, default=1 << 30)
  parser.add_argument(
      "--norm_impls",
      default="qr",
      help="implicit-form norm(s) to time: qr (the library's) and/or gram",
  )
  parser.add_argument(
      "--interleaved_rounds",
      type=int,
      default=0,
      help="if > 0: only compare the implicit step's qr and gram norms, timed in "
      "this many alternating rounds of --steps calls (float32)",
  )
  args = parser.parse_args()
  impls = args.norm_impls.split(",")
  if args.interleaved_rounds > 0:
    for batch in map(int, args.batches.split(",")):
      emit(interleaved_norm_comparison(args.arch, batch, args.steps, args.interleaved_rounds))
    return

  for batch in map(int, args.batches.split(",")):
    results = {}
    for dtype in args.dtypes.split(","):
      for form in ("explicit", "implicit"):
        if form == "explicit" and batch > args.skip_explicit_above:
          continue
        for impl in impls if form == "implicit" else ("qr",):
          with norm_impl(impl):
            record = time_train_step(args.arch, form, dtype, batch, args.steps)
          if form == "implicit" and impls != ["qr"]:
            record["norm_impl"] = impl
          results[form, dtype, impl] = record
          emit(record)
    baseline = results.get(("explicit", "float32", "qr"))
    for (form, dtype, impl), record in results.items():
      if form != "implicit":
        continue
      suffix = "" if impls == ["qr"] else f"_{impl}"
      if baseline:
        emit(
            {
                "name": f"{args.arch}/train/implicit{suffix}_{dtype}_over_explicit_float32",
                "batch": batch,
                "ratio": round(record["img_per_s"] / baseline["img_per_s"], 3),
            }
        )
      gram = results.get((form, dtype, "gram"))
      if impl == "qr" and gram:
        emit(
            {
                "name": f"{args.arch}/train/implicit_{dtype}_qr_over_gram",
                "batch": batch,
                "ratio": round(record["img_per_s"] / gram["img_per_s"], 3),
            }
        )


if __name__ == "__main__":
  main()
