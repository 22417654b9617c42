"""Shared by the evaluation tests (tests/test_eval.py, test_evaluators.py, test_eval_methods.py):
the repository root, the config modules, eval.py as a subprocess, a quick evaluation config, a PNG
check and a run directory holding only run.json."""

import json
import os
import subprocess
import sys

from PIL import Image

from codajax.train.config import base_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "configs"))
sys.path.insert(0, os.path.join(ROOT, "configs", "eval"))
import digits as digits_config  # noqa: E402  (configs/ is not a package)
import paper as paper_config  # noqa: E402
import quick as quick_config  # noqa: E402
import shapes as shapes_config  # noqa: E402

__all__ = [
    "ROOT",
    "assert_png",
    "digits_config",
    "eval_cli",
    "paper_config",
    "quick_config",
    "quick_eval_config",
    "record_only_run",
    "shapes_config",
]


def eval_cli(*args, timeout=300, env=None):
  """``python eval.py *args`` from the repository root (``env`` added to this environment)."""
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, "eval.py"), *args],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=timeout,
      env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
  )


def quick_eval_config(out, methods="Ours", **evals):
  """The quick preset with ``methods``, output ``out`` and entries replaced by ``evals``."""
  config = quick_config.get_config()
  config.methods, config.out, config.progress = methods, str(out), False
  for name, entry in evals.items():
    if entry is None:
      del config.evals[name]
    else:
      config.evals[name] = entry
  return config


def assert_png(path):
  """``path`` is a readable PNG of at least 100 x 100 pixels."""
  assert os.path.getsize(path) > 1000, path
  with Image.open(path) as image:
    image.verify()
  with Image.open(path) as image:
    assert image.format == "PNG" and min(image.size) >= 100


def record_only_run(path, **model):
  """A run directory with a run.json (digits-5L on 16 x 16 x 1 digits) and no checkpoint."""
  config = base_config().to_dict()
  config["model"].update(model)
  record = {
      "config": config,
      "num_classes": 10,
      "image_shape": [16, 16, 1],
      "splits": {"train": "train", "test": "test"},
  }
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "run.json"), "w") as f:
    json.dump(record, f)
  return str(path)
