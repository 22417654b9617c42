"""Dynamic alignment layers: a functional core (:mod:`codajax.nn.dau`) and Linen modules."""

from codajax.nn.dau import (
    FORMS,
    NORMS,
    dau_conv,
    dynamic_weights,
    extract_patches,
    init_dau_params,
    norm_factor,
    num_params,
    output_size,
    uniform_fan_in,
)
from codajax.nn.modules import DEFAULT_LOGIT_BIAS, CoDAConv, add_inverse, coda_head

__all__ = [
    "FORMS",
    "NORMS",
    "DEFAULT_LOGIT_BIAS",
    "CoDAConv",
    "add_inverse",
    "coda_head",
    "dau_conv",
    "dynamic_weights",
    "extract_patches",
    "init_dau_params",
    "norm_factor",
    "num_params",
    "output_size",
    "uniform_fan_in",
]
