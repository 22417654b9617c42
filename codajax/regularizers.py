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

**How it differs from the reference** (the authors' code, github.com/moboehle/CoDA-Nets): the
authors' reverse path multiplies the *raw* dynamic weights ``w`` of every layer
and omits the ``1/N`` norm factors (with squashing a per-position factor
``n/(1+n²)`` per layer), so it regularises a different matrix than the one the
explanations show. And it never ran for λ > 0: the helper reads a trainer
attribute ``dlcn_layers`` that does not exist (AttributeError; the trainer has
``coda_layers``), and weight saving is switched on by ``regul_matrix`` while the
λ configs set ``regul_exp``. So there are no reference numbers for λ > 0.

**How the gradient reaches the parameters.** In explanation mode the dynamic
weights are ``stop_gradient``-ed, which detaches them from the parameters too.
Here the model's own CoDA layers run with ``weights_input`` instead
(``model.forward_with_weights_from(h, layer, inputs)``, the
:class:`RegularisableModel` protocol): layer ``i`` takes its dynamic weights
from its *ordinary* forward input ``inputs[i]`` (the layer's ``weights_input``)
and applies them to a separate linear stream. The stream is exactly linear, its transpose
(``jax.linear_transpose``, which never evaluates the stream forward) maps a
class one-hot to ``W_c(x)``, and ``W_c(x)`` stays a differentiable function of
every parameter (the CoDA layers', through their weights, and the backbone's,
through the embedding and every later layer input).

**One forward pass.** The layer inputs come from one ordinary forward pass
(``model.forward_and_inputs``) that also yields the classification logits: the
linear stream at ``weights_input = h`` *is* the forward pass, so
:func:`logits_and_dynamic_matrix_l1` returns both and a train step needs no
second forward for its loss. No parameter names appear here: the model's
modules compute everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Mapping, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from codajax.explain import protocol

Array = jax.Array

#: DAU form of the linear stream whose transpose gives the rows (the forward pass keeps the
#: model's form): "explicit", see ``benchmarks/regularizer_step.py``.
STREAM_FORM = "explicit"


def as_variables(params_or_variables: Mapping[str, Any]) -> dict[str, Any]:
  """``{"params": p}`` from either a params pytree or a full variables dict."""
  if "params" in params_or_variables:
    return dict(params_or_variables)
  return {"params": params_or_variables}


@runtime_checkable
class RegularisableModel(Protocol):
  """What the regulariser needs of a Linen model (CoDANet, HybridNet): the explanation protocol's
  one-pass ``forward_and_inputs`` and a forward pass whose layers take their dynamic weights from
  given inputs (the models of :mod:`codajax.models`; B-cos models have no such pass)."""

  @property
  def num_classes(self) -> int:
    """``K``."""

  @property
  def num_explainable_layers(self) -> int:
    """``L``: ``layer`` ranges over ``0..L − 1``."""

  def forward_and_inputs(
      self, images: Array, add_bias: bool = True
  ) -> tuple[Array, tuple[Array, ...]]:
    """Logits ``(N, K)`` and the input of every explainable layer, from one forward pass."""

  def forward_with_weights_from(
      self, h: Array, layer: int, weights_inputs: Sequence[Array], add_bias: bool = True
  ) -> Array:
    """Logits from the input ``h`` of layer ``layer`` on, layer ``i`` taking its dynamic weights
    from ``weights_inputs[i]`` (exactly linear in ``h``)."""


_REQUIRED = (
    "num_classes",
    "num_explainable_layers",
    "forward_and_inputs",
    "forward_with_weights_from",
)


def _check_model(model: Any) -> None:
  if not isinstance(model, RegularisableModel):
    missing = ", ".join(name for name in _REQUIRED if not hasattr(model, name))
    raise TypeError(
        f"dynamic-matrix regularisation needs a CoDANet or a HybridNet (a Linen "
        f"RegularisableModel), got {type(model).__name__}, which lacks {missing}."
    )


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
        f"num_other must be in 0..{num_classes - 1} for {num_classes} classes, got {num_other}."
    )
  labels = jnp.asarray(labels)
  if labels.ndim != 1 or not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(
        f"labels must be integer class indices of shape (N,), got {labels.dtype} "
        f"{tuple(labels.shape)}."
    )
  labels = labels.astype(jnp.int32)
  noise = jax.random.uniform(key, (labels.shape[0], num_classes - 1))
  offsets = 1 + jnp.argsort(noise, axis=1)[:, :num_other]
  others = (labels[:, None] + offsets) % num_classes
  return jnp.concatenate([labels[:, None], others.astype(jnp.int32)], axis=1)


def logits_and_dynamic_map(
    model: Any,
    params_or_variables: Mapping[str, Any],
    images: Array,
    classes: Array,
    *,
    layer: int = 0,
) -> tuple[Array, Array]:
  """Logits and rows ``W_c(x)`` of the dynamic linear map from one forward pass.

  Both are differentiable in the parameters: the logits as the ordinary
  forward pass, the rows as the exact map (norm factors included; the value of
  :func:`codajax.explain.explain`'s ``dynamic_linear_weights``).

  Args:
    model: a :class:`~codajax.models.CoDANet` or
      :class:`~codajax.models.HybridNet` (any Linen :class:`RegularisableModel`).
    params_or_variables: its params, or ``{"params": params}``.
    images: ``(N, H, W, C)`` in [0, 1].
    classes: ``(N, n)`` class indices (e.g. :func:`regularised_classes`).
    layer: the explainable layer whose input the map acts on (0: the encoded
      image, or a hybrid's embedding).

  Returns:
    ``(logits (N, K), rows (N, n, h, w, c))``: ``rows[i, j] =
    W_{classes[i, j]}(x_i)``, shaped like that layer's input.
  """
  _check_model(model)
  variables = as_variables(params_or_variables)
  classes = jnp.asarray(classes)
  if classes.ndim != 2 or classes.shape[0] != images.shape[0]:
    raise ValueError(
        f"classes must have shape (N, n) with N = {images.shape[0]} images, got "
        f"{tuple(classes.shape)}."
    )
  protocol.check_layer(layer, model.num_explainable_layers)
  logits, inputs = model.apply(variables, images, method="forward_and_inputs")
  # The stream's transpose runs once per class: the explicit form's costs D·P per position
  # and class against D·r·P for the implicit form's (same function, same parameters).
  stream = model.clone(form=STREAM_FORM) if hasattr(model, "form") else model

  def evidence(h: Array) -> Array:
    """``logits − bias`` as an exactly linear function of the layer input ``h``."""
    return stream.apply(variables, h, layer, inputs, False, method="forward_with_weights_from")

  transpose = jax.linear_transpose(evidence, inputs[layer])
  one_hots = jax.nn.one_hot(classes.T, logits.shape[-1], dtype=logits.dtype)  # (n, N, K)
  rows = jax.vmap(lambda cotangent: transpose(cotangent)[0])(one_hots)  # (n, N, ...)
  return logits, jnp.moveaxis(rows, 0, 1)


def differentiable_dynamic_map(
    model: Any,
    params_or_variables: Mapping[str, Any],
    images: Array,
    classes: Array,
    *,
    layer: int = 0,
) -> Array:
  """Rows ``W_c(x)`` of the dynamic linear map, differentiable in the parameters.

  See :func:`logits_and_dynamic_map` (this returns its rows alone).

  Returns:
    ``(N, n, h, w, c)``: ``W_{classes[i, j]}(x_i)``, shaped like that layer's input.
  """
  return logits_and_dynamic_map(model, params_or_variables, images, classes, layer=layer)[1]


def logits_and_dynamic_matrix_l1(
    model: Any,
    params_or_variables: Mapping[str, Any],
    images: Array,
    labels: Array,
    key: Array,
    *,
    num_other: int = 1,
    layer: int = 0,
) -> tuple[Array, Array]:
  """The classification logits and ``mean |W_c(x)|`` from one forward pass.

  For a train step with λ > 0: use these logits for the classification loss
  (they are ``model.apply(variables, images)``, with the same gradient) and add
  ``λ · penalty``. Arguments as :func:`dynamic_matrix_l1`.

  Returns:
    ``(logits (N, K), penalty)``, the penalty a float32 scalar.
  """
  _check_model(model)
  classes = regularised_classes(labels, model.num_classes, key, num_other)
  logits, rows = logits_and_dynamic_map(model, params_or_variables, images, classes, layer=layer)
  return logits, jnp.mean(jnp.abs(rows.astype(jnp.float32)))


def dynamic_matrix_l1(
    model: Any,
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
  A train step should prefer :func:`logits_and_dynamic_matrix_l1` (its logits
  come from the same forward pass).

  Args:
    model: a :class:`~codajax.models.CoDANet` or :class:`~codajax.models.HybridNet`.
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
  return logits_and_dynamic_matrix_l1(
      model, params_or_variables, images, labels, key, num_other=num_other, layer=layer
  )[1]
