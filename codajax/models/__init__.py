"""CoDA-Net architectures: the generic stack and the papers' named models."""

from codajax.models.coda_net import CoDANet, LayerSpec
from codajax.models.nnx_coda_net import NNXCoDANet
from codajax.models.hybrid import BackboneSpec, HybridNet, hybrid_from_family  # registers hybrids
from codajax.models.registry import (
    ARCHITECTURES,
    Architecture,
    architecture_names,
    count_params,
    get_model,
    register_model,
    with_num_classes,
)

import codajax.bcos.models  # noqa: E402,F401  (registers the B-cos models)
import codajax.bcos.vit  # noqa: E402,F401  (registers the B-cos ViTs)

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "CoDANet",
    "LayerSpec",
    "NNXCoDANet",
    "architecture_names",
    "count_params",
    "get_model",
    "register_model",
    "with_num_classes",
]
