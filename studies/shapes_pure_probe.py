"""Cheap diagnosis probes for the pure CoDA-Net on ``shapes`` variants.

Trains a codajax CoDA-Net with Adam on in-memory generated ``shapes`` (no TFDS preparation, no
augmentation) and prints train/test accuracy every ``--eval_every`` steps, then one JSON line.

    python studies/shapes_pure_probe.py --steps 300 --temperature 500 --polarity light

The knobs are those of ``codajax.data.builders.shapes.Style``; the model any ``get_model`` name.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from codajax.data.builders import shapes
from codajax.models import get_model
from codajax.accuracy import classification_loss


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="shapes-7L")
  p.add_argument("--temperature", type=float, default=500.0)
  p.add_argument("--logit_bias", type=float, default=None, help="default: the model's log(0.1/0.9)")
  p.add_argument("--loss", default="bce", choices=("bce", "softmax"))
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps, then constant")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--eval_every", type=int, default=100)
  p.add_argument("--num_train", type=int, default=10000)
  p.add_argument("--num_test", type=int, default=500)
  p.add_argument("--polarity", default="random", choices=shapes.POLARITIES)
  p.add_argument("--texture", type=float, default=1.0)
  p.add_argument("--clutter", type=int, default=shapes.NUM_CLUTTER_STROKES)
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args(argv)


def main(argv=None) -> dict:
  args = parse_args(argv)
  style = shapes.Style(args.polarity, args.texture, args.clutter)
  train = shapes.generate_shapes(args.num_train, 0, "train", style)
  test = shapes.generate_shapes(args.num_test, 0, "test", style)
  to_float = lambda a: a.astype(np.float32) / 255.0
  x_train, y_train = to_float(train["image"]), train["label"].astype(np.int32)
  x_test, y_test = to_float(test["image"]), test["label"].astype(np.int32)
  extra = {} if args.logit_bias is None else {"logit_bias": args.logit_bias}
  model = get_model(args.model, temperature=args.temperature, **extra)
  params = model.init(jax.random.PRNGKey(args.seed), x_train[:1])
  schedule = (
      optax.linear_schedule(0.0, args.lr, args.warmup)
      if args.warmup
      else optax.constant_schedule(args.lr)
  )
  if args.warmup:
    schedule = optax.join_schedules([schedule, optax.constant_schedule(args.lr)], [args.warmup])
  tx = optax.adam(schedule)
  opt_state = tx.init(params)

  def loss_fn(p, x, y):
    logits = model.apply(p, x)
    return classification_loss(logits, y, args.loss).mean(), logits

  @jax.jit
  def step(p, s, x, y):
    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, x, y)
    updates, s = tx.update(grads, s, p)
    return optax.apply_updates(p, updates), s, loss, jnp.mean(jnp.argmax(logits, -1) == y)

  @jax.jit
  def predict(p, x):
    return jnp.argmax(model.apply(p, x), -1)

  def accuracy(p, x, y):
    return float(
        np.mean(
            np.concatenate([np.asarray(predict(p, x[i : i + 250])) for i in range(0, len(x), 250)])
            == y
        )
    )

  rng = np.random.default_rng(args.seed)
  curve, losses, accs = [], [], []
  start = time.time()
  for t in range(1, args.steps + 1):
    idx = rng.integers(0, len(x_train), args.batch)
    params, opt_state, loss, acc = step(params, opt_state, x_train[idx], y_train[idx])
    losses.append(float(loss))
    accs.append(float(acc))
    if t % args.eval_every == 0 or t == args.steps:
      point = {
          "step": t,
          "train_loss": float(np.mean(losses[-50:])),
          "train_acc_batch": float(np.mean(accs[-50:])),
          "test_acc": accuracy(params, x_test, y_test),
          "seconds": round(time.time() - start, 1),
      }
      curve.append(point)
      print(json.dumps(point), flush=True)
  result = {
      "args": vars(args),
      "curve": curve,
      "final_test_acc": curve[-1]["test_acc"],
      "wall_s": round(time.time() - start, 1),
  }
  print("RESULT", json.dumps(result), flush=True)
  return result


if __name__ == "__main__":
  main()
