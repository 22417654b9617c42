"""Exact explanations of dynamic-linear networks (``W(x)·x``): contribution maps.

Figures live in :mod:`codajax.explain.render` (imports matplotlib on use).
"""

from codajax.explain.contributions import completeness_error, dynamic_linear_map, explain

__all__ = ["completeness_error", "dynamic_linear_map", "explain"]
