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


class CoDAConv(nn.Module):
  """A convolutional layer of ``features`` dynamic alignment units.

  Parameters ``B (k, k, C, r)``, ``A (k, k, C, D, r)``, ``b (k, k, C, D)``
  initialised as the reference (PyTorch's default uniform fan-in init).

  Attributes:
    features: number of DAUs ``D`` (output channels).
    rank: rank ``r`` of the dynamic weight map.
    kernel_size: ``k``.
    stride: ``s``.
    padding: explicit symmetric zero padding ``p``.
    norm: ``"squash"`` or ``"l2"``.
    form: ``"implicit"`` (default) or ``"explicit"``.
    compute_dtype: convolution input dtype (``None``: that of the input).
  """

  features: int
  rank: int
  kernel_size: int = 3
  stride: int = 1
  padding: int = 1
  norm: dau.Norm = "squash"
  form: dau.Form = "implicit"
  compute_dtype: Any = None

  @nn.compact
  def __call__(self, x: Array, explain: bool = False) -> Array:
    """``(N, H, W, C) -> (N, H', W', features)``; ``explain`` detaches the weights."""
    k, c, d, r = self.kernel_size, x.shape[-1], self.features, self.rank
    params = {
        "B": self.param("B", dau.uniform_fan_in(c * k * k), (k, k, c, r)),
        "A": self.param("A", dau.uniform_fan_in(r), (k, k, c, d, r)),
        "b": self.param("b", dau.uniform_fan_in(r), (k, k, c, d)),
    }
    return dau.dau_conv(
        params,
        x,
        stride=self.stride,
        padding=self.padding,
        norm=self.norm,
        form=self.form,
        explain=explain,
        compute_dtype=self.compute_dtype,
    )


def coda_head(class_maps: Array, temperature: float, logit_bias: float) -> Array:
  """Sum-pool the class maps and scale: ``(N, H, W, K) -> (N, K)``.

  ``logit_c = Σ_{i,j} class_maps[:, i, j, c] / T + logit_bias``.
  """
  return jnp.sum(class_maps.astype(jnp.float32), axis=(1, 2)) / temperature + logit_bias
