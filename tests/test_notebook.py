"""examples/quickstart.ipynb runs from top to bottom (nbclient), so it never goes stale."""

import base64
import os
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "examples", "quickstart.ipynb")


@pytest.mark.slow
def test_quickstart_notebook_runs_and_shows_its_figures(quick_digits_run, tmp_path, monkeypatch):
  """On the run its training branch would train (``configs/digits.py:quick``, trained once for
  the evaluation tests too)."""
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  workdir, data_dir = quick_digits_run
  monkeypatch.setenv("CODAJAX_DATA_DIR", str(tmp_path / "unused"))  # the run names its data dir
  monkeypatch.setenv("CODAJAX_QUICKSTART_RUN", workdir)
  monkeypatch.setenv(
      "PYTHONPATH", os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
  )
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  started = time.monotonic()
  nbclient.NotebookClient(
      notebook,
      timeout=600,
      kernel_name="python3",
      resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}},
  ).execute()
  print(f"quickstart.ipynb ran in {time.monotonic() - started:.0f} s")
  outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  text = "".join(o.get("text", "") for o in outputs)
  assert text.count("completeness error") == 2, text
  for name in ("Ours", "IxG"):
    score = float(text.split(f"{name}: mean localisation ")[1].split()[0])
    assert 0.0 <= score <= 1.0, text
  assert "digits-5L step 80 | test images (" in text  # the run restored, with its test split
  assert not os.path.exists(tmp_path / "unused")  # its data read from the run's data dir
  assert os.path.isdir(os.path.join(data_dir, "codajax_digits"))
  figures = [o.data["image/png"] for o in outputs if "image/png" in o.get("data", {})]
  assert len(figures) == 4  # every class, predicted + baselines, the first grid, a layer
  assert all(base64.b64decode(png).startswith(b"\x89PNG") for png in figures)
