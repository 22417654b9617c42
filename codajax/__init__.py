"""codajax: Convolutional Dynamic Alignment Networks in JAX/Flax.

Subpackages: :mod:`codajax.nn` (functional DAU ops and Linen modules),
:mod:`codajax.models` (CoDA-Net architectures), :mod:`codajax.explain` (exact
contribution maps), :mod:`codajax.convert` (reference checkpoint import),
:mod:`codajax.data`, :mod:`codajax.train`, :mod:`codajax.attribution` and
:mod:`codajax.metrics`.
"""

__version__ = "0.1.0"
