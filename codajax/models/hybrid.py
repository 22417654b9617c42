"""Hybrid networks (TPAMI extension): a conventional CNN, then CoDA layers.

A hybrid cuts a ResNet or VGG backbone after ``embedding_stage`` stages and
puts a stack of CoDA layers and the CoDA head on top. Every logit is then
exactly ``W_c(e) · e + logit_bias`` for the backbone output ``e`` (the
*embedding*), so the contribution maps decompose the output into the
contributions of the backbone's features; the deeper the cut, the closer the
model is to an ordinary CNN and the fewer layers the decomposition spans (the
*interpretable depth*). ``embedding_stage = 0`` keeps no backbone: the model is
a pure CoDA-Net on the encoded image ``[x, 1 − x]``.

Design choices (codajax's, not the paper's; see ``docs/hybrids.md``):

* **Normalisation: GroupNorm** (32 groups, fewer when a layer has fewer
  channels), as in BiT's ResNets. It needs no mutable ``batch_stats``, so a
  hybrid's variables are ``{"params": ...}`` exactly like a CoDA-Net's, train
  and eval compute the same function, and the embedding of an image does not
  depend on the rest of its batch.
* **The embedding enters the CoDA part unencoded.** The backbone output is a
  ReLU feature map: zero means "feature absent", and CoDA layers are linear in
  their input in explanation mode whatever it is, so ``[e, −e]`` would double
  the first CoDA layer's cost without adding anything (its contributions would
  sum pairwise to those of ``e``). ``[x, 1 − x]`` exists for pixels, where
  black must carry evidence; it is kept for ``embedding_stage = 0``.
* **The CoDA part mirrors the stages it replaces**: a 1×1 CoDA layer that maps
  the embedding to ``coda_width`` channels, then for every backbone stage after
  the cut a stride-2 3×3 CoDA layer and ``layers_per_stage − 1`` stride-1 3×3
  ones, then a 1×1 CoDA layer with one DAU per class. The class map therefore
  has the resolution of the full backbone's output, whatever the cut.
* The backbone takes the images in [0, 1] as they are (the GroupNorm after the
  first convolution removes their scale).

The module implements :class:`codajax.explain.ExplainableModel` through
:class:`codajax.explain.base.ExplainableModule` (its ``encode`` is the
embedding, its segments the CoDA layers) and
:class:`codajax.regularizers.RegularisableModel`: ``layer_input(images, 0)`` is
the embedding (the encoded image for ``embedding_stage = 0``),
``layer_input(images, l)`` the input of CoDA layer ``l``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import flax.linen as nn
import jax

from codajax.explain.base import ExplainableModule
from codajax.models.architectures import ARCHITECTURES, with_num_classes
from codajax.models.coda_net import CoDANet, CoDAWeightsStream, LayerSpec
from codajax.nn import dau
from codajax.nn.modules import DEFAULT_LOGIT_BIAS
from codajax.registry import register_model

Array = jax.Array

BACKBONE_KINDS = ("resnet", "vgg")
BLOCKS = ("basic", "bottleneck")
STEMS = ("cifar", "imagenet")

_MAX_GROUPS = 32
_BOTTLENECK_EXPANSION = 4
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # He init (torchvision)


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
  """A conventional CNN backbone, stage by stage.

  Attributes:
    kind: ``"resnet"`` (residual stages after a stem) or ``"vgg"`` (stages of
      3×3 convolutions, each followed by a 2×2 max-pool).
    stage_sizes: per stage, residual blocks (resnet) or convolutions (vgg).
    widths: per stage, the block width (resnet; a bottleneck block outputs
      ``4 ×`` that) or the number of channels (vgg).
    block: resnet block, ``"basic"`` (ResNet-18/34) or ``"bottleneck"`` (ResNet-50).
    stem: resnet stem, ``"cifar"`` (3×3 convolution, stride 1, for 32 px
      inputs) or ``"imagenet"`` (7×7 stride-2 convolution and 3×3 stride-2
      max-pool). Stage 1 of a resnet keeps the stem's resolution, every later
      stage halves it.
  """

  kind: Literal["resnet", "vgg"]
  stage_sizes: tuple[int, ...]
  widths: tuple[int, ...]
  block: Literal["basic", "bottleneck"] = "basic"
  stem: Literal["cifar", "imagenet"] = "cifar"

  def __post_init__(self):
    if self.kind not in BACKBONE_KINDS:
      raise ValueError(f"Unknown backbone kind {self.kind!r}; known: {', '.join(BACKBONE_KINDS)}.")
    if self.block not in BLOCKS:
      raise ValueError(f"Unknown residual block {self.block!r}; known: {', '.join(BLOCKS)}.")
    if self.stem not in STEMS:
      raise ValueError(f"Unknown stem {self.stem!r}; known: {', '.join(STEMS)}.")
    if len(self.stage_sizes) != len(self.widths) or not self.stage_sizes:
      raise ValueError(
          f"stage_sizes {self.stage_sizes} and widths {self.widths} must be non-empty and of "
          f"equal length."
      )
    if min(self.stage_sizes) < 1 or min(self.widths) < 1:
      raise ValueError(f"stage_sizes {self.stage_sizes} and widths {self.widths} must be >= 1.")

  @property
  def num_stages(self) -> int:
    return len(self.stage_sizes)

  def output_channels(self, num_stages: int) -> int:
    """Channels of the feature map after the first ``num_stages`` (>= 1) stages."""
    width = self.widths[num_stages - 1]
    expand = self.kind == "resnet" and self.block == "bottleneck"
    return width * _BOTTLENECK_EXPANSION if expand else width

  def with_widths(self, widths: Sequence[int]) -> BackboneSpec:
    """The same backbone with other stage widths (e.g. a narrow variant for tests)."""
    return dataclasses.replace(self, widths=tuple(int(w) for w in widths))


def resnet_spec(
    depth: int, stem: str = "cifar", widths: Sequence[int] = (64, 128, 256, 512)
) -> BackboneSpec:
  """ResNet-18, -34 or -50 (He et al. 2016), with a CIFAR or ImageNet stem."""
  stages = {
      18: ((2, 2, 2, 2), "basic"),
      34: ((3, 4, 6, 3), "basic"),
      50: ((3, 4, 6, 3), "bottleneck"),
  }
  if depth not in stages:
    raise ValueError(f"ResNet depth must be one of {sorted(stages)}, got {depth}.")
  sizes, block = stages[depth]
  return BackboneSpec("resnet", sizes, tuple(widths), block, stem)


def vgg_spec(depth: int, widths: Sequence[int] = (64, 128, 256, 512, 512)) -> BackboneSpec:
  """VGG-11 or VGG-16 (Simonyan & Zisserman 2015): five conv stages, each max-pooled."""
  stages = {11: (1, 1, 2, 2, 2), 16: (2, 2, 3, 3, 3)}
  if depth not in stages:
    raise ValueError(f"VGG depth must be one of {sorted(stages)}, got {depth}.")
  return BackboneSpec("vgg", stages[depth], tuple(widths))


def _group_norm(channels: int, dtype: Any, zero_scale: bool = False) -> nn.GroupNorm:
  """GroupNorm with ``gcd(32, channels)`` groups; ``zero_scale`` for the last norm of a block."""
  return nn.GroupNorm(
      num_groups=math.gcd(_MAX_GROUPS, channels),
      dtype=dtype,
      scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones,
  )


def _conv(features: int, kernel_size: int, stride: int, dtype: Any) -> nn.Conv:
  """Bias-free convolution with explicit symmetric padding ``(k − 1) // 2`` (not "SAME")."""
  pad = (kernel_size - 1) // 2
  return nn.Conv(
      features,
      (kernel_size, kernel_size),
      strides=(stride, stride),
      padding=((pad, pad), (pad, pad)),
      use_bias=False,
      kernel_init=_conv_init,
      dtype=dtype,
  )


class ResidualBlock(nn.Module):
  """A basic (two 3×3) or bottleneck (1×1, 3×3, 1×1 ×4) residual block with GroupNorm.

  The stride sits on the 3×3 convolution (ResNet v1.5); the last norm of the
  residual branch starts at zero scale, so every block starts as its shortcut.
  """

  width: int
  stride: int = 1
  bottleneck: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """``(N, H, W, C) -> (N, H/stride, W/stride, width or 4·width)``."""
    out_channels = self.width * (_BOTTLENECK_EXPANSION if self.bottleneck else 1)
    if self.bottleneck:
      y = nn.relu(_group_norm(self.width, self.dtype)(_conv(self.width, 1, 1, self.dtype)(x)))
      y = nn.relu(
          _group_norm(self.width, self.dtype)(_conv(self.width, 3, self.stride, self.dtype)(y))
      )
      y = _group_norm(out_channels, self.dtype, True)(_conv(out_channels, 1, 1, self.dtype)(y))
    else:
      y = nn.relu(
          _group_norm(self.width, self.dtype)(_conv(self.width, 3, self.stride, self.dtype)(x))
      )
      y = _group_norm(out_channels, self.dtype, True)(_conv(out_channels, 3, 1, self.dtype)(y))
    shortcut = x
    if self.stride != 1 or x.shape[-1] != out_channels:
      shortcut = _group_norm(out_channels, self.dtype)(
          _conv(out_channels, 1, self.stride, self.dtype)(x)
      )
    return nn.relu(y + shortcut)


class Backbone(nn.Module):
  """The first ``num_stages`` stages of a :class:`BackboneSpec` network.

  Attributes:
    spec: the backbone.
    num_stages: how many stages to keep (1..``spec.num_stages``).
    dtype: computation dtype (``None``: float32); parameters are float32.
  """

  spec: BackboneSpec
  num_stages: int
  dtype: Any = None

  @nn.compact
  def __call__(self, images: Array) -> Array:
    """Images ``(N, H, W, C)`` in [0, 1] -> ReLU features ``(N, h, w, C_emb)``."""
    spec, x = self.spec, images
    if spec.kind == "vgg":
      for stage in range(self.num_stages):
        for _ in range(spec.stage_sizes[stage]):
          width = spec.widths[stage]
          x = nn.relu(_group_norm(width, self.dtype)(_conv(width, 3, 1, self.dtype)(x)))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      return x
    stem_width = spec.widths[0]
    if spec.stem == "imagenet":
      x = nn.relu(_group_norm(stem_width, self.dtype)(_conv(stem_width, 7, 2, self.dtype)(x)))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      x = nn.relu(_group_norm(stem_width, self.dtype)(_conv(stem_width, 3, 1, self.dtype)(x)))
    for stage in range(self.num_stages):
      for block in range(spec.stage_sizes[stage]):
        stride = 2 if stage > 0 and block == 0 else 1
        x = ResidualBlock(
            spec.widths[stage],
            stride,
            spec.block == "bottleneck",
            self.dtype,
            name=f"stage{stage + 1}_block{block + 1}",
        )(x)
    return x


def mirrored_coda_layers(
    num_replaced_stages: int, num_classes: int, width: int, rank: int, layers_per_stage: int = 2
) -> tuple[LayerSpec, ...]:
  """The CoDA part of a hybrid that replaces ``num_replaced_stages`` backbone stages.

  A 1×1 entry layer to ``width`` channels, per replaced stage one stride-2 3×3
  layer and ``layers_per_stage − 1`` stride-1 3×3 layers, then a 1×1 layer of
  ``num_classes`` DAUs (the class map). All layers have rank ``rank``.
  """
  if num_replaced_stages < 0 or layers_per_stage < 1:
    raise ValueError(
        f"need num_replaced_stages >= 0 and layers_per_stage >= 1, got {num_replaced_stages} "
        f"and {layers_per_stage}."
    )
  stage = (LayerSpec(width, rank, 3, 2, 1),) + (LayerSpec(width, rank, 3, 1, 1),) * (
      layers_per_stage - 1
  )
  return (
      LayerSpec(width, rank, 1, 1, 0),
      *stage * num_replaced_stages,
      LayerSpec(num_classes, rank, 1, 1, 0),
  )


class HybridNet(CoDAWeightsStream, ExplainableModule):
  """A backbone cut after ``embedding_stage`` stages, then CoDA layers and the CoDA head.

  ``logit_c(x) = W_c(e) · e + logit_bias`` exactly, for the embedding
  ``e = backbone(x)`` (``[x, 1 − x]`` when ``embedding_stage = 0``).

  Attributes:
    backbone: the CNN; ignored when ``embedding_stage = 0`` (may be ``None``).
    embedding_stage: stages of the backbone kept (0: none, a pure CoDA-Net).
    layers: the CoDA layers, first to last (the last one has a DAU per class).
    temperature: ``T``; logits are the class maps' sums divided by ``T``.
    logit_bias: the fixed scalar bias added to every logit.
    norm: ``"squash"`` or ``"l2"`` (CoDA layers).
    form: ``"implicit"`` or ``"explicit"`` DAU computation.
    dtype: dtype of every convolution (``None``: float32); parameters,
      norms and logits stay float32.
    image_channels: channels ``C`` of the input images.
  """

  backbone: BackboneSpec | None
  embedding_stage: int
  layers: Sequence[LayerSpec]
  temperature: float = 100.0
  logit_bias: float = DEFAULT_LOGIT_BIAS
  norm: dau.Norm = "squash"
  form: dau.Form = "implicit"
  dtype: Any = None
  image_channels: int = 3

  def __post_init__(self):
    stages = 0 if self.backbone is None else self.backbone.num_stages
    if not 0 <= self.embedding_stage <= stages:
      raise ValueError(
          f"embedding_stage must be in 0..{stages} (the backbone has {stages} stages), got "
          f"{self.embedding_stage}."
      )
    if not self.layers:
      raise ValueError("A hybrid needs at least one CoDA layer (the class layer).")
    super().__post_init__()

  @property
  def num_classes(self) -> int:
    return self.layers[-1].features

  @property
  def embedding_channels(self) -> int:
    """Channels of ``explanation_inputs(images)[0]``: ``2C`` for stage 0, else the backbone's."""
    if self.embedding_stage == 0:
      return 2 * self.image_channels
    return self.backbone.output_channels(self.embedding_stage)

  def _coda_fields(self) -> dict[str, Any]:
    pure = self.embedding_stage == 0
    return {
        "layers": tuple(self.layers),
        "temperature": self.temperature,
        "logit_bias": self.logit_bias,
        "norm": self.norm,
        "form": self.form,
        "dtype": self.dtype,
        "image_channels": self.image_channels if pure else self.embedding_channels,
        "encode_input": pure,
    }

  def coda_net(self) -> CoDANet:
    """The CoDA part as an unbound :class:`CoDANet`; its parameters are ``params["coda"]``."""
    return CoDANet(**self._coda_fields(), parent=None)

  def setup(self):
    if self.embedding_stage > 0:
      self.features = Backbone(self.backbone, self.embedding_stage, self.dtype)
    self.coda = CoDANet(**self._coda_fields())

  @property
  def num_explainable_layers(self) -> int:
    """``L``: the CoDA layers; layer ``0``'s input is the embedding."""
    return len(self.layers)

  def _segments(self) -> Sequence[nn.Module]:
    return self.coda._segments()

  def _readout(self, class_maps: Array, add_bias: bool) -> Array:
    return self.coda._readout(class_maps, add_bias)

  def _encode(self, images: Array) -> Array:
    """What the CoDA part encodes: backbone features, or the raw images for stage 0."""
    return self.coda.encode(self.features(images) if self.embedding_stage > 0 else images)

  def embed(self, images: Array) -> Array:
    """The embedding (``encode``): ``(N, H, W, C)`` in [0, 1] -> ``(N, h, w, C_emb)``."""
    return self.encode(images)


# --------------------------------------------------------------------------- named families


@dataclasses.dataclass(frozen=True)
class HybridFamily:
  """A backbone and the settings of its hybrids at every embedding stage.

  ``embedding_stage = 0`` is the pure CoDA-Net ``pure_layers`` at
  ``pure_temperature``; every deeper cut uses :func:`mirrored_coda_layers`
  with ``coda_width``/``coda_rank`` at ``hybrid_temperature``.
  """

  backbone: BackboneSpec
  pure_layers: tuple[LayerSpec, ...]
  pure_temperature: float
  hybrid_temperature: float
  coda_width: int
  coda_rank: int
  num_classes: int
  image_size: int
  description: str


_CIFAR = {
    "pure_layers": ARCHITECTURES["9L-S"].layers,
    "pure_temperature": 1000.0,
    "hybrid_temperature": 100.0,
    "coda_width": 64,
    "coda_rank": 64,
    "num_classes": 10,
    "image_size": 32,
}
_IMAGENET = {
    "pure_layers": ARCHITECTURES["9L-L"].layers,
    "pure_temperature": 100_000.0,
    "hybrid_temperature": 100.0,
    "coda_width": 64,
    "coda_rank": 128,
    "num_classes": 1000,
    "image_size": 224,
}

HYBRID_FAMILIES: dict[str, HybridFamily] = {
    **{
        f"resnet{d}-cifar": HybridFamily(
            resnet_spec(d, "cifar"),
            **_CIFAR,
            description=f"ResNet-{d} (CIFAR stem) hybrids, 32 px.",
        )
        for d in (18, 34, 50)
    },
    **{
        f"resnet{d}-imagenet": HybridFamily(
            resnet_spec(d, "imagenet"),
            **_IMAGENET,
            description=f"ResNet-{d} (ImageNet stem) hybrids, 224 px (any size works).",
        )
        for d in (18, 34, 50)
    },
    **{
        f"vgg{d}-cifar": HybridFamily(vgg_spec(d), **_CIFAR, description=f"VGG-{d} hybrids, 32 px.")
        for d in (11, 16)
    },
    **{
        f"vgg{d}-imagenet": HybridFamily(
            vgg_spec(d), **_IMAGENET, description=f"VGG-{d} hybrids, 224 px."
        )
        for d in (11, 16)
    },
    "shapes": HybridFamily(
        BackboneSpec("resnet", (1, 1, 1), (16, 32, 64)),
        pure_layers=ARCHITECTURES["shapes-7L"].layers,
        pure_temperature=500.0,
        hybrid_temperature=100.0,
        coda_width=32,
        coda_rank=16,
        num_classes=10,
        image_size=32,
        description="Tiny three-stage ResNet hybrids for the embedded 32x32 shapes (CPU-sized).",
    ),
}


def hybrid_from_family(
    family: HybridFamily | str,
    *,
    embedding_stage: int,
    num_classes: int | None = None,
    temperature: float | None = None,
    norm: dau.Norm = "squash",
    form: dau.Form = "implicit",
    dtype: Any = None,
    image_channels: int = 3,
    logit_bias: float = DEFAULT_LOGIT_BIAS,
    backbone_widths: Sequence[int] | None = None,
    coda_width: int | None = None,
    coda_rank: int | None = None,
    layers_per_stage: int = 2,
    coda_layers: Sequence[Sequence[int]] | None = None,
) -> HybridNet:
  """The hybrid of ``family`` cut after ``embedding_stage`` backbone stages.

  Args:
    family: a :class:`HybridFamily` or a key of :data:`HYBRID_FAMILIES`.
    embedding_stage: 0 (pure CoDA-Net) .. number of backbone stages (a CNN with
      a CoDA head).
    num_classes: DAUs of the class layer (default: the family's).
    temperature: ``T`` (default: the family's for this stage).
    norm, form, dtype, image_channels, logit_bias: see :class:`HybridNet`.
    backbone_widths: replace the backbone's stage widths (narrow test models).
    coda_width, coda_rank, layers_per_stage: override the mirrored CoDA part
      (``embedding_stage > 0``; see :func:`mirrored_coda_layers`).
    coda_layers: explicit CoDA layers ``(features, rank, k, stride, padding)``
      for any stage, replacing the family's; the last layer's ``features``
      becomes ``num_classes`` when that is given.

  Returns:
    An unbound :class:`HybridNet`.
  """
  if isinstance(family, str):
    if family not in HYBRID_FAMILIES:
      raise ValueError(
          f"Unknown hybrid family {family!r}; known: {', '.join(sorted(HYBRID_FAMILIES))}."
      )
    family = HYBRID_FAMILIES[family]
  if norm not in dau.NORMS:
    raise ValueError(f"Unknown norm {norm!r}; known norms: {', '.join(dau.NORMS)}.")
  if form not in dau.FORMS:
    raise ValueError(f"Unknown form {form!r}; known forms: {', '.join(dau.FORMS)}.")
  backbone = family.backbone
  if backbone_widths is not None:
    backbone = backbone.with_widths(backbone_widths)
  if not 0 <= embedding_stage <= backbone.num_stages:
    raise ValueError(
        f"embedding_stage must be in 0..{backbone.num_stages} for this family, got "
        f"{embedding_stage}."
    )
  classes = family.num_classes if num_classes is None else num_classes
  if coda_layers is not None:
    layers = tuple(LayerSpec(*map(int, spec)) for spec in coda_layers)
    if not layers:
      raise ValueError("coda_layers must hold at least the class layer.")
    if num_classes is not None:
      layers = with_num_classes(layers, num_classes)
  elif embedding_stage == 0:
    layers = with_num_classes(family.pure_layers, classes)
  else:
    layers = mirrored_coda_layers(
        backbone.num_stages - embedding_stage,
        classes,
        family.coda_width if coda_width is None else coda_width,
        family.coda_rank if coda_rank is None else coda_rank,
        layers_per_stage,
    )
  if temperature is None:
    temperature = family.pure_temperature if embedding_stage == 0 else family.hybrid_temperature
  return HybridNet(
      backbone=backbone,
      embedding_stage=embedding_stage,
      layers=layers,
      temperature=float(temperature),
      logit_bias=logit_bias,
      norm=norm,
      form=form,
      dtype=dtype,
      image_channels=image_channels,
  )


def _family_factory(family: str):
  """``get_model`` factory of ``hybrid-{family}``: ``embedding_stage`` is required."""

  def factory(*, embedding_stage: int | None = None, **kwargs) -> HybridNet:
    if embedding_stage is None:
      stages = HYBRID_FAMILIES[family].backbone.num_stages
      raise ValueError(
          f"hybrid-{family} needs embedding_stage=0..{stages} (e.g. model.kwargs.embedding_stage"
          f" in a config), or use the name hybrid-{family}-s<stage>."
      )
    return hybrid_from_family(family, embedding_stage=int(embedding_stage), **kwargs)

  return factory


def _staged_factory(family: str, stage: int):
  """``get_model`` factory of ``hybrid-{family}-s{stage}`` (the stage is fixed)."""

  def factory(**kwargs) -> HybridNet:
    if "embedding_stage" in kwargs:
      raise TypeError(
          f"hybrid-{family}-s{stage} fixes embedding_stage={stage}; use hybrid-{family} with "
          f"embedding_stage=... to choose it."
      )
    return hybrid_from_family(family, embedding_stage=stage, **kwargs)

  return factory


def hybrid_model_names() -> list[str]:
  """Every registered hybrid name: ``hybrid-{family}`` and ``hybrid-{family}-s{k}``."""
  names = []
  for family, spec in HYBRID_FAMILIES.items():
    names.append(f"hybrid-{family}")
    names += [f"hybrid-{family}-s{k}" for k in range(spec.backbone.num_stages + 1)]
  return names


def _register_families() -> None:
  for family, spec in HYBRID_FAMILIES.items():
    register_model(f"hybrid-{family}", _family_factory(family))
    for stage in range(spec.backbone.num_stages + 1):
      register_model(f"hybrid-{family}-s{stage}", _staged_factory(family, stage))


_register_families()
