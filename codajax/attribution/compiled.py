"""Eager calls of the presets in ``METHODS``: checked eagerly, then run as one jitted program.

Called outside any JAX transformation, a preset checks its images, targets and array settings
(e.g. NaN baselines; one clear error, before anything runs; the other settings are checked when
the method is traced) and then runs the method as one ``jax.jit`` program, cached per method,
settings, ``fn``, target shape and input shape. A second call on other images of the same shape
compiles nothing; op by op, every call would cost what a first call costs.

How ``fn`` enters that program:

* a pytree of arrays, e.g. ``jax.tree_util.Partial(model.apply, variables)``: its leaves (the
  parameters) are arguments of the program and its function is part of the cache key, so new
  parameters, or a new ``Partial`` of the same function, reuse the compiled program;
* any other callable (a closure such as ``lambda x: model.apply(variables, x)``): static, hashed
  by identity. Each new function object compiles a new program, and the arrays it closes over
  are constants of that program (XLA constant-folds them: slower to compile, and a copy of the
  parameters per program). Keep one function object, or pass a ``Partial``.

Inside ``jax.jit`` (or any transformation) the preset is traced in place, unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from codajax._checks import check_finite
from codajax.attribution._common import as_targets, attribution_images, check_target_range
from codajax.attribution.gradcam import _check_feature_function, grad_cam

_ARRAY_TYPES = (jax.Array, np.ndarray, np.generic, float, int, complex, bool)
_CLASS_COUNTS: dict[Any, int] = {}  # program key -> K of fn's logits, for the eager range check
_CLASS_COUNTS_MAX = 256
_FEATURE_STRUCTURES: set[Any] = set()  # Partial structures whose function takes (images, delta)


def _is_traced(tree: Any) -> bool:
  return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def _is_array_tree(leaves: list, treedef: Any) -> bool:
  """Whether a function flattened to ``leaves`` and ``treedef`` is a pytree of arrays (a
  ``Partial``), not a leaf itself."""
  return treedef.num_nodes > 1 and all(isinstance(leaf, _ARRAY_TYPES) for leaf in leaves)


def _aval_key(leaf: Any) -> tuple:
  """``(shape, dtype, weak type)`` of an array leaf (read off its attributes: no dtype
  promotion, no host copy), or ``(shape, type)`` of a Python number."""
  dtype = getattr(leaf, "dtype", None)
  if dtype is None:
    return np.shape(leaf), type(leaf)
  return leaf.shape, dtype, getattr(leaf, "weak_type", False)


def _tree_key(leaves: list, treedef: Any) -> tuple:
  """A flattened pytree's structure and leaf shapes and dtypes (see :func:`_aval_key`)."""
  return treedef, tuple(map(_aval_key, leaves))


def _split_settings(settings: dict[str, Any]) -> tuple[tuple, dict[str, Any]] | None:
  """``(static items, array settings)``: arrays (e.g. a ``jax.random`` key) become arguments.

  ``None`` when a non-array setting is unhashable (then the call runs op by op).
  """
  static, arrays = [], {}
  for name, value in sorted(settings.items()):
    if isinstance(value, (jax.Array, np.ndarray)):
      arrays[name] = value
    else:
      static.append((name, value))
  try:
    hash(tuple(static))
  except TypeError:
    return None
  return tuple(static), arrays


def _run(method, static, fn, images, targets, arrays):
  return method(fn, images, targets, **dict(static), **arrays)


_run_with_fn_argument = jax.jit(_run, static_argnums=(0, 1))
_run_with_fn_static = jax.jit(_run, static_argnums=(0, 1, 2))


def _logits_fn(method: Callable, fn: Callable) -> Callable:
  """``images -> logits`` of ``fn`` (Grad-CAM's ``fn`` also takes a feature offset)."""
  if method is grad_cam:
    return lambda x: fn(x, jnp.zeros((), x.dtype))[0]
  return fn


def _check_feature_structure(fn: Callable, treedef: Any) -> None:
  """:func:`_check_feature_function` of ``fn``, once per ``treedef`` of a ``Partial`` ``fn`` (its
  function and bound argument structure, which fix its signature; ``None``: every call)."""
  try:
    if treedef in _FEATURE_STRUCTURES:
      return
  except TypeError:  # an unhashable function in the structure: check it each time
    treedef = None
  _check_feature_function(fn)
  if treedef is not None:
    if len(_FEATURE_STRUCTURES) >= _CLASS_COUNTS_MAX:
      _FEATURE_STRUCTURES.clear()
    _FEATURE_STRUCTURES.add(treedef)


def _num_classes(key: Any, method: Callable, fn: Callable, images: jax.Array) -> int:
  """``K`` of ``fn``'s logits (an abstract trace, no compile), cached per program ``key``."""
  if key not in _CLASS_COUNTS:
    if len(_CLASS_COUNTS) >= _CLASS_COUNTS_MAX:
      _CLASS_COUNTS.clear()
    _CLASS_COUNTS[key] = jax.eval_shape(_logits_fn(method, fn), images).shape[-1]
  return _CLASS_COUNTS[key]


def call(method: Callable, fn: Callable, images: Any, targets: Any, settings: dict[str, Any]):
  """``method(fn, images, targets, **settings)``; eagerly: checked, then one cached jitted program.

  Args:
    method: an attribution function of :mod:`codajax.attribution` (``(fn, images, targets,
      **settings)``).
    fn: ``(N, H, W, C) -> (N, K)`` logits (Grad-CAM: its feature function), a ``Partial`` or
      any callable (see the module docstring for what each costs).
    images: ``(N, H, W, C)`` float images.
    targets: int, ``(N,)`` or ``(N, T)`` class indices.
    settings: the method's keyword settings.

  Returns:
    What ``method`` returns, ``(N, [T,] H, W, C or 1)``.
  """
  split = _split_settings(settings)
  if split is None or _is_traced((fn, images, targets, settings)):
    return method(fn, images, targets, **settings)
  static, arrays = split
  where = getattr(method, "__name__", "attribution")
  images = attribution_images(fn, images, where, settings.get("check_range", True))
  fn_leaves, fn_treedef = jax.tree.flatten(fn)
  fn_is_argument = _is_array_tree(fn_leaves, fn_treedef)
  if method is grad_cam:
    _check_feature_structure(fn, fn_treedef if fn_is_argument else None)
  for name, value in arrays.items():  # traced in the program: their values are checked here
    check_finite(value, name, where=where)
  targets = as_targets(targets, images.shape[0], where)
  if fn_is_argument:
    program = functools.partial(_run_with_fn_argument, method, static)
    args, fn_key = (fn, images, targets, arrays), _tree_key(fn_leaves, fn_treedef)
  else:
    program = functools.partial(_run_with_fn_static, method, static, fn)
    args, fn_key = (images, targets, arrays), fn
  key = (method, static, fn_key, _tree_key(*jax.tree.flatten((images, targets, arrays))))
  try:
    hash(key)
  except TypeError:  # an unhashable function cannot be static: run op by op
    return method(fn, images, targets, **settings)
  check_target_range(targets, _num_classes(key, method, fn, images))
  return program(*args)
