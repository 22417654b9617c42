"""The L1 regulariser on the dynamic linear map (the papers' λ runs).

Every logit of a CoDA-Net is ``W_c(x) · h + b`` for the encoded image ``h``
(for a hybrid: the embedding). The regulariser penalises ``mean |W_c(x)|`` for
the true class and ``num_other`` random other classes of every image, pushing
the model towards sparse, concentrated explanations. The trainer adds
``config.l1_matrix_weight · dynamic_matrix_l1(...)`` to the classification loss.

**The exact effective map.** ``W_c(x)`` here is the row of the network's
dynamic linear map *with every norm factor* ``s(‖w‖²)`` and the ``1/T`` of the
head: the quantity whose product with ``h`` is exactly the logit minus the
bias, i.e. the ``dynamic_linear_weights`` of :func:`codajax.explain.explain`.

**How it differs from the reference** (reference-spec §1.7, §7 items 2–3): the
authors' reverse path multiplies the *raw* dynamic weights ``w`` of every layer
and omits the ``1/N`` norm factors (with squashing a per-position factor
``n/(1+n²)`` per layer), so it regularises a different matrix than the one the
explanations show. And it never ran for λ > 0: the helper reads a trainer
attribute ``dlcn_layers`` that does not exist (AttributeError; the trainer has
``coda_layers``), and weight saving is switched on by ``regul_matrix`` while the
λ configs set ``regul_exp``. So there are no reference numbers for λ > 0.

**How the gradient reaches the parameters.** In explanation mode the dynamic
weights are ``stop_gradient``-ed, which detaches them from the parameters too.
Here every CoDA layer instead computes its weights from its *ordinary* forward
input (``dau_conv(..., weights_input=...)``) and applies them to a separate
linear stream: the stream is exactly linear, its VJP is ``W_c(x)``, and
``W_c(x)`` stays a differentiable function of every parameter (the CoDA
layers', through their weights, and the backbone's, through the embedding and
every later layer input).
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from codajax.models.coda_net import CoDANet
from codajax.models.hybrid import HybridNet
from codajax.nn import dau
from codajax.nn.modules import coda_head

Array = jax.Array


def as_variables(params_or_variables: Mapping[str, Any]) -> dict[str, Any]:
  """``{"params": p}`` from either a params pytree or a full variables dict."""
  if "params" in params_or_variables:
    return dict(params_or_variables)
  return {"params": params_or_variables}


def _check_model(model: Any) -> None:
  if not isinstance(model, (CoDANet, HybridNet)):
    raise TypeError(
        f"dynamic-matrix regularisation needs a CoDANet or a HybridNet, got "
        f"{type(model).__name__}.")


def _coda_part(model: nn.Module, params: Mapping[str, Any]) -> tuple[CoDANet, Mapping[str, Any]]:
  """The model's CoDA stack and its parameters."""
  _check_model(model)
  if isinstance(model, HybridNet):
    return model.coda_net(), params["coda"]
  return model, params


def regularised_classes(labels: Array, num_classes: int, key: Array, num_other: int = 1) -> Array:
  """The true class and ``num_other`` distinct random other classes per image.

  Args:
    labels: ``(N,)`` integer class indices.
    num_classes: ``K``.
    key: PRNG key.
    num_other: other classes per image, ``0 <= num_other <= K − 1``.

  Returns:
    ``(N, 1 + num_other)`` int32; column 0 is ``labels``, the others are drawn
    uniformly without replacement from the ``K − 1`` wrong classes.
  """
  if not 0 <= num_other <= num_classes - 1:
    raise ValueError(
        f"num_other must be in 0..{num_classes - 1} for {num_classes} classes, got {num_other}.")
  labels = jnp.asarray(labels)
  if labels.ndim != 1 or not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(
        f"labels must be integer class indices of shape (N,), got {labels.dtype} "
        f"{tuple(labels.shape)}.")
  labels = labels.astype(jnp.int32)
  noise = jax.random.uniform(key, (labels.shape[0], num_classes - 1))
  offsets = 1 + jnp.argsort(noise, axis=1)[:, :num_other]
  others = (labels[:, None] + offsets) % num_classes
  return jnp.concatenate([labels[:, None], others.astype(jnp.int32)], axis=1)


def differentiable_dynamic_map(
    model: nn.Module,
    params_or_variables: Mapping[str, Any],
    images: Array,
    classes: Array,
    *,
    layer: int = 0,
) -> Array:
  """Rows ``W_c(x)`` of the dynamic linear map, differentiable in the parameters.

  The value equals :func:`codajax.explain.explain`'s ``dynamic_linear_weights``
  for the same class (the exact map, norm factors included); unlike it, the
  result carries the gradient with respect to every parameter.

  Args:
    model: a :class:`CoDANet` or :class:`HybridNet`.
    params_or_variables: its params, or ``{"params": params}``.
    images: ``(N, H, W, C)`` in [0, 1].
    classes: ``(N, n)`` class indices (e.g. :func:`regularised_classes`).
    layer: the explainable layer whose input the map acts on (0: the encoded
      image, or a hybrid's embedding).

  Returns:
    ``(N, n, h, w, c)``: ``W_{classes[i, j]}(x_i)``, shaped like that layer's input.
  """
  variables = as_variables(params_or_variables)
  coda, coda_params = _coda_part(model, variables["params"])
  classes = jnp.asarray(classes)
  if classes.ndim != 2 or classes.shape[0] != images.shape[0]:
    raise ValueError(
        f"classes must have shape (N, n) with N = {images.shape[0]} images, got "
        f"{tuple(classes.shape)}.")
  if not 0 <= layer < len(coda.layers):
    raise ValueError(f"layer must be in 0..{len(coda.layers) - 1}, got {layer}.")
  inputs = model.apply(variables, images, method="explanation_inputs")

  def evidence(h: Array) -> Array:
    """``logits − bias`` as an exactly linear function of the layer input ``h``."""
    for i in range(layer, len(coda.layers)):
      spec = coda.layers[i]
      h = dau.dau_conv(
          coda_params[f"layer_{i}"], h, stride=spec.stride, padding=spec.padding,
          norm=coda.norm, form=coda.form, compute_dtype=coda.compute_dtype,
          weights_input=inputs[i])
    return coda_head(h, coda.temperature, 0.0)

  logits, vjp = jax.vjp(evidence, jax.lax.stop_gradient(inputs[layer]))
  one_hots = jax.nn.one_hot(classes.T, logits.shape[-1], dtype=logits.dtype)  # (n, N, K)
  rows = jax.vmap(lambda cotangent: vjp(cotangent)[0])(one_hots)             # (n, N, ...)
  return jnp.moveaxis(rows, 0, 1)


def dynamic_matrix_l1(
    model: nn.Module,
    params_or_variables: Mapping[str, Any],
    images: Array,
    labels: Array,
    key: Array,
    *,
    num_other: int = 1,
    layer: int = 0,
) -> Array:
  """``mean |W_c(x)|`` over the true class and ``num_other`` random other classes.

  The mean runs over images, selected classes and every entry of the map (as
  the reference's ``mean(|result|)``); multiply by λ for the loss term.
  Differentiable with respect to the parameters; jit-able (``model`` static).

  Args:
    model: a :class:`CoDANet` or :class:`HybridNet`.
    params_or_variables: its params, or ``{"params": params}``.
    images: ``(N, H, W, C)`` in [0, 1].
    labels: ``(N,)`` true classes.
    key: PRNG key drawing the other classes.
    num_other: other classes per image (the papers: 1, i.e. n = 2 classes).
    layer: the explainable layer whose input map is penalised (0: the
      encoded image, or a hybrid's embedding).

  Returns:
    A float32 scalar.
  """
  _check_model(model)
  classes = regularised_classes(labels, model.num_classes, key, num_other)
  rows = differentiable_dynamic_map(model, params_or_variables, images, classes, layer=layer)
  return jnp.mean(jnp.abs(rows.astype(jnp.float32)))
