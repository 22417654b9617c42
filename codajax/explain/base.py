"""One explainable-model base: the segment protocol, written once.

A model that :func:`codajax.explain.explain` can explain is ``encode`` (images
-> the input of explainable layer 0), a chain of ``L`` *segments* and a
*readout*::

    h_0 = encode(images)            # checked images, e.g. [x, 1 − x]
    h_{l+1} = segment_l(h_l, explain)   # h_l: the input of explainable layer l
    logits = readout(h_L, add_bias)     # pooling, temperature, logit bias

Every segment is dynamic linear, so in explanation mode
``logit_c = W_c(h_l) · h_l + logit_bias`` exactly, for every ``l``.

A model *declares* its parts and inherits the protocol:

* ``image_channels``, ``num_classes``, ``logit_bias``;
* ``_segments()``: the segments, callables ``(h, explain) -> h`` (CoDA layers,
  B-cos stages, ...);
* ``_readout(out, add_bias) -> (N, K)``: from the last segment's output to the
  logits (``add_bias=False``: without ``logit_bias``);
* ``_encode(images)`` (optional): the checked images ``(N, H, W, C)`` -> the
  input of layer 0; by default ``[x, 1 − x]``;
* ``num_explainable_layers``: Linen models declare it (their segments exist
  only once bound, and :func:`~codajax.explain.explain` checks ``layer`` before);
  NNX models inherit ``len(_segments())``.

:class:`ExplainableMixin` holds the protocol (NNX models mix it into
``nnx.Module``); :class:`ExplainableModule` is the Linen base, the same methods
bound in a ``nn.Module`` so that Linen wraps them (interceptors and
``capture_intermediates`` see them). :class:`ExplainableModel` is the
``typing.Protocol`` :func:`~codajax.explain.explain` checks, met by these bases
and by any model written by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import flax.linen as nn
import jax

from codajax._checks import check_images
from codajax.explain import protocol
from codajax.nn.modules import add_inverse

Array = jax.Array
#: A segment: ``(h, explain) -> h``.
Segment = Callable[[Array, bool], Array]


@runtime_checkable
class ExplainableModel(Protocol):
  """What :func:`~codajax.explain.explain` needs of a model (Linen: called through ``model.apply``).

  ``logit_c = W_c(h) · h + logit_bias`` exactly, for the input ``h`` of every
  explainable layer, when the layers run in explanation mode.
  """

  logit_bias: float

  @property
  def num_classes(self) -> int:
    """``K``."""

  @property
  def num_explainable_layers(self) -> int:
    """``L``: ``layer`` ranges over ``0..L − 1``."""

  def layer_input(self, images: Array, layer: int = 0) -> Array:
    """The input ``h`` of explainable layer ``layer``; the layers below it run once."""

  def forward_from(
      self, h: Array, layer: int = 0, explain: bool = False, add_bias: bool = True
  ) -> Array:
    """Logits ``(N, K)`` from ``h`` onwards; ``explain=True``: exactly linear in ``h``."""


class ExplainableMixin:
  """The segment protocol of :class:`ExplainableModel`, from a model's declared parts.

  See the module docstring for what a model declares. Mix into ``nnx.Module``
  (NNX); Linen models derive from :class:`ExplainableModule`.
  """

  @property
  def num_explainable_layers(self) -> int:
    """``L``: the segments; ``layer_input``/``forward_from`` accept ``layer`` in ``0..L − 1``."""
    return len(self._segments())

  def _segments(self) -> Sequence[Segment]:
    raise NotImplementedError(f"{type(self).__name__} declares no segments (_segments).")

  def _readout(self, out: Array, add_bias: bool) -> Array:
    raise NotImplementedError(f"{type(self).__name__} declares no readout (_readout).")

  def _encode(self, images: Array) -> Array:
    """Checked images ``(N, H, W, C)`` -> the input of layer 0: ``[x, 1 − x]`` by default."""
    return add_inverse(images)

  def encode(self, images: Array) -> Array:
    """Checks the images ``(N, H, W, C)`` and returns the input of explainable layer 0."""
    check_images(images, name=type(self).__name__, channels=self.image_channels, allow_empty=True)
    return self._encode(images)

  def forward_from(
      self, h: Array, layer: int = 0, explain: bool = False, add_bias: bool = True
  ) -> Array:
    """Logits ``(N, K)`` from the input ``h`` of explainable layer ``layer`` onwards.

    ``explain=True``: every segment detaches its dynamic factors, so the result
    is exactly linear in ``h``. ``add_bias=False`` returns ``logits −
    logit_bias`` without the rounding of adding and subtracting the bias.
    """
    protocol.check_layer(layer, self.num_explainable_layers)
    segments = self._segments()
    h = protocol.run_segments(h, segments, range(layer, len(segments)), explain)
    return self._readout(h, add_bias)

  def layer_input(self, images: Array, layer: int = 0) -> Array:
    """The input of explainable layer ``layer`` (``0``: ``encode(images)``); each segment below
    it runs once."""
    protocol.check_layer(layer, self.num_explainable_layers)
    return protocol.run_segments(self.encode(images), self._segments(), range(layer), False)

  def explanation_inputs(self, images: Array) -> tuple[Array, ...]:
    """The input of every explainable layer, ``[0]`` being ``encode(images)``."""
    return protocol.segment_inputs(self.encode(images), self._segments(), False)

  def forward_and_inputs(
      self, images: Array, add_bias: bool = True
  ) -> tuple[Array, tuple[Array, ...]]:
    """One forward pass: logits ``(N, K)`` and the input of every explainable layer."""
    inputs = self.explanation_inputs(images)
    return self.forward_from(inputs[-1], len(inputs) - 1, add_bias=add_bias), inputs

  def __call__(self, images: Array, explain: bool = False) -> Array:
    """Logits ``(N, K)`` of images ``(N, H, W, C)`` in [0, 1]."""
    return self.forward_from(self.encode(images), 0, explain)


class ExplainableModule(ExplainableMixin, nn.Module):
  """The Linen base of explainable models: :class:`ExplainableMixin` in a ``nn.Module``.

  Linen wraps only the methods defined in a class body, so the protocol's
  methods are bound here; a subclass declares its parts in fields and ``setup``
  (its segments are submodules) and ``num_explainable_layers`` from its fields.
  """

  encode = ExplainableMixin.encode
  forward_from = ExplainableMixin.forward_from
  layer_input = ExplainableMixin.layer_input
  explanation_inputs = ExplainableMixin.explanation_inputs
  forward_and_inputs = ExplainableMixin.forward_and_inputs
  __call__ = ExplainableMixin.__call__
