"""examples/quickstart.ipynb runs from top to bottom (nbclient), so it never goes stale."""

import base64
import os
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "examples", "quickstart.ipynb")


@pytest.mark.slow
def test_quickstart_notebook_runs_and_shows_its_figures(tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  monkeypatch.setenv("CODAJAX_DATA_DIR", str(tmp_path / "tfds"))
  monkeypatch.setenv("CODAJAX_QUICKSTART_RUN", str(tmp_path / "no_run"))  # train the small model
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
  assert os.path.isdir(tmp_path / "tfds" / "codajax_digits")  # the data went where it was told
  figures = [o.data["image/png"] for o in outputs if "image/png" in o.get("data", {})]
  assert len(figures) == 4  # every class, predicted + baselines, the first grid, a layer
  assert all(base64.b64decode(png).startswith(b"\x89PNG") for png in figures)
