"""A native Flax NNX CoDA layer on the functional DAU core (:mod:`codajax.nn.dau`)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from codajax.nn import dau
from codajax.nn.modules import explanation_dtype

Array = jax.Array


class NNXCoDAConv(nnx.Module):
  """A convolutional layer of ``features`` dynamic alignment units (Flax NNX).

  The same function and parameters as the Linen :class:`codajax.nn.CoDAConv`:
  ``B (k, k, C, r)``, ``A (k, k, C, D, r)``, ``w0 (k, k, C, D)`` as
  ``nnx.Param``s, initialised by :func:`codajax.nn.dau.param_initializers`.

  Args:
    in_features: input channels ``C``.
    features: number of DAUs ``D``.
    rank: rank ``r`` of the dynamic weight map.
    kernel_size, stride, padding: the convolution (explicit symmetric padding; None:
      ``(k − 1) // 2``, as :func:`codajax.nn.dau.dau_conv`).
    norm: ``"squash"`` or ``"l2"``; form: ``"implicit"`` or ``"explicit"``.
    dtype: computation dtype (``None``: the input's); explanation mode computes
      in float32. param_dtype: parameter dtype.
    rngs: ``nnx.Rngs`` for the initialisation.
  """

  def __init__(
      self,
      in_features: int,
      features: int,
      rank: int,
      kernel_size: int = 3,
      stride: int = 1,
      padding: int | None = None,
      norm: dau.Norm = "squash",
      form: dau.Form = "implicit",
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      *,
      rngs: nnx.Rngs,
  ):
    if norm not in dau.NORMS:
      raise ValueError(f"Unknown norm {norm!r}; known norms: {', '.join(dau.NORMS)}.")
    if form not in dau.FORMS:
      raise ValueError(f"Unknown form {form!r}; known forms: {', '.join(dau.FORMS)}.")
    self.in_features, self.features, self.rank = in_features, features, rank
    self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
    self.norm, self.form, self.dtype = norm, form, dtype
    shapes = dau.param_shapes(in_features, features, rank, kernel_size)
    inits = dau.param_initializers(in_features, rank, kernel_size)
    self.B = nnx.Param(inits["B"](rngs.params(), shapes["B"], param_dtype))
    self.A = nnx.Param(inits["A"](rngs.params(), shapes["A"], param_dtype))
    self.w0 = nnx.Param(inits["w0"](rngs.params(), shapes["w0"], param_dtype))

  def params(self) -> dict[str, Array]:
    """The parameters as the dict :func:`codajax.nn.dau.dau_conv` takes."""
    return {"B": self.B[...], "A": self.A[...], "w0": self.w0[...]}

  def __call__(self, x: Array, explain: bool = False, weights_input: Array | None = None) -> Array:
    """``(N, H, W, C) -> (N, H', W', features)``; ``explain`` and ``weights_input`` as in Linen."""
    return dau.dau_conv(
        self.params(),
        x,
        stride=self.stride,
        padding=self.padding,
        norm=self.norm,
        form=self.form,
        explain=explain,
        dtype=explanation_dtype(self.dtype) if explain else self.dtype,
        weights_input=weights_input,
    )
