"""Classification loss and accuracy over a loader: shared by training and the accuracy evaluator.

``make_eval_step`` compiles per-batch sums over the valid rows of a sharded batch;
``evaluate`` accumulates them over a one-pass loader into accuracy (top-1, top-5), loss
and per-class accuracy.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from codajax import parallel

Array = jax.Array


def images_to_float(images: Array) -> Array:
  """uint8 images from the loaders → float32 in [0, 1] (on the device)."""
  return images.astype(jnp.float32) / 255.0


def classification_loss(logits: Array, labels: Array, kind: str) -> Array:
  """Per-example loss ``(N,)``: ``"bce"`` (mean over the K sigmoids, the papers) or ``"softmax"``."""
  logits = logits.astype(jnp.float32)
  if kind == "bce":
    targets = jax.nn.one_hot(labels, logits.shape[-1])
    return optax.sigmoid_binary_cross_entropy(logits, targets).mean(axis=-1)
  if kind == "softmax":
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  raise ValueError(f"Unknown loss {kind!r}; known losses: bce, softmax.")


def make_eval_step(model: nn.Module, *, loss: str = "bce", mesh: Mesh | None = None):
  """Compiled ``(params, batch) -> sums`` over the valid rows of a sharded batch.

  Returns per-batch sums (``count``, ``loss``, ``top1``, ``top5``) and per-class
  ``(K,)`` counts ``class_count`` / ``class_top1``; accumulate them on the host.
  """

  def step(params, batch):
    logits = model.apply({"params": params}, images_to_float(batch["image"]))
    labels, valid = batch["label"], batch["valid"].astype(jnp.float32)
    k = min(5, logits.shape[-1])
    top_k = jax.lax.top_k(logits, k)[1]
    top1 = (top_k[:, 0] == labels).astype(jnp.float32) * valid
    top5 = jnp.any(top_k == labels[:, None], axis=-1).astype(jnp.float32) * valid
    one_hot = jax.nn.one_hot(labels, logits.shape[-1]) * valid[:, None]
    return {
        "count": valid.sum(),
        "loss": jnp.sum(classification_loss(logits, labels, loss) * valid),
        "top1": top1.sum(),
        "top5": top5.sum(),
        "class_count": one_hot.sum(0),
        "class_top1": (one_hot * top1[:, None]).sum(0),
    }

  if mesh is None:
    return jax.jit(step)
  replicated = parallel.replicated_sharding(mesh)
  return jax.jit(
      step, in_shardings=(replicated, parallel.batch_sharding(mesh)), out_shardings=replicated
  )


def evaluate(eval_step, params, loader, mesh, parallel_mode: str = "jit") -> dict[str, Any]:
  """Accuracy (top-1, top-5), loss and per-class accuracy over a one-pass loader."""
  totals = None
  for batch in loader:
    batch = {k: v for k, v in batch.items() if k in ("image", "label", "valid")}
    sums = eval_step(params, parallel.shard_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  count = max(float(totals["count"]), 1.0)
  per_class = np.asarray(totals["class_top1"]) / np.maximum(np.asarray(totals["class_count"]), 1)
  return {
      "eval/accuracy": float(totals["top1"]) / count,
      "eval/top5": float(totals["top5"]) / count,
      "eval/loss": float(totals["loss"]) / count,
      "eval/per_class_accuracy": per_class.round(6).tolist(),
      "eval/count": int(count),
  }
