"""CoDA-Net: a stack of CoDA layers, sum pooling, temperature and a fixed logit bias.

Every model in codajax that can be explained implements three methods, which
is all :func:`codajax.explain.explain` needs:

* ``__call__(images, explain=False) -> logits (N, K)``;
* ``explanation_inputs(images) -> tuple`` of the inputs of every explainable
  layer, ``[0]`` being the encoded image ``[x, 1 − x]`` (or, for hybrids, the
  embedding the CoDA part starts from);
* ``forward_from(h, layer, explain=False, add_bias=True) -> logits``: the
  network from the input ``h`` of explainable layer ``layer`` onwards
  (``add_bias=False`` returns ``logits − logit_bias`` without the rounding of
  adding and subtracting the bias);

and has the attributes ``logit_bias`` and ``num_classes``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax

from codajax.nn import dau
from codajax.nn.modules import DEFAULT_LOGIT_BIAS, CoDAConv, add_inverse, coda_head

Array = jax.Array


class LayerSpec(NamedTuple):
  """One CoDA layer: ``features`` DAUs of rank ``rank``, kernel ``k``, stride, padding."""

  features: int
  rank: int
  kernel_size: int = 3
  stride: int = 1
  padding: int = 1


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
    compute_dtype: convolution dtype (``None`` = float32; ``jnp.bfloat16`` for
      mixed precision with float32 norms and logits).
    image_channels: channels ``C`` of the images the model takes (it sees 2C).
    encode_input: apply :func:`add_inverse` to the images (the papers' default).
  """

  layers: Sequence[LayerSpec]
  temperature: float = 1000.0
  logit_bias: float = DEFAULT_LOGIT_BIAS
  norm: dau.Norm = "squash"
  form: dau.Form = "implicit"
  compute_dtype: Any = None
  image_channels: int = 3
  encode_input: bool = True

  @property
  def num_classes(self) -> int:
    return self.layers[-1].features

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
            compute_dtype=self.compute_dtype,
            name=f"layer_{i}",
        )
        for i, spec in enumerate(self.layers)
    ]

  def encode(self, images: Array) -> Array:
    """Checks and encodes images: ``(N, H, W, C)`` in [0, 1] → ``(N, H, W, 2C)``."""
    if images.ndim != 4:
      raise ValueError(
          f"CoDANet expects NHWC images of rank 4, got shape {tuple(images.shape)}."
      )
    if images.shape[-1] != self.image_channels:
      raise ValueError(
          f"CoDANet was built for {self.image_channels}-channel images, got "
          f"{images.shape[-1]} channels (shape {tuple(images.shape)})."
      )
    return add_inverse(images) if self.encode_input else images

  def forward_from(
      self, h: Array, layer: int = 0, explain: bool = False, add_bias: bool = True
  ) -> Array:
    """Logits ``(N, K)`` from the input ``h`` of CoDA layer ``layer`` onwards."""
    for coda_layer in self.coda_layers[layer:]:
      h = coda_layer(h, explain=explain)
    return coda_head(h, self.temperature, self.logit_bias if add_bias else 0.0)

  def explanation_inputs(self, images: Array) -> tuple[Array, ...]:
    """The input of every CoDA layer, ``[0]`` being the encoded image."""
    h = self.encode(images)
    inputs = [h]
    for coda_layer in self.coda_layers[:-1]:
      h = coda_layer(h)
      inputs.append(h)
    return tuple(inputs)

  def __call__(self, images: Array, explain: bool = False) -> Array:
    """Logits ``(N, K)`` of images ``(N, H, W, C)`` in [0, 1]."""
    return self.forward_from(self.encode(images), 0, explain=explain)
