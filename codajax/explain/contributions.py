"""Exact contribution maps of dynamic-linear networks.

In explanation mode every CoDA layer detaches its dynamic weights and norm
factor, so the network is exactly linear in the input ``h`` of any of its
explainable layers: ``logit_c = W_c(h) · h + bias``. The row ``W_c`` is the
gradient ``∂logit_c/∂h`` in explanation mode (one VJP), and the contribution
map ``W_c ⊙ h`` sums to ``logit_c − bias`` exactly (up to float round-off).

Two levels:

* :func:`explain_linear`, the functional core: any *evidence function*
  ``h -> (N, K)`` that is exactly linear in ``h`` (explanation mode, bias
  excluded) and a point ``h``; returns an :class:`Explanation` for the given,
  predicted or all classes (all classes through one ``vmap`` of the VJP).
* :func:`explain` (Linen: ``explain(model, variables, images, ...)``) and
  :func:`explain_nnx` (an NNX module), thin adapters for models following
  :class:`~codajax.explain.base.ExplainableModel` (e.g. through the bases of
  :mod:`codajax.explain.base`): the input of the explained layer comes from
  ``layer_input`` (the layers below it run once) and the evidence function is
  ``forward_from(h, layer, explain=True, add_bias=False)`` (the layers from it
  on run once, forward and transposed).

**Precision.** Explanations are computed in float32 whatever the model's
compute dtype: ``h`` is cast to float32 and explanation mode runs every CoDA
layer in float32 (see :func:`codajax.nn.explanation_dtype`), so a bfloat16
model's contributions sum to its float32 evidence to float32 round-off. The
layers *below* the explained one run as the model was trained (e.g. bfloat16).

**Compiled once.** After its eager checks, :func:`explain` (and :func:`explain_nnx`) runs one
jitted program, cached per model, layer, DAU form, kind of targets (``None``, ``"all"`` or class
indices, which are arguments) and input shape; the variables are arguments of that program, never
constants folded into it. So a second call on another batch of the same shape compiles nothing,
and an eager call costs what :func:`explain_jit` costs. Called under a JAX transformation (any
argument a tracer), it traces the computation in place instead.

**jit.** ``layer`` and ``targets="all"``/``None`` change the computation and
must be static: use :func:`explain_jit` (ready jitted, dispatches on
``targets``), or ``jax.jit(explain, static_argnames=("model", "targets",
"layer"))`` for ``targets`` in ``None``/``"all"`` and
``jax.jit(explain, static_argnames=("model", "layer"))`` for class-index arrays.

**Bad input.** Eagerly, :func:`explain` refuses integer images (convert with
``images.astype(jnp.float32) / 255``), float images outside [0, 1] (pass
``check_range=False`` to explain other inputs, e.g. normalised ones), NaN/Inf
pixels, an empty batch and out-of-range targets, each with one clear error.
Under ``jit`` values cannot be inspected: NaN/Inf pixels propagate into NaN
logits and maps, and an out-of-range target gives ``explained_class_idx = -1``
and NaN weights and contributions for that image (flagged, never a silent
zero map); :func:`completeness_error` is then NaN too.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Literal

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from codajax._checks import check_images
from codajax.explain import protocol
from codajax.explain.base import ExplainableModel

Array = jax.Array
Targets = Array | np.ndarray | int | Literal["all"] | None
FormChoice = Literal["auto", "model", "implicit", "explicit"]

#: Field names of an :class:`Explanation` (also its dict-style keys).
FIELDS = (
    "logits",
    "evidence",
    "prediction",
    "explained_class_idx",
    "dynamic_linear_weights",
    "contribution_map",
    "contribution_map_sum",
)


@flax.struct.dataclass
class Explanation:
  """The explanation of a batch: a pytree (jit/vmap-friendly), read as attributes or ``e["field"]``.

  Attributes:
    logits: ``(N, K)``: ``evidence + logit_bias``.
    evidence: ``(N, K)``: ``logits − logit_bias``, computed without the bias,
      so it is the exact sum of the contributions.
    prediction: ``(N,)`` argmax of the logits.
    explained_class_idx: ``(N,)``, or ``(N, K)`` for all classes; ``-1`` marks
      an out-of-range target seen under ``jit`` (its maps are NaN).
    dynamic_linear_weights: ``W_c(h)``, shaped like the explained input
      ``(N, H', W', C')``, with a class axis after ``N`` for all classes.
    contribution_map: ``W_c(h) ⊙ h``, shaped like ``dynamic_linear_weights``.
    contribution_map_sum: the contributions summed over channels,
      ``(N, H', W')`` or ``(N, K, H', W')``.
  """

  logits: Array
  evidence: Array
  prediction: Array
  explained_class_idx: Array
  dynamic_linear_weights: Array
  contribution_map: Array
  contribution_map_sum: Array

  def __getitem__(self, key: str) -> Array:
    """Dict-style read access, ``e["contribution_map"]``."""
    if key not in FIELDS:
      raise KeyError(f"{key!r}; an Explanation has the fields {', '.join(FIELDS)}.")
    return getattr(self, key)

  def keys(self) -> tuple[str, ...]:
    return FIELDS

  def __contains__(self, key: object) -> bool:
    return key in FIELDS


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def _check_targets(targets: Any, num_classes: int, batch: int) -> tuple[Array, Array]:
  """``(N,)`` int32 targets (out-of-range ones clipped) and their ``(N,)`` validity.

  Range-checked with an error when concrete; under jit the validity flags them.
  """
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
  targets = jnp.broadcast_to(targets.astype(jnp.int32), (batch,))
  valid = (targets >= 0) & (targets < num_classes)
  return jnp.clip(targets, 0, num_classes - 1), valid


def explain_linear(
    evidence_fn: Callable[[Array], Array],
    h: Array,
    targets: Targets = None,
    *,
    logit_bias: float = 0.0,
) -> Explanation:
  """Explains a dynamic-linear function at ``h``: the functional core.

  Args:
    evidence_fn: ``h -> (N, K)``, exactly linear in ``h`` (e.g. a model in
      explanation mode without its bias); image ``n``'s evidence may depend
      only on ``h[n]``.
    h: the point to explain, ``(N, ...)``; cast to at least float32.
    targets: ``None`` (the predicted class), an int or ``(N,)`` class
      indices, or ``"all"`` (every class, one ``vmap`` over the class one-hots).
    logit_bias: added to the evidence to give the logits.

  Returns:
    An :class:`Explanation`; ``contribution_map`` sums to ``evidence`` of the
    explained class.
  """
  h = jax.lax.stop_gradient(h)
  h = h.astype(jnp.promote_types(h.dtype, jnp.float32))
  evidence, vjp = jax.vjp(evidence_fn, h)
  evidence = evidence.astype(jnp.promote_types(evidence.dtype, jnp.float32))
  batch, num_classes = evidence.shape
  logits = evidence + logit_bias
  prediction = jnp.argmax(logits, axis=-1)

  def weights_for(one_hot: Array) -> Array:
    return vjp(one_hot.astype(evidence.dtype))[0]

  if isinstance(targets, str):
    if targets != "all":
      raise ValueError(f"targets must be None, class indices or 'all', got {targets!r}.")
    one_hots = jnp.broadcast_to(
        jnp.eye(num_classes, dtype=evidence.dtype)[:, None], (num_classes, batch, num_classes)
    )
    weights = jnp.moveaxis(jax.vmap(weights_for)(one_hots), 0, 1)  # (N, K, ...)
    class_idx = jnp.broadcast_to(jnp.arange(num_classes), (batch, num_classes))
    contributions = weights * h[:, None]
  else:
    if targets is None:
      class_idx, valid = prediction, None
    else:
      class_idx, valid = _check_targets(targets, num_classes, batch)
    weights = weights_for(jax.nn.one_hot(class_idx, num_classes))
    if valid is not None:  # flag out-of-range targets seen under jit
      mask = valid.reshape(batch, *(1,) * (weights.ndim - 1))
      weights = jnp.where(mask, weights, jnp.nan)
      class_idx = jnp.where(valid, class_idx, -1)
    contributions = weights * h

  return Explanation(
      logits=logits,
      evidence=evidence,
      prediction=prediction,
      explained_class_idx=class_idx,
      dynamic_linear_weights=weights,
      contribution_map=contributions,
      contribution_map_sum=jnp.sum(contributions, axis=-1),
  )


def _check_model(model: Any) -> None:
  if not isinstance(model, ExplainableModel):
    raise TypeError(
        f"{type(model).__name__} is not an explainable model: it needs logit_bias, "
        f"num_classes, num_explainable_layers, layer_input and forward_from (see "
        f"codajax.explain.ExplainableModel)."
    )


def _check_layer(model: Any, layer: Any) -> int:
  protocol.check_layer(layer, model.num_explainable_layers)
  return int(layer)


def explanation_form(model: Any, targets: Targets, form: FormChoice = "auto") -> str | None:
  """The DAU form ``explain`` runs ``model`` in (``None``: the model's own, unchanged).

  ``"auto"``: ``"explicit"`` for ``targets="all"``, the model's own form
  otherwise. With ``K`` classes the transposed pass of every layer runs ``K``
  times; the explicit form's transpose is one contraction with the stored
  weights (``P·D`` per position) against ``r`` times that for the implicit
  form's transposed convolution, which outweighs materialising the weights
  once (measured in ``benchmarks/explain_throughput.py``, see
  ``benchmarks/RESULTS.md``). For one class the forms cost about the same.
  """
  if form not in ("auto", "model", "implicit", "explicit"):
    raise ValueError(f"form must be 'auto', 'model', 'implicit' or 'explicit', got {form!r}.")
  if not hasattr(model, "form") or form == "model":
    return None
  if form == "auto":
    return "explicit" if isinstance(targets, str) and targets == "all" else None
  return form


def _all_concrete(*trees: Any) -> bool:
  """Whether no leaf of ``trees`` is a tracer (the call is eager, outside any transformation)."""
  return all(_is_concrete(leaf) for leaf in jax.tree.leaves(trees))


def _check_concrete_targets(targets: Targets, num_classes: int, batch: int) -> None:
  """The eager check of ``targets`` (NumPy only, so it compiles nothing); one clear error."""
  if targets is None:
    return
  if isinstance(targets, str):
    if targets != "all":
      raise ValueError(f"targets must be None, class indices or 'all', got {targets!r}.")
    return
  values = np.asarray(targets)
  if not np.issubdtype(values.dtype, np.integer):
    raise TypeError(f"targets must be integer class indices, got dtype {values.dtype}.")
  if values.ndim > 1 or (values.ndim == 1 and values.shape[0] != batch):
    raise ValueError(
        f"targets must be a scalar or have shape ({batch},), got {tuple(values.shape)}."
    )
  if np.any((values < 0) | (values >= num_classes)):
    raise ValueError(
        f"target class out of range: got {values.tolist()}, the model has {num_classes} "
        f"classes (valid: 0..{num_classes - 1})."
    )


def explain(
    model: Any,
    variables: Any,
    images: Array,
    targets: Targets = None,
    *,
    layer: int = 0,
    form: FormChoice = "auto",
    check_range: bool = True,
) -> Explanation:
  """Explains a batch of a Linen model: dynamic linear weights and contributions per class.

  Runs the layers below ``layer`` once (``layer_input``) and the layers from
  ``layer`` on once in explanation mode (``forward_from``), then
  :func:`explain_linear`. Called eagerly, it checks its inputs and then runs
  the program of :func:`explain_jit` (compiled once per model, layer, form,
  kind of targets and input shape; ``variables`` are its arguments). Jit-able
  with ``model``, ``layer`` and a string or ``None`` ``targets`` static (see
  :func:`explain_jit`); stateless.

  Args:
    model: a Linen module following :class:`ExplainableModel` (CoDA-Nets,
      hybrids, your own).
    variables: its variables.
    images: ``(N, H, W, C)`` float, in [0, 1].
    targets: ``None`` (the predicted class), an int or ``(N,)`` class indices,
      or ``"all"`` (every class).
    layer: explain the input of this explainable layer (0: the encoded image;
      ``l > 0``: layer-wise contributions of the features entering layer ``l``).
    form: DAU form to explain in, see :func:`explanation_form` (same values).
    check_range: refuse (eager) images outside [0, 1].

  Returns:
    An :class:`Explanation` (float32 arrays; ``e["contribution_map"]`` or
    ``e.contribution_map``). The contributions sum to ``logits[explained
    class] − model.logit_bias``.
  """
  images = check_images(images, name="explain", check_finite=True, check_range=check_range)
  _check_model(model)
  layer = _check_layer(model, layer)
  if not _all_concrete(variables, images, targets):
    return _explain_traced(model, variables, images, targets, layer, form, check_range)
  explanation_form(model, targets, form)  # its one error for an unknown form
  _check_concrete_targets(targets, model.num_classes, images.shape[0])
  return explain_jit(
      model, variables, images, targets, layer=layer, form=form, check_range=check_range
  )


def _explain_traced(model, variables, images, targets, layer, form, check_range) -> Explanation:
  """The computation of :func:`explain`, traced in place (the body of its jitted program)."""
  images = check_images(images, name="explain", check_finite=True, check_range=check_range)
  _check_model(model)
  layer = _check_layer(model, layer)
  chosen = explanation_form(model, targets, form)
  if chosen is not None and chosen != model.form:
    model = model.clone(form=chosen)
  h = model.apply(variables, images, layer, method="layer_input")

  def evidence_fn(h):
    return model.apply(variables, h, layer, True, False, method="forward_from")

  return explain_linear(evidence_fn, h, targets, logit_bias=model.logit_bias)


def explain_nnx(
    model: Any,
    images: Array,
    targets: Targets = None,
    *,
    layer: int = 0,
    check_range: bool = True,
) -> Explanation:
  """:func:`explain` for a Flax NNX module following :class:`ExplainableModel`.

  The module is called directly (``model.layer_input``, ``model.forward_from``).
  Called eagerly, it checks its inputs and then runs one jitted program cached
  per module structure (``nnx.split``'s graph definition), layer, kind of
  targets and input shape, with the module's state as an argument; the state is
  read, never written back (explaining updates no statistics). Inside
  ``nnx.jit`` (``layer`` and string targets static) it is traced in place.
  """
  images = check_images(images, name="explain", check_finite=True, check_range=check_range)
  _check_model(model)
  layer = _check_layer(model, layer)
  from flax import nnx  # flax.nnx is imported by the modules that build NNX models

  graphdef, state = nnx.split(model)
  if not _all_concrete(state, images, targets):
    return _explain_nnx_traced(model, images, targets, layer, check_range)
  _check_concrete_targets(targets, model.num_classes, images.shape[0])
  mode, targets = (
      (targets, None) if targets is None or isinstance(targets, str) else (None, targets)
  )
  return _explain_nnx_compiled(
      graphdef,
      state,
      images,
      None if targets is None else jnp.asarray(targets),
      mode=mode,
      layer=layer,
      check_range=check_range,
  )


def _explain_nnx_traced(model, images, targets, layer, check_range) -> Explanation:
  """The computation of :func:`explain_nnx`, traced in place."""
  images = check_images(images, name="explain", check_finite=True, check_range=check_range)
  h = model.layer_input(images, layer)
  return explain_linear(
      lambda h: model.forward_from(h, layer, explain=True, add_bias=False),
      h,
      targets,
      logit_bias=model.logit_bias,
  )


@functools.partial(jax.jit, static_argnames=("graphdef", "mode", "layer", "check_range"))
def _explain_nnx_compiled(graphdef, state, images, targets, *, mode, layer, check_range):
  from flax import nnx

  model = nnx.merge(graphdef, state)
  return _explain_nnx_traced(
      model, images, mode if targets is None else targets, layer, check_range
  )


@functools.partial(jax.jit, static_argnames=("model", "mode", "layer", "form", "check_range"))
def _explain_compiled(model, variables, images, targets, *, mode, layer, form, check_range):
  return _explain_traced(
      model, variables, images, mode if targets is None else targets, layer, form, check_range
  )


def explain_jit(
    model: Any,
    variables: Any,
    images: Array,
    targets: Targets = None,
    *,
    layer: int = 0,
    form: FormChoice = "auto",
    check_range: bool = True,
) -> Explanation:
  """:func:`explain`, compiled: ``model``, ``layer``, ``form`` and ``None``/``"all"`` static.

  Class-index ``targets`` are traced (no recompilation per target); an
  out-of-range one is flagged (``explained_class_idx = -1``, NaN maps) rather
  than raised. The images are checked for rank, dtype and empty batch only.
  """
  if targets is None or isinstance(targets, str):
    return _explain_compiled(
        model,
        variables,
        images,
        None,
        mode=targets,
        layer=layer,
        form=form,
        check_range=check_range,
    )
  return _explain_compiled(
      model,
      variables,
      images,
      jnp.asarray(targets),
      mode=None,
      layer=layer,
      form=form,
      check_range=check_range,
  )


def dynamic_linear_map(
    model: Any, variables: Any, images: Array, layer: int = 0
) -> tuple[Array, Array, Callable[[Array], Array]]:
  """The linear map of a Linen model at the input of an explainable layer.

  Returns:
    ``(h, evidence, vjp)``: the layer input ``h`` (float32), the evidence
    ``logits − logit_bias`` ``(N, K)`` and a function mapping a cotangent
    ``(N, K)`` to ``Σ_c cot[:, c] · W_c(h)``, shaped like ``h``.
  """
  images = check_images(images, name="dynamic_linear_map", check_finite=True)
  _check_model(model)
  layer = _check_layer(model, layer)
  h = jax.lax.stop_gradient(model.apply(variables, images, layer, method="layer_input"))
  h = h.astype(jnp.promote_types(h.dtype, jnp.float32))
  evidence, vjp = jax.vjp(
      lambda h: model.apply(variables, h, layer, True, False, method="forward_from"), h
  )
  return h, evidence, lambda cotangent: vjp(cotangent)[0]


def completeness_error(explanation: Explanation | dict[str, Array]) -> Array:
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
  target = jnp.take_along_axis(evidence, jnp.maximum(idx, 0).reshape(evidence.shape[0], -1), axis=1)
  target = target.reshape(idx.shape)
  contributions = explanation["contribution_map"]
  axes = tuple(range(idx.ndim, contributions.ndim))
  total = jnp.sum(contributions, axis=axes)
  scale = jnp.sum(jnp.abs(contributions), axis=axes)
  return jnp.abs(total - target) / jnp.maximum(scale, jnp.finfo(scale.dtype).tiny)
