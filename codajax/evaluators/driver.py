"""The evaluation driver: builds evaluators from a config, runs them, assembles the report.

:func:`from_config` builds the entries of a config's ``evals``; :func:`run_evaluators` runs them
on a :class:`~codajax.evaluators.common.Context` and assembles the report (a name ``a/b/c`` is
the path of its value; numpy arrays go to ``scores.npz``); :func:`evaluate_run` is what
``eval.py`` runs on a run directory.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib
import inspect
import io
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from codajax import data, parallel, provenance, runs, storage
from codajax.checkpoints import TrainingError
from codajax.evaluators import common
from codajax.evaluators.common import Context, EvaluationError, Progress
from codajax.evaluators.methods import (
    MethodsEvaluator,
    check_methods,
    check_traced,
    effective_settings,
    inspect_model,
)

EVALUATORS = (
    "accuracy",
    "localisation",
    "depths",
    "pixel_removal",
    "ground_truth",
    "completeness",
    "figures",
)
REPORT_FILE = "report.json"
SCORES_FILE = "scores.npz"
# Keys of an entry that configure how it runs, not the evaluator.
ENTRY_KEYS = ("type", "every_steps", "prefix")


@dataclasses.dataclass
class Entry:
  """One configured evaluator: its name, the object, how often in training, its name prefix."""

  name: str
  evaluator: Any
  every_steps: int | None = None
  prefix: str = ""


def _accepted(cls) -> set[str]:
  """Keyword names ``cls(...)`` accepts (those of :class:`MethodsEvaluator` for ``**kwargs``)."""
  params = inspect.signature(cls.__init__).parameters.values()
  names = {
      p.name for p in params if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
  }
  if any(p.kind is p.VAR_KEYWORD for p in params) and issubclass(cls, MethodsEvaluator):
    names |= _accepted(MethodsEvaluator)
  return names


def _plain(value: Any) -> Any:
  """A ConfigDict / tuple config value as plain dicts and lists."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {k: _plain(v) for k, v in value.items()}
  return value


def from_config(evals: Mapping[str, Any], shared: Mapping[str, Any] | None = None) -> list[Entry]:
  """Builds the evaluators of a config's ``evals`` (figures last); errors before any work.

  Args:
    evals: ``{name: {"type": module (default name), "every_steps": N (training only),
      "prefix": "...", **settings}}``.
    shared: defaults for every evaluator that accepts the keyword (``methods``, ``batch_size``,
      ``items_per_pass``, ``method_settings``); an entry's own settings win.
  """
  entries = []
  for name, entry in _plain(evals).items():
    entry = dict(entry or {})
    module_name = entry.pop("type", name)
    every_steps = entry.pop("every_steps", None)
    prefix = entry.pop("prefix", "")
    if module_name not in EVALUATORS:
      raise EvaluationError(
          f"evals.{name}: unknown evaluator {module_name!r}; known: " f"{', '.join(EVALUATORS)}"
      )
    cls = importlib.import_module(f"codajax.evaluators.{module_name}").Evaluator
    accepted = _accepted(cls)
    for key, value in _plain(shared or {}).items():
      if key in accepted and key not in entry:
        entry[key] = value
    unknown = sorted(set(entry) - accepted)
    if unknown:
      raise EvaluationError(
          f"evals.{name} ({module_name}): unknown setting"
          f"{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; accepted: "
          f"{', '.join(sorted(accepted | set(ENTRY_KEYS)))}"
      )
    if every_steps is not None and int(every_steps) < 1:
      raise EvaluationError(f"evals.{name}: every_steps must be >= 1; got {every_steps}")
    try:
      evaluator = cls(**entry)
    except EvaluationError as error:
      raise EvaluationError(f"evals.{name}: {error}") from None
    entries.append(
        Entry(name, evaluator, None if every_steps is None else int(every_steps), prefix)
    )
  return sorted(entries, key=lambda e: getattr(e.evaluator, "runs_last", False))


# -------------------------------------------------------------------------------------- report


def _json(value: Any) -> Any:
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, Mapping):
    return {k: _json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json(v) for v in value]
  return value


def put(report: dict, name: str, value: Any) -> None:
  """Sets ``report[a][b][c] = value`` for ``name = "a/b/c"``; dicts merge, a repeat is an error."""
  *parents, leaf = name.split("/")
  node = report
  for part in parents:
    node = node.setdefault(part, {})
    if not isinstance(node, dict):
      raise EvaluationError(f"report entry {name!r} collides with a value at {part!r}")
  value = _json(value)
  if leaf in node:
    if isinstance(node[leaf], dict) and isinstance(value, dict):
      node[leaf].update(value)
      return
    raise EvaluationError(
        f"two evaluators report {name!r}; give one a prefix " f"(evals.<name>.prefix)"
    )
  node[leaf] = value


def run_evaluators(
    entries: Sequence[Entry], ctx: Context
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """Runs ``entries`` in order: ``(report, arrays)`` from what they yield, plus their timings.

  What each evaluator's ``run`` returns (a typed result, e.g.
  :class:`~codajax.evaluators.localisation.LocalisationResult`) is handed to the evaluators that
  run last (``runs_last``: the figures), as their ``results`` argument.
  """
  report: dict[str, Any] = {}
  arrays: dict[str, np.ndarray] = {}
  results: list[Any] = []
  for entry in entries:
    start = time.perf_counter()
    evaluator = entry.evaluator
    pairs = (
        evaluator.run(ctx, results)
        if getattr(evaluator, "runs_last", False)
        else evaluator.run(ctx)
    )
    while True:
      try:
        name, value = next(pairs)
      except StopIteration as done:
        if done.value is not None:
          results.append(done.value)
        break
      name = entry.prefix + name
      if isinstance(value, np.ndarray):
        arrays[name] = value
      else:
        put(report, name, value)
    put(report, f"timings_s/evaluators/{entry.name}", round(time.perf_counter() - start, 3))
  return report, arrays


def flat_scalars(report: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
  """The report's numbers as ``{"a/b/c": value}``; lists of dicts by index (``depths/0/...``),
  other lists and strings left out."""
  out: dict[str, float] = {}
  for key, value in report.items():
    if isinstance(value, Mapping):
      out.update(flat_scalars(value, f"{prefix}{key}/"))
    elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
      for index, item in enumerate(value):
        out.update(flat_scalars(item, f"{prefix}{key}/{index}/"))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      out[f"{prefix}{key}"] = value
  return out


# -------------------------------------------------------------------------------------- driver


def _checkpoint_steps(directory: str) -> tuple[list[int], list[str]]:
  """``(complete steps, saves in flight)`` listed in a checkpoint directory (empty if none)."""
  try:
    names = storage.listdir(directory) if storage.isdir(directory) else []
  except FileNotFoundError:
    names = []
  steps = sorted(int(name) for name in names if name.isdigit())
  return steps, sorted(name for name in names if not name.isdigit() and "tmp" in name)


def _restore(workdir, checkpoint: str) -> runs.RestoredRun:
  try:
    return runs.restore(workdir, checkpoint)
  except (FileNotFoundError, TrainingError) as error:  # no run, garbage run.json, incompatible
    raise EvaluationError(str(error)) from None


def load_run(workdir, checkpoint: str = "latest") -> runs.RestoredRun:
  """The run ``train.py`` wrote to ``workdir``; :class:`EvaluationError` if there is none.

  The newest complete checkpoint is read (orbax lists only finished saves). If a running
  ``train.py`` rotates that checkpoint away while it is being read, the then-newest one is read
  instead, once, and the switch is said; a line also says when newer saves are in flight.
  """
  if checkpoint not in runs.CHECKPOINT_KINDS:
    raise EvaluationError(
        f"checkpoint must be one of {', '.join(runs.CHECKPOINT_KINDS)}; got {checkpoint!r}"
    )
  directory = runs.RunDir(workdir).checkpoints_dir(checkpoint)
  before, _ = _checkpoint_steps(directory)
  try:
    run = _restore(workdir, checkpoint)
  except EvaluationError:
    after, _ = _checkpoint_steps(directory)
    removed = sorted(set(before) - set(after))
    if not removed or not after:
      raise
    _say(
        f"codajax eval: checkpoint {', '.join(map(str, removed))} in {directory} was removed while "
        f"being read (a running train.py keeps only the newest); reading step {after[-1]}, the "
        "newest now."
    )
    run = _restore(workdir, checkpoint)
  steps, in_flight = _checkpoint_steps(directory)
  newer = [step for step in steps if step > run.step]
  if newer or in_flight:
    _say(
        f"codajax eval: {directory} is being written (newer: "
        f"{', '.join([*map(str, newer), *in_flight])}); evaluating the complete checkpoint of "
        f"step {run.step}."
    )
  return run


def _say(line: str) -> None:
  if common.is_main_process():
    print(line, flush=True)


def _run_record(workdir) -> tuple[dict[str, Any], Any]:
  """``(run.json as a dict, its config)`` of a run; :class:`EvaluationError` if there is no run
  or its config names a model that cannot be built (an unknown architecture, a bad
  temperature)."""
  import ml_collections

  run = runs.RunDir(workdir)
  try:
    record = run.read_record()
  except TrainingError as error:
    raise EvaluationError(str(error)) from None
  if record is None:
    raise EvaluationError(
        f"{run} is not a codajax run directory (no {runs.RUN_FILE}); train first: python "
        f"train.py --workdir {run}"
    )
  config = ml_collections.ConfigDict(record["config"])
  try:
    runs.validate_model_config(config)
  except (AttributeError, KeyError, TypeError, ValueError) as error:
    message = " ".join(str(error).split())
    raise EvaluationError(
        f"{run.run_file} records a model that cannot be built: {message}"
    ) from None
  return record, config


def _check_directory(where: str, what: str, *, writable: bool) -> None:
  """:class:`EvaluationError` unless ``where`` is a directory (or absent), and, if ``writable``
  (local paths), one that can be created and written to (a 4 KiB probe file is written and
  removed: a full disk is found too)."""
  if storage.exists(where) and not storage.isdir(where):
    raise EvaluationError(f"{what} {where} is a file, not a directory; give a directory")
  if not writable or storage.is_remote(where):
    return
  probe = storage.join(where, f".eval-write-test-{os.getpid()}")
  try:
    storage.write_atomic(probe, bytes(4096))
    os.remove(probe)
  except OSError as error:
    if error.errno == errno.ENOSPC:
      raise EvaluationError(f"{what} {where} is on a full disk; free some space") from None
    raise EvaluationError(
        f"{what} {where} cannot be written ({error.strerror or error}); give another one"
    ) from None


def _check_method_settings(
    entries: Sequence[Entry],
    shared: Mapping[str, Any],
    image_shape: Sequence[int],
    num_classes: int,
) -> None:
  """Traces every post-hoc method with settings given for it, in the config or in an entry
  (:func:`check_traced`), on the run's image shape: a setting the method refuses fails here,
  before any work."""
  given = [
      ("method_settings", m, s, shared["items_per_pass"])
      for m, s in shared["method_settings"].items()
  ]
  for entry in entries:
    evaluator = entry.evaluator
    if isinstance(evaluator, MethodsEvaluator):
      given += [
          (f"evals.{entry.name}", m, evaluator.settings_of(m), evaluator.items_per_pass)
          for m in evaluator.methods
      ]
  seen = set()
  for where, method, settings, items_per_pass in given:
    key = (method, repr(sorted(dict(settings).items())), items_per_pass)
    if method == "Ours" or not settings or key in seen:
      continue
    seen.add(key)
    try:
      check_traced(method, settings, image_shape, num_classes, items_per_pass)
    except EvaluationError as error:
      raise EvaluationError(f"{where}: {error}") from None


def make_context(
    model,
    params,
    spec: data.DatasetSpec,
    *,
    data_dir: str | None,
    mesh=None,
    loss: str = "bce",
    eval_batch_size: int = 256,
    out: str | None = None,
) -> Context:
  """A :class:`Context` with ``params`` replicated on ``mesh`` (default: every device)."""
  mesh = parallel.make_mesh() if mesh is None else mesh
  variables = {"params": replicated(params, mesh)}
  info = inspect_model(model, variables, spec.image_shape)
  return Context(
      model=model,
      variables=variables,
      spec=spec,
      data_dir=data_dir,
      mesh=mesh,
      info=info,
      loss=loss,
      eval_batch_size=eval_batch_size,
      out=out,
  )


def replicated(params: Any, mesh) -> Any:
  """``params`` replicated on ``mesh`` (already-placed arrays are kept)."""
  sharding = parallel.replicated_sharding(mesh)
  leaves = jax.tree.leaves(params)
  if leaves and all(
      isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim) for x in leaves
  ):
    return params
  if jax.process_count() == 1:
    return jax.device_put(params, sharding)
  return parallel.replicate(jax.device_get(params), mesh)


_KEPT_AFTER_PROBE = ("test_logits", "grids", "examples")


def probe_job(entries: Sequence[Entry], ctx: Context) -> tuple[int, float]:
  """Runs every batched unit on its first batch (kept for the real run) and times it.

  Returns ``(batches, estimated seconds)`` of the whole job: per unit, batches × the timed
  first batch (compilation excluded: it is done by then).
  """
  memo, progress = ctx.memo, ctx.progress
  ctx.memo, ctx.progress, ctx.probe = dict(memo), None, True
  try:
    for entry in entries:
      for _ in entry.evaluator.run(ctx):
        pass
  finally:
    kept = {
        k: v
        for k, v in ctx.memo.items()
        if (k if isinstance(k, str) else k[0]) in _KEPT_AFTER_PROBE
    }
    ctx.memo, ctx.progress, ctx.probe = {**memo, **kept}, progress, False
  batches = sum(n for n, _ in ctx.plan.values())
  return batches, sum(n * seconds for n, seconds in ctx.plan.values())


def _settings_record(config, methods: Sequence[str]) -> dict[str, Any]:
  overrides = _plain(config.get("method_settings", {}))
  return {m: effective_settings(m, overrides.get(m)) for m in methods if m != "Ours"}


def _without_skipped(evals: Mapping[str, Any], skip: str) -> dict[str, Any]:
  """``evals`` without the entries named in ``skip`` (comma-separated; each must be there)."""
  names = [name.strip() for name in skip.split(",") if name.strip()]
  unknown = [name for name in names if name not in evals]
  if unknown:
    raise EvaluationError(
        f"skip names {', '.join(unknown)}, not an entry of this config's evals "
        f"({', '.join(evals)})"
    )
  return {name: entry for name, entry in _plain(evals).items() if name not in names}


def evaluate_run(workdir: str, config) -> dict[str, Any]:
  """Evaluates the run in ``workdir`` with an eval config (``configs/eval/*.py``).

  Writes ``report.json``, ``scores.npz`` and the figures to ``config.out`` (default
  ``workdir/eval``) from process 0. Every bad setting is an :class:`EvaluationError` before any
  work. With ``config.estimate`` it first times each unit's first batch and prints the estimated
  duration; one progress bar covers the whole job.

  Returns:
    The report.
  """
  started = time.perf_counter()
  methods = check_methods(config.get("methods"))
  shared = {
      "methods": methods,
      "batch_size": config.batch_size,
      "items_per_pass": config.items_per_pass,
      "method_settings": _plain(config.get("method_settings", {})),
  }
  entries = from_config(_without_skipped(config.evals, config.get("skip", "")), shared)
  record, run_config = _run_record(workdir)
  _check_method_settings(entries, shared, record["image_shape"], record["num_classes"])
  out = config.get("out") or runs.RunDir(workdir).eval_dir
  _check_directory(out, "the output directory", writable=common.is_main_process())
  data_dir = config.get("data_dir") or run_config.get("data_dir") or None
  if data_dir:
    what = "the data directory" + ("" if config.get("data_dir") else " of run.json")
    _check_directory(data_dir, what, writable=False)
  run = load_run(workdir, config.checkpoint)
  spec = data.dataset_info(run.config.dataset, data_dir=data_dir)
  ctx = make_context(
      run.model,
      run.params,
      spec,
      data_dir=data_dir,
      loss=run.config.loss,
      eval_batch_size=run.config.eval_batch_size,
      out=out,
  )
  for entry in entries:
    if hasattr(entry.evaluator, "check"):
      entry.evaluator.check(ctx)
  main = common.is_main_process()
  if main:
    print(
        f"codajax eval: {run.config.model.name} on {spec.name}, {config.checkpoint} "
        f"checkpoint (step {run.step}); evaluators {', '.join(e.name for e in entries)}; "
        f"methods {', '.join(methods)}",
        flush=True,
    )
  if config.get("estimate", False):
    probe_start = time.perf_counter()
    batches, seconds = probe_job(entries, ctx)
    if main:
      print(
          f"estimate: {batches} batches, about {_duration(seconds)} after "
          f"{time.perf_counter() - probe_start:.0f} s of compiling and timing the first "
          f"batch of each of {len(ctx.plan)} units",
          flush=True,
      )
  ctx.progress = Progress(
      sum(n for n, _ in ctx.plan.values()), enabled=config.get("progress", True)
  )
  try:
    results, arrays = run_evaluators(entries, ctx)
  finally:
    ctx.progress.close()
  report: dict[str, Any] = {
      "workdir": run.run.root,
      "checkpoint": {"which": config.checkpoint, "step": run.step},
      "dataset": spec.name,
      "split": spec.test_split,
      "model": run.config.model.name,
      "num_classes": spec.num_classes,
      "image_shape": list(spec.image_shape),
      "explainable_layers": ctx.info.num_layers,
      "methods_evaluated": list(methods),
      "evaluators": [e.name for e in entries],
      "device": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
      "processes": jax.process_count(),
      "provenance": provenance.provenance(),
  }
  put(
      report,
      "protocol",
      {
          "batch_size": config.batch_size,
          "items_per_pass": config.items_per_pass,
          "method_settings": _settings_record(config, methods),
      },
  )
  for key, value in results.items():
    put(report, key, value)
  report.setdefault("methods", {})
  report["methods"] = {m: report["methods"].get(m, {}) for m in methods}
  if "completeness" in report and "Ours" in report["methods"]:
    layers = report["completeness"]["layers"]
    report["methods"]["Ours"]["completeness_error"] = {
        "max": report["completeness"]["max"],
        "mean": float(np.mean([l["mean"] for l in layers])),
        "per_layer_max": [l["max"] for l in layers],
    }
  report["compiles"] = dict(ctx.programs.counts)
  report["timings_s"]["compile"] = {k: round(v, 3) for k, v in ctx.programs.seconds.items()}
  report["timings_s"]["total"] = round(time.perf_counter() - started, 3)
  if main:
    scores = io.BytesIO()
    np.savez_compressed(scores, **arrays)
    storage.write_atomic(storage.join(out, SCORES_FILE), scores.getvalue())
    storage.write_json(storage.join(out, REPORT_FILE), report)
  return report


def _duration(seconds: float) -> str:
  return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def summary_table(report: Mapping[str, Any]) -> str:
  """A plain-text table of the report: one row per method (localisation, removal, ground truth)."""
  lines = []
  if "accuracy" in report:
    acc = report["accuracy"]
    lines.append(
        f"accuracy: top-1 {acc['top1']:.4f}, top-5 {acc['top5']:.4f} ({acc['count']} "
        f"test images, step {report['checkpoint']['step']})"
    )
  lines.append(
      f"{'method':<12}{'loc. mean':>11}{'loc. median':>13}{'removal mean':>14}"
      f"{'mask energy':>13}{'pointing':>10}"
  )
  fmt = lambda x: f"{x:.4f}" if x is not None else "-"
  for method, result in report.get("methods", {}).items():
    loc = result.get("localisation", {})
    gt = result.get("ground_truth", {})
    lines.append(
        f"{method:<12}{fmt(loc.get('mean')):>11}{fmt(loc.get('median')):>13}"
        f"{fmt(result.get('pixel_removal', {}).get('mean')):>14}"
        f"{fmt(gt.get('mask_energy', {}).get('mean')):>13}"
        f"{fmt(gt.get('pointing_game')):>10}"
    )
  for depth in report.get("depths", []):
    lines.append(
        f"layer {depth['layer']} (depth {depth['interpretable_depth']}): localisation "
        f"mean {depth['localisation']['mean']:.4f}"
    )
  if "completeness" in report:
    lines.append(f"completeness: max relative error {report['completeness']['max']:.2e}")
  return "\n".join(lines)
