"""Exact explanations of dynamic-linear networks (``W(x)·x``): contribution maps.

Figures: :func:`plot` and :func:`plot_attributions` return a matplotlib figure (a notebook shows
it), drawn by :mod:`codajax.explain.render` as ``eval.py``'s figures; both import matplotlib on
their first call, so importing this package stays light.
"""

from codajax.explain.contributions import (
    FIELDS,
    ExplainableModel,
    Explanation,
    check_images,
    completeness_error,
    dynamic_linear_map,
    explain,
    explain_jit,
    explain_linear,
    explain_nnx,
    explanation_form,
)
from codajax.explain.plotting import plot, plot_attributions

__all__ = [
    "FIELDS",
    "ExplainableModel",
    "Explanation",
    "check_images",
    "completeness_error",
    "dynamic_linear_map",
    "explain",
    "explain_jit",
    "explain_linear",
    "explain_nnx",
    "explanation_form",
    "plot",
    "plot_attributions",
]
