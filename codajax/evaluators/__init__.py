"""Evaluation as small composable evaluators (in the style of big_vision's ``evaluators/``).

Each module holds one ``Evaluator(**settings)`` whose ``run(ctx)`` yields ``(name, value)`` pairs:

=================  ===========================================================================
``accuracy``       top-1, top-5, loss, per class
``localisation``   the papers' grid localisation per method
``depths``         the same for the contributions at every explainable depth
``pixel_removal``  the papers' pixel-removal curve per method
``ground_truth``   mask energy and pointing game (datasets with object masks)
``completeness``   sum of the contributions against logit − bias, every layer
``figures``        PNG figures of what the others computed (runs last)
=================  ===========================================================================

A config's ``evals`` maps names to entries, ``{"localisation": {"n_grids": 50}}``;
:func:`from_config` builds them (an entry's ``type`` names the module, default: its name; shared
settings such as ``methods`` fill the keywords an evaluator accepts). :func:`run_evaluators`
assembles the report: a name ``a/b/c`` is the path of its value in the report, a numpy array
goes to ``scores.npz`` instead. :func:`evaluate_run` is what ``eval.py`` runs;
:class:`TrainingEvaluators` runs entries during training (a hook of
:func:`codajax.train.train_and_evaluate`). The driver is :mod:`codajax.evaluators.driver`.
"""

from codajax.evaluators.common import Context, EvaluationError
from codajax.evaluators.driver import (
    EVALUATORS,
    REPORT_FILE,
    SCORES_FILE,
    Entry,
    evaluate_run,
    flat_scalars,
    from_config,
    load_run,
    make_context,
    probe_job,
    put,
    run_evaluators,
    summary_table,
)
from codajax.evaluators.methods import known_methods, parse_method_settings
from codajax.evaluators.training import TrainingEvaluators

__all__ = [
    "EVALUATORS",
    "Context",
    "Entry",
    "EvaluationError",
    "REPORT_FILE",
    "SCORES_FILE",
    "TrainingEvaluators",
    "evaluate_run",
    "flat_scalars",
    "from_config",
    "known_methods",
    "load_run",
    "make_context",
    "parse_method_settings",
    "probe_job",
    "put",
    "run_evaluators",
    "summary_table",
]
