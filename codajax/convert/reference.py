"""Import of the authors' PyTorch CoDA-Net checkpoints (moboehle/CoDA-Nets).

The reference model is an ``nn.Sequential`` whose entry ``i`` is a CoDA layer
made of two convolutions::

    {i}.weight_mod.weighting_f.0.weight   (r, C, k, k)     B, no bias
    {i}.weight_mod.weighting_f.1.weight   (P·D, r, 1, 1)   A
    {i}.weight_mod.weighting_f.1.bias     (P·D,)           w0

(the reference's "bias" is ``w0``, the static part of the dynamic weight
``w = A z + w0``, stored under the codajax name ``"w0"``).

Output channel ``q`` of the second convolution holds patch element ``q // D``
of DAU ``q % D``, and patch element ``p = c·k² + ki·k + kj``.
"""

from __future__ import annotations

import io
import re
from typing import Any, Mapping

import numpy as np

from codajax import storage
from codajax.registry import get_model

_KEY = re.compile(r"^(?:.*\.)?(\d+)\.weight_mod\.weighting_f\.([01])\.(weight|bias)$")


def _group_by_layer(state_dict: Mapping[str, Any]) -> dict[int, dict[str, np.ndarray]]:
  """``{layer index: {"B", "A", "w0"}: array}`` from the reference's parameter names."""
  layers: dict[int, dict[str, np.ndarray]] = {}
  for key, value in state_dict.items():
    match = _KEY.match(key)
    if match is None:
      continue
    index, factor, kind = int(match[1]), match[2], match[3]
    name = "B" if factor == "0" else ("A" if kind == "weight" else "w0")
    layers.setdefault(index, {})[name] = np.asarray(value, dtype=np.float32)
  return layers


def convert_layer(b_mat: np.ndarray, a_mat: np.ndarray, beta: np.ndarray) -> dict[str, np.ndarray]:
  """One reference CoDA layer to codajax parameters.

  Args:
    b_mat: ``(r, C, k, k)`` weight of the first convolution.
    a_mat: ``(P·D, r, 1, 1)`` weight of the second convolution.
    beta: ``(P·D,)`` bias of the second convolution.

  Returns:
    ``{"B": (k, k, C, r), "A": (k, k, C, D, r), "w0": (k, k, C, D)}``.
  """
  r, c, k, _ = b_mat.shape
  patch = c * k * k
  if a_mat.shape[0] % patch or a_mat.shape[1:] != (r, 1, 1) or beta.shape != a_mat.shape[:1]:
    raise ValueError(
        f"Inconsistent reference layer shapes: first factor {b_mat.shape}, second factor "
        f"{a_mat.shape}, bias {beta.shape}."
    )
  d = a_mat.shape[0] // patch
  a = a_mat.reshape(c, k, k, d, r).transpose(1, 2, 0, 3, 4)
  w0 = beta.reshape(c, k, k, d).transpose(1, 2, 0, 3)
  return {"B": b_mat.transpose(2, 3, 1, 0), "A": a, "w0": w0}


def from_reference_state_dict(
    state_dict: Mapping[str, Any], arch: str, **model_overrides: Any
) -> dict[str, Any]:
  """Variables for ``get_model(arch, **model_overrides).apply`` from a reference state dict.

  Args:
    state_dict: the reference's parameter names mapped to arrays (numpy or
      anything ``np.asarray`` accepts); prefixes such as ``module.`` are ignored.
    arch: a codajax architecture name, e.g. ``"9L-S"``.

  Returns:
    ``{"params": {"layer_0": {...}, ...}}``, checked against the architecture.
  """
  model = get_model(arch, **model_overrides)
  layers = _group_by_layer(state_dict)
  if sorted(layers) != list(range(len(model.layers))):
    raise ValueError(
        f"Architecture {arch!r} has {len(model.layers)} CoDA layers, the state dict holds "
        f"layers {sorted(layers)} (keys like '0.weight_mod.weighting_f.0.weight')."
    )
  params = {}
  channels = 2 * model.image_channels if model.encode_input else model.image_channels
  for i, spec in enumerate(model.layers):
    missing = {"B", "A", "w0"} - set(layers[i])
    if missing:
      raise ValueError(f"Reference layer {i} lacks its {sorted(missing)} parameter(s).")
    layer = convert_layer(layers[i]["B"], layers[i]["A"], layers[i]["w0"])
    expected = (spec.kernel_size, spec.kernel_size, channels, spec.features, spec.rank)
    if layer["A"].shape != expected:
      raise ValueError(
          f"Reference layer {i} has shape {layer['A'].shape} (k, k, C, D, r), architecture "
          f"{arch!r} expects {expected}."
      )
    params[f"layer_{i}"] = layer
    channels = spec.features
  return {"params": params}


def load_reference_checkpoint(path: str, arch: str, **model_overrides: Any) -> dict[str, Any]:
  """Reads a reference ``.pkl`` saved with ``torch.save`` (a local path or ``gs://``) and
  converts it.

  Needs PyTorch: ``pip install 'codajax[torch]'``.
  """
  try:
    import torch
  except ImportError as error:
    raise ImportError(
        "Reading PyTorch checkpoints needs PyTorch: pip install 'codajax[torch]'."
    ) from error
  # Read through codajax.storage: a local path or gs://.
  loaded = torch.load(io.BytesIO(storage.read_bytes(path)), map_location="cpu", weights_only=False)
  if hasattr(loaded, "state_dict"):
    loaded = loaded.state_dict()
  if not isinstance(loaded, Mapping):
    raise ValueError(f"{path} holds a {type(loaded).__name__}, not a state dict.")
  state_dict = {k: v.detach().cpu().numpy() for k, v in loaded.items() if hasattr(v, "detach")}
  return from_reference_state_dict(state_dict, arch, **model_overrides)
