"""Markdown tables of evaluated runs: ``python studies/summarise.py runs/study [more dirs]``.

Each argument is a work directory written by ``train.py`` (with ``eval/report.json`` from
``eval.py``; ``--eval_dir NAME`` reads ``NAME/report.json`` instead, for an ``eval.py --out``
elsewhere) or a directory of them. Prints, per run, the configuration (model, embedding
stage, λ, steps), the final test accuracy and training time from ``metrics.jsonl``, and the
report's scores of every method; then the per-depth localisation of every run. Runs without a
report are listed with their accuracy only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

sys.path.insert(
    0, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)  # codajax from this clone


def find_runs(paths: list[str]) -> Iterator[str]:
  """Work directories (those holding ``run.json``) among ``paths`` and their subdirectories."""
  for path in paths:
    if os.path.exists(os.path.join(path, "run.json")):
      yield path
      continue
    for name in sorted(os.listdir(path)):
      if os.path.exists(os.path.join(path, name, "run.json")):
        yield os.path.join(path, name)


def read_run(workdir: str, eval_dir: str = "eval") -> dict[str, Any]:
  """Config, last eval metrics, training seconds and the eval report (or None) of a run."""
  with open(os.path.join(workdir, "run.json")) as f:
    config = json.load(f)["config"]
  records = []
  if os.path.exists(os.path.join(workdir, "metrics.jsonl")):  # absent before the first log
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      records = [json.loads(line) for line in f if line.strip()]
  evals = [r for r in records if "eval/accuracy" in r]
  tests = [r for r in records if "test/accuracy_final" in r]  # runs with a validation split
  times = [r["time"] for r in records if "train/loss" in r]
  report_path = os.path.join(workdir, eval_dir, "report.json")
  report = None
  if os.path.exists(report_path):
    with open(report_path) as f:
      report = json.load(f)
  return {
      "name": os.path.basename(os.path.normpath(workdir)),
      "config": config,
      "eval": evals[-1] if evals else {},
      "test_accuracy": _test_accuracy(tests, evals),
      "train_seconds": times[-1] - times[0] if times else None,
      "report": report,
  }


def _test_accuracy(tests: list[dict[str, Any]], evals: list[dict[str, Any]]) -> float | None:
  """The final model's test accuracy: ``test/accuracy_final`` where the run selected on a
  validation split, else (older runs, which evaluated on test during training) ``eval/accuracy``."""
  if tests:
    return tests[-1]["test/accuracy_final"]
  return evals[-1].get("eval/accuracy") if evals else None


def _fmt(value: float | None, digits: int = 3) -> str:
  return "–" if value is None else f"{value:.{digits}f}"


def _method_row(method: str, result: Mapping[str, Any], seconds: Mapping[str, float]) -> str:
  loc = result.get("localisation", {})
  gt = result.get("ground_truth", {})
  return (
      f"| {method} | {_fmt(loc.get('mean'))} | {_fmt(loc.get('median'))} | "
      f"{_fmt(result.get('pixel_removal', {}).get('mean'))} | "
      f"{_fmt(gt.get('mask_energy', {}).get('mean'))} | {_fmt(gt.get('pointing_game'))} | "
      f"{sum(seconds.values()):.0f} |"
  )


def run_overview(runs: list[dict[str, Any]]) -> list[str]:
  """One row per run: stage, λ, accuracy, and the "Ours" scores."""
  lines = [
      "| run | model | stage | λ | steps | test acc. | train s | Ours loc. | "
      "Ours removal | Ours mask energy | Ours pointing | mask area | eval s |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for run in runs:
    config, report = run["config"], run["report"]
    ours = (report or {}).get("methods", {}).get("Ours", {})
    gt = ours.get("ground_truth", {})
    protocol = (report or {}).get("protocol", {})
    lines.append(
        f"| {run['name']} | {config['model']['name']} | "
        f"{config['model']['kwargs'].get('embedding_stage', '–')} | {config['l1_matrix_weight']} | "
        f"{run['eval'].get('step', '–')} | {_fmt(run['test_accuracy'], 4)} | "
        f"{_fmt(run['train_seconds'], 0)} | {_fmt(ours.get('localisation', {}).get('mean'))} | "
        f"{_fmt(ours.get('pixel_removal', {}).get('mean'))} | "
        f"{_fmt(gt.get('mask_energy', {}).get('mean'))} | {_fmt(gt.get('pointing_game'))} | "
        f"{_fmt(protocol.get('ground_truth', {}).get('mask_fraction'))} | "
        f"{_fmt((report or {}).get('timings_s', {}).get('total'), 0)} |"
    )
  return lines


def _changed_settings(report: Mapping[str, Any]) -> str:
  """The post-hoc settings of ``report`` that differ from the presets, as text."""
  from codajax.attribution import METHODS

  changed = [
      f"{method}.{key}={value!r}"
      for method, settings in report["protocol"].get("method_settings", {}).items()
      for key, value in settings.items()
      if method in METHODS and METHODS[method].settings.get(key, object()) != value
  ]
  return (
      "settings changed from the presets: " + ", ".join(changed)
      if changed
      else "the presets' settings"
  )


def method_tables(runs: list[dict[str, Any]]) -> list[str]:
  """Per evaluated run: one row per method (localisation, removal, ground truth, seconds)."""
  lines: list[str] = []
  for run in runs:
    report = run["report"]
    if report is None:
      continue
    loc = report["protocol"]["localisation"]
    removal = report["protocol"]["pixel_removal"]
    lines += [
        "",
        f"### {run['name']}: {report['model']} on {report['dataset']}, step "
        f"{report['checkpoint']['step']}, top-1 {report['accuracy']['top1']:.4f}",
        "",
        f"{loc['n_grids']} grids of {loc['grid']}×{loc['grid']} (uniform map: "
        f"{loc['uniform']:.3f}); pixel removal on {removal['n_images']} images "
        f"({removal['mode']}); {_changed_settings(report)}.",
        "",
        "| method | loc. mean | loc. median | removal mean | mask energy | pointing | " "seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    timings = report["timings_s"]["methods"]
    lines += [_method_row(m, r, timings.get(m, {})) for m, r in report["methods"].items()]
  return lines


def depth_table(runs: list[dict[str, Any]]) -> list[str]:
  """Localisation mean per explainable layer (interpretable depth) of every evaluated run."""
  with_depths = [r for r in runs if r["report"] and r["report"].get("depths")]
  if not with_depths:
    return []
  width = max(len(r["report"]["depths"]) for r in with_depths)
  lines = [
      "",
      "| run | " + " | ".join(f"layer {l}" for l in range(width)) + " |",
      "|---|" + "---|" * width,
  ]
  for run in with_depths:
    depths = run["report"]["depths"]
    cells = [f"{d['localisation']['mean']:.3f} (d={d['interpretable_depth']})" for d in depths]
    lines.append(f"| {run['name']} | " + " | ".join(cells + ["–"] * (width - len(cells))) + " |")
  return lines


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("paths", nargs="+", help="work directories or directories of them")
  parser.add_argument("--eval_dir", default="eval", help="report directory inside each run")
  args = parser.parse_args(argv)
  paths = args.paths
  runs = [read_run(workdir, args.eval_dir) for workdir in find_runs(paths)]
  if not runs:
    sys.exit(f"no runs (directories with run.json) under {', '.join(paths)}")
  print("\n".join(run_overview(runs) + method_tables(runs) + depth_table(runs)))


if __name__ == "__main__":
  main(sys.argv[1:])
