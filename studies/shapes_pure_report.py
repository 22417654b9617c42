"""Tables and the temperature figure of the pure-CoDA-Net study (``studies/shapes_pure.md``).

    python studies/shapes_pure_report.py --out docs/figures/temperature.png \
        --digits runs/pure/digits-T10 runs/pure/digits-T100 runs/pure/digits-T1000 \
        [--shapes runs/pure/shapes-T10 ...]

Each argument is a ``train.py`` work directory with ``eval/report.json`` from ``eval.py``; the
temperature is read from its ``run.json``. Prints one markdown table per dataset (T, test
accuracy, Ours localisation, pixel removal, mask energy, pointing game) and draws localisation and
(for shapes) mask energy against T.
"""

from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"digits": "tab:blue", "shapes": "tab:orange"}  # the same colour in every panel


def load(workdir: str) -> dict:
  """``{"T", "accuracy", "localisation", "removal", "mask_energy", "pointing"}`` of one evaluated run."""
  with open(os.path.join(workdir, "run.json")) as f:
    config = json.load(f)["config"]
  with open(os.path.join(workdir, "eval", "report.json")) as f:
    report = json.load(f)
  ours = report["methods"]["Ours"]
  gt = ours.get("ground_truth", {})
  return {
      "T": float(config["model"]["temperature"]),
      "accuracy": report["accuracy"]["top1"],
      "localisation": ours.get("localisation", {}).get("mean"),
      "removal": ours.get("pixel_removal", {}).get("mean"),
      "mask_energy": gt.get("mask_energy", {}).get("mean"),
      "pointing": gt.get("pointing_game"),
      "n_grids": report["protocol"]["localisation"]["n_grids"],
  }


def table(name: str, rows: list[dict]) -> str:
  fmt = lambda v: "–" if v is None else f"{v:.3f}"
  lines = [
      f"**{name}**",
      "",
      "| T | test acc. | Ours localisation (grids) | Ours pixel removal | "
      "Ours mask energy | Ours pointing |",
      "|---|---|---|---|---|---|",
  ]
  lines += [
      f"| {r['T']:g} | {r['accuracy']:.4f} | {fmt(r['localisation'])} ({r['n_grids']}) | {fmt(r['removal'])} | "
      f"{fmt(r['mask_energy'])} | {fmt(r['pointing'])} |"
      for r in rows
  ]
  return "\n".join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--digits", nargs="*", default=[])
  parser.add_argument("--shapes", nargs="*", default=[])
  parser.add_argument("--out", required=True, help="PNG path of the figure")
  args = parser.parse_args(argv)
  datasets = {
      name: sorted((load(w) for w in dirs), key=lambda r: r["T"])
      for name, dirs in (("digits", args.digits), ("shapes", args.shapes))
      if dirs
  }
  for name, rows in datasets.items():
    print(table(name, rows), "\n")
  panels = [
      ("localisation", "Ours grid localisation"),
      ("mask_energy", "Ours mask energy (shapes)"),
      ("removal", "Ours pixel removal (area)"),
  ]
  fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
  for ax, (key, title) in zip(axes, panels):
    drawn = False
    for name, rows in datasets.items():
      points = [(r["T"], r[key]) for r in rows if r[key] is not None]
      if points:
        ax.plot(*zip(*points), marker="o", label=name, color=COLOURS[name])
        drawn = True
    ax.set_xscale("log")
    ax.set_xlabel("temperature T")
    ax.set_title(title)
    if drawn:
      ax.legend()
    else:
      ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
  fig.tight_layout()
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  fig.savefig(args.out, dpi=110)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
