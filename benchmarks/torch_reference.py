"""The authors' algorithm in PyTorch beside codajax, in one process: train-step img/s and parity.

    pip install torch==2.13.0        # or: pip install -e '.[torch]'
    python benchmarks/torch_reference.py --arch 9L-S --batches 4,8 --steps 3

A port of the reference CoDA layer as the authors' code implements it (two convolutions, the
dynamic weights materialised as ``(B, P, D, H', W')``, ``F.unfold`` patches, the squashing norm,
sum pooling, ``/T + b``, BCE on one-hot targets, Adam) with the reference's parameter names, so
its ``state_dict`` loads through :func:`codajax.convert.from_reference_state_dict`. Prints one
JSON line per (implementation, batch) with img/s, then the codajax / reference ratio per batch
and the largest difference of their evidence (logit − bias) on the same weights and images,
relative to the largest evidence (parity).

Only for timing on the machine at hand: the authors' code itself is not vendored here.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F

from codajax.convert import from_reference_state_dict
from codajax.models import ARCHITECTURES, get_model
from codajax.nn import DEFAULT_LOGIT_BIAS
from common import compile_and_time, emit, throughput_record
from dau_forms import make_train_step


class _WeightMod(torch.nn.Module):
  """``weighting_f = [B conv (no bias), A 1x1 conv (bias beta)]``, as the reference names them."""

  def __init__(
      self, channels: int, features: int, rank: int, kernel: int, stride: int, padding: int
  ):
    super().__init__()
    self.weighting_f = torch.nn.Sequential(
        torch.nn.Conv2d(channels, rank, kernel, stride, padding, bias=False),
        torch.nn.Conv2d(rank, channels * kernel * kernel * features, 1),
    )


class ReferenceDAUConv(torch.nn.Module):
  """One CoDA layer computed the reference's way: (B, C, H, W) -> (B, D, H', W')."""

  def __init__(
      self, channels: int, features: int, rank: int, kernel: int, stride: int, padding: int
  ):
    super().__init__()
    self.features, self.kernel, self.stride, self.padding = features, kernel, stride, padding
    self.weight_mod = _WeightMod(channels, features, rank, kernel, stride, padding)

  def forward(self, a: torch.Tensor) -> torch.Tensor:
    v = self.weight_mod.weighting_f(a)  # (B, P·D, H', W')
    batch, _, height, width = v.shape
    w = v.view(batch, -1, self.features, height, width)  # q = p·D + d
    patches = F.unfold(a, self.kernel, padding=self.padding, stride=self.stride)
    patches = patches.view(batch, -1, 1, height, width)  # (B, P, 1, H', W')
    u = (patches * w).sum(1)
    norm_sq = (w * w).sum(1)
    return u * norm_sq.sqrt() / (1 + norm_sq)  # u / ((1 + n²) / n)


class ReferenceCoDANet(torch.nn.Module):
  """``Sequential`` of reference CoDA layers on ``[x, 1 − x]``, sum pooling, ``/T + b``."""

  def __init__(self, arch: str):
    super().__init__()
    spec = ARCHITECTURES[arch]
    channels, layers = 2 * spec.image_channels, []
    for layer in spec.layers:
      layers.append(
          ReferenceDAUConv(
              channels, layer.features, layer.rank, layer.kernel_size, layer.stride, layer.padding
          )
      )
      channels = layer.features
    self.layers = torch.nn.Sequential(*layers)
    self.temperature = spec.temperature
    self.num_classes = spec.layers[-1].features

  def forward(self, images: torch.Tensor) -> torch.Tensor:
    out = self.layers(torch.cat([images, 1 - images], 1))
    return out.sum((2, 3)) / self.temperature + DEFAULT_LOGIT_BIAS


def time_reference(
    model: ReferenceCoDANet, images: torch.Tensor, labels: torch.Tensor, steps: int, warmup: int = 1
) -> float:
  """Median seconds of one Adam step of the BCE loss (the reference's training step)."""
  optimizer = torch.optim.Adam(model.parameters(), lr=2.5e-4)
  targets = F.one_hot(labels, model.num_classes).float()
  times = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    optimizer.zero_grad()
    F.binary_cross_entropy_with_logits(model(images), targets).backward()
    optimizer.step()
    if images.is_cuda:
      torch.cuda.synchronize()
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--arch", default="9L-S")
  parser.add_argument("--batches", default="8", help="comma-separated batch sizes")
  parser.add_argument("--steps", type=int, default=3)
  args = parser.parse_args()

  torch.manual_seed(0)
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  reference = ReferenceCoDANet(args.arch)
  state_dict = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
  reference.to(device)
  model = get_model(args.arch)
  params = from_reference_state_dict(state_dict, args.arch)["params"]
  size = ARCHITECTURES[args.arch].image_size

  for batch in map(int, args.batches.split(",")):
    rng = np.random.default_rng(batch)
    images = rng.uniform(size=(batch, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, model.num_classes, batch)
    images_t = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(device)
    with torch.no_grad():
      reference_logits = reference(images_t).cpu().numpy()
    codajax_logits = np.asarray(model.apply({"params": params}, jnp.asarray(images)))
    # Logits are b + evidence with |evidence| << |b| at initialisation: compare the evidence.
    evidence = reference_logits - DEFAULT_LOGIT_BIAS
    parity = float(
        np.abs(evidence - (codajax_logits - DEFAULT_LOGIT_BIAS)).max() / np.abs(evidence).max()
    )

    reference_s = time_reference(
        reference, images_t, torch.from_numpy(labels).to(device), args.steps
    )
    emit(
        {
            "name": f"{args.arch}/train/reference_pytorch",
            "batch": batch,
            "img_per_s": round(batch / reference_s, 3),
            "step_ms": round(1e3 * reference_s, 1),
            "torch": torch.__version__,
            "torch_device": str(device),
            "torch_threads": torch.get_num_threads(),
        }
    )
    tx = optax.adam(2.5e-4)
    timing = compile_and_time(
        make_train_step(model, tx),
        (jax.tree.map(jnp.array, params), tx.init(params)),
        jnp.asarray(images),
        jnp.asarray(labels),
        steps=args.steps,
    )
    record = throughput_record(f"{args.arch}/train/codajax_implicit", batch, timing)
    emit(record)
    emit(
        {
            "name": f"{args.arch}/train/codajax_over_reference_pytorch",
            "batch": batch,
            "ratio": round(record["img_per_s"] * reference_s / batch, 2),
            "evidence_max_relative_difference": parity,
        }
    )


if __name__ == "__main__":
  main()
