"""Import of the reference PyTorch checkpoints (CoDA-Nets) and of the released B-cos v2 models."""

from codajax.convert.reference import (
    convert_layer,
    from_reference_state_dict,
    load_reference_checkpoint,
)

# The B-cos converter loads on first use, so ``python -m codajax.convert.bcos`` runs it once.
_BCOS_NAMES = ("from_bcos_state_dict", "load_bcos_checkpoint", "to_bcos_state_dict")


def __getattr__(name):
  if name in _BCOS_NAMES:
    from codajax.convert import bcos

    return getattr(bcos, name)
  raise AttributeError(f"module 'codajax.convert' has no attribute {name!r}")


__all__ = [
    "convert_layer",
    "from_bcos_state_dict",
    "from_reference_state_dict",
    "load_bcos_checkpoint",
    "load_reference_checkpoint",
    "to_bcos_state_dict",
]
