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
* Bad input is an error with a one-line message: ``TypeError`` for non-float images,
  ``ValueError`` for non-4-D images and an empty batch (N = 0: there is nothing to explain), the
  same check as :func:`codajax.explain.explain` and the models make; ``ValueError`` for
  non-integer targets and for concrete targets outside ``[0, K)`` (checked even when a method evaluates the model inside ``vmap``/``scan``, e.g.
  SmoothGrad's noise samples). Targets that are tracers (a method called inside ``jax.jit``
  with the targets as an argument) cannot be checked: there an out-of-range target gives a zero
  map (JAX's out-of-bounds gather fills).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ForwardFn = Callable[[Array], Array]


def as_targets(targets: int | Array, num_images: int) -> Array:
  """Class indices as int32 ``(N,)`` (from an int or ``(N,)``) or ``(N, T)`` (from ``(N, T)``).

  Concrete targets (an int, a numpy or a concrete JAX array) come back as a numpy array, so they
  stay concrete, and range-checked by :func:`select`, when a method closes over it inside a
  traced loop (``vmap``/``scan``); a tracer comes back as a tracer.
  """
  xp = jnp if isinstance(targets, jax.core.Tracer) else np
  targets = xp.asarray(targets)
  if not jnp.issubdtype(targets.dtype, jnp.integer):
    raise ValueError(f"targets must be integer class indices; got dtype {targets.dtype}")
  if targets.ndim > 2 or (targets.ndim >= 1 and targets.shape[0] != num_images):
    raise ValueError(
        f"targets must be an int or an array of shape ({num_images},) or ({num_images}, T); got shape {targets.shape}"
    )
  return xp.broadcast_to(targets, (num_images,) + targets.shape[1:]).astype(xp.int32)


def check_target_range(targets: Array, num_classes: int) -> None:
  """Raises ``ValueError`` if concrete ``targets`` (N,) or (N, T) lie outside ``[0, num_classes)``."""
  if isinstance(targets, jax.core.Tracer):
    return
  values = np.asarray(targets)
  if values.size and (values.min() < 0 or values.max() >= num_classes):
    raise ValueError(
        f"targets must lie in [0, {num_classes}); got values {np.unique(values).tolist()}"
    )


def select(logits: Array, targets: Array) -> Array:
  """``logits[n, targets[n]]``: (N, K), (N,) or (N, T) -> (N,) or (N, T), shape/range-checked."""
  if logits.ndim != 2 or logits.shape[0] != targets.shape[0]:
    raise ValueError(
        f"fn must return logits of shape (N={targets.shape[0]}, K); got {logits.shape}"
    )
  check_target_range(targets, logits.shape[1])
  return jnp.take_along_axis(logits, targets.reshape(targets.shape[0], -1), axis=1).reshape(
      targets.shape
  )


def per_target(
    attribute: Callable[[Array], Array], targets: Array, fn: ForwardFn, images: Array
) -> Array:
  """``attribute(targets)`` for (N,) targets; for (N, T) targets vmapped over T -> (N, T, ...).

  ``fn`` and ``images`` serve the range check of concrete (N, T) targets, which the vmap hides.
  """
  if targets.ndim == 1:
    return attribute(targets)
  if not isinstance(targets, jax.core.Tracer):
    check_target_range(targets, jax.eval_shape(fn, images).shape[-1])
  return jax.vmap(attribute, in_axes=1, out_axes=1)(targets)


def target_gradient(fn: ForwardFn, images: Array, targets: Array) -> Array:
  """Gradient of each image's target logit w.r.t. that image: targets (N,) -> (N, H, W, C)."""
  return jax.grad(lambda x: jnp.sum(select(fn(x), targets)))(images)


def as_key(key: Array | int) -> Array:
  """A ``jax.random`` key from a key or an integer seed."""
  return jax.random.key(key) if isinstance(key, (int, np.integer)) else key


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
