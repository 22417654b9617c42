"""Exact contribution maps of dynamic-linear networks.

In explanation mode every CoDA layer detaches its dynamic weights and norm
factor, so the network is exactly linear in the input ``h`` of any of its
explainable layers: ``logit_c = W_c(h) · h + bias``. The row ``W_c`` is the
gradient ``∂logit_c/∂h`` in explanation mode (one VJP), and the contribution
map ``W_c ⊙ h`` sums to ``logit_c − bias`` exactly (up to float round-off).
"""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Targets = Array | np.ndarray | int | Literal["all"] | None


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _check_targets(targets: Array, num_classes: int, batch: int) -> Array:
  """Broadcasts targets to ``(N,)`` int32; range-checked when concrete."""
  targets = jnp.asarray(targets)
  if not jnp.issubdtype(targets.dtype, jnp.integer):
    raise TypeError(f"targets must be integer class indices, got dtype {targets.dtype}.")
  if targets.ndim > 1 or (targets.ndim == 1 and targets.shape[0] != batch):
    raise ValueError(
        f"targets must be a scalar or have shape ({batch},), got {tuple(targets.shape)}."
    )
  if _is_concrete(targets):
    bad = np.asarray(targets)
    if np.any((bad < 0) | (bad >= num_classes)):
      raise ValueError(
          f"target class out of range: got {bad.tolist()}, the model has {num_classes} "
          f"classes (valid: 0..{num_classes - 1})."
      )
  return jnp.broadcast_to(targets.astype(jnp.int32), (batch,))


def dynamic_linear_map(
    model: nn.Module, variables: Any, images: Array, layer: int = 0
) -> tuple[Array, Array, Any]:
  """The linear map of the network at the input of an explainable layer.

  Args:
    model: a CoDA-Net or hybrid (see :mod:`codajax.models.coda_net`).
    variables: its variables.
    images: ``(N, H, W, C)`` in [0, 1].
    layer: which explainable layer's input to explain (0: the encoded image).

  Returns:
    ``(h, evidence, vjp)``: the layer input ``h``, the evidence
    ``logits − logit_bias`` ``(N, K)`` (computed without the bias, so it is the
    exact sum of the contributions) and a function mapping a cotangent ``(N, K)`` to ``Σ_c cot[:, c] · W_c(h)``,
    shaped like ``h``.
  """
  inputs = model.apply(variables, images, method="explanation_inputs")
  if not 0 <= layer < len(inputs):
    raise ValueError(
        f"layer must be in 0..{len(inputs) - 1} (the model has {len(inputs)} explainable "
        f"layers), got {layer}."
    )
  h = jax.lax.stop_gradient(inputs[layer])

  def evidence_from(h):
    return model.apply(variables, h, layer, True, False, method="forward_from")

  evidence, vjp = jax.vjp(evidence_from, h)
  return h, evidence, lambda cotangent: vjp(cotangent)[0]


def explain(
    model: nn.Module,
    variables: Any,
    images: Array,
    targets: Targets = None,
    *,
    layer: int = 0,
) -> dict[str, Array]:
  """Explains a batch: dynamic linear weights and contributions per class.

  Jit-able (pass ``model`` and ``targets="all"``/``None`` as static) and
  stateless. For ``targets="all"`` the VJP is ``vmap``-ed over the class
  one-hots, so every class is explained in one call.

  Args:
    model: a CoDA-Net or hybrid module.
    variables: its variables.
    images: ``(N, H, W, C)`` in [0, 1].
    targets: ``None`` (the predicted class), an int or ``(N,)`` class indices,
      or ``"all"`` (every class).
    layer: explain the input of this explainable layer (0: the encoded image;
      ``l > 0``: layer-wise contributions of the features entering layer ``l``).

  Returns:
    A dict with ``logits (N, K)``, ``evidence`` (``logits − logit_bias``,
    computed without the bias), ``prediction (N,)``, ``explained_class_idx``
    (``(N,)``, or ``(N, K)`` for "all"), ``dynamic_linear_weights`` and
    ``contribution_map`` (shaped like the explained input ``(N, H', W', C')``,
    with a class axis after N for "all") and ``contribution_map_sum`` (the sum
    over channels: ``(N, H', W')`` or ``(N, K, H', W')``). The contributions
    sum to ``logits[explained class] − model.logit_bias``.
  """
  if getattr(images, "ndim", None) != 4:
    raise ValueError(
        f"explain expects NHWC images of rank 4, got shape {tuple(jnp.shape(images))}."
    )
  h, evidence, vjp = dynamic_linear_map(model, variables, images, layer)
  logits = evidence + model.logit_bias
  batch, num_classes = logits.shape
  prediction = jnp.argmax(logits, axis=-1)

  if isinstance(targets, str):
    if targets != "all":
      raise ValueError(f"targets must be None, class indices or 'all', got {targets!r}.")
    one_hots = jnp.broadcast_to(jnp.eye(num_classes, dtype=logits.dtype)[:, None],
                                (num_classes, batch, num_classes))
    weights = jnp.moveaxis(jax.vmap(vjp)(one_hots), 0, 1)        # (N, K, ...)
    class_idx = jnp.broadcast_to(jnp.arange(num_classes), (batch, num_classes))
    contributions = weights * h[:, None]
  else:
    class_idx = prediction if targets is None else _check_targets(targets, num_classes, batch)
    weights = vjp(jax.nn.one_hot(class_idx, num_classes, dtype=logits.dtype))
    contributions = weights * h

  return {
      "logits": logits,
      "evidence": evidence,
      "prediction": prediction,
      "explained_class_idx": class_idx,
      "dynamic_linear_weights": weights,
      "contribution_map": contributions,
      "contribution_map_sum": jnp.sum(contributions, axis=-1),
  }


def completeness_error(explanation: dict[str, Array]) -> Array:
  """Error of the completeness identity ``Σ contributions = logit − bias``.

  The error is relative to ``Σ |contributions|``: float rounding of a sum of
  ``n`` terms is bounded by ``n·ε·Σ|terms|``, so this stays meaningful when a
  class's evidence is itself near zero (where ``|error| / |evidence|`` blows up
  although every term is exact to round-off).

  Args:
    explanation: the result of :func:`explain`.

  Returns:
    ``|Σ c − evidence_c| / Σ |c|``, shaped like ``explained_class_idx``.
  """
  idx = explanation["explained_class_idx"]
  evidence = explanation["evidence"]
  target = jnp.take_along_axis(evidence, idx.reshape(evidence.shape[0], -1), axis=1)
  target = target.reshape(idx.shape)
  contributions = explanation["contribution_map"]
  axes = tuple(range(idx.ndim, contributions.ndim))
  total = jnp.sum(contributions, axis=axes)
  scale = jnp.sum(jnp.abs(contributions), axis=axes)
  return jnp.abs(total - target) / jnp.maximum(scale, jnp.finfo(scale.dtype).tiny)
