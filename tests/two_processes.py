"""Test helpers: fake CPU devices for a subprocess, a free loopback port, and a job run as
processes 0 and 1 of a two-host job.

The multi-host tests start two local processes that meet at a coordinator on 127.0.0.1 (the
flags of ``codajax/cli.py``), each usually with fake CPU devices from ``XLA_FLAGS``.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Mapping, Sequence


def fake_devices(count: int) -> str:
  """``XLA_FLAGS`` for a subprocess with ``count`` CPU devices: this process's flags (the
  suite's, see conftest.py) and the device count."""
  own = os.environ.get("XLA_FLAGS", "")
  return f"{own} --xla_force_host_platform_device_count={count}".strip()


def free_port() -> int:
  """A TCP port on 127.0.0.1 that is free now."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_two_processes(
    command: Sequence[str], *, cwd: str, env: Mapping[str, str], timeout: float
) -> list[str]:
  """Runs ``command`` with the multi-host flags as processes 0 and 1; returns their outputs.

  Both processes are killed after ``timeout`` seconds (the test then fails with
  ``TimeoutExpired``); a process that exits non-zero fails the test with its output's tail.
  """
  port = free_port()
  procs = [
      subprocess.Popen(
          [
              *command,
              "--multihost",
              f"--coordinator_address=127.0.0.1:{port}",
              "--num_processes=2",
              f"--process_id={index}",
              "--init_timeout=60",
          ],
          cwd=cwd,
          env=dict(env),
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          text=True,
      )
      for index in range(2)
  ]
  try:
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  return outputs
