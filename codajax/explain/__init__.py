"""Exact explanations of dynamic-linear networks (``W(x)·x``): contribution maps.

Models get the explanation protocol from :mod:`codajax.explain.base`. Figures: :func:`plot` and
:func:`plot_attributions` return a matplotlib figure (a notebook shows it), drawn by
:mod:`codajax.explain.render` as ``eval.py``'s figures; both import matplotlib on their first
call, so importing this package stays light.
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
from codajax.explain.plotting import plot, plot_attributions

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
    "plot",
    "plot_attributions",
]
