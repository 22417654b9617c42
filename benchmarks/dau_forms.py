"""Train-step throughput of the explicit and implicit DAU forms on 9L-S, in one run.

    python benchmarks/dau_forms.py --batch 8 --steps 5          # CPU
    python benchmarks/dau_forms.py --batch 256 --steps 20       # GPU

Prints one JSON line per form and a last line with the implicit/explicit ratio.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import optax

from codajax.models import get_model
from common import compile_and_time, emit, throughput_record


def make_train_step(model, tx):
  """A donated Adam step of the BCE loss: ``((params, opt_state), batch) -> (state, loss)``."""

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


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--arch", default="9L-S")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--size", type=int, default=None, help="image size (default: the arch's)")
  args = parser.parse_args()

  size = args.size or {"9L-L": 240}.get(args.arch, 32)
  images = jax.random.uniform(jax.random.key(1), (args.batch, size, size, 3))
  labels = jax.random.randint(jax.random.key(2), (args.batch,), 0, 10)
  tx = optax.adam(2.5e-4)
  results = {}
  for form in ("explicit", "implicit"):
    model = get_model(args.arch, form=form)
    params = jax.jit(model.init)(jax.random.key(0), images[:1])["params"]
    state = (params, tx.init(params))
    timing = compile_and_time(make_train_step(model, tx), state, images, labels,
                              steps=args.steps)
    results[form] = throughput_record(f"{args.arch}/train/{form}", args.batch, timing)
    emit(results[form])
  emit({"name": f"{args.arch}/train/implicit_over_explicit", "batch": args.batch,
        "ratio": round(results["implicit"]["img_per_s"] / results["explicit"]["img_per_s"], 3)})


if __name__ == "__main__":
  main()
