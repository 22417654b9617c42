"""Import of the released B-cos v2 PyTorch checkpoints (``B-cos/B-cos-v2``, ``.pth``).

Nothing is downloaded: the user fetches the ``.pth`` file (e.g. ``resnet_50-ead259efe4.pth``
from the authors' ``v0.0.1-weights`` release) and converts it::

    from codajax.convert import load_bcos_checkpoint
    from codajax.models import get_model
    variables = load_bcos_checkpoint("resnet_50-ead259efe4.pth", "bcos-resnet50")
    logits = get_model("bcos-resnet50").apply(variables, images)  # (N, 224, 224, 3) in [0, 1]

Reading ``.pth`` files needs PyTorch (imported lazily, only then); state dicts of numpy
arrays (or a ``.npz`` file of them) need nothing else.

**Names.** ``X.linear.weight`` ``(O, I, kh, kw)`` of a B-cos convolution becomes the HWIO
``kernel`` of the matching codajax module (its per-unit normalisation happens in the forward
pass, so the stored scale is kept as is); an uncentred, bias-free BatchNorm ``X.{weight,
running_var}`` becomes ``scale = weight / √(running_var + 1e-5)`` (the running variance is
folded: see :mod:`codajax.bcos.norms`); ``running_mean`` and ``num_batches_tracked`` are unused
(the authors' BN never subtracts a mean). ResNet: ``conv1``/``bn1`` -> ``layer_0``,
``layer{s}.{i}.*`` -> ``layer_s/block_i/*`` (``downsample.0/1`` -> ``downsample_conv/bn``),
``fc`` -> the head ``layer_{S+1}/fc``. VGG: ``features.{j}`` -> ``layer_s/features_j``,
``classifier.{k}`` -> ``layer_5/classifier_k``.

**Inference transform of the released ImageNet models** (``bcos.data.presets``,
``ImageNetClassificationPresetEval(crop_size=224, is_bcos=True)``): resize the shorter side
to 256 (bilinear), centre crop 224×224, scale to [0, 1], **no mean/std normalisation**, then
the encoding ``[x, 1 − x]`` (6 channels) — which codajax's B-cos models apply themselves, so
they take RGB images in [0, 1]. The logit layer adds ``−ln(999)`` and uses no temperature.
codajax's ``imagenet`` datasets centre-crop 240 px (the CoDA papers'); the suffix ``@224``
(``imagenet_folder@224``, the converter's default dataset) gives the released models' 224 px
crop of the same 256 px resize.

**A work directory for eval.py**::

    python -m codajax.convert.bcos --checkpoint resnet_50-ead259efe4.pth \
        --name bcos-resnet50 --workdir runs/bcos-resnet50 [--dataset imagenet_folder@224]
    python eval.py --workdir runs/bcos-resnet50 --config configs/eval/quick.py

writes ``run.json`` (the model and dataset, as ``train.py`` would) and a step-0 checkpoint
holding the converted parameters.
"""

from __future__ import annotations

import argparse
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from codajax import data, runs, storage
from codajax.bcos.norms import DEFAULT_EPS, fold_batch_norm
from codajax.bcos.resnet import BcosResNet
from codajax.bcos.vgg import BcosVGG
from codajax.checkpoints import Checkpointer
from codajax.convert.bcos_vit import BcosViT, from_bcos_vit_state_dict, to_bcos_vit_state_dict
from codajax.registry import get_model
from codajax.train.config import base_config

_PREFIXES = ("module.", "_orig_mod.")
_UNUSED_SUFFIXES = (".running_mean", ".num_batches_tracked")


def _strip(key: str) -> str:
  changed = True
  while changed:
    changed = False
    for prefix in _PREFIXES:
      if key.startswith(prefix):
        key, changed = key[len(prefix) :], True
  return key


def _as_numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch tensor
    value = value.detach().cpu().numpy()
  return np.asarray(value)


def _model(name_or_model: Any, overrides: Mapping[str, Any]):
  if isinstance(name_or_model, str):
    return get_model(name_or_model, **overrides)
  if overrides:
    raise ValueError("model overrides apply to a model name, not to a model instance.")
  return name_or_model


def torch_prefix(model: Any, path: tuple[str, ...]) -> str:
  """The PyTorch module name of the codajax module at ``path`` (without the parameter name)."""
  head, rest = path[0], path[1:]
  if isinstance(model, BcosResNet):
    stage = int(head.split("_")[1])
    if stage == 0:
      return rest[0]  # conv1, bn1
    if stage == len(model.stage_sizes) + 1:
      return rest[0]  # fc
    block = int(rest[0].split("_")[1])
    sub = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(rest[1], rest[1])
    return f"layer{stage}.{block}.{sub}"
  if isinstance(model, BcosVGG):
    kind, index = rest[0].rsplit("_", 1)
    return f"{kind}.{index}"
  raise TypeError(f"No B-cos PyTorch naming for {type(model).__name__}.")


def _expected_params(model: Any) -> dict:
  size = 32
  dummy = jnp.zeros((1, size, size, model.image_channels), jnp.float32)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), dummy))["params"]


def _paths(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()):
  for key, value in tree.items():
    if isinstance(value, Mapping):
      yield from _paths(value, prefix + (key,))
    else:
      yield prefix + (key,), value


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def from_bcos_state_dict(
    state_dict: Mapping[str, Any], name: Any, **model_overrides: Any
) -> dict[str, Any]:
  """Variables ``{"params": ...}`` for a codajax B-cos model from a released state dict.

  Args:
    state_dict: the authors' parameter names mapped to numpy arrays or torch tensors
      (``module.`` prefixes are ignored).
    name: a registered B-cos model name (``"bcos-resnet50"``, ``"bcos-vgg11"``, ...) or a
      :class:`~codajax.bcos.resnet.BcosResNet` / :class:`~codajax.bcos.vgg.BcosVGG` instance.
    **model_overrides: ``get_model`` keywords (e.g. ``num_classes``) for a name.

  Returns:
    ``{"params": ...}`` in float32, checked leaf by leaf against the model.

  Raises:
    ValueError: a missing or unused key, a shape mismatch, or a non-zero norm bias.
  """
  model = _model(name, model_overrides)
  if isinstance(model, BcosViT):
    return from_bcos_vit_state_dict(state_dict, model)  # ViTs
  sd = {_strip(k): _as_numpy(v) for k, v in state_dict.items()}
  used: set[str] = set()
  params: dict = {}

  def take(key: str) -> np.ndarray:
    if key not in sd:
      raise ValueError(f"The state dict lacks {key!r} (needed by {type(model).__name__}).")
    used.add(key)
    return sd[key]

  for path, like in _paths(_expected_params(model)):
    prefix = torch_prefix(model, path[:-1])
    if path[-1] == "kernel":
      key = prefix + ".weight" if prefix + ".weight" in sd else prefix + ".linear.weight"
      weight = take(key)
      if weight.ndim != 4:
        raise ValueError(f"{key} has shape {weight.shape}, expected (O, I, kh, kw).")
      value = np.transpose(weight, (2, 3, 1, 0))
    elif path[-1] == "scale":
      weight = take(prefix + ".weight") if prefix + ".weight" in sd else None
      if prefix + ".bias" in sd:
        bias = take(prefix + ".bias")
        if np.any(bias != 0):
          raise ValueError(f"{prefix}.bias is non-zero; codajax's uncentred norms have no bias.")
      if model.norm == "bn":
        var = take(prefix + ".running_var")
        value = fold_batch_norm(weight, var, DEFAULT_EPS)
      else:
        value = np.ones(like.shape, np.float32) if weight is None else weight
    else:
      raise ValueError(f"Unexpected codajax parameter {'/'.join(path)}.")
    if tuple(value.shape) != tuple(like.shape):
      raise ValueError(
          f"{prefix}: converted shape {tuple(value.shape)} does not match the "
          f"model's {'/'.join(path)} {tuple(like.shape)}."
      )
    _set(params, path, np.asarray(value, np.float32))
  unused = sorted(k for k in sd if k not in used and not k.endswith(_UNUSED_SUFFIXES))
  if unused:
    raise ValueError(
        f"{len(unused)} state-dict entries fit no parameter of "
        f"{type(model).__name__}: {', '.join(unused[:8])}"
        f"{' ...' if len(unused) > 8 else ''}."
    )
  return {"params": params}


def to_bcos_state_dict(
    variables: Mapping[str, Any], name: Any, **model_overrides: Any
) -> dict[str, np.ndarray]:
  """The inverse of :func:`from_bcos_state_dict`: PyTorch names and layouts (numpy).

  A folded batch norm is written as ``weight = scale``, ``running_var = 1 − eps``,
  ``running_mean = 0`` (the same inference function).
  """
  model = _model(name, model_overrides)
  if isinstance(model, BcosViT):
    return to_bcos_vit_state_dict(variables, model)  # ViTs
  params = variables["params"] if "params" in variables else variables
  out: dict[str, np.ndarray] = {}
  for path, value in _paths(params):
    prefix = torch_prefix(model, path[:-1])
    value = np.asarray(value, np.float32)
    if path[-1] == "kernel":
      out[prefix + ".linear.weight"] = np.transpose(value, (3, 2, 0, 1))
    else:
      out[prefix + ".weight"] = value
      if model.norm == "bn":
        out[prefix + ".running_var"] = np.full_like(value, 1.0 - DEFAULT_EPS)
        out[prefix + ".running_mean"] = np.zeros_like(value)
  return out


def read_state_dict(path: str | epath.PathLike) -> dict[str, np.ndarray]:
  """A state dict from a ``.pth``/``.pt`` (needs PyTorch) or ``.npz`` file (local or ``gs://``)."""
  path = storage.path(path)
  if not path.exists():
    raise FileNotFoundError(f"No checkpoint at {path}.")
  if path.suffix == ".npz":
    with path.open("rb") as f, np.load(f) as data:
      return {k: np.asarray(data[k]) for k in data.files}
  try:
    import torch
  except ImportError as error:
    raise ImportError(
        "Reading PyTorch checkpoints needs PyTorch: pip install torch "
        "(or save the state dict as .npz of numpy arrays)."
    ) from error
  with path.open("rb") as f:
    loaded = torch.load(f, map_location="cpu", weights_only=True)
  if (
      isinstance(loaded, Mapping)
      and "state_dict" in loaded
      and isinstance(loaded["state_dict"], Mapping)
  ):
    loaded = loaded["state_dict"]
  if not isinstance(loaded, Mapping):
    raise ValueError(f"{path} holds a {type(loaded).__name__}, not a state dict.")
  return {k: _as_numpy(v) for k, v in loaded.items() if hasattr(v, "shape")}


def load_bcos_checkpoint(
    path: str | epath.PathLike, name: Any, **model_overrides: Any
) -> dict[str, Any]:
  """Reads a released ``.pth`` (or a ``.npz`` state dict) and converts it for ``name``."""
  return from_bcos_state_dict(read_state_dict(path), name, **model_overrides)


# --------------------------------------------------------------------------- work directory


def write_workdir(
    variables: Mapping[str, Any],
    name: str,
    workdir: str,
    *,
    dataset: str = "imagenet_folder@224",
    num_classes: int = 1000,
    image_size: int = 224,
    image_channels: int = 3,
    data_dir: str = "",
) -> runs.RunDir:
  """A ``train.py``-style work directory (``run.json`` + a step-0 checkpoint) for ``eval.py``.

  ``run.json`` is a complete run record (:func:`codajax.runs.new_record`: ``model.name = name``,
  temperature 1 (none), the dataset and its splits, settings, provenance, and
  ``converted_from``); the checkpoint's state is ``{"params": ...}``, which
  :func:`codajax.runs.restore` reads as it reads a trained run.
  """
  splits = data.family_splits(dataset)
  if splits is None:
    raise ValueError(
        f"dataset {dataset!r} is not a codajax dataset family (e.g. imagenet_folder@224, "
        "cifar10): its splits are unknown."
    )
  run = runs.RunDir(workdir)
  storage.makedirs(run.root)
  config = base_config()
  config.name = f"{name}-converted"
  config.description = f"B-cos v2 released weights converted by codajax.convert.bcos ({name})."
  config.dataset = dataset
  config.data_dir = data_dir
  config.model.name = name
  config.model.temperature = 1.0  # x / 1 = x: the released models have no temperature
  config.num_epochs = 0
  run.write_record(
      runs.new_record(
          config,
          num_classes=num_classes,
          image_shape=(image_size, image_size, image_channels),
          splits=splits,
          converted_from="B-cos v2 PyTorch state dict",
      )
  )
  checkpointer = Checkpointer(run, keep=1)
  try:
    params = jax.tree.map(jnp.asarray, dict(variables["params"]))
    checkpointer.save(0, {"params": params}, {})
  finally:
    checkpointer.close()
  return run


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m codajax.convert.bcos",
      description="Convert a released B-cos v2 checkpoint into an eval.py work directory.",
  )
  parser.add_argument("--checkpoint", required=True, help=".pth (needs torch) or .npz state dict")
  parser.add_argument("--name", required=True, help="codajax model name, e.g. bcos-resnet50")
  parser.add_argument("--workdir", required=True, help="work directory to write")
  parser.add_argument(
      "--dataset",
      default="imagenet_folder@224",
      help="codajax dataset name (@224: the released models' 224 px centre crop)",
  )
  parser.add_argument("--data_dir", default="", help="TFDS data directory ('' = default)")
  parser.add_argument("--num_classes", type=int, default=1000)
  parser.add_argument("--image_size", type=int, default=224)
  args = parser.parse_args(argv)
  variables = load_bcos_checkpoint(args.checkpoint, args.name, num_classes=args.num_classes)
  root = write_workdir(
      variables,
      args.name,
      args.workdir,
      dataset=args.dataset,
      num_classes=args.num_classes,
      image_size=args.image_size,
      data_dir=args.data_dir,
  )
  count = sum(int(np.size(x)) for x in jax.tree.leaves(variables))
  print(
      f"wrote {root} ({args.name}, {count:,} parameters); evaluate with: "
      f"python eval.py --workdir {root}"
  )


if __name__ == "__main__":
  main()
