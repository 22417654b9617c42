"""What every B-cos model shares: segments behind :class:`codajax.explain.ExplainableModel`.

A B-cos model is a chain of *segments*, submodules named ``layer_0 .. layer_{L−1}``
(codajax's convention: ``layer_l`` takes explainable input ``l``). ``layer_0``
takes the encoded image ``[x, 1 − x]``; the last one is the class head and
returns the class map ``(N, h, w, K)``, which is averaged over positions,
divided by the temperature and shifted by the logit bias::

    logit_c = mean_{i,j} classmap[:, i, j, c] / T + logit_bias

Every segment is dynamic linear (B-cos layers, uncentred norms, sums, average
pooling), so in explanation mode ``logit_c = W_c(h) · h + logit_bias`` exactly
for the input ``h`` of any segment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from codajax._checks import check_images
from codajax.explain import protocol
from codajax.nn.modules import add_inverse

Array = jax.Array


def default_logit_bias(num_classes: int) -> float:
  """The authors' logit bias ``−ln(K − 1)`` (0 for ``K <= 2``): every class starts at p = 1/K."""
  return -math.log(num_classes - 1) if num_classes > 2 else 0.0


class SegmentedModel:
  """Mixin for Linen B-cos models: ``self.segments`` (list of modules, from ``setup``),
  ``num_explainable_layers`` (their number, known before binding), ``num_classes``,
  ``image_channels``, ``temperature`` (``None``: 1), ``logit_bias``."""

  def encode(self, images: Array) -> Array:
    """Checks and encodes images: ``(N, H, W, C)`` in [0, 1] -> ``(N, H, W, 2C)``."""
    check_images(images, name=type(self).__name__, channels=self.image_channels, allow_empty=True)
    return add_inverse(images)

  def _pool(self, class_map: Array, add_bias: bool) -> Array:
    logits = jnp.mean(class_map.astype(jnp.float32), axis=(1, 2))
    if self.temperature is not None:
      logits = logits / self.temperature
    return logits + self.logit_bias if add_bias else logits

  def forward_from(
      self,
      h: Array,
      layer: int = 0,
      explain: bool = False,
      add_bias: bool = True,
      weights_inputs: Sequence[Array] | None = None,
  ) -> Array:
    """Logits ``(N, K)`` from the input ``h`` of segment ``layer`` onwards.

    ``explain=True``: every B-cos layer and norm detaches its dynamic factor,
    so the result is exactly linear in ``h``. ``add_bias=False`` omits the
    logit bias. ``weights_inputs`` (CoDA's regulariser hook) is not supported.
    """
    if weights_inputs is not None:
      raise NotImplementedError("B-cos models do not take weights_inputs.")
    protocol.check_layer(layer, self.num_explainable_layers)
    h = protocol.run_segments(h, self.segments, range(layer, len(self.segments)), explain)
    return self._pool(h, add_bias)

  def layer_input(self, images: Array, layer: int = 0) -> Array:
    """The input of segment ``layer`` (``0``: the encoded image); the segments below run once."""
    protocol.check_layer(layer, self.num_explainable_layers)
    return protocol.run_segments(self.encode(images), self.segments, range(layer))

  def explanation_inputs(self, images: Array) -> tuple[Array, ...]:
    """The input of every segment, ``[0]`` being the encoded image."""
    return protocol.segment_inputs(self.encode(images), self.segments)

  def forward_and_inputs(
      self, images: Array, add_bias: bool = True
  ) -> tuple[Array, tuple[Array, ...]]:
    """One forward pass: logits ``(N, K)`` and the input of every segment."""
    inputs = self.explanation_inputs(images)
    return self.forward_from(inputs[-1], len(inputs) - 1, add_bias=add_bias), inputs

  def __call__(self, images: Array, explain: bool = False) -> Array:
    """Logits ``(N, K)`` of images ``(N, H, W, C)`` in [0, 1]."""
    return self.forward_from(self.encode(images), 0, explain=explain)
