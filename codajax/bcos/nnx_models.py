"""B-cos ResNets written natively in Flax NNX, explainable with :func:`codajax.explain.explain_nnx`.

:class:`NNXBcosResNet` computes the same function as the Linen
:class:`codajax.bcos.resnet.BcosResNet` with the same parameter tree (``segments[l]``
is Linen's ``layer_l``, ``blocks[i]`` its ``block_i``); :func:`load_linen_params` copies
Linen (or converted, :func:`codajax.convert.from_bcos_state_dict`) parameters into it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
from flax import nnx

from codajax.bcos.common import ClassMapSegments, default_logit_bias
from codajax.bcos.nnx_layers import NNXBcosConv, make_nnx_norm
from codajax.bcos.norms import check_norm_kind
from codajax.bcos.resnet import EXPANSION, avg_pool_3x3_s2
from codajax.explain.base import ExplainableMixin

Array = jax.Array


class NNXStem(nnx.Module):
  """``conv1`` and ``bn1`` (then the 3×3/2 average pool for the ImageNet stem)."""

  def __init__(
      self,
      in_channels: int,
      width: int,
      small_inputs: bool,
      norm: str,
      b: float,
      max_out: int,
      dtype: Any,
      rngs: nnx.Rngs,
  ):
    k, s, p = (3, 1, 1) if small_inputs else (7, 2, 3)
    self.small_inputs = small_inputs
    self.conv1 = NNXBcosConv(
        in_channels, width, k, s, p, b=b, max_out=max_out, dtype=dtype, rngs=rngs
    )
    self.bn1 = make_nnx_norm(norm, width)

  def __call__(self, x: Array, explain: bool = False) -> Array:
    x = self.bn1(self.conv1(x, explain), explain)
    return x if self.small_inputs else avg_pool_3x3_s2(x)


class NNXBlock(nnx.Module):
  """A basic or bottleneck B-cos residual block (no ReLU)."""

  def __init__(
      self,
      in_channels: int,
      width: int,
      stride: int,
      kind: str,
      norm: str,
      b: float,
      max_out: int,
      dtype: Any,
      rngs: nnx.Rngs,
  ):
    out = width * EXPANSION[kind]
    self.kind = kind

    def conv(cin, cout, k, s):
      return NNXBcosConv(
          cin, cout, k, s, (k - 1) // 2, b=b, max_out=max_out, dtype=dtype, rngs=rngs
      )

    if kind == "basic":
      self.conv1, self.bn1 = conv(in_channels, width, 3, stride), make_nnx_norm(norm, width)
      self.conv2, self.bn2 = conv(width, width, 3, 1), make_nnx_norm(norm, width)
    else:
      self.conv1, self.bn1 = conv(in_channels, width, 1, 1), make_nnx_norm(norm, width)
      self.conv2, self.bn2 = conv(width, width, 3, stride), make_nnx_norm(norm, width)
      self.conv3, self.bn3 = conv(width, out, 1, 1), make_nnx_norm(norm, out)
    self.has_downsample = stride != 1 or in_channels != out
    if self.has_downsample:
      self.downsample_conv = conv(in_channels, out, 1, stride)
      self.downsample_bn = make_nnx_norm(norm, out)

  def __call__(self, x: Array, explain: bool = False) -> Array:
    y = self.bn1(self.conv1(x, explain), explain)
    y = self.bn2(self.conv2(y, explain), explain)
    if self.kind == "bottleneck":
      y = self.bn3(self.conv3(y, explain), explain)
    if self.has_downsample:
      x = self.downsample_bn(self.downsample_conv(x, explain), explain)
    return y + x


class NNXStage(nnx.Module):
  """``blocks[0 .. n−1]``; the first has the stage's stride."""

  def __init__(self, blocks: Sequence[NNXBlock]):
    self.blocks = nnx.List(list(blocks))

  def __call__(self, x: Array, explain: bool = False) -> Array:
    for block in self.blocks:
      x = block(x, explain)
    return x


class NNXClassHead(nnx.Module):
  """``fc``: the 1×1 B-cos classifier, the class map ``(N, h, w, K)``."""

  def __init__(
      self, in_channels: int, num_classes: int, b: float, max_out: int, dtype: Any, rngs: nnx.Rngs
  ):
    self.fc = NNXBcosConv(
        in_channels, num_classes, 1, 1, 0, b=b, max_out=max_out, dtype=dtype, rngs=rngs
    )

  def __call__(self, x: Array, explain: bool = False) -> Array:
    return self.fc(x, explain)


class NNXBcosResNet(ClassMapSegments, ExplainableMixin, nnx.Module):
  """The NNX twin of :class:`codajax.bcos.resnet.BcosResNet` (same arguments, same protocol).

  Follows :class:`codajax.explain.ExplainableModel` (the methods of
  :class:`codajax.explain.base.ExplainableMixin`), called directly
  (``model.layer_input(images, l)``, ``model.forward_from(h, l, explain=True)``).
  ``logit_bias=None``: the authors' ``−ln(K − 1)``.
  """

  def __init__(
      self,
      stage_sizes: Sequence[int],
      block: str,
      num_classes: int,
      *,
      width: int = 64,
      small_inputs: bool = False,
      norm: str = "bn",
      b: float = 2.0,
      max_out: int = 1,
      temperature: float | None = None,
      logit_bias: float | None = None,
      dtype: Any = None,
      image_channels: int = 3,
      rngs: nnx.Rngs,
  ):
    if block not in EXPANSION:
      raise ValueError(f"Unknown block {block!r}; known: {', '.join(EXPANSION)}.")
    check_norm_kind(norm)
    self.num_classes, self.image_channels, self.temperature = (
        num_classes,
        image_channels,
        (temperature),
    )
    self.logit_bias = default_logit_bias(num_classes) if logit_bias is None else float(logit_bias)
    args = {"norm": norm, "b": b, "max_out": max_out, "dtype": dtype, "rngs": rngs}
    segments: list[nnx.Module] = [NNXStem(2 * image_channels, width, small_inputs, **args)]
    channels = width
    for s, count in enumerate(stage_sizes):
      blocks = []
      for i in range(count):
        blocks.append(
            NNXBlock(channels, width * 2**s, 2 if (s > 0 and i == 0) else 1, block, **args)
        )
        channels = width * 2**s * EXPANSION[block]
      segments.append(NNXStage(blocks))
    segments.append(NNXClassHead(channels, num_classes, b, max_out, dtype, rngs))
    self.segments = nnx.List(segments)


def load_linen_params(model: NNXBcosResNet, params: Mapping[str, Any]) -> NNXBcosResNet:
  """Copies a Linen :class:`~codajax.bcos.resnet.BcosResNet` parameter tree into ``model``.

  ``layer_l`` -> ``segments[l]``, ``block_i`` -> ``blocks[i]``, other names as they are.
  """
  params = params.get("params", params)

  def visit(node: Any, tree: Mapping[str, Any], path: str) -> None:
    for key, value in tree.items():
      if key.startswith("layer_"):
        child = node.segments[int(key.split("_")[1])]
      elif key.startswith("block_"):
        child = node.blocks[int(key.split("_")[1])]
      else:
        child = getattr(node, key)
      if isinstance(value, Mapping):
        visit(child, value, f"{path}/{key}")
      else:
        if child.shape != value.shape:
          raise ValueError(f"{path}/{key}: shape {value.shape}, the NNX model has {child.shape}.")
        child[...] = value

  visit(model, params, "")
  return model
