"""benchmarks/gpu_suite.sh and benchmarks/tpu_suite.sh refuse bad arguments before any work.

``python``, ``nvidia-smi`` and ``pip`` are replaced by stand-ins on ``PATH`` that log their calls,
so nothing is installed or benchmarked here; a valid call shows that the stand-ins are reached.
"""

import os
import pathlib
import subprocess

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
SUITES = ["gpu_suite.sh", "tpu_suite.sh"]
STAND_INS = ("python", "nvidia-smi", "pip")


def _run(
    suite: str, args: list[str], tmp_path: pathlib.Path
) -> tuple[subprocess.CompletedProcess, str]:
  """Runs ``bash benchmarks/<suite> *args`` from ``tmp_path`` with logging stand-ins; returns the
  result and the stand-ins' log (one line per call)."""
  bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
  bin_dir.mkdir(exist_ok=True)
  for name in STAND_INS:
    stand_in = bin_dir / name
    stand_in.write_text(f'#!/usr/bin/env bash\necho "{name} $*" >> "{log}"\n')
    stand_in.chmod(0o755)
  env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
  result = subprocess.run(
      ["bash", str(BENCHMARKS / suite), *args],
      cwd=tmp_path,
      env=env,
      capture_output=True,
      text=True,
      timeout=60,
  )
  return result, log.read_text() if log.exists() else ""


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize(
    "args",
    [[], ["out", "extra"], ["--out=x"], ["-n"], [""], ["a_file"]],
    ids=["none", "two", "an_option", "a_flag", "empty", "a_file"],
)
def test_bad_arguments_exit_2_with_a_usage_line_and_start_nothing(suite, args, tmp_path):
  (tmp_path / "a_file").write_text("not a directory")
  result, calls = _run(suite, args, tmp_path)
  assert result.returncode == 2, (result.stdout, result.stderr)
  assert f"usage: bash benchmarks/{suite} OUT_DIR" in result.stderr
  assert calls == "" and result.stdout == ""
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("suite", SUITES)
def test_help_prints_the_usage_line(suite, tmp_path):
  result, calls = _run(suite, ["--help"], tmp_path)
  assert result.returncode == 0 and calls == ""
  assert result.stdout.startswith(f"usage: bash benchmarks/{suite} OUT_DIR")


@pytest.mark.parametrize("suite", SUITES)
def test_a_valid_call_runs_the_suite_into_out_dir(suite, tmp_path):
  """With a relative OUT_DIR, every benchmark is started and writes under it."""
  result, calls = _run(suite, ["results"], tmp_path)
  assert result.returncode == 0, result.stderr
  benchmarks = [line for line in calls.splitlines() if line.startswith("python ") and ".py" in line]
  assert any("dau_forms.py --arch 9L-S" in line for line in benchmarks), calls
  assert any("explain_throughput.py" in line for line in benchmarks), calls
  written = {p.name for p in (tmp_path / "results").iterdir()}
  assert {"train_9ls.jsonl", "train_9ll.jsonl", "explain_9ls.jsonl"} <= written
  explicit_up_to = {"gpu_suite.sh": 256, "tpu_suite.sh": 64}[suite]  # what one device holds
  assert (
      f"--batches 16,64,256,1024 --dtypes float32,bfloat16 --steps 20 --skip_explicit_above {explicit_up_to}"
      in calls
  )
  if suite == "tpu_suite.sh":
    assert "python -m pip install" in calls  # jax[tpu] first
    assert "torch_reference.py" not in calls
  else:
    assert "nvidia-smi" in calls and "torch_reference.py" in calls
