"""The train state, losses, and the train/eval steps (jit over a mesh, or pmap)."""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from codajax.train import parallel

Array = jax.Array
PMAP_AXIS = "batch"


@flax.struct.dataclass
class TrainState:
  """Everything a step changes: ``step`` (micro-steps taken), params, optimizer state, RNG key."""

  step: Array
  params: Any
  opt_state: Any
  rng: Array  # raw key data (uint32), so checkpoints hold plain arrays


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


def _loss_and_metrics(
    model: nn.Module, loss_kind: str, l1_matrix_weight: float, params, batch, rng
):
  """Mean loss of a batch and its metrics (means over the batch)."""
  images = images_to_float(batch["image"])
  if l1_matrix_weight:  # the logits and the dynamic map from one forward pass
    from codajax.regularizers import logits_and_dynamic_matrix_l1

    logits, penalty = logits_and_dynamic_matrix_l1(model, params, images, batch["label"], rng)
  else:
    logits = model.apply({"params": params}, images)
  losses = classification_loss(logits, batch["label"], loss_kind)
  loss = losses.mean()
  metrics = {
      "train/loss": loss,
      "train/accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
  }
  if l1_matrix_weight:
    metrics["train/l1_matrix"] = penalty
    loss = loss + l1_matrix_weight * penalty
  return loss, metrics


def _apply_gradients(state: TrainState, grads, tx: optax.GradientTransformation) -> TrainState:
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, updates),
      opt_state=opt_state,
  )


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    *,
    loss: str = "bce",
    l1_matrix_weight: float = 0.0,
    mesh: Mesh | None = None,
    parallel_mode: str = "jit",
) -> Callable[[TrainState, dict[str, Array]], tuple[TrainState, dict[str, Array]]]:
  """A compiled, donated train step ``(state, batch) -> (state, metrics)``.

  ``parallel_mode="jit"``: global-view ``jax.jit`` with the state replicated
  and the batch sharded over the mesh's ``data`` axis (batch from
  :func:`parallel.shard_batch`). ``"pmap"``: ``jax.pmap`` over local devices
  with ``pmean`` of the gradients (state replicated with a leading device axis,
  batch from :func:`parallel.split_for_pmap`). Both compute the same update (with the
  ``l1_matrix_weight`` regulariser, pmap folds the device index into its RNG key, so each
  device draws its own samples; jit draws once for the global batch).
  """
  loss_fn = functools.partial(_loss_and_metrics, model, loss, l1_matrix_weight)

  def gradients(state, batch, device_index=None):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    if device_index is not None:  # pmap: each device's regulariser draws its own samples
      rng = jax.random.fold_in(rng, device_index)
    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, batch, rng)
    return grads, metrics

  if parallel_mode == "jit":
    if mesh is None:
      raise ValueError("parallel_mode='jit' needs a mesh.")

    def step(state, batch):
      grads, metrics = gradients(state, batch)
      return _apply_gradients(state, grads, tx), metrics

    replicated = parallel.replicated_sharding(mesh)
    return jax.jit(
        step,
        in_shardings=(replicated, parallel.batch_sharding(mesh)),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
  if parallel_mode == "pmap":

    def pmap_step(state, batch):
      grads, metrics = gradients(state, batch, jax.lax.axis_index(PMAP_AXIS))
      grads, metrics = jax.lax.pmean((grads, metrics), PMAP_AXIS)
      return _apply_gradients(state, grads, tx), metrics

    return jax.pmap(pmap_step, axis_name=PMAP_AXIS, donate_argnums=0)
  raise ValueError(f"Unknown parallel mode {parallel_mode!r}; known: jit, pmap.")


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
