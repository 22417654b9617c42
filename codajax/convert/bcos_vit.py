"""Parameter names of the released B-cos v2 ViTs (``bcos_simple_vit_*``, ``bcos_vitc_*``).

Used by :func:`codajax.convert.from_bcos_state_dict` / :func:`~codajax.convert.to_bcos_state_dict`
for :class:`codajax.bcos.vit.BcosViT` models (``bcos-vit-ti``, ``bcos-vitc-s``, ...)::

    variables = load_bcos_checkpoint("bcos_vitc_s_patch1_14-cf55c88f0c.pth", "bcos-vitc-s")

The released files hold the whole ``BcosSequential(vit, LogitLayer)``, so every key starts
with ``0.`` (stripped here, as are ``module.`` prefixes). The mapping (``i``: block, ``j``:
stem layer; PyTorch ``(out, in)`` weights are transposed to codajax's ``(in, out)``)::

    to_patch_embedding.conv_stem.{3j}.linear.weight  (O, I, 3, 3) -> stem_convs_j/kernel (3, 3, I, O)
    to_patch_embedding.conv_stem.{3j+1}.weight       (C,)         -> stem_norms_j/scale
    to_patch_embedding.linear.linear.weight          (D, p·p·C)   -> patch_embed/kernel
    transformer.encoder_{i}.attn.norm.weight                      -> blocks_i/attn_norm/scale
    transformer.encoder_{i}.attn.to_qkv.weight       (3D, D)      -> blocks_i/qkv (D, 3D)
    transformer.encoder_{i}.attn.to_out.linear.weight             -> blocks_i/attn_out/kernel
    transformer.encoder_{i}.ff.net.norm.weight                    -> blocks_i/mlp_norm/scale
    transformer.encoder_{i}.ff.net.linear{1,2}.linear.weight      -> blocks_i/mlp_{in,out}/kernel
    linear_head.norm.weight                                       -> head_norm/scale
    linear_head.linear.linear.weight                 (K, D)       -> head/kernel

The norms of the released models have no bias (``NoBias``); a ``*.bias`` entry is accepted
only if it is zero. The patch vector order ``(row, column, channel)`` of the authors'
``rearrange`` is codajax's, so the patch-embedding weight needs no permutation.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from codajax.bcos.vit import BcosViT

_PREFIXES = ("module.", "_orig_mod.")


def _numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch tensor
    value = value.detach().cpu().numpy()
  return np.asarray(value)


def _strip_prefixes(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Numpy values; ``module.``/``_orig_mod.`` dropped, and ``0.`` when every key has it."""
  out = {}
  for key, value in state_dict.items():
    changed = True
    while changed:
      changed = False
      for prefix in _PREFIXES:
        if key.startswith(prefix):
          key, changed = key[len(prefix) :], True
    out[key] = _numpy(value)
  if out and all(k.startswith("0.") for k in out):
    out = {k[2:]: v for k, v in out.items()}
  return out


def _dense(w: np.ndarray) -> np.ndarray:
  return np.transpose(w)


def _conv(w: np.ndarray) -> np.ndarray:
  return np.transpose(w, (2, 3, 1, 0))


def _same(w: np.ndarray) -> np.ndarray:
  return w


_INVERSE = {_dense: _dense, _conv: lambda k: np.transpose(k, (3, 2, 0, 1)), _same: _same}


def vit_name_map(model: BcosViT) -> dict[tuple[str, ...], tuple[str, Callable]]:
  """codajax parameter path -> (released key without ``0.``, PyTorch-to-codajax transform)."""
  names: dict[tuple[str, ...], tuple[str, Callable]] = {}
  for j in range(len(model.conv_stem)):
    names[(f"stem_convs_{j}", "kernel")] = (
        f"to_patch_embedding.conv_stem.{3 * j}.linear.weight",
        _conv,
    )
    names[(f"stem_norms_{j}", "scale")] = (
        f"to_patch_embedding.conv_stem.{3 * j + 1}.weight",
        _same,
    )
  names[("patch_embed", "kernel")] = ("to_patch_embedding.linear.linear.weight", _dense)
  for i in range(model.depth):
    block, torch_block = f"blocks_{i}", f"transformer.encoder_{i}"
    names[(block, "attn_norm", "scale")] = (f"{torch_block}.attn.norm.weight", _same)
    names[(block, "qkv")] = (f"{torch_block}.attn.to_qkv.weight", _dense)
    names[(block, "attn_out", "kernel")] = (f"{torch_block}.attn.to_out.linear.weight", _dense)
    names[(block, "mlp_norm", "scale")] = (f"{torch_block}.ff.net.norm.weight", _same)
    names[(block, "mlp_in", "kernel")] = (f"{torch_block}.ff.net.linear1.linear.weight", _dense)
    names[(block, "mlp_out", "kernel")] = (f"{torch_block}.ff.net.linear2.linear.weight", _dense)
  names[("head_norm", "scale")] = ("linear_head.norm.weight", _same)
  names[("head", "kernel")] = ("linear_head.linear.linear.weight", _dense)
  return names


def _expected(model: BcosViT) -> dict:
  side = model.stem_stride * model.patch_size * 4
  dummy = jnp.zeros((1, side, side, model.image_channels), jnp.float32)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), dummy))["params"]


def _leaf(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def from_bcos_vit_state_dict(state_dict: Mapping[str, Any], model: BcosViT) -> dict[str, Any]:
  """``{"params": ...}`` (float32 numpy) for ``model`` from a released ViT state dict.

  Raises:
    ValueError: a missing or unused key, a shape mismatch, or a non-zero norm bias.
  """
  sd = _strip_prefixes(state_dict)
  expected = _expected(model)
  names = vit_name_map(model)
  params: dict = {}
  used: set[str] = set()
  for path, (key, transform) in names.items():
    if key not in sd:
      raise ValueError(f"The state dict lacks {key!r} (needed by {type(model).__name__}).")
    used.add(key)
    value = transform(sd[key])
    like = _leaf(expected, path)
    if tuple(value.shape) != tuple(like.shape):
      raise ValueError(
          f"{key}: shape {tuple(sd[key].shape)} does not fit "
          f"{'/'.join(path)} {tuple(like.shape)} of this model."
      )
    _set(params, path, np.asarray(value, np.float32))
  for key in sd:
    if key.endswith(".bias") and key[:-5] + ".weight" in used and key not in used:
      if np.any(sd[key] != 0):
        raise ValueError(f"{key} is non-zero; the B-cos ViT's norms and layers have no bias.")
      used.add(key)
  unused = sorted(k for k in sd if k not in used)
  if unused:
    raise ValueError(
        f"{len(unused)} state-dict entries fit no parameter of this "
        f"{type(model).__name__}: {', '.join(unused[:8])}"
        f"{' ...' if len(unused) > 8 else ''}."
    )
  return {"params": params}


def to_bcos_vit_state_dict(
    variables: Mapping[str, Any], model: BcosViT, prefix: str = "0."
) -> dict[str, np.ndarray]:
  """The inverse: released names (with ``prefix``, ``"0."`` as in the files) and layouts."""
  params = variables["params"] if "params" in variables else variables
  out = {}
  for path, (key, transform) in vit_name_map(model).items():
    out[prefix + key] = np.asarray(_INVERSE[transform](np.asarray(_leaf(params, path))), np.float32)
  return out
