"""The API reference builds from the docstrings with pdoc (``docs/build_api.py``) without a warning."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).parents[1]
BUILD = ROOT / "docs" / "build_api.py"


def _build(output_dir: Path, *args: str, pythonpath: Path = ROOT) -> subprocess.CompletedProcess:
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
  return subprocess.run(
      [sys.executable, str(BUILD), str(output_dir), *args],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )


def test_api_reference_builds_without_a_pdoc_warning(tmp_path):
  result = _build(tmp_path)
  assert result.returncode == 0, result.stderr[-4000:]
  pages = {
      "codajax/convert.html": ['id="load_reference_checkpoint"', 'id="load_bcos_checkpoint"'],
      "codajax/explain.html": ['id="explain"', 'id="explain_linear"', 'id="completeness_error"'],
      "codajax/models.html": ['id="get_model"', 'id="CoDANet"'],
      "codajax/nn.html": ['id="CoDAConv"', 'id="NNXCoDAConv"', 'id="add_inverse"'],
      "codajax/metrics.html": ['id="Grids"'],
  }
  assert (tmp_path / "index.html").is_file()
  assert (tmp_path / "codajax.html").is_file()
  for page, anchors in pages.items():
    html = (tmp_path / page).read_text()
    for anchor in anchors:
      assert anchor in html, (page, anchor)
  # The NamedTuple's field annotations are evaluated (not left as forward references).
  metrics = (tmp_path / "codajax/metrics.html").read_text()
  assert "ForwardRef" not in metrics


def test_a_pdoc_warning_fails_the_build(tmp_path):
  package = tmp_path / "src" / "docs_probe"
  package.mkdir(parents=True)
  (package / "__init__.py").write_text(textwrap.dedent('''\
      """A package whose ``__all__`` names something that does not exist."""

      from __future__ import annotations

      from typing import NamedTuple

      import numpy as np


      class Pair(NamedTuple):
        """Two arrays."""

        left: np.ndarray
        right: np.ndarray


      __all__ = ["Pair", "missing"]
      '''))
  result = _build(tmp_path / "out", "docs_probe", pythonpath=tmp_path / "src")
  assert result.returncode == 1, result.stdout + result.stderr
  problems = [line for line in result.stderr.splitlines() if line.startswith("pdoc: ")]
  assert len(problems) == 1, result.stderr  # the NamedTuple is no warning; the bad name is
  assert "'missing'" in problems[0], problems


def _markdown_files() -> list[Path]:
  folders = ("docs", "studies", "benchmarks")
  return [ROOT / "README.md", *(f for d in folders for f in sorted((ROOT / d).glob("*.md")))]


def test_relative_links_of_the_markdown_files_point_at_files_in_the_repo():
  checked, missing = 0, []
  for page in _markdown_files():
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
      if "://" not in target:
        checked += 1
        if not (page.parent / target).exists():
          missing.append(f"{page.relative_to(ROOT)} -> {target}")
  assert checked >= 20  # 25 when written: README's table links 13
  assert not missing, missing
