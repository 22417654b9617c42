"""Dynamic alignment layers: a functional core (:mod:`codajax.nn.dau`), Linen and NNX modules."""

from codajax.nn.dau import (
    FORMS,
    NORMS,
    PARAM_NAMES,
    dau_conv,
    dynamic_weights,
    extract_patches,
    init_dau_params,
    norm_factor,
    num_params,
    output_size,
    param_initializers,
    param_shapes,
    uniform_fan_in,
)
from codajax.nn.modules import (
    DEFAULT_LOGIT_BIAS,
    CoDAConv,
    add_inverse,
    coda_head,
    explanation_dtype,
)
from codajax.nn.nnx_layers import NNXCoDAConv

__all__ = [
    "FORMS",
    "NORMS",
    "PARAM_NAMES",
    "DEFAULT_LOGIT_BIAS",
    "NNXCoDAConv",
    "CoDAConv",
    "add_inverse",
    "coda_head",
    "dau_conv",
    "dynamic_weights",
    "explanation_dtype",
    "extract_patches",
    "init_dau_params",
    "norm_factor",
    "num_params",
    "output_size",
    "param_initializers",
    "param_shapes",
    "uniform_fan_in",
]
