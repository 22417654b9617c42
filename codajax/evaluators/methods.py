"""The explanation methods an evaluator scores: "Ours" (exact CoDA contributions) and the presets of
:mod:`codajax.attribution`, as ``(variables, images uint8, targets) -> maps`` functions.
"""

from __future__ import annotations

import ast
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from codajax import attribution
from codajax.evaluators.common import EvaluationError
from codajax.explain import explain
from codajax.explain.hybrid import explain_at_depths, upsample_to_image

Array = jax.Array
# (variables, images uint8 (N, H, W, C), targets (N,) or (N, T)) -> maps (N, [T,] H, W, C')
AttributionFn = Callable[[Any, Array, Array], Array]

OURS = "Ours"
# The gradient methods whose ``items_per_pass`` (integration steps, noise samples run together)
# the evaluation sets; the attributions do not depend on it, the memory does. Occlusion and RISE
# keep their presets' values unless a method setting overrides them.
_ITEMS_PER_PASS_METHODS = (attribution.integrated_gradients, attribution.smooth_grad)
# Settings that count something: a positive integer.
_COUNTS = ("n_masks", "n_steps", "nt_samples", "s", "items_per_pass")
# Sizes in pixels (Occlusion's window and stride): a positive integer.
_SIZES = ("sliding_window_shapes", "strides")
# Numeric settings with a range beyond "a finite number": key -> (test, what it must be).
_RANGES = {
    "p1": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "stdevs": (lambda v: v >= 0, "a number >= 0"),
}


def known_methods() -> tuple[str, ...]:
  """``("Ours", *codajax.attribution.METHODS)``: every method name the evaluation accepts."""
  return (OURS, *attribution.METHODS)


def check_methods(methods: Sequence[str] | str | None) -> tuple[str, ...]:
  """The requested names (a sequence or ``"A,B"``) without duplicates; all for ``None``/empty.

  Raises :class:`EvaluationError` naming the known methods for an unknown name.
  """
  if isinstance(methods, str):
    methods = [m.strip() for m in methods.split(",") if m.strip()]
  if not methods:
    return known_methods()
  unknown = [m for m in methods if m not in known_methods()]
  if unknown:
    raise EvaluationError(
        f"unknown method{'s' if len(unknown) > 1 else ''} "
        f"{', '.join(map(repr, unknown))}; known methods: "
        f"{', '.join(known_methods())}"
    )
  return tuple(dict.fromkeys(methods))


def _keyword_defaults(name: str) -> dict[str, Any]:
  """The keyword-only parameters of a preset's function with the preset's values (or defaults)."""
  preset = attribution.METHODS[name]
  params = inspect.signature(preset.method).parameters.values()
  return {
      p.name: preset.settings.get(p.name, p.default)
      for p in params
      if p.kind is inspect.Parameter.KEYWORD_ONLY
  }


def check_setting(name: str, key: str, value: Any) -> Any:
  """``value`` if it suits keyword ``key`` of preset ``name``; else :class:`EvaluationError`.

  A keyword whose preset value is a bool, int or float takes a value of that type (an int for a
  float); counts (``n_masks``, ``n_steps``, ``nt_samples``, ...) and Occlusion's window and
  stride are integers >= 1; numbers are finite, ``p1`` in (0, 1] and ``stdevs`` >= 0. What
  depends on the images (a stride larger than the image) is checked by :func:`check_traced`.
  """
  if name not in attribution.METHODS:
    raise EvaluationError(
        f"method setting {name}.{key}: {name!r} is not a post-hoc method; "
        f"known: {', '.join(attribution.METHODS)}"
    )
  accepted = _keyword_defaults(name)
  if key not in accepted:
    raise EvaluationError(
        f"method setting {name}.{key}: {name} "
        f"({attribution.METHODS[name].method.__name__}) takes "
        f"{', '.join(accepted)}"
    )
  default = accepted[key]
  wrong = None
  if isinstance(default, bool):
    wrong = None if isinstance(value, bool) else "True or False"
  elif isinstance(default, int) or key in _COUNTS + _SIZES:
    wrong = None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
  elif isinstance(default, float) or key in _RANGES:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    wrong = "a number" if not number else (None if math.isfinite(value) else "a finite number")
  if wrong is None and key in _COUNTS + _SIZES and value is not None and value < 1:
    wrong = "an integer >= 1"
  if wrong is None and key in _RANGES and not _RANGES[key][0](value):
    wrong = _RANGES[key][1]
  if wrong:
    raise EvaluationError(f"method setting {name}.{key}={value!r}: must be {wrong}")
  return value


def parse_method_settings(items: Sequence[str]) -> dict[str, dict[str, Any]]:
  """``["RISE.n_masks=1000", "IntGrad.n_steps=50"]`` -> ``{"RISE": {"n_masks": 1000}, ...}``.

  Values are Python literals (``ast.literal_eval``; anything else stays a string) checked by
  :func:`check_setting`: an unknown method or keyword, or a value of the wrong type
  (``RISE.n_masks=abc``), is an :class:`EvaluationError` before any work.
  """
  parsed: dict[str, dict[str, Any]] = {}
  for item in items:
    name, dot, rest = item.partition(".")
    key, eq, text = rest.partition("=")
    if not (dot and eq and key):
      raise EvaluationError(
          f"method setting {item!r} is not METHOD.key=value " "(e.g. RISE.n_masks=1000)"
      )
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    parsed.setdefault(name, {})[key] = check_setting(name, key, value)
  return parsed


def check_method_settings(settings: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
  """:func:`check_setting` on every ``{method: {keyword: value}}`` entry; a plain dict back."""
  return {
      name: {key: check_setting(name, key, value) for key, value in dict(values).items()}
      for name, values in dict(settings).items()
  }


def _stand_in(method: str, num_classes: int) -> Callable:
  """A model for :func:`check_traced`: every logit the mean of the image (Grad-CAM: the feature
  function ``(images, delta) -> (logits, features = images + delta)``)."""

  def logits(features):
    return jnp.broadcast_to(
        jnp.mean(features, axis=(1, 2, 3))[:, None], (len(features), num_classes)
    )

  if attribution.METHODS[method].method is attribution.grad_cam:
    return lambda images, delta: (logits(images + delta), images + delta)
  return logits


def check_traced(
    method: str,
    settings: Mapping[str, Any],
    image_shape: Sequence[int],
    num_classes: int,
    items_per_pass: int | None = None,
) -> None:
  """Traces preset ``method`` with ``settings`` on one image of ``image_shape`` (H, W, C) and a
  stand-in model (``jax.eval_shape``: nothing is computed), so that every check the method makes
  of its settings (e.g. Occlusion's windows and strides against the image size, RISE's ``p1``)
  fails here, before any work, as an :class:`EvaluationError` naming the method and settings.
  """
  preset = attribution.METHODS[method]
  extra = {"items_per_pass": items_per_pass} if preset.method in _ITEMS_PER_PASS_METHODS else {}
  fn = _stand_in(method, num_classes)
  targets = jnp.zeros((1,), jnp.int32)
  images = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  try:
    jax.eval_shape(lambda x: preset(fn, x, targets, **{**extra, **dict(settings)}), images)
  except (TypeError, ValueError) as error:
    shown = ", ".join(f"{method}.{k}={v!r}" for k, v in dict(settings).items())
    message = " ".join(str(error).split())
    raise EvaluationError(
        f"method setting{'s' if len(settings) > 1 else ''} {shown}: {message} (images of "
        f"{'x'.join(map(str, image_shape))})"
    ) from None


def effective_settings(method: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
  """A post-hoc preset's settings with ``overrides`` ({} for "Ours")."""
  if method == OURS:
    return {}
  return {**attribution.METHODS[method].settings, **dict(overrides or {})}


# --------------------------------------------------------------------------- model structure


class ModelInfo(NamedTuple):
  """What the evaluation needs to know about a model.

  ``num_layers``: explainable layers L (``explain(..., layer=l)`` for l < L).
  ``encoded_input``: the first explainable input is the image encoding ``[x, 1 − x]`` (a CoDA-Net
  or a stage-0 hybrid), so "Ours" maps are image-sized with 2C channels and pixel removal zeroes
  the encoded input; otherwise (a hybrid with a CNN backbone) "Ours" is the embedding's map
  upsampled to the image and pixel removal blackens image pixels.
  """

  num_layers: int
  encoded_input: bool


def inspect_model(model: nn.Module, variables: Any, image_shape: Sequence[int]) -> ModelInfo:
  """:class:`ModelInfo` of ``model`` for images of ``image_shape`` (H, W, C), from shapes only."""
  height, width, channels = image_shape
  inputs = jax.eval_shape(
      lambda v, x: model.apply(v, x, method="explanation_inputs"),
      variables,
      jax.ShapeDtypeStruct((1, height, width, channels), jnp.float32),
  )
  return ModelInfo(len(inputs), tuple(inputs[0].shape[1:]) == (height, width, 2 * channels))


def contributions_at_depths(
    model: nn.Module, variables: Any, images: Array, targets: Array
) -> Array:
  """CoDA contributions of every explainable layer, upsampled to the image: (L, N, H, W).

  Layer l's map explains the logit of ``targets`` (N,) through the top L − l CoDA layers (its
  interpretable depth); every map sums to ``logit − bias``.
  """
  maps = explain_at_depths(model, variables, images, targets)
  return jnp.stack([maps[layer] for layer in sorted(maps)])


def over_targets(attribute: Callable[[Array], Array], targets: Array, axis: int = 1) -> Array:
  """``attribute(targets)`` for (N,) targets; vmapped over T for (N, T) (T axis at ``axis``)."""
  if targets.ndim == 1:
    return attribute(targets)
  return jax.vmap(attribute, in_axes=1, out_axes=axis)(targets)


def coda_contributions(
    model: nn.Module, info: ModelInfo, variables: Any, images: Array, targets: Array
) -> Array:
  """ "Ours": exact contribution maps (N, [T,] H, W, 2C), or (…, 1) upsampled for a CNN embedding.

  Args: images (N, H, W, C) in [0, 1]; targets (N,) or (N, T) class indices.
  """

  def attribute(t):
    explanation = explain(model, variables, images, targets=t)
    if info.encoded_input:
      return explanation["contribution_map"]
    return upsample_to_image(explanation["contribution_map_sum"], images.shape[1:3])[..., None]

  return over_targets(attribute, targets)


def _grad_cam_layer(model: nn.Module, info: ModelInfo) -> Callable[[nn.Module, str], bool]:
  """Filter for ``layer_function``: the module a model names as ``grad_cam_module`` (a
  B-cosified network: its last feature map), else the last CoDA layer (``…/layer_{L-1}``)."""
  named = getattr(model, "grad_cam_module", "")
  path = tuple(named.split("/")) if named else (f"layer_{info.num_layers - 1}",)
  return lambda module, method_name: (
      method_name == "__call__" and module.path[-len(path) :] == path
  )


def posthoc_attribution(
    model: nn.Module,
    info: ModelInfo,
    method: str,
    variables: Any,
    images: Array,
    targets: Array,
    *,
    items_per_pass: int | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Array:
  """A :mod:`codajax.attribution` preset on the image: (N, [T,] H, W, C or 1).

  Grad-CAM uses the output of the last CoDA layer (the class map before pooling), or of the
  module a model names as ``grad_cam_module``.
  ``items_per_pass``: integration steps (IntGrad) or noise samples (SmoothGrad) per pass
  (``None``: all at once).
  ``settings``: keyword overrides of the preset (e.g. ``{"n_masks": 1000}`` for RISE).
  """
  preset = attribution.get_method(method)
  if preset.method is attribution.grad_cam:
    fn = attribution.layer_function(model, variables, _grad_cam_layer(model, info))
  else:
    fn = lambda x: model.apply(variables, x)
  overrides = {"items_per_pass": items_per_pass} if preset.method in _ITEMS_PER_PASS_METHODS else {}
  return preset(fn, images, targets, **{**overrides, **dict(settings or {})})


def attribution_function(
    model: nn.Module,
    info: ModelInfo,
    method: str,
    *,
    items_per_pass: int | None = None,
    settings: Mapping[str, Any] | None = None,
) -> AttributionFn:
  """``(variables, images uint8 (N, H, W, C), targets (N,) | (N, T)) -> maps`` (not jitted).

  Maps: (N, [T,] H, W, C') float32 with C' = 2C ("Ours" on an encoded input), C (gradient
  methods) or 1 (Grad-CAM, Occlusion, RISE, "Ours" on a CNN embedding). ``items_per_pass``
  and ``settings``: see :func:`posthoc_attribution`. Evaluators compile it inside their programs.
  """

  def attribute(variables, images, targets):
    images = images.astype(jnp.float32) / 255.0
    if method == OURS:
      return coda_contributions(model, info, variables, images, targets)
    return posthoc_attribution(
        model,
        info,
        method,
        variables,
        images,
        targets,
        items_per_pass=items_per_pass,
        settings=settings,
    )

  return attribute


def program_label(kind: str, method: str, settings: Mapping[str, Any] | None = None) -> str:
  """A unique program name: ``kind/method`` plus the non-default settings, e.g. ``loc/RISE[n_masks=10]``."""
  extra = ",".join(f"{k}={v!r}" for k, v in sorted(dict(settings or {}).items()))
  return f"{kind}/{method}" + (f"[{extra}]" if extra else "")


class MethodsEvaluator:
  """Base of the evaluators that score explanation methods: the settings they share.

  Args:
    methods: names (``"Ours,Grad"`` or a sequence; empty: all of :func:`known_methods`).
    batch_size: images per attribution call (a localisation grid counts as n² images).
    items_per_pass: integration steps (IntGrad) or noise samples (SmoothGrad) per pass (memory
      only).
    method_settings: ``{method: {keyword: value}}`` overrides of the post-hoc presets.
  """

  def __init__(
      self,
      methods: Sequence[str] | str | None = None,
      batch_size: int = 32,
      items_per_pass: int = 4,
      method_settings: Mapping[str, Mapping[str, Any]] | None = None,
  ):
    self.methods = check_methods(methods)
    self.method_settings = check_method_settings(method_settings or {})
    unused = sorted(set(self.method_settings) - set(self.methods))
    if unused:
      raise EvaluationError(
          f"settings given for {', '.join(unused)}, which is not evaluated "
          f"(methods: {', '.join(self.methods)}); add it to --methods or drop its setting"
      )
    if int(batch_size) < 1 or int(items_per_pass) < 1:
      raise EvaluationError(
          f"batch_size and items_per_pass must be >= 1; got {batch_size}, {items_per_pass}"
      )
    self.batch_size, self.items_per_pass = int(batch_size), int(items_per_pass)

  def settings_of(self, method: str) -> dict[str, Any]:
    """The overrides given for ``method``."""
    return dict(self.method_settings.get(method, {}))

  def attribute(self, ctx, method: str) -> AttributionFn:
    """The attribution function of ``method`` for ``ctx``'s model (see :func:`attribution_function`)."""
    return attribution_function(
        ctx.model,
        ctx.info,
        method,
        items_per_pass=self.items_per_pass,
        settings=self.settings_of(method),
    )

  def label(self, kind: str, method: str) -> str:
    """The program label of ``method`` in this evaluator (settings and items per pass included)."""
    extra = self.settings_of(method)
    if method in ("IntGrad", "SmoothGrad"):
      extra.setdefault("items_per_pass", self.items_per_pass)  # a method setting wins
    return program_label(kind, method, extra)
