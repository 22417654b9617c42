"""A CoDA-Net written natively in Flax NNX, explainable with :func:`codajax.explain.explain_nnx`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from codajax._checks import check_images
from codajax.explain import protocol
from codajax.models.coda_net import LayerSpec
from codajax.nn import dau
from codajax.nn.modules import DEFAULT_LOGIT_BIAS, add_inverse, coda_head
from codajax.nn.nnx_layers import NNXCoDAConv

Array = jax.Array


class NNXCoDANet(nnx.Module):
  """The NNX twin of :class:`codajax.models.CoDANet` (same function, same protocol).

  Follows :class:`codajax.explain.ExplainableModel`, called directly:
  ``model.layer_input(images, l)``, ``model.forward_from(h, l, explain=True)``.

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

  @property
  def num_explainable_layers(self) -> int:
    return len(self.specs)

  def encode(self, images: Array) -> Array:
    """``(N, H, W, C)`` in [0, 1] → ``(N, H, W, 2C)`` (``[x, 1 − x]``)."""
    check_images(images, name="NNXCoDANet", channels=self.image_channels, allow_empty=True)
    return add_inverse(images) if self.encode_input else images

  def layer_input(self, images: Array, layer: int = 0) -> Array:
    """The input of CoDA layer ``layer`` (``0``: the encoded image), each layer run once."""
    protocol.check_layer(layer, self.num_explainable_layers)
    return protocol.run_segments(self.encode(images), self.coda_layers, range(layer))

  def forward_from(
      self,
      h: Array,
      layer: int = 0,
      explain: bool = False,
      add_bias: bool = True,
      weights_inputs: Sequence[Array] | None = None,
  ) -> Array:
    """Logits ``(N, K)`` from the input ``h`` of CoDA layer ``layer`` onwards."""
    protocol.check_layer(layer, self.num_explainable_layers)
    for i in range(layer, len(self.specs)):
      weights_input = None if weights_inputs is None else weights_inputs[i]
      h = self.coda_layers[i](h, explain=explain, weights_input=weights_input)
    return coda_head(h, self.temperature, self.logit_bias if add_bias else 0.0)

  def forward_and_inputs(
      self, images: Array, add_bias: bool = True
  ) -> tuple[Array, tuple[Array, ...]]:
    """One forward pass: logits ``(N, K)`` and the input of every CoDA layer."""
    h, inputs = self.encode(images), []
    for layer in self.coda_layers:
      inputs.append(h)
      h = layer(h)
    return coda_head(h, self.temperature, self.logit_bias if add_bias else 0.0), tuple(inputs)

  def __call__(self, images: Array, explain: bool = False) -> Array:
    """Logits ``(N, K)`` of images ``(N, H, W, C)`` in [0, 1]."""
    return self.forward_from(self.encode(images), 0, explain=explain)
