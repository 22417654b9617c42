"""The input checks shared by explain, attribution, the metrics, the layers and the models.

The same bad input gives the same error type everywhere: ``TypeError`` for a value of the wrong
type (non-float images, non-integer class indices, a string or a float where an integer is
needed), ``ValueError`` for a value of the right type that is out of range (a bad shape, a count
below 1, a NaN setting, a class index outside ``[0, K)``). Every message is one sentence naming
the function, the argument, the value and what is expected.

Value checks (NaN/Inf, ranges, class indices) run only on concrete values: a JAX tracer (an
argument inside ``jax.jit``, ``vmap`` or ``grad``) passes them untouched, so no check adds work
to a traced program. Shape and dtype checks also run on tracers (their shapes are static).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

try:  # jax.core.Tracer is public on the jax versions this package supports (0.10-0.12)
  _TRACER: type = jax.core.Tracer
except AttributeError:  # pragma: no cover - a later jax without the alias
  from jax._src.core import Tracer as _TRACER  # noqa: N811


def is_traced(value: Any) -> bool:
  """Whether any leaf of ``value`` (a pytree) is a JAX tracer (its values are unknown)."""
  return any(isinstance(leaf, _TRACER) for leaf in jax.tree.leaves(value))


def describe(value: Any) -> str:
  """A short description of ``value`` for an error message: its repr, or an array's shape."""
  if isinstance(value, (jax.Array, np.ndarray)) and np.ndim(value) > 0:
    return f"an array of shape {tuple(np.shape(value))} and dtype {jnp.result_type(value)}"
  if isinstance(value, _TRACER):
    return f"a traced value of shape {tuple(value.shape)}"
  shown = repr(value)
  shown = shown if len(shown) <= 60 else shown[:57] + "..."
  if isinstance(value, (str, bool)) or not isinstance(value, (numbers.Number, np.generic)):
    return f"{shown} ({type(value).__name__})"
  return shown


def check_int(
    value: Any, name: str, *, where: str, minimum: int | None = 1, maximum: int | None = None
) -> int:
  """``value`` as a Python int in ``[minimum, maximum]``.

  Raises:
    TypeError: not an integer (a bool, a float such as 2.5 or 20.0, a string, a tracer).
    ValueError: outside the range.
  """
  integer = None
  if not isinstance(value, (bool, np.bool_, _TRACER)):
    try:
      integer = int(value.__index__())
    except (AttributeError, TypeError):
      integer = None
  if integer is None:
    raise TypeError(f"{where}: {name} must be an integer, got {describe(value)}.")
  if (minimum is not None and integer < minimum) or (maximum is not None and integer > maximum):
    if maximum is None and minimum in (0, 1):
      wanted = "a positive integer" if minimum == 1 else "a non-negative integer"
    else:
      bounds = ((">=", minimum), ("<=", maximum))
      wanted = "an integer " + " and ".join(f"{op} {v}" for op, v in bounds if v is not None)
    raise ValueError(f"{where}: {name} must be {wanted}, got {integer}.")
  return integer


def check_optional_int(value: Any, name: str, *, where: str, minimum: int = 1) -> int | None:
  """:func:`check_int`, or ``None`` when ``value`` is None."""
  return None if value is None else check_int(value, name, where=where, minimum=minimum)


def check_real(
    value: Any,
    name: str,
    *,
    where: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Any:
  """A finite real number in the interval ``low..high`` (open ends as given); returned as given.

  A 0-d array counts as a number; a tracer passes (its value is unknown) once its shape is 0-d.

  Raises:
    TypeError: not a real number (a string, a bool, a complex number, an array with more than
      one element).
    ValueError: NaN, infinite or outside the interval.
  """
  is_array = isinstance(value, (jax.Array, np.ndarray, _TRACER))
  if is_array:
    kind = jnp.result_type(value)
    real_dtype = jnp.issubdtype(kind, jnp.floating) or jnp.issubdtype(kind, jnp.integer)
    if np.ndim(value) != 0 or not real_dtype:
      raise TypeError(f"{where}: {name} must be a real number, got {describe(value)}.")
    if isinstance(value, _TRACER):
      return value
    number = float(value)
  elif isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
    raise TypeError(f"{where}: {name} must be a real number, got {describe(value)}.")
  else:
    number = float(value)
  too_low = low is not None and (number <= low if low_open else number < low)
  too_high = high is not None and (number >= high if high_open else number > high)
  if not math.isfinite(number) or too_low or too_high:
    raise ValueError(
        f"{where}: {name} must be {_interval(low, high, low_open, high_open)}, got {value!r}."
    )
  return value


def _interval(low, high, low_open, high_open) -> str:
  """The allowed values in words: "finite", "finite and > 0", "in (0, 1]"."""
  if low is None and high is None:
    return "finite"
  if high is None:
    return f"finite and {'>' if low_open else '>='} {low:g}"
  if low is None:
    return f"finite and {'<' if high_open else '<='} {high:g}"
  return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_float_dtype(dtype: Any, name: str, *, where: str) -> Any:
  """``dtype`` if it is a floating-point dtype; ``ValueError`` otherwise (e.g. ``jnp.int32``)."""
  try:
    shown = jnp.dtype(dtype).name
    floating = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
  except TypeError:
    shown, floating = repr(dtype), False
  if not floating:
    raise ValueError(f"{where}: {name} must be a float dtype (e.g. jnp.bfloat16), got {shown}.")
  return dtype


def check_bool(value: Any, name: str, *, where: str) -> bool:
  """``value`` as a bool; ``TypeError`` for anything but a bool (e.g. the string ``"False"``)."""
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{where}: {name} must be True or False, got {describe(value)}.")
  return bool(value)


def check_choice(value: Any, name: str, choices: Sequence[str], *, where: str) -> str:
  """``value`` if it is one of ``choices``; ``ValueError`` naming them otherwise."""
  if not isinstance(value, str) or value not in choices:
    raise ValueError(f"{where}: unknown {name} {value!r}; known: {', '.join(map(str, choices))}.")
  return value


def check_finite(values: Any, name: str, *, where: str) -> None:
  """``ValueError`` if concrete ``values`` contain NaN or Inf; a tracer passes unchecked."""
  if is_traced(values):
    return
  dtype = getattr(values, "dtype", None)
  if dtype is not None and not jnp.issubdtype(dtype, jnp.inexact):  # ints, bools, PRNG keys
    return
  array = np.asarray(values)
  if np.issubdtype(array.dtype, np.inexact) and not np.all(np.isfinite(array)):
    count = int(np.sum(~np.isfinite(array)))
    raise ValueError(
        f"{where}: {name} must be finite, got {describe(values)} with {count} NaN or Inf "
        f"value{'s' if count > 1 else ''}."
    )


def check_float_array(values: Any, name: str, *, where: str, finite: bool = True) -> jax.Array:
  """``values`` (array-like, nested lists too) as a JAX array of a real dtype.

  Raises:
    TypeError: a dtype that is not a number (strings, objects, complex numbers).
    ValueError: NaN/Inf values (concrete values only, when ``finite``).
  """
  array = values if isinstance(values, (jax.Array, _TRACER)) else _as_array(values, name, where)
  kind = jnp.result_type(array)
  if not (jnp.issubdtype(kind, jnp.floating) or jnp.issubdtype(kind, jnp.integer)):
    if not jnp.issubdtype(kind, jnp.bool_):
      raise TypeError(f"{where}: {name} must be real numbers, got dtype {kind}.")
  if finite:
    check_finite(array, name, where=where)
  return jnp.asarray(array)


def _as_array(values: Any, name: str, where: str) -> Any:
  """``values`` as an array (numpy arrays stay numpy); ``TypeError`` for ragged or odd input."""
  if isinstance(values, np.ndarray):
    return values
  try:
    return np.asarray(values)
  except (TypeError, ValueError) as error:
    raise TypeError(
        f"{where}: {name} must be an array or nested lists of numbers, got "
        f"{describe(values)} ({str(error).splitlines()[0][:80]})."
    ) from None


def check_class_indices(
    targets: Any, *, where: str, num_images: int, name: str = "targets", per_image_classes=False
) -> Any:
  """Integer class indices as int32 ``(N,)``, or ``(N, T)`` when ``per_image_classes``.

  An int or a 0-d array is broadcast to ``(N,)``. Concrete targets come back as a numpy array
  (so they stay concrete, and range-checked, when a method closes over them inside a traced
  loop); a tracer comes back as a tracer. Values that do not fit int32 are a ``ValueError``
  here (not a silent wrap-around).

  Raises:
    TypeError: not integers (e.g. floats).
    ValueError: a shape other than ``()``, ``(N,)`` (or ``(N, T)``); values beyond int32.
  """
  traced = is_traced(targets)
  array = jnp.asarray(targets) if traced else _as_array(targets, name, where)
  if not jnp.issubdtype(array.dtype, jnp.integer):
    raise TypeError(
        f"{where}: {name} must be integer class indices, got {describe(targets)} of dtype "
        f"{array.dtype}."
    )
  max_rank = 2 if per_image_classes else 1
  if array.ndim > max_rank or (array.ndim >= 1 and array.shape[0] != num_images):
    shapes = f"({num_images},)" + (f" or ({num_images}, T)" if per_image_classes else "")
    raise ValueError(
        f"{where}: {name} must be an int or an array of shape {shapes}, got shape "
        f"{tuple(array.shape)}."
    )
  if not traced and array.size:
    limits = np.iinfo(np.int32)
    if array.min() < limits.min or array.max() > limits.max:
      raise ValueError(
          f"{where}: {name} must be class indices that fit int32, got values up to "
          f"{int(np.abs(array).max())}."
      )
  xp = jnp if traced else np
  return xp.broadcast_to(array, (num_images,) + array.shape[1:]).astype(xp.int32)


def check_class_range(targets: Any, num_classes: int, *, where: str, name: str = "targets") -> None:
  """``ValueError`` if concrete class indices lie outside ``[0, num_classes)``; tracers pass."""
  if is_traced(targets):
    return
  values = np.asarray(targets)
  if values.size and (values.min() < 0 or values.max() >= num_classes):
    bad = np.unique(values[(values < 0) | (values >= num_classes)]).tolist()
    raise ValueError(
        f"{where}: {name} must lie in [0, {num_classes}) (the classes of fn's logits), got "
        f"{bad[:8]}{' ...' if len(bad) > 8 else ''}."
    )


def check_images(
    images: Any,
    *,
    name: str,
    channels: int | None = None,
    allow_empty: bool = False,
    check_finite: bool = False,
    check_range: bool = False,
) -> jax.Array:
  """Checks a batch of NHWC float images ``(N, H, W, C)``; returns it as a JAX array.

  Array-likes such as nested lists of floats are converted (``jnp.asarray``).

  Args:
    images: the batch (array-like or tracer).
    name: who checks (the function or model), for the messages.
    channels: the required ``C`` (``None``: any).
    allow_empty: accept ``N = 0``.
    check_finite: refuse NaN/Inf pixels (only when the values are concrete, not under ``jit``).
    check_range: refuse values outside [0, 1] (concrete values only).

  Raises:
    ValueError: a rank other than 4, the wrong ``C``, an empty batch, a zero height, width or
      channel count, NaN/Inf or out-of-range values. TypeError: images that are not floating
      point.
  """
  if not isinstance(images, (jax.Array, np.ndarray, _TRACER)):
    images = _as_array(images, "images", name)
  shape = tuple(np.shape(images))
  if len(shape) != 4:
    raise ValueError(
        f"{name} expects NHWC images of rank 4, got shape {shape} (need a batch (N, H, W, C))."
    )
  if channels is not None and shape[-1] != channels:
    raise ValueError(
        f"{name} was built for {channels}-channel images, got {shape[-1]} channels "
        f"(shape {shape})."
    )
  if shape[0] == 0 and not allow_empty:
    raise ValueError(f"{name} got an empty batch (shape {shape}); pass at least one image.")
  if 0 in shape[1:]:
    raise ValueError(
        f"{name} expects images with a positive height, width and channel count, got shape "
        f"{shape}."
    )
  dtype = jnp.result_type(images)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(
        f"{name} expects float images in [0, 1], got dtype {dtype}; convert e.g. uint8 "
        f"pixels with images.astype(jnp.float32) / 255."
    )
  if (check_finite or check_range) and not isinstance(images, _TRACER) and np.size(images):
    low, high = value_bounds(images)
    if check_finite and not (np.isfinite(low) and np.isfinite(high)):
      raise ValueError(f"{name}: the images contain NaN or Inf values.")
    if check_range and (low < 0.0 or high > 1.0):
      raise ValueError(
          f"{name} expects images in [0, 1], got values in [{low:.4g}, "
          f"{high:.4g}]; pass check_range=False to explain other inputs."
      )
  if isinstance(images, jax.Array) and not isinstance(images, _TRACER):
    return images  # what jnp.asarray returns for it, without its dispatch
  return jnp.asarray(images)


def value_bounds(values: Any) -> tuple[np.float32, np.float32]:
  """``(min, max)`` of concrete, non-empty ``values`` in float32; both NaN if any value is NaN.

  So the values are all finite exactly when both bounds are. An array on the host (NumPy, or a
  JAX array on the CPU, read in place) takes two NumPy passes, faster there than a jitted
  reduction; a JAX array on an accelerator takes one jitted reduction (compiled once per shape
  and dtype), so only the two bounds leave the device, not the batch.
  """
  if isinstance(values, jax.Array) and not _on_host(values):
    low, high = jax.device_get(_device_value_bounds(values))
    return np.float32(low), np.float32(high)
  array = np.asarray(values, dtype=np.float32)
  return array.min(), array.max()  # NumPy's min and max propagate NaN (np.nanmin would not)


def _on_host(values: jax.Array) -> bool:
  """Whether every shard of ``values`` lives in host memory (the CPU backend)."""
  return all(device.platform == "cpu" for device in values.devices())


@jax.jit
def _device_value_bounds(values: jax.Array) -> tuple[jax.Array, jax.Array]:
  """:func:`value_bounds` on the device: float32 ``(min, max)``, both NaN if any value is NaN."""
  values = values.astype(jnp.float32)
  return jnp.min(values), jnp.max(values)  # as NumPy's, jax.numpy's min and max propagate NaN


def check_callable(value: Any, name: str, *, where: str) -> Any:
  """``value`` if it is callable; ``TypeError`` otherwise."""
  if not callable(value):
    raise TypeError(f"{where}: {name} must be a function, got {describe(value)}.")
  return value


def check_int_pair(value: Any, name: str, *, where: str, minimum: int = 1) -> tuple[int, int]:
  """An int ``k`` as ``(k, k)``, or a pair of ints, each ``>= minimum``.

  Raises:
    TypeError: not an int or a sequence of ints.
    ValueError: a sequence whose length is not 2, or an entry below ``minimum``.
  """
  if isinstance(value, (list, tuple)):
    if len(value) != 2:
      raise ValueError(
          f"{where}: {name} must be an int or a pair (rows, columns), got {value!r} "
          f"({len(value)} entries)."
      )
    return tuple(check_int(v, name, where=where, minimum=minimum) for v in value)
  size = check_int(value, name, where=where, minimum=minimum)
  return size, size


def check_broadcastable(values: Any, shape: tuple[int, ...], name: str, *, where: str) -> None:
  """``ValueError`` unless ``values`` broadcasts to ``shape`` (without changing ``shape``)."""
  own = tuple(np.shape(values))
  try:
    fits = np.broadcast_shapes(own, shape) == tuple(shape)
  except ValueError:
    fits = False
  if not fits:
    raise ValueError(
        f"{where}: {name} must be a scalar or broadcast to the images' shape {tuple(shape)}, "
        f"got shape {own}."
    )


def check_binary_masks(masks: Any, name: str, *, where: str) -> jax.Array:
  """Object masks as a boolean JAX array; concrete masks must hold only 0 and 1 (or bools).

  Raises:
    TypeError: masks that are not numbers or bools.
    ValueError: (concrete values) a soft mask, e.g. 0.3, or NaN.
  """
  masks = masks if isinstance(masks, (jax.Array, _TRACER)) else _as_array(masks, name, where)
  kind = jnp.result_type(masks)
  if not (jnp.issubdtype(kind, jnp.number) or jnp.issubdtype(kind, jnp.bool_)):
    raise TypeError(f"{where}: {name} must be binary masks (bool or 0/1), got dtype {kind}.")
  if not is_traced(masks) and not jnp.issubdtype(kind, jnp.bool_):
    values = np.asarray(masks)
    soft = (values != 0) & (values != 1)
    if np.any(soft):
      raise ValueError(
          f"{where}: {name} must be binary (bool or only 0 and 1), got values such as "
          f"{values[soft].flat[0].item()!r}; threshold a soft mask first (e.g. masks > 0.5)."
      )
  return jnp.asarray(masks).astype(bool)
