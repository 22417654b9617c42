"""CoDA-Net: a stack of CoDA layers, sum pooling, temperature and a fixed logit bias.

Every model in codajax that can be explained follows
:class:`codajax.explain.ExplainableModel` (a ``typing.Protocol``): it has the
attributes ``logit_bias``, ``num_classes`` and ``num_explainable_layers`` and
the methods

* ``__call__(images, explain=False) -> logits (N, K)``;
* ``layer_input(images, layer) -> h``: the input of explainable layer
  ``layer`` (``0``: the encoded image ``[x, 1 − x]``, or a hybrid's
  embedding), running only the layers below it, each once;
* ``forward_from(h, layer, explain=False, add_bias=True, weights_inputs=None)
  -> logits``: the network from the input ``h`` of layer ``layer`` onwards
  (``add_bias=False`` returns ``logits − logit_bias`` without the rounding of
  adding and subtracting the bias; ``weights_inputs[i]`` makes layer ``i``
  compute its dynamic weights from that tensor, see ``CoDAConv``);
* ``forward_and_inputs(images) -> (logits, inputs)``: one ordinary forward
  pass that also returns the input of every explainable layer;
* ``explanation_inputs(images) -> tuple``: the inputs alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax

from codajax._checks import check_images
from codajax.explain import protocol
from codajax.nn import dau
from codajax.nn.modules import DEFAULT_LOGIT_BIAS, CoDAConv, add_inverse, coda_head

Array = jax.Array


class LayerSpec(NamedTuple):
  """One CoDA layer: ``features`` DAUs of rank ``rank``, kernel ``k``, stride, padding
  (None: ``(k − 1) // 2``, as :func:`codajax.nn.dau.dau_conv`)."""

  features: int
  rank: int
  kernel_size: int = 3
  stride: int = 1
  padding: int | None = None


class CoDANet(nn.Module):
  """A Convolutional Dynamic Alignment Network.

  ``logit_c(x) = Σ_{i,j} o^L_c[i, j] / temperature + logit_bias`` where ``o^L``
  is the output of the last CoDA layer (whose ``features`` is the number of
  classes). Every logit is exactly ``W_c(x) · [x, 1 − x] + logit_bias``.

  Attributes:
    layers: the CoDA layers, first to last.
    temperature: ``T``; logits are divided by it (large T: strong alignment).
    logit_bias: the fixed scalar bias added to every logit.
    norm: ``"squash"`` or ``"l2"``.
    form: ``"implicit"`` or ``"explicit"`` DAU computation.
    dtype: computation dtype of the convolutions (``None`` = float32; ``jnp.bfloat16`` for
      mixed precision with float32 norms and logits); the ``dtype`` of every
      :class:`CoDAConv`. Explanation mode computes in float32 regardless.
    image_channels: channels ``C`` of the images the model takes (it sees 2C).
    encode_input: apply :func:`add_inverse` to the images (the papers' default).
  """

  layers: Sequence[LayerSpec]
  temperature: float = 1000.0
  logit_bias: float = DEFAULT_LOGIT_BIAS
  norm: dau.Norm = "squash"
  form: dau.Form = "implicit"
  dtype: Any = None
  image_channels: int = 3
  encode_input: bool = True

  @property
  def num_classes(self) -> int:
    return self.layers[-1].features

  @property
  def num_explainable_layers(self) -> int:
    """``L``: ``layer_input``/``forward_from`` accept ``layer`` in ``0..L − 1``."""
    return len(self.layers)

  def setup(self):
    self.coda_layers = [
        CoDAConv(
            features=spec.features,
            rank=spec.rank,
            kernel_size=spec.kernel_size,
            stride=spec.stride,
            padding=spec.padding,
            norm=self.norm,
            form=self.form,
            dtype=self.dtype,
            name=f"layer_{i}",
        )
        for i, spec in enumerate(self.layers)
    ]

  def encode(self, images: Array) -> Array:
    """Checks and encodes images: ``(N, H, W, C)`` in [0, 1] → ``(N, H, W, 2C)``."""
    check_images(images, name="CoDANet", channels=self.image_channels, allow_empty=True)
    return add_inverse(images) if self.encode_input else images

  def forward_from(
      self,
      h: Array,
      layer: int = 0,
      explain: bool = False,
      add_bias: bool = True,
      weights_inputs: Sequence[Array] | None = None,
  ) -> Array:
    """Logits ``(N, K)`` from the input ``h`` of CoDA layer ``layer`` onwards.

    ``weights_inputs``: ``None``, or the input of every CoDA layer (indexed
    like :meth:`explanation_inputs`; entries below ``layer`` are unused): layer
    ``i`` then takes its dynamic weights from ``weights_inputs[i]`` and is
    exactly linear in its own input.
    """
    protocol.check_layer(layer, self.num_explainable_layers)
    for i in range(layer, len(self.layers)):
      weights_input = None if weights_inputs is None else weights_inputs[i]
      h = self.coda_layers[i](h, explain=explain, weights_input=weights_input)
    return coda_head(h, self.temperature, self.logit_bias if add_bias else 0.0)

  def layer_input(self, images: Array, layer: int = 0) -> Array:
    """The input of CoDA layer ``layer`` (``0``: the encoded image), each layer run once."""
    protocol.check_layer(layer, self.num_explainable_layers)
    return protocol.run_segments(self.encode(images), self.coda_layers, range(layer))

  def forward_and_inputs(
      self, images: Array, add_bias: bool = True
  ) -> tuple[Array, tuple[Array, ...]]:
    """One forward pass: logits ``(N, K)`` and the input of every CoDA layer."""
    inputs = self.explanation_inputs(images)
    return self.forward_from(inputs[-1], len(self.layers) - 1, add_bias=add_bias), inputs

  def explanation_inputs(self, images: Array) -> tuple[Array, ...]:
    """The input of every CoDA layer, ``[0]`` being the encoded image."""
    return protocol.segment_inputs(self.encode(images), self.coda_layers)

  def __call__(self, images: Array, explain: bool = False) -> Array:
    """Logits ``(N, K)`` of images ``(N, H, W, C)`` in [0, 1]."""
    return self.forward_from(self.encode(images), 0, explain=explain)
