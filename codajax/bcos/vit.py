"""B-cos vision transformers (B-cos v2, TPAMI 2024): the simple ViT and ViT-C, Linen.

The architecture of the released ``bcos_simple_vit_*_patch16_224`` and
``bcos_vitc_*_patch1_14`` models (B-cos/B-cos-v2), written from the mathematics:

* **input** ``[x, 1 − x]`` (6 channels for RGB), no mean/std normalisation;
* **ViT-C stem** (ViT-C only): 3×3 B-cos convolutions (stride 2 where the width
  grows, padding 1), each followed by a centred, bias-free layer norm over
  ``H, W, C`` (group norm with one group);
* **patch embedding**: a B-cos dense layer on each ``p×p`` patch, flattened in
  ``(row, column, channel)`` order (``p = 16``; ViT-C: ``p = 1`` on the stem's
  14×14 map);
* **positional embedding**: the fixed 2-d sine-cosine table (temperature 10⁴,
  ``[sin(x ω), cos(x ω), sin(y ω), cos(y ω)]`` with ``ω_i = 10⁴^(−i / (D/4 − 1))``),
  added to the tokens;
* **encoder block** (×depth): ``t ← t + Attn(LN(t))``, ``t ← t + MLP(LN(t))``;
  ``Attn``: plain bias-free ``qkv`` projection, softmax attention with scale
  ``1/√d_head``, B-cos output projection; ``MLP``: two B-cos dense layers and no
  activation (the B-cos dynamic factor is the non-linearity);
* **head**: mean over tokens, LN, a B-cos dense layer to the classes, the logit
  layer ``/ T + logit_bias`` (released: ``T = 1``, ``logit_bias = log(1/999)``).

``LN`` is the centred layer norm without bias, ``γ (t − μ) / √(σ² + 10⁻⁵)``.

**Explanation mode** (``explain=True``) detaches every dynamic factor: the B-cos
layers' ``|cos|^(B−1)``, every norm's ``σ`` and the attention matrix (``q`` and
``k``; the values ``v`` stay linear). The network is then exactly linear in the
input of every explainable layer.

**Positional embedding as a linear term.** An added constant would break that
linearity at the input. For an encoded image ``h = [x, 1 − x]`` the channel
pairs sum to one, so ``s(h) = mean over the token's pixels and channels of
(h_c + h_{c+C}) = 1`` and ``pe · s(h)`` *is* the positional embedding: the forward
pass is the released one for every image, and the explanation at the input
attributes the positional embedding uniformly to the pixels of each token's
image block. Completeness at the input is therefore exact (``logit − logit_bias``).

**Explainable layers** (``L = depth + 2``): ``0``: the encoded image
``(N, H, W, 2C)``; ``l = 1..depth``: the tokens entering encoder block ``l − 1``;
``depth + 1``: the tokens leaving the last block; token layers are laid out on
their grid, ``(N, h, w, D)``, so their maps upsample to the image like a CNN's.

Linen :class:`BcosViT` and NNX :class:`NNXBcosViT` share the forward pass
(:class:`ViTForward`: the segments and readout they declare for
:mod:`codajax.explain.base`, whose bases give the explanation methods);
``NNXBcosViT.from_linen`` copies parameters.
Named sizes (``get_model``): :data:`VIT_SIZES`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from codajax.bcos.common import default_logit_bias
from codajax.bcos.layers import BcosConv, BcosDense, default_kernel_init
from codajax.bcos.nnx_layers import NNXBcosConv, NNXBcosDense

from codajax.explain.base import ExplainableMixin, ExplainableModule
from codajax.nn.modules import add_inverse, explanation_dtype
from codajax.registry import register_model

Array = jax.Array

#: ``eps`` of every layer norm (PyTorch's default).
LN_EPS = 1e-5
#: Temperature of the sine-cosine positional embedding.
POS_TEMPERATURE = 10_000.0


# --------------------------------------------------------------------------- functional pieces


def centered_layer_norm(
    x: Array,
    weight: Array | None,
    axes: Sequence[int],
    *,
    eps: float = LN_EPS,
    explain: bool = False,
) -> Array:
  """``γ (x − μ) / √(σ² + eps)`` with ``μ, σ²`` over ``axes`` (biased variance), no bias.

  Linear in ``x`` once ``σ`` is fixed: ``explain=True`` detaches ``σ`` (the mean
  subtraction is itself linear and stays). ``weight`` ``(C,)`` scales the last axis.
  """
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  axes = tuple(axes)
  mean = jnp.mean(x, axis=axes, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
  std = jnp.sqrt(var + eps)
  if explain:
    std = lax.stop_gradient(std)
  y = (x - mean) / std
  return y if weight is None else y * weight


def sincos_position_embedding(
    height: int, width: int, dim: int, temperature: float = POS_TEMPERATURE
) -> np.ndarray:
  """The fixed 2-d sine-cosine embedding, ``(height, width, dim)`` float32.

  For the token at row ``y``, column ``x``: ``[sin(x ω), cos(x ω), sin(y ω), cos(y ω)]``
  with ``ω_i = temperature^(−i / (D/4 − 1))``, ``i = 0..D/4 − 1``.
  """
  if dim % 4 or dim < 8:
    raise ValueError(f"the sine-cosine embedding needs dim a multiple of 4 and >= 8, got {dim}.")
  quarter = dim // 4
  omega = 1.0 / temperature ** (np.arange(quarter, dtype=np.float64) / (quarter - 1))
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  ang_x = cols.reshape(-1, 1) * omega
  ang_y = rows.reshape(-1, 1) * omega
  table = np.concatenate([np.sin(ang_x), np.cos(ang_x), np.sin(ang_y), np.cos(ang_y)], axis=1)
  return table.reshape(height, width, dim).astype(np.float32)


def encoding_ones(h: Array, grid: tuple[int, int]) -> Array:
  """``s(h)``: per token, the mean of ``h_c + h_{c+C}`` over its image block; ``(N, h, w, 1)``.

  Linear in the encoded image ``h`` ``(N, H, W, 2C)`` and exactly 1 (up to
  rounding) for ``h = [x, 1 − x]``.
  """
  n, height, width, channels = h.shape
  gh, gw = grid
  if channels % 2 or height % gh or width % gw:
    raise ValueError(
        f"encoded input {tuple(h.shape)} does not tile into a {gh}x{gw} token grid "
        "with paired channels."
    )
  c = channels // 2
  pair_sum = h[..., :c] + h[..., c:]
  blocks = pair_sum.reshape(n, gh, height // gh, gw, width // gw, c)
  return jnp.mean(blocks, axis=(2, 4, 5))[..., None]


def patchify(x: Array, patch: int) -> Array:
  """``(N, H, W, C) -> (N, H/p, W/p, p·p·C)``, each patch flattened in ``(row, col, channel)`` order."""
  n, height, width, c = x.shape
  if height % patch or width % patch:
    raise ValueError(f"image {height}x{width} is not divisible into {patch}x{patch} patches.")
  x = x.reshape(n, height // patch, patch, width // patch, patch, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(
      n, height // patch, width // patch, patch * patch * c
  )


def attention(q: Array, k: Array, v: Array, heads: int, *, explain: bool = False) -> Array:
  """Softmax attention ``softmax(q kᵀ / √d) v`` per head, ``(N, T, H·d) -> (N, T, H·d)``.

  ``explain=True`` detaches ``q`` and ``k``: the attention matrix is then a
  constant and the output is linear in ``v``.
  """
  n, t, inner = q.shape
  if inner % heads:
    raise ValueError(f"{inner} attention features cannot be split into {heads} heads.")
  d = inner // heads
  if explain:
    q, k = lax.stop_gradient(q), lax.stop_gradient(k)
  split = lambda a: a.reshape(n, t, heads, d)
  logits = jnp.einsum("nqhd,nkhd->nhqk", split(q), split(k)) * (d**-0.5)
  weights = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum("nhqk,nkhd->nqhd", weights, split(v))
  return out.reshape(n, t, inner)


# --------------------------------------------------------------------------- Linen modules


class CenteredLayerNorm(nn.Module):
  """Centred, bias-free layer norm over ``axes`` (``(-1,)``: tokens; ``(1, 2, 3)``: feature maps).

  Parameter ``scale`` ``(C,)`` (the released ``weight``).
  """

  axes: tuple[int, ...] = (-1,)
  eps: float = LN_EPS
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, explain: bool = False) -> Array:
    weight = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
    return centered_layer_norm(x, weight, self.axes, eps=self.eps, explain=explain)


class FeatureMap(nn.Module):
  """Identity on the final token map ``(N, h, w, D)``, named ``layer_{depth + 1}``: the
  feature map Grad-CAM reads (codajax's evaluators take the output of ``layer_{L − 1}``)."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return x


class EncoderBlock(nn.Module):
  """One B-cos transformer block on tokens ``(N, T, D)``.

  Parameters: ``attn_norm``, ``qkv`` (plain ``(D, 3·inner)`` kernel, no bias),
  ``attn_out`` (B-cos), ``mlp_norm``, ``mlp_in``, ``mlp_out`` (B-cos).
  """

  dim: int
  heads: int
  mlp_dim: int
  b: float = 2.0
  max_out: int = 1
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, t: Array, explain: bool = False) -> Array:
    dtype = explanation_dtype(self.dtype) if explain else self.dtype
    dense = dict(b=self.b, max_out=self.max_out, dtype=dtype, param_dtype=self.param_dtype)
    inner = self.dim  # d_head · heads = dim for every released size
    y = CenteredLayerNorm(name="attn_norm", param_dtype=self.param_dtype)(t, explain)
    kernel = self.param("qkv", default_kernel_init, (self.dim, 3 * inner), self.param_dtype)
    cdt = dtype or y.dtype
    qkv = jnp.einsum(
        "ntc,co->nto",
        y.astype(cdt),
        kernel.astype(cdt),
        preferred_element_type=jnp.promote_types(cdt, jnp.float32),
    )
    q, k, v = jnp.split(qkv, 3, axis=-1)
    y = attention(q, k, v, self.heads, explain=explain)
    t = t + BcosDense(self.dim, name="attn_out", **dense)(y, explain)
    y = CenteredLayerNorm(name="mlp_norm", param_dtype=self.param_dtype)(t, explain)
    y = BcosDense(self.mlp_dim, name="mlp_in", **dense)(y, explain)
    return t + BcosDense(self.dim, name="mlp_out", **dense)(y, explain)


class ViTForward:
  """The forward pass of a B-cos ViT as :mod:`codajax.explain.base` segments and readout, shared
  by the Linen :class:`BcosViT` and the NNX :class:`NNXBcosViT`.

  Needs the fields of :class:`BcosViT` and the submodules ``stem_convs``, ``stem_norms``,
  ``patch_embed``, ``blocks``, ``head_norm``, ``head`` (each called as ``f(x, explain)``).
  """

  # ------------------------------------------------------------------ structure

  @property
  def stem_strides(self) -> tuple[int, ...]:
    """Stride of every stem convolution: 2 where the width grows, else 1."""
    strides, channels = [], 2 * self.image_channels
    for width in self.conv_stem:
      strides.append(2 if width > channels else 1)
      channels = width
    return tuple(strides)

  @property
  def stem_stride(self) -> int:
    return math.prod(self.stem_strides)

  @property
  def grid(self) -> tuple[int, int]:
    """Token grid ``(h, w)`` for ``image_size`` images."""
    side = self.image_size // (self.stem_stride * self.patch_size)
    return (side, side)

  @property
  def num_explainable_layers(self) -> int:
    """``depth + 2``: the encoded image, the input of every block, the last block's output."""
    return self.depth + 2

  # ------------------------------------------------------------------ pieces

  def _dtype(self, explain: bool) -> Any:
    return explanation_dtype(self.dtype) if explain else self.dtype

  def _encode(self, images: Array) -> Array:
    """``[x, 1 − x]``: ``(N, H, W, C) -> (N, H, W, 2C)`` float32; the sides must fit the grid."""
    step = self.stem_stride * self.patch_size
    if images.shape[1] % step or images.shape[2] % step:
      raise ValueError(
          f"image sides must be multiples of {step} (stem stride x patch size), "
          f"got {images.shape[1]}x{images.shape[2]}."
      )
    return add_inverse(images.astype(jnp.float32))

  def _tokens(self, h0: Array, explain: bool) -> Array:
    """Encoded image -> tokens on their grid with the positional term, ``(N, h, w, D)``."""
    dtype = self._dtype(explain)
    x = h0 if dtype is None else h0.astype(dtype)
    for conv, norm in zip(self.stem_convs, self.stem_norms):
      x = norm(conv(x, explain), explain)
    x = self.patch_embed(patchify(x, self.patch_size), explain)
    gh, gw = x.shape[1:3]
    pe = jnp.asarray(sincos_position_embedding(gh, gw, self.dim))
    return x + pe * encoding_ones(h0.astype(x.dtype), (gh, gw))

  def _block(self, index: int, grid_tokens: Array, explain: bool) -> Array:
    n, gh, gw, d = grid_tokens.shape
    out = self.blocks[index](grid_tokens.reshape(n, gh * gw, d), explain)
    return out.reshape(n, gh, gw, d)

  def _head(self, grid_tokens: Array, explain: bool) -> Array:
    """The last segment: tokens on their grid -> class scores ``(N, K)`` float32 (mean over
    tokens, LN, the B-cos classifier)."""
    grid_tokens = getattr(self, f"layer_{self.depth + 1}")(grid_tokens)
    pooled = jnp.mean(grid_tokens, axis=(1, 2))
    return self.head(self.head_norm(pooled, explain), explain).astype(jnp.float32)

  # ------------------------------------------------------------------ codajax.explain.base

  def _segments(self) -> list[Callable[[Array, bool], Array]]:
    """The tokens (stem, patches, positions), every encoder block, the head."""
    blocks = [functools.partial(self._block, index) for index in range(self.depth)]
    return [self._tokens, *blocks, self._head]

  def _readout(self, scores: Array, add_bias: bool) -> Array:
    if self.logit_temperature is not None:
      scores = scores / self.logit_temperature
    return scores + self.logit_bias if add_bias else scores


class BcosViT(ViTForward, ExplainableModule):
  """A B-cos simple ViT (``conv_stem=()``) or ViT-C, following :class:`codajax.explain.ExplainableModel`.

  ``logit_c = W_c(h) · h + logit_bias`` exactly in explanation mode for the input
  ``h`` of every explainable layer (see the module docstring).

  Attributes:
    image_size: side of the (square) input images the positional table is made for.
    patch_size: ``p`` (on the stem's output for ViT-C).
    dim, depth, heads, mlp_dim: token width ``D``, blocks, heads, MLP width.
    conv_stem: output widths of the stem convolutions (``()``: none).
    num_classes: ``K``.
    image_channels: ``C`` of the images (the encoding doubles it).
    logit_bias: added to every logit (``None``: ``−ln(K − 1)`` as released, 0 for ``K <= 2``).
    logit_temperature: logits are divided by it (``None``: 1).
    b, max_out: of every B-cos layer.
    dtype: dtype of the matrix products (``None``: float32).
  """

  image_size: int
  patch_size: int
  dim: int
  depth: int
  heads: int
  mlp_dim: int
  conv_stem: tuple[int, ...] = ()
  num_classes: int = 1000
  image_channels: int = 3
  logit_bias: float | None = None
  logit_temperature: float | None = None
  b: float = 2.0
  max_out: int = 1
  dtype: Any = None

  def __post_init__(self):
    if self.dim % self.heads:
      raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}.")
    if self.logit_bias is None:
      object.__setattr__(self, "logit_bias", default_logit_bias(self.num_classes))
    stride = self.stem_stride
    if self.image_size % (stride * self.patch_size):
      raise ValueError(
          f"image_size {self.image_size} is not divisible by the stem stride "
          f"{stride} times patch_size {self.patch_size}."
      )
    super().__post_init__()

  def setup(self):
    dense = dict(b=self.b, max_out=self.max_out, dtype=self.dtype)
    self.stem_convs = [
        BcosConv(width, 3, stride, 1, **dense)
        for width, stride in zip(self.conv_stem, self.stem_strides)
    ]
    self.stem_norms = [CenteredLayerNorm(axes=(1, 2, 3)) for _ in self.conv_stem]
    self.patch_embed = BcosDense(self.dim, **dense)
    self.blocks = [
        EncoderBlock(self.dim, self.heads, self.mlp_dim, self.b, self.max_out, self.dtype)
        for _ in range(self.depth)
    ]
    self.head_norm = CenteredLayerNorm()
    self.head = BcosDense(self.num_classes, **dense)
    setattr(self, f"layer_{self.depth + 1}", FeatureMap())


# --------------------------------------------------------------------------- NNX


class NNXCenteredLayerNorm(nnx.Module):
  """NNX :class:`CenteredLayerNorm`; parameter ``scale`` ``(C,)``."""

  def __init__(
      self,
      num_features: int,
      axes: tuple[int, ...] = (-1,),
      eps: float = LN_EPS,
      param_dtype: Any = jnp.float32,
  ):
    self.axes, self.eps = tuple(axes), eps
    self.scale = nnx.Param(jnp.ones((num_features,), param_dtype))

  def __call__(self, x: Array, explain: bool = False) -> Array:
    return centered_layer_norm(x, self.scale[...], self.axes, eps=self.eps, explain=explain)


class NNXFeatureMap(nnx.Module):
  """NNX :class:`FeatureMap` (identity)."""

  def __call__(self, x: Array) -> Array:
    return x


class NNXEncoderBlock(nnx.Module):
  """NNX :class:`EncoderBlock` (same parameter names)."""

  def __init__(
      self,
      dim: int,
      heads: int,
      mlp_dim: int,
      b: float = 2.0,
      max_out: int = 1,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      *,
      rngs: nnx.Rngs,
  ):
    self.heads, self.dtype = heads, dtype
    dense = dict(b=b, max_out=max_out, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.attn_norm = NNXCenteredLayerNorm(dim, param_dtype=param_dtype)
    self.qkv = nnx.Param(default_kernel_init(rngs.params(), (dim, 3 * dim), param_dtype))
    self.attn_out = NNXBcosDense(dim, dim, **dense)
    self.mlp_norm = NNXCenteredLayerNorm(dim, param_dtype=param_dtype)
    self.mlp_in = NNXBcosDense(dim, mlp_dim, **dense)
    self.mlp_out = NNXBcosDense(mlp_dim, dim, **dense)

  def __call__(self, t: Array, explain: bool = False) -> Array:
    dtype = explanation_dtype(self.dtype) if explain else self.dtype
    y = self.attn_norm(t, explain)
    cdt = dtype or y.dtype
    qkv = jnp.einsum(
        "ntc,co->nto",
        y.astype(cdt),
        self.qkv[...].astype(cdt),
        preferred_element_type=jnp.promote_types(cdt, jnp.float32),
    )
    q, k, v = jnp.split(qkv, 3, axis=-1)
    t = t + self.attn_out(attention(q, k, v, self.heads, explain=explain), explain)
    y = self.mlp_in(self.mlp_norm(t, explain), explain)
    return t + self.mlp_out(y, explain)


class NNXBcosViT(ViTForward, ExplainableMixin, nnx.Module):
  """The NNX :class:`BcosViT`: same fields, parameter names and methods (``explain_nnx`` works).

  ``NNXBcosViT.from_linen(model, variables)`` copies a Linen model's parameters (e.g. converted
  released weights).
  """

  def __init__(
      self,
      image_size: int,
      patch_size: int,
      dim: int,
      depth: int,
      heads: int,
      mlp_dim: int,
      conv_stem: Sequence[int] = (),
      num_classes: int = 1000,
      image_channels: int = 3,
      logit_bias: float | None = None,
      logit_temperature: float | None = None,
      b: float = 2.0,
      max_out: int = 1,
      dtype: Any = None,
      *,
      rngs: nnx.Rngs,
  ):
    if dim % heads:
      raise ValueError(f"dim {dim} is not divisible by heads {heads}.")
    self.image_size, self.patch_size, self.dim, self.depth = image_size, patch_size, dim, depth
    self.heads, self.mlp_dim, self.conv_stem = heads, mlp_dim, tuple(int(w) for w in conv_stem)
    self.num_classes, self.image_channels = num_classes, image_channels
    self.logit_bias = default_logit_bias(num_classes) if logit_bias is None else logit_bias
    self.logit_temperature, self.b, self.max_out = logit_temperature, b, max_out
    self.dtype = dtype
    dense = dict(b=b, max_out=max_out, dtype=dtype, rngs=rngs)
    convs, norms, channels = [], [], 2 * image_channels
    for width, stride in zip(self.conv_stem, self.stem_strides):
      convs.append(NNXBcosConv(channels, width, 3, stride, 1, **dense))
      norms.append(NNXCenteredLayerNorm(width, axes=(1, 2, 3)))
      channels = width
    self.stem_convs, self.stem_norms = nnx.List(convs), nnx.List(norms)
    self.patch_embed = NNXBcosDense(patch_size * patch_size * channels, dim, **dense)
    self.blocks = nnx.List(
        [NNXEncoderBlock(dim, heads, mlp_dim, b, max_out, dtype, rngs=rngs) for _ in range(depth)]
    )
    self.head_norm = NNXCenteredLayerNorm(dim)
    self.head = NNXBcosDense(dim, num_classes, **dense)
    setattr(self, f"layer_{depth + 1}", NNXFeatureMap())

  @classmethod
  def from_linen(cls, model: BcosViT, variables: Any) -> NNXBcosViT:
    """The NNX twin of a Linen :class:`BcosViT` holding ``variables["params"]``."""
    fields = {
        f: getattr(model, f)
        for f in (
            "image_size",
            "patch_size",
            "dim",
            "depth",
            "heads",
            "mlp_dim",
            "conv_stem",
            "num_classes",
            "image_channels",
            "logit_bias",
            "logit_temperature",
            "b",
            "max_out",
            "dtype",
        )
    }
    twin = cls(**fields, rngs=nnx.Rngs(0))
    params = variables["params"] if "params" in variables else variables

    def put(param: nnx.Param, value: Any) -> None:
      current = param[...]
      if tuple(current.shape) != tuple(np.shape(value)):
        raise ValueError(
            f"a Linen parameter of shape {np.shape(value)} does not fit the NNX "
            f"parameter {tuple(current.shape)}."
        )
      param[...] = jnp.asarray(value, current.dtype)

    for j, (conv, norm) in enumerate(zip(twin.stem_convs, twin.stem_norms)):
      put(conv.kernel, params[f"stem_convs_{j}"]["kernel"])
      put(norm.scale, params[f"stem_norms_{j}"]["scale"])
    put(twin.patch_embed.kernel, params["patch_embed"]["kernel"])
    for i, block in enumerate(twin.blocks):
      linen = params[f"blocks_{i}"]
      put(block.qkv, linen["qkv"])
      for name in ("attn_norm", "mlp_norm"):
        put(getattr(block, name).scale, linen[name]["scale"])
      for name in ("attn_out", "mlp_in", "mlp_out"):
        put(getattr(block, name).kernel, linen[name]["kernel"])
    put(twin.head_norm.scale, params["head_norm"]["scale"])
    put(twin.head.kernel, params["head"]["kernel"])
    return twin


# --------------------------------------------------------------------------- named sizes


@dataclasses.dataclass(frozen=True)
class ViTSize:
  """A released size: the :class:`BcosViT` fields and the released parameter count (README)."""

  image_size: int
  patch_size: int
  dim: int
  depth: int
  heads: int
  mlp_dim: int
  conv_stem: tuple[int, ...]
  released_name: str | None
  released_params: str | None


VIT_SIZES: dict[str, ViTSize] = {
    "bcos-vit-ti": ViTSize(224, 16, 192, 12, 3, 768, (), "bcos_simple_vit_ti_patch16_224", "5.80M"),
    "bcos-vit-s": ViTSize(224, 16, 384, 12, 6, 1536, (), "bcos_simple_vit_s_patch16_224", "22.28M"),
    "bcos-vit-b": ViTSize(
        224, 16, 768, 12, 12, 3072, (), "bcos_simple_vit_b_patch16_224", "86.90M"
    ),
    "bcos-vit-l": ViTSize(
        224, 16, 1024, 14, 16, 4096, (), "bcos_simple_vit_l_patch16_224", "178.79M"
    ),
    "bcos-vitc-ti": ViTSize(
        224, 1, 192, 11, 3, 768, (24, 48, 96, 192), "bcos_vitc_ti_patch1_14", "5.32M"
    ),
    "bcos-vitc-s": ViTSize(
        224, 1, 384, 11, 6, 1536, (48, 96, 192, 384), "bcos_vitc_s_patch1_14", "20.88M"
    ),
    "bcos-vitc-b": ViTSize(
        224, 1, 768, 11, 12, 3072, (64, 128, 128, 256, 256, 512), "bcos_vitc_b_patch1_14", "81.37M"
    ),
    "bcos-vitc-l": ViTSize(
        224,
        1,
        1024,
        13,
        16,
        4096,
        (64, 128, 128, 256, 256, 512),
        "bcos_vitc_l_patch1_14",
        "167.44M",
    ),
    # CPU-sized, not released: 32 px, 4x4 patches (8x8 tokens), for tests and the embedded data.
    "bcos-vit-tiny": ViTSize(32, 4, 32, 2, 2, 64, (), None, None),
    "bcos-vitc-tiny": ViTSize(32, 1, 32, 2, 2, 64, (8, 16, 32), None, None),
}


def bcos_vit(
    name: str,
    *,
    num_classes: int | None = None,
    image_channels: int | None = None,
    temperature: float | None = None,
    dtype: Any = None,
    **overrides: Any,
) -> BcosViT:
  """The :class:`BcosViT` of a named size (``get_model`` factory).

  ``temperature`` is the logit layer's ``T``; ``overrides`` replace any :class:`BcosViT`
  field (e.g. ``image_size``, ``depth``); others (e.g. the CoDA ``form``) raise ``TypeError``.
  """
  if name not in VIT_SIZES:
    raise ValueError(f"Unknown B-cos ViT {name!r}; known: {', '.join(VIT_SIZES)}.")
  size = VIT_SIZES[name]
  fields = dict(
      image_size=size.image_size,
      patch_size=size.patch_size,
      dim=size.dim,
      depth=size.depth,
      heads=size.heads,
      mlp_dim=size.mlp_dim,
      conv_stem=size.conv_stem,
      dtype=dtype,
  )
  if num_classes is not None:
    fields["num_classes"] = num_classes
  elif size.released_name is None:
    fields["num_classes"] = 10
  if image_channels is not None:
    fields["image_channels"] = image_channels
  if temperature is not None:
    fields["logit_temperature"] = float(temperature)
  unknown = set(overrides) - {f.name for f in dataclasses.fields(BcosViT)}
  if unknown:
    raise TypeError(f"{name}: unknown settings {sorted(unknown)}.")
  fields.update(overrides)
  if "conv_stem" in fields:
    fields["conv_stem"] = tuple(int(w) for w in fields["conv_stem"])
  return BcosViT(**fields)


def _register() -> None:
  for name in VIT_SIZES:
    register_model(name, lambda _name=name, **kw: bcos_vit(_name, **kw))


_register()
