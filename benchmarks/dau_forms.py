"""Train-step throughput of the explicit and implicit DAU forms, in one run.

    python benchmarks/dau_forms.py --batches 8 --steps 5                       # CPU, 9L-S
    python benchmarks/dau_forms.py --batches 16,64,256,1024 --dtypes float32,bfloat16
    python benchmarks/dau_forms.py --arch 9L-L --batches 8,32
    python benchmarks/dau_forms.py --batches 8 --steps 5 --norm_impls qr,gram  # norm before/after
    python benchmarks/dau_forms.py --batches 8 --steps 3 --interleaved_rounds 4  # same, alternated
    python benchmarks/dau_forms.py --batches 8 --steps 3 --interleaved_rounds 3 --compare conv
    python benchmarks/dau_forms.py --batches 8 --steps 3 --interleaved_rounds 3 --compare factors

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

``--interleaved_rounds N`` compiles two variants of the implicit float32 step and
times them in alternation: ``--compare norm`` (default) the ``qr`` and ``gram``
norms, ``--compare conv`` the layer's convolutions as ``lax.conv_general_dilated``
(``conv``, the library's) and as im2col patches times the flattened kernel
(``patches``, kept here only for this comparison), ``--compare factors`` the norm's triangular
factors ``R_d`` by modified Gram–Schmidt (``mgs``, the library's) and by LAPACK's Householder QR
(``householder``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools

import jax
import jax.numpy as jnp
import optax

from codajax.models import ARCHITECTURES, get_model
from codajax.nn import dau
from common import compile_and_time, emit, throughput_record, time_interleaved


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


def patches_conv(x, kernel, stride, padding):
  """``dau._conv`` as im2col patches times the flattened kernel: NHWC × HWIO -> NHWC."""
  k, _, c, q = kernel.shape
  patches = dau.extract_patches(x, k, stride, padding)  # rows in c·k² + ki·k + kj order
  flat = jnp.transpose(kernel, (2, 0, 1, 3)).reshape(c * k * k, q)
  return jnp.einsum(
      "nhwp,pq->nhwq", patches, flat, preferred_element_type=dau._accumulation_dtype(x.dtype)
  )


@contextlib.contextmanager
def _swapped(attribute: str, variants: dict, name: str):
  """Traces with ``dau.<attribute>`` replaced by ``variants[name]`` (None: the library's own)."""
  if name not in variants:
    raise ValueError(f"Unknown {attribute} implementation {name!r}; known: {', '.join(variants)}.")
  library = getattr(dau, attribute)
  setattr(dau, attribute, variants[name] or library)
  try:
    yield
  finally:
    setattr(dau, attribute, library)


# `with norm_impl("gram"):` traces the implicit form with the former Gram norm; "qr" is the library's.
norm_impl = functools.partial(_swapped, "_squared_norms", {"qr": None, "gram": gram_squared_norms})
# `with conv_impl("patches"):` traces the layers with ``patches_conv``; "conv" is the library's.
conv_impl = functools.partial(_swapped, "_conv", {"conv": None, "patches": patches_conv})


# `with factors_impl("householder"):` factors every ``M_d`` by LAPACK's Householder QR
# (``jnp.linalg.qr(mode="r")``); "mgs" is the library's modified Gram–Schmidt.
factors_impl = functools.partial(
    _swapped,
    "_triangular_factors",
    {"mgs": None, "householder": functools.partial(jnp.linalg.qr, mode="r")},
)


# --compare: the two variants of the implicit step timed in alternation, library's first.
COMPARISONS = {
    "norm": (norm_impl, ("qr", "gram")),
    "conv": (conv_impl, ("conv", "patches")),
    "factors": (factors_impl, ("mgs", "householder")),
}


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
  model = get_model(arch, form=form, dtype=jnp.bfloat16 if dtype == "bfloat16" else None)
  labels = jax.random.randint(jax.random.key(2), (batch,), 0, model.num_classes)
  tx = optax.adam(2.5e-4)
  params = jax.jit(model.init)(jax.random.key(0), images[:1])["params"]
  timing = compile_and_time(
      make_train_step(model, tx), (params, tx.init(params)), images, labels, steps=steps
  )
  return throughput_record(f"{arch}/train/{form}/{dtype}", batch, timing, form=form, dtype=dtype)


def interleaved_comparison(arch: str, batch: int, steps: int, rounds: int, compare: str) -> dict:
  """Median step time of the implicit float32 train step in two variants, timed in alternation.

  ``compare`` names the pair (``COMPARISONS``). Both steps are compiled first; then ``rounds``
  times, ``steps`` calls of each (order alternating per round), so a change of machine load hits
  both alike. Returns ``{"<a>_step_ms", "<b>_step_ms", "<a>_over_<b>"}`` (throughput ratio) and
  ``first_loss_difference``, ``|loss_a − loss_b|`` of their first steps (same parameters).
  """
  context, (first, second) = COMPARISONS[compare]
  size = ARCHITECTURES[arch].image_size
  images = jax.random.uniform(jax.random.key(1), (batch, size, size, 3))
  model = get_model(arch, form="implicit")
  labels = jax.random.randint(jax.random.key(2), (batch,), 0, model.num_classes)
  tx = optax.adam(2.5e-4)
  params = jax.jit(model.init)(jax.random.key(0), images[:1])["params"]
  compiled, states, losses = {}, {}, {}
  for impl in (first, second):
    with context(impl):
      state = (params, tx.init(params))
      compiled[impl] = make_train_step(model, tx).lower(state, images, labels).compile()
    states[impl] = jax.tree.map(jnp.copy, (params, tx.init(params)))

  def call(impl):
    states[impl], losses[impl] = compiled[impl](states[impl], images, labels)
    return losses[impl]

  first_losses = {impl: float(call(impl)) for impl in (first, second)}  # same state: same loss
  median = time_interleaved(
      {impl: functools.partial(call, impl) for impl in (first, second)}, rounds=rounds, steps=steps
  )
  return {
      "name": f"{arch}/train/implicit_float32_{compare}_{first}_vs_{second}_interleaved",
      "batch": batch,
      "calls_each": rounds * steps,
      f"{first}_step_ms": round(1e3 * median[first], 1),
      f"{second}_step_ms": round(1e3 * median[second], 1),
      f"{first}_over_{second}": round(median[second] / median[first], 3),
      "first_loss_difference": abs(first_losses[first] - first_losses[second]),
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
      help="if > 0: only compare two variants of the implicit step (--compare), timed "
      "in this many alternating rounds of --steps calls (float32)",
  )
  parser.add_argument(
      "--compare",
      default="norm",
      choices=sorted(COMPARISONS),
      help="with --interleaved_rounds: norm (qr vs gram), conv (conv vs patches) or factors "
      "(mgs vs householder)",
  )
  args = parser.parse_args()
  impls = args.norm_impls.split(",")
  if args.interleaved_rounds > 0:
    for batch in map(int, args.batches.split(",")):
      emit(
          interleaved_comparison(
              args.arch, batch, args.steps, args.interleaved_rounds, args.compare
          )
      )
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
