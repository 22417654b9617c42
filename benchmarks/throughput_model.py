"""The throughput model on paper: roofline img/s of train step and maps on H100, H200, TPU v5e.

    python benchmarks/throughput_model.py                           # 9L-S, 9L-L: ~35 s on CPU
    python benchmarks/throughput_model.py --archs 9L-S --fit_batches 4,8,16 --compiled  # ~8 min

For each architecture (bfloat16 compute) and program -- the jitted train step (Adam, BCE loss,
``make_train_step``'s jit mode) and the contribution maps of the predicted class
(``explain_jit``) -- XLA's cost analysis gives FLOPs and bytes accessed. The programs are convnets
whose cost is ``const + batch · per_image``: the script fits the line on the first two
``--fit_batches`` and prints the third's relative error (the linearity check), then
extrapolates to ``--batches``. Two corrections and one caveat:

* The programs are costed with the QR loop in its GPU/TPU form (``vmap``), the form an
  accelerator runs (``codajax/nn/dau.py``). XLA counts a while loop's body once, not once per
  trip, so the loop's FLOPs are added from the modified Gram-Schmidt count (``2·P·q²`` per
  ``P × q`` matrix, all layers' ``D`` matrices, once per step) less what XLA counted.
* Bytes: by default those of the lowered (unoptimised, unfused) program: every operation reads
  its operands and writes its result to memory, an upper bound of the HBM traffic. With
  ``--compiled`` the program is also compiled on the CPU and its fused count printed (the CPU's
  fusion, not a GPU's or TPU's; slower: minutes per program).

For each chip (dense bf16 peak, HBM bandwidth: vendor datasheets, constants below) it prints the
roofline bound ``batch / max(FLOPs / peak, bytes / bandwidth)``, the resource that bounds it, and
the img/s at 30 % and 50 % MFU (``frac · peak / FLOPs per image``; ``>`` marks a rate above the
memory roofline, i.e. unreachable with that many bytes), beside the authors' PyTorch code
measured on an H200 (``AUTHORS_H200``).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import jax
import jax.numpy as jnp
import optax

from codajax.explain import explain_jit
from codajax.models import ARCHITECTURES, get_model
from codajax.nn import dau
from codajax import parallel
from codajax.train.step import TrainState, make_train_step

# (dense bfloat16 FLOP/s, HBM bytes/s) per chip, from the vendors' datasheets:
# NVIDIA H100 Tensor Core GPU datasheet, H100 SXM: BF16 Tensor Core 1,979 TFLOPS with sparsity
#   (989 dense), GPU memory bandwidth 3.35 TB/s.
# NVIDIA H200 Tensor Core GPU datasheet, H200 SXM: BF16 Tensor Core 1,979 TFLOPS with sparsity
#   (989 dense), GPU memory bandwidth 4.8 TB/s.
# Google Cloud TPU v5e documentation (system architecture), per chip: 197 TFLOPS bf16 peak
#   compute, 819 GBps HBM2 bandwidth.
CHIPS = {
    "H100 SXM": (989e12, 3.35e12),
    "H200 SXM": (989e12, 4.8e12),
    "TPU v5e": (197e12, 819e9),
}

# The authors' PyTorch code on one H200 (benchmarks/RESULTS.md): {(arch, program): {batch: img/s}}.
AUTHORS_H200 = {
    ("9L-S", "train"): {16: 1059, 64: 1650, 256: 1774, 1024: 1796},
    ("9L-L", "train"): {8: 89, 32: 93},
    ("9L-S", "maps"): {256: 3882},
}


@contextlib.contextmanager
def accelerator_qr_form():
  """Traces the DAU norm's QR loop in its GPU/TPU form (``vmap``) on this CPU host."""
  library = dau._triangular_factors
  dau._triangular_factors = dau._triangular_factors_all_at_once
  try:
    yield
  finally:
    dau._triangular_factors = library


def _cost(stage) -> tuple[float, float]:
  """(FLOPs, bytes accessed) of a lowered or compiled program."""
  cost = stage.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost["flops"]), float(cost["bytes accessed"])


def programs(arch: str) -> dict:
  """``{name: (jitted fn, batch -> argument shapes)}`` of ``arch`` with bfloat16 compute."""
  size = ARCHITECTURES[arch].image_size
  model, tx = get_model(arch, dtype=jnp.bfloat16), optax.adam(1e-3)

  def init():
    params = model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)))["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.key_data(jax.random.key(1)),
    )

  state = jax.eval_shape(init)
  images = lambda b, dtype: jax.ShapeDtypeStruct((b, size, size, 3), dtype)
  train = make_train_step(model, tx, mesh=parallel.make_mesh())
  maps = jax.jit(lambda v, x: explain_jit(model, v, x, None)["contribution_map"])
  return {
      "train": (
          train,
          lambda b: (
              state,
              {"image": images(b, jnp.uint8), "label": jax.ShapeDtypeStruct((b,), jnp.int32)},
          ),
      ),
      "maps": (maps, lambda b: ({"params": state.params}, images(b, jnp.float32))),
  }, state.params


def qr_loop_missing_flops(params) -> tuple[float, int]:
  """FLOPs of one pass of every layer's QR loop that XLA's count leaves out (its while bodies
  counted once), and the number of layers with a QR loop.

  Per layer with tall ``M_d`` (``P = k²C > q = r + 1``): MGS on ``D`` matrices ``P × q`` is
  ``2·P·q²·D``; XLA's count of the same loop (lowered alone) is subtracted.
  """
  missing, layers = 0.0, 0
  for layer in params.values():
    if not isinstance(layer, dict) or "A" not in layer:
      continue
    k, _, c, d, r = layer["A"].shape
    p, q = k * k * c, r + 1
    if p <= q:
      continue
    m = jax.ShapeDtypeStruct((d, p, q), jnp.float32)
    counted, _ = _cost(jax.jit(dau._triangular_factors_all_at_once).lower(m))
    missing += 2.0 * p * q * q * d - counted
    layers += 1
  return missing, layers


def qr_loop_passes(lowered, layers: int) -> float:
  """How many times a program runs every layer's QR loop: calls of the loop in its text / layers."""
  return lowered.as_text().count("call @_triangular_factors_all_at_once") / layers


def dau_intermediate_bytes(arch: str, itemsize: int = 2) -> float:
  """Bytes per image of the layers' widest tensor in the implicit form: the convolution output
  with ``D·(r + 1)`` channels (``A_dᵀx`` and ``w0_d·x`` of every DAU) at each output position,
  in bfloat16. A fused DAU kernel would contract it with ``z`` on chip instead of storing it."""
  size, total = ARCHITECTURES[arch].image_size, 0.0
  for layer in ARCHITECTURES[arch].layers:
    padding = (layer.kernel_size - 1) // 2 if layer.padding is None else layer.padding
    size = (size + 2 * padding - layer.kernel_size) // layer.stride + 1
    total += size * size * layer.features * (layer.rank + 1) * itemsize
  return total


def fit_line(points: dict[int, float]) -> tuple[float, float, float]:
  """``(const, per_image, relative error)``: the line through the first two ``{batch: cost}``
  points and its error at the third."""
  (b1, c1), (b2, c2), (b3, c3) = list(points.items())[:3]
  per_image = (c2 - c1) / (b2 - b1)
  const = c1 - b1 * per_image
  return const, per_image, abs(const + b3 * per_image - c3) / c3


def roofline_rows(flops: float, nbytes: float, batch: int) -> list[str]:
  rows = []
  for chip, (peak, bandwidth) in CHIPS.items():
    t_flops, t_bytes = flops / peak, nbytes / bandwidth
    bound = batch / max(t_flops, t_bytes)
    at = [frac * peak * batch / flops for frac in (0.3, 0.5)]
    shown = [f"{'>' if rate > bound else ' '}{rate:>9,.0f}" for rate in at]
    resource = "compute" if t_flops >= t_bytes else "memory"
    rows.append(
        f"    {chip:9s} roofline {bound:>9,.0f} img/s ({resource}-bound,"
        f" {flops / nbytes:5.1f} FLOP/B vs ridge {peak / bandwidth:5.0f})"
        f"  30 % MFU {shown[0]}  50 % MFU {shown[1]}"
    )
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--archs", default="9L-S,9L-L")
  parser.add_argument("--programs", default="train,maps")
  parser.add_argument(
      "--fit_batches", default="2,4,32", help="three batches: fit on two, check one"
  )
  parser.add_argument("--batches", default="256,1024", help="batches to extrapolate to")
  parser.add_argument("--compiled", action="store_true", help="also the CPU-compiled byte count")
  args = parser.parse_args()
  fit_batches = [int(b) for b in args.fit_batches.split(",")]
  if len(fit_batches) != 3 or len(set(fit_batches)) != 3:
    parser.error("--fit_batches takes three different batch sizes")
  print(f"jax {jax.__version__}; cost analysis on {jax.devices()[0].device_kind}; bfloat16 compute")
  for arch in args.archs.split(","):
    with accelerator_qr_form():
      arch_programs, params = programs(arch)
      missing, qr_layers = qr_loop_missing_flops(params)
      for name in args.programs.split(","):
        fn, shapes = arch_programs[name]
        start = time.perf_counter()
        costs, fused = {}, {}
        for b in fit_batches:
          lowered = fn.lower(*shapes(b))
          costs[b] = _cost(lowered)
          passes = qr_loop_passes(lowered, qr_layers)
          if args.compiled:
            fused[b] = _cost(lowered.compile())[1]
        f_const, f_img, f_error = fit_line({b: c[0] for b, c in costs.items()})
        f_const += passes * missing
        byte_lines = {"unfused": fit_line({b: c[1] for b, c in costs.items()})}
        if fused:
          byte_lines["CPU-fused"] = fit_line(fused)
        error = max(f_error, *(line[2] for line in byte_lines.values()))
        seconds = time.perf_counter() - start
        print(
            f"\n{arch} {name}: {f_img / 1e9:.3f} GFLOP per image + {f_const / 1e9:.2f} GFLOP per"
            f" step (QR loop: {passes:g} pass(es), {passes * missing / 1e9:.2f} GFLOP added);"
            f" linear fits on batches {fit_batches[0]},{fit_batches[1]} off by {error:.1e}"
            f" (relative) at {fit_batches[2]} ({seconds:.0f} s)"
        )
        for kind, (b_const, b_img, _) in byte_lines.items():
          print(
              f"  bytes, {kind}: {b_img / 1e9:.3f} GB per image + {b_const / 1e9:.2f} GB per step"
          )
        if name == "train":
          print(
              f"  the DAU convolutions' D·(r+1)-channel outputs: "
              f"{dau_intermediate_bytes(arch) / 1e9:.3f} GB per image (bf16, forward)"
          )
        for batch in (int(b) for b in args.batches.split(",")):
          flops = f_const + batch * f_img
          for kind, (b_const, b_img, _) in byte_lines.items():
            nbytes = b_const + batch * b_img
            print(
                f"  batch {batch}, {kind} bytes: {flops / batch / 1e9:.3f} GFLOP,"
                f" {nbytes / batch / 1e9:.3f} GB per image"
            )
            for row in roofline_rows(flops, nbytes, batch):
              print(row)
        measured = AUTHORS_H200.get((arch, name))
        if measured:
          shown = ", ".join(f"batch {b}: {v:,} img/s" for b, v in measured.items())
          print(f"  authors' PyTorch code, H200 (measured): {shown}")


if __name__ == "__main__":
  main()
