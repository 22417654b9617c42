"""Gradient-based attributions: Gradient (saliency), Input×Gradient, Integrated Gradients,
and the noise tunnel (SmoothGrad, SmoothGrad², VarGrad) around any of them.

Names and arguments follow Captum (``Saliency``, ``InputXGradient``, ``IntegratedGradients``,
``NoiseTunnel``). All functions take ``fn: (N, H, W, C) images -> (N, K) logits``.

DeepLIFT is not implemented: on a CoDA-Net (no ReLU, max-pool or other non-linearity that
DeepLIFT's rescale rule rewrites) Captum's ``DeepLift`` with its default zero baseline reduces to
Input×Gradient; the reference's stored DeepLIFT and IxG results agree to 1.5e-7.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from codajax._checks import (
    check_bool,
    check_broadcastable,
    check_callable,
    check_choice,
    check_float_array,
    check_int,
    check_optional_int,
    check_real,
)
from codajax.attribution._common import (
    Array,
    ForwardFn,
    as_key,
    as_targets,
    attribution_images,
    per_target,
    target_gradient,
    weighted_sum,
)

INTEGRATION_METHODS = (
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
    "gausslegendre",
)
NOISE_TUNNEL_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")


def gradient(
    fn: ForwardFn,
    images: Array,
    targets: int | Array,
    *,
    abs: bool = False,  # noqa: A002
    check_range: bool = True,
) -> Array:
  """Saliency: d logit_target / d images, signed unless ``abs`` (Captum's default is abs=True).

  Captum: ``Saliency(fn).attribute(inputs, target, abs=...)``.

  Args: fn (N,H,W,C)->(N,K); images (N,H,W,C) in [0, 1] (``check_range=False`` allows other
  values); targets int, (N,) or (N,T).
  Returns (N,H,W,C), or (N,T,H,W,C) for (N,T) targets.
  """
  check_bool(abs, "abs", where="gradient")
  images = attribution_images(fn, images, "gradient", check_range)
  grads = per_target(
      lambda t: target_gradient(fn, images, t),
      as_targets(targets, images.shape[0], "gradient"),
      fn,
      images,
  )
  return jnp.abs(grads) if abs else grads


def input_x_gradient(
    fn: ForwardFn, images: Array, targets: int | Array, *, check_range: bool = True
) -> Array:
  """Input×Gradient: images * d logit_target / d images, (N,H,W,C) -> (N,H,W,C) ((N,T,H,W,C)).

  On a CoDA-Net this also equals Captum's DeepLift with a zero baseline (no module for DeepLIFT
  to rewrite). It differs from the exact CoDA contribution map ("Ours"), which differentiates the
  6-channel encoded input with the dynamic weights held fixed. Captum:
  ``InputXGradient(fn).attribute(inputs, target)``.
  """
  images = attribution_images(fn, images, "input_x_gradient", check_range)
  return per_target(
      lambda t: images * target_gradient(fn, images, t),
      as_targets(targets, images.shape[0], "input_x_gradient"),
      fn,
      images,
  )


def integration_rule(n_steps: int, method: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
  """Quadrature nodes ``alphas`` in [0, 1] and weights ``step_sizes``, both (n_steps,).

  ``gausslegendre`` and the ``riemann_left/right/middle`` rules are Captum's. ``riemann_trapezoid``
  is the exact trapezoid rule (nodes linspace(0, 1, n), weights 1/(n-1), halved at both ends);
  Captum uses weights 1/n there, which sum to (n-1)/n.
  """
  check_choice(method, "integration method", INTEGRATION_METHODS, where="integration_rule")
  if method == "gausslegendre":
    n_steps = check_int(n_steps, "n_steps", where="integration_rule (gausslegendre)", minimum=1)
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    return 0.5 * (nodes + 1.0), 0.5 * weights
  n_steps = check_int(n_steps, "n_steps", where="integration_rule (the Riemann rules)", minimum=2)
  if method == "riemann_trapezoid":
    weights = np.full(n_steps, 1.0 / (n_steps - 1))
    weights[[0, -1]] /= 2
    return np.linspace(0.0, 1.0, n_steps), weights
  offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
  return (np.arange(n_steps) + offset) / n_steps, np.full(n_steps, 1.0 / n_steps)


def integrated_gradients(
    fn: ForwardFn,
    images: Array,
    targets: int | Array,
    *,
    baselines: float | Array | None = None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    items_per_pass: int | None = None,
    check_range: bool = True,
) -> Array:
  """Integrated Gradients: (x - b) * sum_i w_i grad f(b + alpha_i (x - b)).

  Captum: ``IntegratedGradients(fn).attribute(inputs, baselines, target, n_steps=...,
  method=..., internal_batch_size=...)``.

  Args:
    fn: (N,H,W,C) -> (N,K) logits.
    images: (N,H,W,C).
    targets: int, (N,) or (N,T).
    baselines: a finite scalar or array broadcastable to images; None = zeros (black image).
      Concrete NaN/Inf baselines are a ``ValueError``; under ``jit`` they give NaN maps.
    n_steps, method: quadrature, see :func:`integration_rule` (reference: 20, "gausslegendre").
    items_per_pass: integration points evaluated per forward pass (None = all at once;
      Captum's ``internal_batch_size``).
    check_range: refuse (eager) images outside [0, 1].

  Returns: (N,H,W,C) ((N,T,H,W,C) for (N,T) targets); summed over pixels it approximates
  f(x)_t - f(b)_t.
  """
  where = "integrated_gradients"
  images = attribution_images(fn, images, where, check_range)
  targets = as_targets(targets, images.shape[0], where)
  check_optional_int(items_per_pass, "items_per_pass", where=where)
  baselines = (
      jnp.zeros_like(images)
      if baselines is None
      else jnp.broadcast_to(check_baselines(baselines, images, where), images.shape)
  )
  alphas, step_sizes = (
      jnp.asarray(rule, images.dtype) for rule in integration_rule(n_steps, method)
  )
  delta = images - baselines

  def attribute(t):
    path_gradient = lambda alpha: target_gradient(fn, baselines + alpha * delta, t)
    return delta * weighted_sum(path_gradient, alphas, step_sizes, items_per_pass)

  return per_target(attribute, targets, fn, images)


def noise_tunnel(
    attribution: Callable[..., Array],
    fn: ForwardFn,
    images: Array,
    targets: int | Array,
    *,
    key: Array | int,
    nt_type: str = "smoothgrad",
    nt_samples: int = 5,
    stdevs: float = 1.0,
    items_per_pass: int | None = None,
    check_range: bool = True,
    **kwargs,
) -> Array:
  """Noise tunnel around any attribution ``attribution(fn, images, targets, **kwargs)``.

  Draws ``nt_samples`` noisy copies ``images + N(0, stdevs²)`` (absolute standard deviation, as
  Captum) from ``key`` (a ``jax.random`` key or an int seed) and returns, per ``nt_type``, the
  mean attribution ("smoothgrad"), the mean squared attribution ("smoothgrad_sq") or its
  variance ("vargrad"). Shapes: images (N,H,W,C) -> the wrapped method's output shape.
  A concrete ``targets`` outside ``[0, K)`` raises ``ValueError`` (see :mod:`._common`), so do
  ``stdevs`` that is negative or not finite and ``nt_samples`` below 1; ``check_range`` applies
  to the images given (the noisy copies leave [0, 1] by design).
  ``items_per_pass``: noisy samples per pass (None = all at once; Captum's
  ``nt_samples_batch_size``); to chunk a wrapped method too, wrap it with
  ``functools.partial(method, items_per_pass=...)``. Captum:
  ``NoiseTunnel(attribution).attribute(inputs, nt_type, nt_samples, nt_samples_batch_size,
  stdevs=..., target=...)``.
  """
  where = "noise_tunnel"
  check_callable(attribution, "attribution", where=where)
  check_choice(nt_type, "nt_type", NOISE_TUNNEL_TYPES, where=where)
  nt_samples = check_int(nt_samples, "nt_samples", where=where, minimum=1)
  stdevs = check_real(stdevs, "stdevs", where=where, low=0.0)
  check_optional_int(items_per_pass, "items_per_pass", where=where)
  images = attribution_images(fn, images, where, check_range)
  # checked once, concrete inside the sample loop
  targets = as_targets(targets, images.shape[0], where)

  def moments(sample_key):
    noisy = images + stdevs * jax.random.normal(sample_key, images.shape, images.dtype)
    attributions = attribution(fn, noisy, targets, **kwargs)
    return attributions, attributions * attributions

  keys = jax.random.split(as_key(key, where), nt_samples)
  mean, mean_sq = weighted_sum(
      moments, keys, jnp.full(nt_samples, 1.0 / nt_samples, images.dtype), items_per_pass
  )
  if nt_type == "smoothgrad":
    return mean
  if nt_type == "smoothgrad_sq":
    return mean_sq
  return mean_sq - mean * mean


def smooth_grad(
    fn: ForwardFn,
    images: Array,
    targets: int | Array,
    *,
    key: Array | int,
    nt_samples: int = 50,
    stdevs: float = 0.15,
    items_per_pass: int | None = None,
    attribution: Callable[..., Array] = gradient,
    check_range: bool = True,
    **kwargs,
) -> Array:
  """SmoothGrad: the noise-tunnel mean of ``attribution`` (default: signed gradient).

  Defaults follow Smilkov et al. (50 samples, noise 15 % of the [0, 1] input range); the
  reference evaluation has no SmoothGrad. Shapes: (N,H,W,C) -> (N,H,W,C). Captum:
  ``NoiseTunnel(Saliency(fn)).attribute(inputs, nt_type="smoothgrad", ...)``; ``items_per_pass``
  as :func:`noise_tunnel`.
  """
  return noise_tunnel(
      attribution,
      fn,
      images,
      targets,
      key=key,
      nt_type="smoothgrad",
      nt_samples=nt_samples,
      stdevs=stdevs,
      items_per_pass=items_per_pass,
      check_range=check_range,
      **kwargs,
  )


def check_baselines(baselines: float | Array, images: Array, where: str) -> Array:
  """Baselines as an array of the images' dtype: a finite real scalar or a finite array that
  broadcasts to the images (NaN/Inf checked when concrete)."""
  if np.ndim(baselines) == 0 and not isinstance(baselines, (jax.Array, np.ndarray)):
    check_real(baselines, "baselines", where=where)
  else:
    baselines = check_float_array(baselines, "baselines", where=where)
    check_broadcastable(baselines, images.shape, "baselines", where=where)
  return jnp.asarray(baselines, images.dtype)
