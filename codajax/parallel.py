"""Devices and hosts: the data mesh, batch sharding, replication, multi-host start-up."""

from __future__ import annotations

import logging
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: int = 120,
) -> None:
  """Joins a multi-host run (``jax.distributed.initialize``) with a bounded timeout.

  Call before any other JAX call. On TPU pods and SLURM/Kubernetes clusters the
  arguments are detected; elsewhere give all three. A peer that never joins
  ends every process within about ``timeout_s`` seconds (JAX aborts the
  process; it cannot be caught), instead of JAX's default five minutes.
  """
  where = coordinator_address or "the auto-detected coordinator"
  logging.info(
      "Joining a multi-host run at %s (%s processes, this is %s; timeout %d s).",
      where,
      num_processes,
      process_id,
      timeout_s,
  )
  print(
      f"codajax: waiting up to {timeout_s} s for {num_processes or 'all'} processes at "
      f"{where}; a missing peer aborts every process after that.",
      flush=True,
  )
  jax.distributed.initialize(
      coordinator_address=coordinator_address,
      num_processes=num_processes,
      process_id=process_id,
      initialization_timeout=timeout_s,
  )


def make_mesh(devices=None) -> Mesh:
  """A 1-D ``("data",)`` mesh over all devices of all processes (auto axis type)."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices.reshape(-1), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading axis split over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """Fully replicated over the mesh."""
  return NamedSharding(mesh, P())


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's rows → one global array per key, sharded over ``data``.

  Every process passes its own ``(global_batch / process_count, ...)`` rows.
  """
  sharding = batch_sharding(mesh)
  return {
      k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
  }


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a host pytree (identical on every process) replicated on the mesh."""
  sharding = replicated_sharding(mesh)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(put, tree)


def split_for_pmap(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """``(b, ...) -> (local_devices, b / local_devices, ...)`` for ``jax.pmap``."""
  n = jax.local_device_count()

  def split(x):
    if x.shape[0] % n:
      raise ValueError(f"Per-process batch {x.shape[0]} is not divisible by {n} local devices.")
    return x.reshape(n, x.shape[0] // n, *x.shape[1:])

  return {k: split(np.asarray(v)) for k, v in batch.items()}
