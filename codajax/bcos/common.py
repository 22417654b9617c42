"""What the B-cos CNNs share: their declarations for :mod:`codajax.explain.base`.

A B-cos model is a chain of *segments*, submodules named ``layer_0 .. layer_{L−1}``
(codajax's convention: ``layer_l`` takes explainable input ``l``). ``layer_0``
takes the encoded image ``[x, 1 − x]``; the last one is the class head and
returns the class map ``(N, h, w, K)``, which is averaged over positions,
divided by the temperature and shifted by the logit bias::

    logit_c = mean_{i,j} classmap[:, i, j, c] / T + logit_bias

Every segment is dynamic linear (B-cos layers, uncentred norms, sums, average
pooling), so in explanation mode ``logit_c = W_c(h) · h + logit_bias`` exactly
for the input ``h`` of any segment. :class:`ClassMapSegments` declares the
segments and this readout; the explanation protocol comes from
:class:`codajax.explain.base.ExplainableModule` (Linen) or
:class:`codajax.explain.base.ExplainableMixin` (NNX).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


def default_logit_bias(num_classes: int) -> float:
  """The authors' logit bias ``−ln(K − 1)`` (0 for ``K <= 2``): every class starts at p = 1/K."""
  return -math.log(num_classes - 1) if num_classes > 2 else 0.0


def class_map_logits(
    class_map: Array, temperature: float | None, logit_bias: float, add_bias: bool = True
) -> Array:
  """``(N, h, w, K) -> (N, K)``: the mean over positions (float32), ``/ temperature`` (``None``:
  1), ``+ logit_bias`` when ``add_bias``."""
  logits = jnp.mean(class_map.astype(jnp.float32), axis=(1, 2))
  if temperature is not None:
    logits = logits / temperature
  return logits + logit_bias if add_bias else logits


class ClassMapSegments:
  """Declarations of a B-cos CNN: segments ``self.segments`` (the last returns the class map)
  and the readout :func:`class_map_logits` with ``temperature`` and ``logit_bias``."""

  def _segments(self) -> Sequence[Any]:
    return self.segments

  def _readout(self, class_map: Array, add_bias: bool) -> Array:
    return class_map_logits(class_map, self.temperature, self.logit_bias, add_bias)
