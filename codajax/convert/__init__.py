"""Import of the reference PyTorch checkpoints (CoDA-Nets) and of the released B-cos v2 models."""

from codajax.convert.bcos import (
    from_bcos_state_dict,
    load_bcos_checkpoint,
    to_bcos_state_dict,
)
from codajax.convert.reference import (
    convert_layer,
    from_reference_state_dict,
    load_reference_checkpoint,
)

__all__ = ["convert_layer", "from_bcos_state_dict", "from_reference_state_dict",
           "load_bcos_checkpoint", "load_reference_checkpoint", "to_bcos_state_dict"]
