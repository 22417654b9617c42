"""Shared helpers of the benchmark scripts: timing, XLA cost analysis, MFU, JSON lines."""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import jax

# Dense bfloat16 peak FLOP/s per chip (vendor figures), for MFU. float32 runs
# are reported against the same bfloat16 peak, as MFU usually is.
PEAK_FLOPS = {
    "NVIDIA H100 80GB HBM3": 989e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5p": 459e12,
}


def peak_flops(device=None) -> float | None:
  """The bfloat16 peak of ``device`` (default: the first device), or None if unknown."""
  kind = (device or jax.devices()[0]).device_kind
  return next((v for k, v in PEAK_FLOPS.items() if kind.startswith(k)), None)


def compile_and_time(
    fn: Callable, state: Any, *rest: Any, steps: int = 10, warmup: int = 2
) -> dict[str, Any]:
  """Compiles the jitted ``fn(state, *rest) -> (state, aux)``, then times ``steps`` calls.

  The returned state is fed back (so donated train steps work); pure functions
  return their input state unchanged.

  Returns:
    ``compile_s``, ``step_s`` (median seconds per call), ``flops`` (XLA cost
    analysis of one call, or None) and ``peak_bytes`` (device peak, or None).
  """
  start = time.perf_counter()
  compiled = fn.lower(state, *rest).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  flops = float(cost["flops"]) if cost and "flops" in cost else None

  times = []
  for i in range(warmup + steps):
    t0 = time.perf_counter()
    state, aux = compiled(state, *rest)
    jax.block_until_ready((state, aux))
    if i >= warmup:
      times.append(time.perf_counter() - t0)
  times.sort()
  stats = jax.devices()[0].memory_stats() or {}
  return {
      "compile_s": round(compile_s, 3),
      "step_s": times[len(times) // 2],
      "flops": flops,
      "peak_bytes": stats.get("peak_bytes_in_use"),
  }


def throughput_record(name: str, batch: int, timing: dict[str, Any], **extra: Any) -> dict:
  """One JSON-able record: img/s, compile time, GFLOP per image, MFU and peak memory."""
  peak = peak_flops()
  flops = timing["flops"]
  return {
      "name": name,
      "batch": batch,
      "img_per_s": round(batch / timing["step_s"], 2),
      "step_ms": round(1e3 * timing["step_s"], 3),
      "compile_s": timing["compile_s"],
      "gflop_per_img": None if flops is None else round(flops / batch / 1e9, 3),
      "mfu": None if flops is None or peak is None else round(flops / timing["step_s"] / peak, 4),
      "peak_gib": None if timing["peak_bytes"] is None else round(timing["peak_bytes"] / 2**30, 3),
      **extra,
  }


def emit(record: dict[str, Any]) -> None:
  """Prints one JSON line (with the device) and flushes."""
  record = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(), **record}
  print(json.dumps(record), flush=True)


def time_interleaved(
    calls: dict[str, Callable[[], Any]], *, rounds: int = 3, steps: int = 3
) -> dict[str, float]:
  """Median seconds per call of each (already compiled) ``calls[name]()``, timed in alternation.

  ``rounds`` times, each call ``steps + 1`` times in a row (the first a warm-up, not counted),
  the order reversed every other round, so a change of machine load hits every call alike.
  Each call must return something ``jax.block_until_ready`` accepts.
  """
  times: dict[str, list[float]] = {name: [] for name in calls}
  for round_index in range(rounds):
    names = list(calls) if round_index % 2 == 0 else list(reversed(list(calls)))
    for name in names:
      for i in range(steps + 1):
        start = time.perf_counter()
        jax.block_until_ready(calls[name]())
        if i:
          times[name].append(time.perf_counter() - start)
  return {name: sorted(t)[len(t) // 2] for name, t in times.items()}
