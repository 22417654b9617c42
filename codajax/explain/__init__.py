"""Exact explanations of dynamic-linear networks (``W(x)·x``): contribution maps.

Figures live in :mod:`codajax.explain.render` (imports matplotlib on use).
"""

from codajax.explain.contributions import (
    FIELDS,
    ExplainableModel,
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
    "ExplainableModel",
    "Explanation",
    "completeness_error",
    "dynamic_linear_map",
    "explain",
    "explain_jit",
    "explain_linear",
    "explain_nnx",
    "explanation_form",
]
