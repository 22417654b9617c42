"""B-cosification (Arya, Rao, Böhle & Schiele, NeurIPS 2024) of a user's Flax Linen network.

:func:`bcosify` turns a conventional network written with ``nn.Conv``,
``nn.Dense``, ``nn.BatchNorm`` / ``nn.GroupNorm`` / ``nn.LayerNorm``, ReLU,
max- or average pooling, global pooling and residual sums into a B-cos network
that :func:`codajax.explain.explain`, every baseline and ``eval.py`` explain
exactly. The user's module is not rewritten: :class:`BcosifiedNet` runs it under
``flax.linen.intercept_methods`` and replaces what its layers compute:

* ``nn.Conv`` / ``nn.Dense``: the B-cos transform of the layer's own linear map
  without its bias, ``|cos(x, w)|^(B − 1) · (w · x)``; the weight keeps its norm
  (at ``B = 1`` the layer is the original one minus its bias);
* the first convolution takes the encoded image ``[x, 1 − x]`` with the kernel
  ``[W, −W] / (2σ)``;
* norms: uncentred and bias-free (``nn.BatchNorm`` in evaluation mode becomes the
  per-channel scale ``γ / √(var + eps)``; group and layer norms divide by the
  standard deviation, detached in explanation mode);
* the logits: ``out / temperature + logit_bias``, ``logit_bias = −ln(K − 1)``.

Functions the network calls between its layers (``nn.relu``, ``nn.max_pool``,
``jnp.mean``, ``+``) run as written: ReLU, leaky ReLU and max-pooling select or
scale their inputs, so the converted network stays dynamic linear. Smooth
activations (GELU, SiLU, sigmoid, tanh, ELU, softplus) and clipping (ReLU6) are
refused, as is any Flax layer not listed above and any parameter a custom layer
creates. Each step and its reason: ``docs/bcos.md``.

Explainable layers: ``0`` the encoded image, then the input of every submodule
the network calls directly (a "top-level call": for a ResNet written as stem,
stages and head, the stage inputs and the classifier's input) through which the
whole computation passes, checked at conversion.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax import lax

from codajax.bcos import norms as norm_ops
from codajax.bcos.common import default_logit_bias
from codajax.bcos.ops import DENSE_NORM_EPS, PATCH_NORM_EPS, dynamic_factor
from codajax.explain import protocol
from codajax.explain.base import ExplainableModule
from codajax.models.conventional import CONVENTIONAL_RESNETS
from codajax.registry import get_model, register_model

Array = jax.Array


class BcosifyError(ValueError):
  """A network (or a part of it) that :func:`bcosify` cannot convert."""


# ---------------------------------------------------------------------------------- layer kinds

#: Flax layers that run unchanged (linear in their input: a dropout mask and scale).
PASS_THROUGH = (nn.Dropout,)
#: The jaxpr primitives of activations that are not dynamic linear, with the layers using them.
REFUSED_PRIMITIVES = {
    "tanh": "tanh (nn.tanh, nn.gelu(approximate=True))",
    "logistic": "sigmoid (nn.sigmoid, nn.swish / nn.silu, nn.glu)",
    "erf": "erf (nn.gelu(approximate=False))",
    "exp": "exp (nn.elu, nn.celu, nn.selu, nn.softplus, nn.softmax)",
    "expm1": "expm1 (nn.elu, nn.celu, nn.selu)",
    "log1p": "log1p (nn.softplus, nn.log_sigmoid)",
    "min": "min (clipping: nn.relu6, nn.hard_tanh, jnp.minimum)",
    "clamp": "clamp (clipping: jnp.clip, nn.hard_sigmoid)",
}


def _kind(module: nn.Module) -> str:
  """``"conv"``, ``"dense"``, ``"batch_norm"``, ``"group_norm"``, ``"layer_norm"``, ``"pass"``
  (runs unchanged) or ``"container"`` (a user's module: its code runs, its layers convert)."""
  if isinstance(module, nn.Conv):
    return "conv"
  if isinstance(module, nn.Dense):
    return "dense"
  if isinstance(module, nn.BatchNorm):
    return "batch_norm"
  if isinstance(module, nn.GroupNorm):
    return "group_norm"
  if isinstance(module, nn.LayerNorm):
    return "layer_norm"
  if isinstance(module, PASS_THROUGH):
    return "pass"
  if type(module).__module__.startswith("flax."):
    raise BcosifyError(
        f"bcosify cannot convert nn.{type(module).__name__} (at {_where(module)}): it converts "
        "nn.Conv, nn.Dense, nn.BatchNorm, nn.GroupNorm and nn.LayerNorm, with ReLU, pooling and "
        "residual sums between them."
    )
  return "container"


def _where(module: nn.Module) -> str:
  return "/".join(module.scope.path) or "the root module"


def _check_norm_axes(module: nn.Module, kind: str) -> None:
  """Refuses norms over axes other than the defaults (channels last)."""
  unusual = {
      "batch_norm": getattr(module, "axis", -1) != -1,
      "group_norm": getattr(module, "reduction_axes", None) is not None,
      "layer_norm": getattr(module, "reduction_axes", -1) not in (-1, (-1,))
      or getattr(module, "feature_axes", -1) not in (-1, (-1,)),
  }
  if unusual.get(kind, False):
    raise BcosifyError(
        f"bcosify converts {type(module).__name__} over the last (channel) axis only "
        f"(at {_where(module)})."
    )


# --------------------------------------------------------------------------- the B-cos layers


def _linear_twin(module: nn.Module, **updates: Any) -> nn.Module:
  """An unbound, bias-free copy of a bound ``nn.Conv`` / ``nn.Dense`` (same padding, strides,
  dilation, groups, dtype), applied with explicit kernels."""
  return module.clone(parent=None, use_bias=False, **updates)


def _bcos_factor(lin: Array, norm: Array, b: float, explain: bool) -> Array:
  """``|cos|^(B − 1)`` (``norm = ‖w‖·‖x‖``), detached in explanation mode; 1 for ``B = 1``."""
  if b == 1:
    return jnp.ones((), lin.dtype)
  factor = dynamic_factor(lax.stop_gradient(lin) if explain else lin, norm, b)
  return lax.stop_gradient(factor) if explain else factor


def _kernel(module: nn.Module, twin: nn.Module, x: Array) -> Array:
  """The layer's ``kernel`` parameter, created with the layer's initialiser for input ``x``."""
  shape = jax.eval_shape(lambda v: twin.init(jax.random.key(0), v), x)["params"]["kernel"].shape
  return module.param("kernel", module.kernel_init, shape, module.param_dtype)


def bcos_conv_layer(module: nn.Conv, x: Array, b: float, explain: bool) -> Array:
  """B-cos of a bound ``nn.Conv``: ``|cos(x_patch, w_o)|^(B − 1) · (w_o · x_patch)``, no bias.

  ``‖x_patch‖ = √(Σ_patch x² + 1e-6)`` over the ``k×k×C/groups`` patch of each output channel's
  group (zero padding counted), computed by the same convolution with a kernel of ones.
  """
  twin = _linear_twin(module)
  kernel = _kernel(module, twin, x)
  lin = twin.apply({"params": {"kernel": kernel}}, x)
  if b == 1:
    return lin
  groups = module.feature_group_count
  acc = jnp.promote_types(x.dtype, jnp.float32)
  ones = jnp.ones((*kernel.shape[:-1], groups), acc)
  sums = _linear_twin(module, features=groups, dtype=acc, mask=None).apply(
      {"params": {"kernel": ones}}, jnp.square(x.astype(acc))
  )
  patch = jnp.sqrt(sums + PATCH_NORM_EPS)
  patch = jnp.repeat(patch, lin.shape[-1] // groups, axis=-1) if groups > 1 else patch
  w_norm = jnp.sqrt(jnp.sum(jnp.square(kernel.astype(acc)), axis=tuple(range(kernel.ndim - 1))))
  return _bcos_factor(lin, patch * w_norm, b, explain) * lin


def bcos_dense_layer(module: nn.Dense, x: Array, b: float, explain: bool) -> Array:
  """B-cos of a bound ``nn.Dense``: ``|cos(x, w_o)|^(B − 1) · (w_o · x)``, no bias
  (``‖x‖ = √(Σ x²) + 1e-12`` over the last axis)."""
  twin = _linear_twin(module)
  kernel = _kernel(module, twin, x)
  lin = twin.apply({"params": {"kernel": kernel}}, x)
  if b == 1:
    return lin
  acc = jnp.promote_types(x.dtype, jnp.float32)
  x_norm = jnp.sqrt(jnp.sum(jnp.square(x.astype(acc)), axis=-1, keepdims=True)) + DENSE_NORM_EPS
  w_norm = jnp.sqrt(jnp.sum(jnp.square(kernel.astype(acc)), axis=0))
  return _bcos_factor(lin, x_norm * w_norm, b, explain) * lin


def uncentred_norm_layer(module: nn.Module, kind: str, x: Array, explain: bool) -> Array:
  """The uncentred, bias-free version of a bound BatchNorm / GroupNorm / LayerNorm."""
  _check_norm_axes(module, kind)
  channels = x.shape[-1]
  ones = nn.initializers.ones
  if kind == "batch_norm":  # frozen: the scale γ / √(running_var + eps), trainable
    scale = module.param("scale", ones, (channels,), module.param_dtype)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32)) * scale
  scale = module.param("scale", ones, (channels,), module.param_dtype) if module.use_scale else None
  if kind == "group_norm":
    groups = module.num_groups or channels // module.group_size
    return norm_ops.group_norm_uncentered(x, groups, scale, eps=module.epsilon, explain=explain)
  return norm_ops.position_norm_uncentered(x, scale, eps=module.epsilon, explain=explain)


# ------------------------------------------------------------------------------ the network


def _bcos_call(module: nn.Module, args, kwargs, next_fun, b: float, explain: bool) -> Array:
  """What a call of ``module`` computes in the B-cosified network."""
  kind = _kind(module)
  if kind == "conv":
    return bcos_conv_layer(module, args[0], b, explain)
  if kind == "dense":
    return bcos_dense_layer(module, args[0], b, explain)
  if kind in ("batch_norm", "group_norm", "layer_norm"):
    return uncentred_norm_layer(module, kind, args[0], explain)
  return next_fun(*args, **kwargs)


class _EveryCall:
  """``capture`` value of :meth:`BcosifiedNet._run` that captures every top-level call."""

  def __contains__(self, call: int) -> bool:
    return True


EVERY_CALL = _EveryCall()


class BcosifiedNet(ExplainableModule):
  """A conventional Linen network run as a B-cos network; implements
  :class:`codajax.explain.ExplainableModel`.

  Built by :func:`bcosify` (or ``get_model("bcosified-<name>")``). Its variables are
  ``{"params": {"network": ...}}``: the converted layers' ``kernel`` and ``scale`` at the
  user's module paths.

  Attributes:
    network: the user's module, unchanged (it takes the encoded image ``[x, 1 − x]``).
    num_classes: ``K``.
    image_size: ``(H, W)`` of the images (runs below an explained layer use zeros of it).
    image_channels: ``C`` of the images.
    b: the B-cos exponent of every convolution and dense layer.
    cuts: for explainable layers ``1 ..``, the index of the top-level call whose input each is.
    grad_cam_module: the path (in ``network``) of the last top-level call with a feature map
      ``(N, h, w, D)`` output, where ``eval.py`` takes Grad-CAM ("" : none).
    call_kwargs: keyword arguments of every ``network`` call, as ``(name, value)`` pairs.
    temperature: logits are divided by it (``None``: not at all).
    logit_bias: added to every logit.
  """

  network: nn.Module
  num_classes: int
  image_size: tuple[int, int]
  image_channels: int = 3
  b: float = 2.0
  cuts: tuple[int, ...] = ()
  grad_cam_module: str = ""
  call_kwargs: tuple[tuple[str, Any], ...] = ()
  temperature: float | None = None
  logit_bias: float = 0.0

  @staticmethod
  def params_from(model: BcosifiedNet, variables: Mapping) -> dict:
    """The variables of ``model`` from those of its conventional ``network`` (used by
    ``train.py``'s ``init_from``): :func:`convert_variables`."""
    return convert_variables(model, variables)

  @property
  def num_explainable_layers(self) -> int:
    """``1 + len(cuts)``: the encoded image and the input of every cut."""
    return 1 + len(self.cuts)

  def _run(self, h0: Array, explain: bool, substitute=None, capture=(), record=None):
    """The network on ``h0`` with B-cos layers: ``(out (N, K), {call: input})``.

    ``substitute = (call, h)`` replaces the input of top-level call ``call`` with ``h``;
    ``capture`` names the top-level calls whose inputs are returned; ``record`` (a list, outside
    ``jit``) receives their ``(path, output rank)``.
    """
    prefix = (*self.scope.path, "network")
    counter, captured, outputs = [0], {}, {}

    def interceptor(next_fun, args, kwargs, context):
      module, path = context.module, context.module.scope.path
      if context.method_name != "__call__" or path[: len(prefix)] != prefix or path == prefix:
        return next_fun(*args, **kwargs)
      if len(path) == len(prefix) + 1:  # a top-level call
        index, counter[0] = counter[0], counter[0] + 1
        if substitute is not None and index == substitute[0]:
          args = (substitute[1], *args[1:])
        if index in capture:
          captured[index] = args[0]
          outputs[index] = ("/".join(path[len(prefix) :]), None)
      out = _bcos_call(module, args, kwargs, next_fun, self.b, explain)
      if len(path) == len(prefix) + 1 and index in capture:
        outputs[index] = (outputs[index][0], out.ndim)
      return out

    with nn.intercept_methods(interceptor):
      out = self.network(h0, **dict(self.call_kwargs))
    if out.ndim != 2 or out.shape[-1] != self.num_classes:
      raise BcosifyError(
          f"The network must return logits (N, {self.num_classes}); it returned {out.shape}."
      )
    if record is not None:
      record.extend(outputs[i] for i in sorted(outputs))
    return out.astype(jnp.float32), captured

  def _readout(self, out: Array, add_bias: bool) -> Array:
    logits = out if self.temperature is None else out / self.temperature
    return logits + self.logit_bias if add_bias else logits

  def forward_from(
      self, h: Array, layer: int = 0, explain: bool = False, add_bias: bool = True
  ) -> Array:
    """Logits ``(N, K)`` from the input ``h`` of explainable layer ``layer`` (see
    :meth:`codajax.explain.base.ExplainableMixin.forward_from`)."""
    protocol.check_layer(layer, self.num_explainable_layers)
    if layer == 0:
      out, _ = self._run(h, explain)
    else:
      zeros = jnp.zeros((h.shape[0], *self.image_size, 2 * self.image_channels), h.dtype)
      out, _ = self._run(zeros, explain, substitute=(self.cuts[layer - 1], h))
    return self._readout(out, add_bias)

  def layer_input(self, images: Array, layer: int = 0) -> Array:
    """The input of explainable layer ``layer`` (``0``: ``encode(images)``)."""
    protocol.check_layer(layer, self.num_explainable_layers)
    h0 = self.encode(images)
    if layer == 0:
      return h0
    return self._run(h0, False, capture=(self.cuts[layer - 1],))[1][self.cuts[layer - 1]]

  def explanation_inputs(self, images: Array) -> tuple[Array, ...]:
    """The input of every explainable layer, ``[0]`` being ``encode(images)``."""
    h0 = self.encode(images)
    captured = self._run(h0, False, capture=self.cuts)[1]
    return (h0, *(captured[c] for c in self.cuts))


# ------------------------------------------------------------------------------ conversion


def _tree_at(tree: Mapping, path: Sequence[str]) -> Any:
  for name in path:
    if not isinstance(tree, Mapping) or name not in tree:
      return None
    tree = tree[name]
  return tree


def _primitives(jaxpr) -> set[str]:
  """Every primitive name in a (closed) jaxpr, nested ones included."""
  names = set()
  for eqn in jaxpr.eqns:
    names.add(eqn.primitive.name)
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else (value,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          names |= _primitives(inner)
  return names


def _check_activations(module: nn.Module, jaxpr) -> None:
  """Refuses a network whose jaxpr has a primitive of a smooth activation or of clipping."""
  found = sorted(_primitives(jaxpr) & set(REFUSED_PRIMITIVES))
  if found:
    raise BcosifyError(
        f"bcosify cannot convert the activation {REFUSED_PRIMITIVES[found[0]]} in "
        f"{type(module).__name__}: it is not dynamic linear, so no B-cos network computes it "
        "exactly. Piecewise-linear activations convert (nn.relu, nn.leaky_relu)."
    )


def _trace_layers(module: nn.Module, variables, images: Array, call_kwargs: dict):
  """``({path: (kind, bound module)}, path of the first layer, jaxpr)`` of one trace of the
  original network."""
  layers: dict[tuple[str, ...], tuple[str, nn.Module]] = {}
  first: list[tuple[tuple[str, ...], bool]] = []

  def forward(v, x):
    def interceptor(next_fun, args, kwargs, context):
      if context.method_name == "__call__" and context.module.scope.path:
        kind = _kind(context.module)
        if kind not in ("container", "pass"):
          path = tuple(context.module.scope.path)
          layers.setdefault(path, (kind, context.module))
          if not first:
            first.append((path, args[0] is x))
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
      return module.apply(v, x, **call_kwargs)

  jaxpr = jax.make_jaxpr(forward)(variables, images).jaxpr
  _check_activations(module, jaxpr)
  if not first:
    raise BcosifyError(f"{type(module).__name__} calls no nn.Conv / nn.Dense: nothing to convert.")
  ((path, takes_images),) = first
  kind = layers[path][0]
  if kind != "conv" or not takes_images:
    raise BcosifyError(
        f"The first layer of {type(module).__name__} ({'/'.join(path)}, {kind}) must be an "
        "nn.Conv that takes the images as they come in: bcosify feeds it the encoded image "
        "[x, 1 - x]. Move any input normalisation into bcosify(input_std=...)."
    )
  return layers, path


def _check_coverage(variables: Mapping, layers: Mapping) -> None:
  """Refuses variables that belong to no converted layer (a custom layer's parameter)."""
  for collection, tree in variables.items():
    for key_path, _ in jax.tree_util.tree_leaves_with_path(tree):
      path = tuple(str(getattr(k, "key", k)) for k in key_path)
      if not any(path[: len(layer)] == layer for layer in layers):
        raise BcosifyError(
            f"bcosify cannot convert {collection}/{'/'.join(path)}: it belongs to no nn.Conv, "
            "nn.Dense or norm layer (a custom layer's parameter)."
        )


def _converted_layer(kind, module, params, stats, first: bool, input_std) -> dict[str, Any]:
  """The converted variables of one layer (see the module docstring)."""
  if kind in ("conv", "dense"):
    kernel = np.asarray(params["kernel"], np.float32)
    if first:  # [W, −W] / (2σ): W · (x − 1/2) / σ on the encoded image
      std = np.broadcast_to(np.asarray(input_std, np.float32), kernel.shape[-2:-1])
      scaled = kernel / (2.0 * std[:, None])
      kernel = np.concatenate([scaled, -scaled], axis=-2)
    return {"kernel": kernel}
  if kind == "batch_norm":
    if stats is None or "var" not in stats:
      raise BcosifyError(
          f"The BatchNorm at {'/'.join(module.scope.path)} has no batch_stats/var: pass the "
          "variables with their batch_stats collection."
      )
    gamma = params.get("scale") if params else None
    return {"scale": norm_ops.fold_batch_norm(gamma, stats["var"], module.epsilon)}
  if module.use_scale:
    return {"scale": np.asarray(params["scale"], np.float32)}
  return {}


def convert_variables(model: BcosifiedNet, variables: Mapping, input_std: Any = 1.0) -> dict:
  """The variables of ``model`` from those of its original ``model.network``.

  Args:
    model: the B-cosified network.
    variables: ``{"params": ..., ["batch_stats": ...]}`` of ``model.network``.
    input_std: the per-channel (or one) standard deviation the original network's inputs were
      divided by (the mean is dropped with the biases, see ``docs/bcos.md``).

  Returns:
    ``{"params": {"network": ...}}`` for ``model.apply``.
  """
  network = model.network
  images = _probe_images(model, seed=0)
  call_kwargs = dict(model.call_kwargs)
  layers, first = _trace_layers(network, variables, images, call_kwargs)
  _check_coverage(variables, layers)
  converted = {}
  for path, (kind, module) in layers.items():
    params = _tree_at(variables.get("params", {}), path)
    stats = _tree_at(variables.get("batch_stats", {}), path)
    for name, value in _converted_layer(
        kind, module, params, stats, path == first, input_std
    ).items():
      converted[(*path, name)] = value
  return {"params": {"network": traverse_util.unflatten_dict(converted)}}


def _matches(a: Array, b: Array, rtol: float = 1e-4) -> bool:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return bool(np.max(np.abs(a - b)) <= rtol * (np.max(np.abs(b)) + 1e-6))


def explainable_cuts(model: BcosifiedNet, variables: Mapping) -> tuple[tuple[int, ...], str]:
  """``(cuts, grad_cam_module)``: the top-level calls of ``model.network`` whose inputs carry the
  whole computation, and the last top-level call with a feature-map output.

  A call qualifies when the logits computed from its input alone (everything before it run on
  zeros) equal the logits of the images, on two random images, and its input is not the encoded
  image itself.
  """
  images = _probe_images(model, seed=1)
  h0 = model.apply(variables, images, method=model.encode)
  run = lambda h, **kw: model.apply(variables, h, False, method=BcosifiedNet._run, **kw)
  calls = []
  _, inputs = jax.eval_shape(lambda h: run(h, capture=EVERY_CALL, record=calls), h0)
  maps = [path for path, rank in calls if rank == 4]

  @jax.jit
  def from_each_call(h0):
    """The logits of the images, and those from each call's input alone (zeros before it)."""
    logits, inputs = run(h0, capture=EVERY_CALL)
    alone = {c: run(jnp.zeros_like(h0), substitute=(c, h))[0] for c, h in inputs.items()}
    is_h0 = {c: h.shape == h0.shape and jnp.array_equal(h, h0) for c, h in inputs.items()}
    return logits, alone, is_h0

  logits, alone, is_h0 = from_each_call(h0)
  # A call qualifies unless its input is the encoded image itself (that is layer 0).
  cuts = [c for c in sorted(inputs) if not bool(is_h0[c]) and _matches(alone[c], logits)]
  return tuple(cuts), (maps[-1] if maps else "")


def _probe_images(model: BcosifiedNet, seed: int) -> Array:
  """Two uniform random images of the model's shape."""
  shape = (2, *model.image_size, model.image_channels)
  return jnp.asarray(np.random.default_rng(seed).uniform(size=shape), jnp.float32)


def check_completeness(model: BcosifiedNet, variables: Mapping, rtol: float = 1e-3) -> None:
  """Refuses a converted network that is not dynamic linear at layer 0 (two random images)."""
  h0 = model.apply(variables, _probe_images(model, seed=2), method=model.encode)

  def selected(h):
    logits = model.apply(variables, h, 0, True, False, method=model.forward_from)
    return jnp.sum(logits[:, 0])

  value, grad = jax.jit(jax.value_and_grad(selected))(h0)
  total = jnp.sum(grad * h0)
  if not _matches(total, value, rtol):
    raise BcosifyError(
        f"The converted {type(model.network).__name__} is not dynamic linear (contributions sum "
        f"to {float(total):.6g}, the logits to {float(value):.6g}): an operation between its "
        "layers adds a constant or is not piecewise linear (a custom parameter, an input "
        "normalisation inside the network, a bias added by hand)."
    )


def bcosify(
    module: nn.Module,
    variables: Mapping,
    *,
    image_shape: Sequence[int],
    b: float = 2.0,
    input_std: Any = 1.0,
    call_kwargs: Mapping[str, Any] | None = None,
    temperature: float | None = None,
    logit_bias: float | None = None,
) -> tuple[BcosifiedNet, dict]:
  """Converts a conventional Linen classifier and its variables into a B-cos network.

  Args:
    module: the user's network: images ``(N, H, W, C)`` -> logits ``(N, K)``, written with
      ``nn.Conv``, ``nn.Dense``, ``nn.BatchNorm`` / ``nn.GroupNorm`` / ``nn.LayerNorm``,
      ReLU / leaky ReLU, pooling and residual sums; its first layer an ``nn.Conv`` on the images.
    variables: its variables (``params``, and ``batch_stats`` for BatchNorm).
    image_shape: ``(H, W, C)`` of the images.
    b: the B-cos exponent ``B >= 1`` of every convolution and dense layer (the paper: 2).
    input_std: per-channel (or one) standard deviation the original inputs were divided by.
    call_kwargs: keyword arguments of every call of ``module`` (e.g. ``{"train": False}``).
    temperature: the logits are divided by it (``None``: not at all).
    logit_bias: added to every logit (``None``: ``−ln(K − 1)``).

  Returns:
    ``(model, variables)``: a :class:`BcosifiedNet` and its ``{"params": ...}``.

  Raises:
    BcosifyError: a layer, activation or parameter it cannot convert (named).
  """
  if len(image_shape) != 3:
    raise ValueError(f"image_shape must be (H, W, C), got {tuple(image_shape)}.")
  if not (isinstance(b, (int, float)) and math.isfinite(b) and b >= 1):
    raise ValueError(f"b must be a finite number >= 1, got {b!r}.")
  height, width, channels = (int(v) for v in image_shape)
  kwargs = tuple(sorted((call_kwargs or {}).items()))
  dummy = jnp.zeros((1, height, width, channels), jnp.float32)
  num_classes = jax.eval_shape(lambda: module.apply(variables, dummy, **dict(kwargs))).shape[-1]
  model = BcosifiedNet(
      network=module,
      num_classes=num_classes,
      image_size=(height, width),
      image_channels=channels,
      b=b,
      call_kwargs=kwargs,
      temperature=temperature,
      logit_bias=default_logit_bias(num_classes) if logit_bias is None else logit_bias,
  )
  converted = convert_variables(model, variables, input_std)
  cuts, grad_cam_module = explainable_cuts(model, converted)
  model = model.clone(cuts=cuts, grad_cam_module=grad_cam_module)
  check_completeness(model, converted)
  return model, converted


# ---------------------------------------------------------------------------------- registry


@functools.lru_cache(maxsize=32)
def _cuts_of(base: str, num_classes: int, image_size: tuple[int, int], channels: int, b: float):
  """:func:`explainable_cuts` of ``bcosified-<base>``, found once per process on random params."""
  model = BcosifiedNet(
      get_model(base, num_classes=num_classes), num_classes, image_size, channels, b
  )
  variables = model.init(jax.random.key(0), jnp.zeros((1, *image_size, channels)))
  return explainable_cuts(model, variables)


def _factory(base: str):
  """``get_model("bcosified-<base>", image_size=(H, W), ...)``: the conventional ``base``
  B-cosified (random parameters; ``train.py``'s ``init_from`` converts a trained one)."""

  def factory(
      *,
      image_size: Any = None,
      num_classes: int = 10,
      temperature: float | None = None,
      dtype: Any = None,
      image_channels: int | None = None,
      b: float = 2.0,
      logit_bias: float | None = None,
  ) -> BcosifiedNet:
    if image_size is None:
      raise TypeError(f"bcosified-{base} needs image_size=(H, W) (model.kwargs.image_size).")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or min(size) < 1:
      raise ValueError(f"image_size must be (H, W) or one int, got {image_size!r}.")
    if not (isinstance(b, (int, float)) and math.isfinite(b) and b >= 1):
      raise ValueError(f"b must be a finite number >= 1, got {b!r}.")
    channels = image_channels or 3
    cuts, grad_cam_module = _cuts_of(base, num_classes, size, channels, b)
    return BcosifiedNet(
        network=get_model(base, num_classes=num_classes, dtype=dtype),
        num_classes=num_classes,
        image_size=size,
        image_channels=channels,
        b=b,
        cuts=cuts,
        grad_cam_module=grad_cam_module,
        temperature=temperature,
        logit_bias=default_logit_bias(num_classes) if logit_bias is None else logit_bias,
    )

  return factory


for _base in CONVENTIONAL_RESNETS:
  register_model(f"bcosified-{_base}", _factory(_base))
