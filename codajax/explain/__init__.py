"""Exact explanations of dynamic-linear networks (``W(x)·x``): contribution maps.

Models get the explanation protocol from :mod:`codajax.explain.base`. Figures live in
:mod:`codajax.explain.render` (imports matplotlib on use).
"""

from codajax.explain.base import ExplainableMixin, ExplainableModel, ExplainableModule
from codajax.explain.contributions import (
    FIELDS,
    Explanation,
    completeness_error,
    dynamic_linear_map,
    explain,
    explain_jit,
    explain_linear,
    explain_nnx,
    explanation_form,
)

__all__ = [
    "FIELDS",
    "ExplainableMixin",
    "ExplainableModel",
    "ExplainableModule",
    "Explanation",
    "completeness_error",
    "dynamic_linear_map",
    "explain",
    "explain_jit",
    "explain_linear",
    "explain_nnx",
    "explanation_form",
]
