"""Where a number came from: library versions, git commit, date and devices.

``provenance()`` is recorded in ``run.json`` (``train.py``) and ``report.json`` (``eval.py``).
"""

from __future__ import annotations

import datetime
import os
import subprocess
from typing import Any

from codajax import __version__


def git_commit(path: str | os.PathLike[str] | None = None) -> str | None:
  """``HEAD`` of the git repository holding ``path`` (default: this package), with ``+dirty``
  when tracked files have uncommitted changes; None outside a repository or without git."""
  where = os.fspath(path) if path is not None else os.path.dirname(os.path.abspath(__file__))
  try:
    run = lambda *args: subprocess.run(
        ["git", "-C", where, *args], capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()
    commit = run("rev-parse", "HEAD")
    dirty = run("status", "--porcelain", "--untracked-files=no")
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ("+dirty" if dirty else "") if commit else None


def provenance() -> dict[str, Any]:
  """``{"codajax", "jax", "jaxlib", "flax", "git_commit", "date" (UTC ISO 8601),
  "device_kind", "device_count", "process_count", "platform"}``."""
  import flax
  import jax
  import jaxlib

  devices = jax.devices()
  return {
      "codajax": __version__,
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "flax": flax.__version__,
      "git_commit": git_commit(),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "device_kind": devices[0].device_kind,
      "device_count": len(devices),
      "process_count": jax.process_count(),
      "platform": devices[0].platform,
  }
