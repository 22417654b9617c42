"""CoDA-Net architectures: the generic stack, the papers' named models and the hybrids.

:func:`get_model` builds any registered model by name (CoDA-Nets, hybrids and the
B-cos networks of :mod:`codajax.bcos`); it lives in :mod:`codajax.registry`.
"""

from codajax.models.architectures import ARCHITECTURES, Architecture, coda_net, count_params, with_num_classes
from codajax.models.coda_net import CoDANet, LayerSpec
from codajax.models.hybrid import (
    HYBRID_FAMILIES,
    BackboneSpec,
    HybridFamily,
    HybridNet,
    hybrid_from_family,
)
from codajax.models.nnx_coda_net import NNXCoDANet
from codajax.registry import architecture_names, get_model, register_model

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "BackboneSpec",
    "CoDANet",
    "HYBRID_FAMILIES",
    "HybridFamily",
    "HybridNet",
    "LayerSpec",
    "NNXCoDANet",
    "architecture_names",
    "coda_net",
    "count_params",
    "get_model",
    "hybrid_from_family",
    "register_model",
    "with_num_classes",
]
