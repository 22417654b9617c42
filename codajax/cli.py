"""Command-line pieces shared by ``train.py`` and ``eval.py``: the multi-host flags."""

from __future__ import annotations

import os

from absl import flags

from codajax.parallel import initialize_distributed

_COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"


def define_multihost_flags() -> None:
  """Defines ``--multihost``, ``--coordinator_address``, ``--num_processes``,
  ``--process_id`` and ``--init_timeout`` (defaults from the ``JAX_*`` environment)."""
  flags.DEFINE_bool(
      "multihost",
      bool(os.environ.get(_COORDINATOR_ENV)),
      "Join a multi-host run via jax.distributed.initialize.",
  )
  flags.DEFINE_string(
      "coordinator_address",
      os.environ.get(_COORDINATOR_ENV),
      "host:port of process 0 (auto-detected on TPU pods and SLURM).",
  )
  flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
  flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
  flags.DEFINE_integer("init_timeout", 120, "Seconds to wait for every process to join.")


def _flag_or_env(flag_value: int | None, name: str) -> int | None:
  value = os.environ.get(name)
  return flag_value if flag_value is not None else (int(value) if value else None)


def join_multihost_run(values: flags.FlagValues) -> None:
  """Joins the multi-host run the flags describe; nothing without ``--multihost``.

  Call before any other JAX call (see :func:`codajax.parallel.initialize_distributed`).
  """
  if not values.multihost:
    return
  initialize_distributed(
      values.coordinator_address,
      _flag_or_env(values.num_processes, "JAX_NUM_PROCESSES"),
      _flag_or_env(values.process_id, "JAX_PROCESS_ID"),
      values.init_timeout,
  )
