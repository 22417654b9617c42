"""codajax: Convolutional Dynamic Alignment Networks (CoDA Nets) and B-cos networks in JAX/Flax.

Every logit of these networks is exactly ``W(x)·x`` for an input-dependent matrix ``W(x)``, so
each prediction decomposes into input contributions with no approximation. The subpackages
load on first use (``import codajax`` alone imports no JAX):

===========================  ==================================================================
:mod:`codajax.nn`            functional DAU ops, norms, Linen and NNX layers
:mod:`codajax.models`        CoDA-Nets, the papers' named models, hybrids; ``get_model``
:mod:`codajax.bcos`          B-cos layers and networks on the same explanation core
:mod:`codajax.explain`       exact contribution maps (``explain``) and figures
:mod:`codajax.attribution`   post-hoc baselines for any apply function
:mod:`codajax.metrics`       localisation, pixel removal, ground-truth mask scores
:mod:`codajax.data`          TFDS datasets read with grain (no TensorFlow)
:mod:`codajax.train`         config schema, train steps, the training loop
:mod:`codajax.runs`          the run directory: layout, ``run.json``, ``restore``
:mod:`codajax.evaluators`    one evaluator per metric, the evaluation driver
:mod:`codajax.regularizers`  the L1 regulariser on the dynamic linear map
:mod:`codajax.convert`       import of the authors' PyTorch and B-cos v2 checkpoints
===========================  ==================================================================
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "accuracy",
    "attribution",
    "bcos",
    "checkpoints",
    "cli",
    "convert",
    "data",
    "evaluators",
    "explain",
    "metrics",
    "models",
    "nn",
    "parallel",
    "provenance",
    "registry",
    "regularizers",
    "runs",
    "storage",
    "train",
)


def __getattr__(name: str):
  if name in _SUBMODULES:
    return importlib.import_module(f"codajax.{name}")
  raise AttributeError(f"module 'codajax' has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted([*globals(), *_SUBMODULES])


__all__ = ["__version__", *_SUBMODULES]
