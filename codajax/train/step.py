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

from codajax import parallel
from codajax.accuracy import classification_loss, images_to_float
from codajax.regularizers import logits_and_dynamic_matrix_l1

Array = jax.Array
PMAP_AXIS = "batch"


@flax.struct.dataclass
class TrainState:
  """Everything a step changes: ``step`` (micro-steps taken), params, optimizer state, RNG key."""

  step: Array
  params: Any
  opt_state: Any
  rng: Array  # raw key data (uint32), so checkpoints hold plain arrays


def _loss_and_metrics(
    model: nn.Module, loss_kind: str, l1_matrix_weight: float, params, batch, rng
):
  """Mean loss of a batch and its metrics (means over the batch)."""
  images = images_to_float(batch["image"])
  if l1_matrix_weight:  # the logits and the dynamic map from one forward pass
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
