"""Shared pieces of the attribution methods: input checks, target selection, chunked sums.

Conventions used by every method in :mod:`codajax.attribution`:

* ``fn`` maps images ``(N, H, W, C)`` to logits ``(N, K)``, one row per image and no
  interaction between the images of a batch (no batch statistics). The methods differentiate
  ``sum_n logits[n, targets[n]]``, which gives each image its own gradient only under that
  assumption.
* ``targets`` is an int, an int array ``(N,)``, or ``(N, T)`` for T classes per image; the
  result then gains a target axis, ``(N, T, ...)``. Perturbation methods (Occlusion, RISE) share
  their forward passes between the T classes, gradient methods ``vmap`` over them.
* Loops over integration steps, noise samples or masks run as a ``lax.scan`` over chunks whose
  items are ``vmap``-ed, so a method is one traced program whatever its number of forward passes.
* Bad input is an error with a one-line message naming the argument (see
  :mod:`codajax._checks`): ``TypeError`` for non-float images, non-integer targets and settings
  of the wrong type (``n_steps="20"``, ``n_steps=2.5``); ``ValueError`` for non-4-D images, an
  empty batch (N = 0: there is nothing to explain), a zero height or width, settings out of
  range (``n_steps=0``, ``stdevs=nan``, a baseline of the wrong shape) and, when the values are
  concrete, NaN/Inf pixels or baselines, pixels outside [0, 1] (``check_range=False`` allows
  them, as for :func:`codajax.explain.explain`) and targets outside ``[0, K)`` (checked even
  when a method evaluates the model inside ``vmap``/``scan``, e.g. SmoothGrad's noise
  samples).
* Under ``jax.jit`` values cannot be inspected: NaN pixels or baselines propagate into NaN
  maps, and a traced target outside ``[0, K)`` (negative too) selects a constant 0 instead of
  a logit, so its map is all zeros (RISE included: its score is 0, not ``sigmoid(0)``); the
  other images of the batch are unaffected.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from codajax._checks import (
    check_bool,
    check_callable,
    check_class_indices,
    check_class_range,
    check_images,
    describe,
    is_traced,
)

Array = jax.Array
ForwardFn = Callable[[Array], Array]


def attribution_images(fn: Any, images: Any, where: str, check_range: bool) -> Array:
  """The images of an attribution method as a JAX array, checked as :func:`codajax.explain.explain`
  checks them: ``fn`` callable, float ``(N, H, W, C)`` images, and (concrete values only) no
  NaN/Inf pixels and, with ``check_range``, none outside [0, 1]."""
  check_callable(fn, "fn", where=where)
  check_bool(check_range, "check_range", where=where)
  return check_images(images, name=where, check_finite=True, check_range=check_range)


def as_targets(targets: int | Array, num_images: int, where: str = "attribution") -> Array:
  """Class indices as int32 ``(N,)`` (from an int or ``(N,)``) or ``(N, T)`` (from ``(N, T)``).

  Concrete targets (an int, a numpy or a concrete JAX array) come back as a numpy array, so they
  stay concrete, and range-checked, by :func:`select`, when a method closes over it inside a
  traced loop (``vmap``/``scan``); a tracer comes back as a tracer. See
  :func:`codajax._checks.check_class_indices` (``TypeError`` for non-integers, ``ValueError``
  for a bad shape).
  """
  return check_class_indices(targets, where=where, num_images=num_images, per_image_classes=True)


def check_target_range(targets: Array, num_classes: int, where: str = "attribution") -> None:
  """``ValueError`` if concrete ``targets`` (N,) or (N, T) lie outside ``[0, num_classes)``."""
  check_class_range(targets, num_classes, where=where)


def traced_target_validity(targets: Array, num_classes: int) -> Array | None:
  """``(targets >= 0) & (targets < K)`` for traced targets; ``None`` for concrete ones (checked)."""
  if not is_traced(targets):
    return None
  return (targets >= 0) & (targets < num_classes)


def select(logits: Array, targets: Array) -> Array:
  """``logits[n, targets[n]]``: (N, K), (N,) or (N, T) -> (N,) or (N, T), shape/range-checked.

  Concrete targets outside ``[0, K)`` raise ``ValueError``; a traced one selects 0 (a constant,
  so every map built from it is zero), never a wrapped-around class (JAX indexing reads ``-1``
  as ``K - 1``).
  """
  if logits.ndim != 2 or logits.shape[0] != targets.shape[0]:
    raise ValueError(
        f"fn must return logits of shape (N={targets.shape[0]}, K); got {logits.shape}"
    )
  num_classes = logits.shape[1]
  check_target_range(targets, num_classes)
  valid = traced_target_validity(targets, num_classes)
  index = targets if valid is None else jnp.clip(targets, 0, num_classes - 1)
  picked = jnp.take_along_axis(logits, index.reshape(index.shape[0], -1), axis=1).reshape(
      targets.shape
  )
  return picked if valid is None else jnp.where(valid, picked, jnp.zeros((), picked.dtype))


def per_target(
    attribute: Callable[[Array], Array], targets: Array, fn: ForwardFn, images: Array
) -> Array:
  """``attribute(targets)`` for (N,) targets; for (N, T) targets vmapped over T -> (N, T, ...).

  ``fn`` and ``images`` serve the range check of concrete (N, T) targets, which the vmap hides.
  """
  if targets.ndim == 1:
    return attribute(targets)
  if not is_traced(targets):
    check_target_range(targets, jax.eval_shape(fn, images).shape[-1])
  return jax.vmap(attribute, in_axes=1, out_axes=1)(targets)


def target_gradient(fn: ForwardFn, images: Array, targets: Array) -> Array:
  """Gradient of each image's target logit w.r.t. that image: targets (N,) -> (N, H, W, C)."""
  return jax.grad(lambda x: jnp.sum(select(fn(x), targets)))(images)


def as_key(key: Array | int, where: str = "attribution") -> Array:
  """A ``jax.random`` key from a key or an integer seed; ``TypeError`` for anything else."""
  if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
    return jax.random.key(key)
  is_key = isinstance(key, (jax.Array, np.ndarray)) and (
      jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or key.dtype == np.uint32
  )
  if not is_key:
    raise TypeError(
        f"{where}: key must be a jax.random key or an integer seed, got {describe(key)}."
    )
  return key


def weighted_sum(f: Callable[[Any], Any], xs: Any, weights: Array, batch_size: int | None) -> Any:
  """``sum_i weights[i] * f(xs[i])`` for a pytree ``xs`` with a leading axis of length M.

  Items are evaluated ``batch_size`` at a time (``vmap`` inside a chunk, ``lax.scan`` across
  chunks, None = all at once); the last chunk is padded with repeats of the last item at
  weight 0. ``f`` may return a pytree; the result has its structure, summed over items.
  """
  num_items = weights.shape[0]
  if num_items < 1:
    raise ValueError("weighted_sum needs at least one item (got 0)")
  batch_size = num_items if batch_size is None else max(1, min(int(batch_size), num_items))
  num_chunks = -(-num_items // batch_size)
  padded = num_chunks * batch_size
  gather = jnp.minimum(jnp.arange(padded), num_items - 1)
  chunk = lambda a: a[gather].reshape((num_chunks, batch_size) + a.shape[1:])
  xs = jax.tree.map(chunk, xs)
  weights = jnp.pad(weights, (0, padded - num_items)).reshape(num_chunks, batch_size)

  def step(total, chunk_items):
    items, chunk_weights = chunk_items
    values = jax.vmap(f)(items)
    return (
        jax.tree.map(
            lambda t, v: t + jnp.tensordot(chunk_weights.astype(v.dtype), v, axes=1), total, values
        ),
        None,
    )

  first = jax.tree.map(lambda a: a[0, 0], xs)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(f, first))
  total, _ = jax.lax.scan(step, zeros, (xs, weights))
  return total


def upsample_nearest(maps: Array, height: int, width: int) -> Array:
  """Nearest-neighbour resize (N, h, w, C) -> (N, height, width, C), PyTorch's "nearest" rule.

  Output pixel ``i`` reads input pixel ``floor(i * h / height)``, as ``F.interpolate`` (used by
  Captum's ``LayerAttribution.interpolate``) does; for integer factors this is plain repetition.
  """
  rows = (np.arange(height) * maps.shape[1]) // height
  cols = (np.arange(width) * maps.shape[2]) // width
  return maps[:, rows][:, :, cols]
