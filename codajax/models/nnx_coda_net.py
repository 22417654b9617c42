"""A CoDA-Net written natively in Flax NNX, explainable with :func:`codajax.explain.explain_nnx`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from codajax.explain.base import ExplainableMixin
from codajax.models.coda_net import CoDAWeightsStream, LayerSpec
from codajax.nn import dau
from codajax.nn.modules import DEFAULT_LOGIT_BIAS, add_inverse, coda_head
from codajax.nn.nnx_layers import NNXCoDAConv

Array = jax.Array


class NNXCoDANet(CoDAWeightsStream, ExplainableMixin, nnx.Module):
  """The NNX twin of :class:`codajax.models.CoDANet` (same function, same protocol).

  Follows :class:`codajax.explain.ExplainableModel` (the methods of
  :class:`codajax.explain.base.ExplainableMixin`), called directly:
  ``model.layer_input(images, l)``, ``model.forward_from(h, l, explain=True)``; and
  ``forward_with_weights_from`` as :class:`codajax.models.CoDANet`.

  Args:
    layers: the CoDA layers (:class:`LayerSpec`), first to last.
    image_channels: channels ``C`` of the images (the first layer sees ``2C``
      when ``encode_input``).
    temperature, logit_bias, norm, form, dtype, encode_input: as in
      :class:`codajax.models.CoDANet`.
    rngs: ``nnx.Rngs``.
  """

  def __init__(
      self,
      layers: Sequence[LayerSpec],
      *,
      image_channels: int = 3,
      temperature: float = 1000.0,
      logit_bias: float = DEFAULT_LOGIT_BIAS,
      norm: dau.Norm = "squash",
      form: dau.Form = "implicit",
      dtype: Any = None,
      encode_input: bool = True,
      rngs: nnx.Rngs,
  ):
    if not layers:
      raise ValueError("NNXCoDANet needs at least one CoDA layer (the class layer).")
    self.specs = tuple(LayerSpec(*spec) for spec in layers)
    self.image_channels, self.encode_input = image_channels, encode_input
    self.temperature, self.logit_bias = float(temperature), float(logit_bias)
    channels = 2 * image_channels if encode_input else image_channels
    coda_layers = []
    for spec in self.specs:
      coda_layers.append(
          NNXCoDAConv(
              channels,
              spec.features,
              spec.rank,
              spec.kernel_size,
              spec.stride,
              spec.padding,
              norm,
              form,
              dtype,
              rngs=rngs,
          )
      )
      channels = spec.features
    self.coda_layers = nnx.List(coda_layers)

  @property
  def num_classes(self) -> int:
    return self.specs[-1].features

  def _segments(self) -> nnx.List:
    return self.coda_layers

  def _readout(self, class_maps: Array, add_bias: bool) -> Array:
    return coda_head(class_maps, self.temperature, self.logit_bias if add_bias else 0.0)

  def _encode(self, images: Array) -> Array:
    return add_inverse(images) if self.encode_input else images
