"""Import of the reference PyTorch checkpoints."""

from codajax.convert.reference import (
    convert_layer,
    from_reference_state_dict,
    load_reference_checkpoint,
)

__all__ = ["convert_layer", "from_reference_state_dict", "load_reference_checkpoint"]
