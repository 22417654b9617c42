"""Flax Linen modules over the functional DAU ops."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from codajax.nn import dau

Array = jax.Array

#: The reference's fixed logit bias ``ln(0.1/0.9)``: every class starts at p = 0.1.
DEFAULT_LOGIT_BIAS = math.log(0.1 / 0.9)


def add_inverse(images: Array) -> Array:
  """The CoDA input encoding ``[x, 1 − x]``: ``(..., C) -> (..., 2C)``.

  Every pixel of the encoding has channel sum ``C``, so a dark pixel carries as
  much signal as a bright one.
  """
  return jnp.concatenate([images, 1.0 - images], axis=-1)


def explanation_dtype(dtype: Any) -> Any:
  """The dtype a CoDA layer computes in: float32 in explanation mode, else ``dtype``.

  Explanations are exact only in float32 (bfloat16 rounding breaks the
  completeness identity at ~1e-3), and the parameters are float32 anyway, so a
  bfloat16 model is explained in float32. ``None`` (the input's dtype) stays
  ``None``; :func:`codajax.explain.explain` passes float32 inputs.
  """
  return None if dtype is None else jnp.promote_types(dtype, jnp.float32)


class CoDAConv(nn.Module):
  """A convolutional layer of ``features`` dynamic alignment units (Linen).

  Parameters ``B (k, k, C, r)``, ``A (k, k, C, D, r)``, ``w0 (k, k, C, D)``
  (the dynamic weight is ``w = A z + w0``, ``z = B x``), initialised by
  :func:`codajax.nn.dau.param_initializers` (the reference's init).

  Attributes:
    features: number of DAUs ``D`` (output channels).
    rank: rank ``r`` of the dynamic weight map.
    kernel_size: ``k``.
    stride: ``s``.
    padding: explicit symmetric zero padding ``p`` (None: ``(k − 1) // 2``, the
      default of every codajax layer and of :func:`codajax.nn.dau.dau_conv`).
    norm: ``"squash"`` or ``"l2"``.
    form: ``"implicit"`` (default) or ``"explicit"``.
    dtype: computation dtype of the convolutions (``None``: that of the input;
      ``jnp.bfloat16`` for mixed precision). Explanation mode always computes
      in float32 (see :func:`explanation_dtype`).
    param_dtype: dtype of the parameters (float32).
  """

  features: int
  rank: int
  kernel_size: int = 3
  stride: int = 1
  padding: int | None = None
  norm: dau.Norm = "squash"
  form: dau.Form = "implicit"
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, explain: bool = False, weights_input: Array | None = None) -> Array:
    """``(N, H, W, C) -> (N, H', W', features)``.

    Args:
      x: the layer input.
      explain: detach the dynamic weights and norm factors (exactly linear in
        ``x``), computed in float32.
      weights_input: compute the dynamic weights and norm factors from this
        tensor (shaped like ``x``): exactly linear in ``x``, differentiable in
        the parameters and ``weights_input`` (see :func:`codajax.nn.dau.dau_conv`).
    """
    shapes = dau.param_shapes(x.shape[-1], self.features, self.rank, self.kernel_size)
    inits = dau.param_initializers(x.shape[-1], self.rank, self.kernel_size)
    params = {
        name: self.param(name, inits[name], shapes[name], self.param_dtype)
        for name in dau.PARAM_NAMES
    }
    return dau.dau_conv(
        params,
        x,
        stride=self.stride,
        padding=self.padding,
        norm=self.norm,
        form=self.form,
        explain=explain,
        dtype=explanation_dtype(self.dtype) if explain else self.dtype,
        weights_input=weights_input,
    )


def coda_head(class_maps: Array, temperature: float, logit_bias: float) -> Array:
  """Sum-pool the class maps and scale: ``(N, H, W, K) -> (N, K)``.

  ``logit_c = Σ_{i,j} class_maps[:, i, j, c] / T + logit_bias``.
  """
  return jnp.sum(class_maps.astype(jnp.float32), axis=(1, 2)) / temperature + logit_bias
