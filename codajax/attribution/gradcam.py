"""Grad-CAM on an intermediate feature map (Captum's ``LayerGradCam`` + ``interpolate``).

Gradients with respect to an intermediate activation need that activation as an input of the
differentiated function. Both forms therefore use a *feature function*
``fn(images, delta) -> (logits, features)`` in which the network's head consumes
``features + delta``; Grad-CAM differentiates the target logit w.r.t. ``delta`` at 0:

* :func:`grad_cam` takes such a function directly (e.g. built with Flax's ``self.perturb``:
  ``lambda x, d: model.apply({**variables, "perturbations": {"feats": d}}, x, ...)``);
* :func:`layer_grad_cam` builds it from a Linen module, its variables and a layer name with
  :func:`layer_function` (``nn.intercept_methods`` adds ``delta`` to the layer's output and
  ``capture_intermediates`` returns that output), so the module needs no changes.

On a CoDA-Net with the last CoDA layer as the layer, Grad-CAM equals ReLU(o^L_c) / T.
"""

from __future__ import annotations

from typing import Any, Callable

import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp

from codajax._checks import check_bool, check_callable, describe
from codajax.attribution._common import (
    Array,
    as_targets,
    attribution_images,
    per_target,
    select,
    upsample_nearest,
)

FeatureFn = Callable[[Array, Array], tuple[Array, Array]]
LayerFilter = str | Callable[[nn.Module, str], bool]


def grad_cam(
    fn: FeatureFn,
    images: Array,
    targets: int | Array,
    *,
    relu_attributions: bool = True,
    upsample: bool = True,
    check_range: bool = True,
) -> Array:
  """Grad-CAM from a feature function.

  Captum: ``LayerGradCam(fn, layer).attribute(inputs, target, relu_attributions=...)`` followed
  by ``LayerAttribution.interpolate`` (``upsample``).

  Args:
    fn: ``(images (N,H,W,C), delta) -> (logits (N,K), features (N,h,w,D))`` where the logits are
      computed from ``features + delta``; a scalar ``delta = 0`` must work too (used to infer
      the feature shape).
    images: (N,H,W,C); targets: int, (N,) or (N,T).
    relu_attributions: clamp the map at 0 (the reference's setting).
    upsample: resize to (H, W) with nearest interpolation (PyTorch rule) as the reference.
    check_range: refuse (eager) images outside [0, 1].

  Returns: (N,H,W,1), or (N,h,w,1) without ``upsample`` (with a T axis after N for (N,T) targets):
  ``sum_d mean_ij(d logit_t / d A_ijd) * A_ijd``. A traced target outside ``[0, K)`` gives a
  zero map. A plain apply function ``images -> logits`` is a ``TypeError``.
  """
  where = "grad_cam"
  images = attribution_images(fn, images, where, check_range)
  _check_feature_function(fn)
  check_bool(relu_attributions, "relu_attributions", where=where)
  check_bool(upsample, "upsample", where=where)
  targets = as_targets(targets, images.shape[0], where)
  outputs = jax.eval_shape(lambda x: fn(x, jnp.zeros((), x.dtype)), images)
  if not (isinstance(outputs, (tuple, list)) and len(outputs) == 2):
    raise TypeError(
        f"{where}: fn must return (logits, features) (a feature function, see layer_function), "
        f"got {describe(outputs)}."
    )
  feature_shape = outputs[1]
  if len(feature_shape.shape) != 4 or feature_shape.shape[0] != images.shape[0]:
    raise ValueError(f"the feature map must have shape (N, h, w, D); got {feature_shape.shape}")

  delta = jnp.zeros(feature_shape.shape, feature_shape.dtype)

  def attribute(t):
    def target_logit(delta):
      logits, features = fn(images, delta)
      return jnp.sum(select(logits, t)), features

    grads, features = jax.grad(target_logit, has_aux=True)(delta)
    channel_weights = jnp.mean(grads, axis=(1, 2), keepdims=True)
    cam = jnp.sum(channel_weights * features, axis=-1, keepdims=True)
    if relu_attributions:
      cam = jax.nn.relu(cam)
    return upsample_nearest(cam, images.shape[1], images.shape[2]) if upsample else cam

  return per_target(attribute, targets, lambda x: fn(x, jnp.zeros((), x.dtype))[0], images)


def _check_feature_function(fn) -> None:
  """``TypeError`` when ``fn`` cannot take ``(images, delta)`` (e.g. a plain apply function)."""
  try:
    signature = inspect.signature(fn)
  except (TypeError, ValueError):  # no signature to read (a builtin): its call will tell
    return
  try:
    signature.bind(None, None)
  except TypeError:
    raise TypeError(
        f"grad_cam: fn must be a feature function (images, delta) -> (logits, features), e.g. "
        f"from layer_function(model, variables, layer), got a function of {signature}."
    ) from None


def _as_filter(layer: LayerFilter) -> Callable[[nn.Module, str], bool]:
  """A ``capture_intermediates``-style filter from a module path ("a/b") or a filter."""
  if callable(layer):
    return layer
  return lambda module, method_name: method_name == "__call__" and "/".join(module.path) == layer


def _module_paths(
    model: nn.Module, variables: Any, images: Array, method: Any, apply_kwargs: dict
) -> list[str]:
  """The paths of all submodules called when applying ``model`` (for error messages)."""
  _, state = jax.eval_shape(
      lambda x: model.apply(
          variables,
          x,
          method=method,
          capture_intermediates=True,
          mutable=["intermediates"],
          **apply_kwargs,
      ),
      images,
  )
  paths = jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]
  return sorted(
      {"/".join(str(getattr(k, "key", k)) for k in path[:-2]) for path, _ in paths} - {""}
  )


def layer_function(
    model: nn.Module, variables: Any, layer: LayerFilter, *, method: Any = None, **apply_kwargs
) -> FeatureFn:
  """Feature function ``(images, delta) -> (logits, features)`` of a Linen module's layer.

  Args:
    model, variables: the module and its variables (``model.apply(variables, images)`` -> logits).
    layer: a submodule path such as ``"layers_8"`` or ``"backbone/CodaLayer_8"`` (its
      ``__call__`` output is used), or a filter ``(module, method_name) -> bool`` as accepted by
      Flax's ``capture_intermediates``. It must match exactly one call.
    method, apply_kwargs: passed on to ``model.apply``.
  """
  if not isinstance(model, nn.Module):
    raise TypeError(f"layer_function: model must be a Linen module, got {describe(model)}.")
  if not (isinstance(layer, str) or callable(layer)):
    raise TypeError(
        f"layer_function: layer must be a module path such as 'layers_8' or a filter "
        f"(module, method_name) -> bool, got {describe(layer)}."
    )
  matches = _as_filter(layer)

  def fn(images: Array, delta: Array) -> tuple[Array, Array]:
    def add_delta(next_fun, args, kwargs, context):
      output = next_fun(*args, **kwargs)
      return output + delta if matches(context.module, context.method_name) else output

    with nn.intercept_methods(add_delta):
      logits, state = model.apply(
          variables,
          images,
          method=method,
          capture_intermediates=matches,
          mutable=["intermediates"],
          **apply_kwargs,
      )
    captured = jax.tree.leaves(state.get("intermediates", {}))
    if len(captured) != 1:
      known = _module_paths(model, variables, images, method, apply_kwargs)
      raise ValueError(
          f"layer {layer!r} matched {len(captured)} module calls, expected 1; module paths: {known}"
      )
    return logits, captured[0]

  return fn


def layer_grad_cam(
    model: nn.Module,
    variables: Any,
    images: Array,
    targets: int | Array,
    *,
    layer: LayerFilter,
    relu_attributions: bool = True,
    upsample: bool = True,
    check_range: bool = True,
    method: Any = None,
    **apply_kwargs,
) -> Array:
  """Grad-CAM on the output of ``layer`` of a Linen module: (N,H,W,C) -> (N,H,W,1).

  See :func:`layer_function` for ``layer`` and :func:`grad_cam` for the computation. Captum:
  ``LayerGradCam(model, layer).attribute(inputs, target, relu_attributions=...)``.
  """
  fn = layer_function(model, variables, layer, method=method, **apply_kwargs)
  return grad_cam(
      fn,
      images,
      targets,
      relu_attributions=relu_attributions,
      upsample=upsample,
      check_range=check_range,
  )
