"""CoDA-Net: a stack of CoDA layers, sum pooling, temperature and a fixed logit bias.

Every model in codajax that can be explained follows
:class:`codajax.explain.ExplainableModel`; the CoDA models get its methods
(``__call__``, ``layer_input``, ``forward_from``, ``forward_and_inputs``,
``explanation_inputs``) from :mod:`codajax.explain.base`, declaring their CoDA
layers as the segments and the CoDA head as the readout.

For the L1 regulariser on the dynamic linear map (:mod:`codajax.regularizers`)
they also implement :class:`codajax.regularizers.RegularisableModel`
(:class:`CoDAWeightsStream`): ``forward_with_weights_from(h, layer,
weights_inputs)`` makes layer ``i`` compute its dynamic weights from
``weights_inputs[i]`` (the ``weights_input`` of :class:`CoDAConv`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax

from codajax.explain import protocol
from codajax.explain.base import ExplainableModule
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


class CoDAWeightsStream:
  """:class:`codajax.regularizers.RegularisableModel` for models whose segments are CoDA layers.

  Needs the declarations of :mod:`codajax.explain.base` (``_segments``, ``_readout``,
  ``num_explainable_layers``).
  """

  def forward_with_weights_from(
      self, h: Array, layer: int, weights_inputs: Sequence[Array], add_bias: bool = True
  ) -> Array:
    """Logits ``(N, K)`` from the input ``h`` of CoDA layer ``layer`` onwards, every layer
    ``i >= layer`` taking its dynamic weights from ``weights_inputs[i]``.

    ``weights_inputs``: the input of every CoDA layer (indexed like
    ``explanation_inputs``; entries below ``layer`` are unused). Each layer is
    then exactly linear in its own input and differentiable in the parameters
    and ``weights_inputs`` (see :func:`codajax.nn.dau.dau_conv`).
    """
    protocol.check_layer(layer, self.num_explainable_layers)
    segments = self._segments()
    for i in range(layer, len(segments)):
      h = segments[i](h, weights_input=weights_inputs[i])
    return self._readout(h, add_bias)


class CoDANet(CoDAWeightsStream, ExplainableModule):
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

  def _segments(self) -> Sequence[CoDAConv]:
    return self.coda_layers

  def _readout(self, class_maps: Array, add_bias: bool) -> Array:
    return coda_head(class_maps, self.temperature, self.logit_bias if add_bias else 0.0)

  def _encode(self, images: Array) -> Array:
    return add_inverse(images) if self.encode_input else images
