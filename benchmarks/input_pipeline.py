"""Input-pipeline throughput: images/s of ``train_loader``/``eval_loader`` per worker count (JSON lines).

CIFAR-size: a CIFAR-10 archive of random images in the official pickle format
(or the real one with ``--cifar_manual_dir``), prepared with the ``cifar10``
builder: 32x32 uint8 records, pad-crop + flip, batch 256.
ImageNet-size: an ImageFolder tree of generated 500x375 JPEGs (~ImageNet's
typical size), prepared with the ``imagenet_folder`` builder: JPEG decode,
resize 256, crop 240, flip, RandAugment(2, 10) (train) / centre crop (eval), batch 32.
Eval is measured on the train split so that one pass outlasts the measurement.

Each line reports wall-clock images/s and the main process's CPU time per image
(all its threads). With ``worker_count=0`` the latter is the whole cost of an
image, so ``1e6 / main_process_cpu_us_per_image`` is what one fully used core
(one worker) delivers; wall numbers depend on how busy the machine is.

    python benchmarks/input_pipeline.py [--workers 0 1 2] [--seconds 8]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time

import numpy as np
from PIL import Image

from codajax.data import eval_loader, prepare_dataset, train_loader
from codajax.data.builders import cifar10


def write_cifar_archive(directory: str, num_train: int, num_test: int, seed: int = 0) -> None:
  """Writes ``cifar-10-python.tar.gz`` of random images in the official python pickle format."""
  rng = np.random.default_rng(seed)
  split = lambda n: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n))  # noqa: E731
  cifar10.write_archive(
      os.path.join(directory, cifar10.ARCHIVE_NAME), split(num_train), split(num_test)
  )


def photo_like_jpeg(rng: np.random.Generator, width: int, height: int) -> bytes:
  """A JPEG (quality 90) of smooth colour blobs plus mild noise, sized like an ImageNet photo."""
  coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
  image = np.asarray(
      Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.int16
  )
  image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG", quality=90)
  return buffer.getvalue()


def write_image_folder(root: str, num_classes: int, per_class: int, seed: int = 0) -> None:
  """Writes ``root/{train,val}/<wnid>/*.JPEG`` with 500x375 (a quarter portrait 375x500) images."""
  rng = np.random.default_rng(seed)
  for split, count in (("train", per_class), ("val", max(1, per_class // 4))):
    for label in range(num_classes):
      folder = os.path.join(root, split, f"n{label:08d}")
      os.makedirs(folder)
      for index in range(count):
        width, height = (375, 500) if index % 4 == 3 else (500, 375)
        with open(os.path.join(folder, f"img_{index:04d}.JPEG"), "wb") as file:
          file.write(photo_like_jpeg(rng, width, height))


def measure(loader, seconds: float, warmup_batches: int) -> dict[str, float]:
  """Wall images/s of ``loader`` over about ``seconds`` (or until it ends) after ``warmup_batches``,
  and this process's CPU time per image (all its threads; worker processes not included)."""
  for _ in range(warmup_batches):
    next(loader)
  images, batches = 0, 0
  wall, cpu = time.perf_counter(), time.process_time()
  for batch in loader:  # an eval loader may end first
    images += len(batch["label"])
    batches += 1
    if time.perf_counter() - wall >= seconds:
      break
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  return {
      "images_per_s": round(images / wall, 1),
      "main_process_cpu_us_per_image": round(cpu / images * 1e6, 1),
      "batches": batches,
  }


def main() -> None:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--seconds", type=float, default=8.0)
  parser.add_argument(
      "--cifar_manual_dir", default=None, help="folder with the real cifar-10-python.tar.gz"
  )
  parser.add_argument("--cifar_batch", type=int, default=256)
  parser.add_argument("--imagenet_batch", type=int, default=32)
  parser.add_argument("--imagenet_images", type=int, default=2000, help="generated training JPEGs")
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as tmp:
    data_dir = os.path.join(tmp, "data")
    cifar_dir = args.cifar_manual_dir
    if cifar_dir is None:
      cifar_dir = os.path.join(tmp, "cifar")
      os.makedirs(cifar_dir)
      write_cifar_archive(cifar_dir, num_train=50000, num_test=10000)
    start = time.perf_counter()
    prepare_dataset("cifar10", data_dir=data_dir, manual_dir=cifar_dir)
    print(
        json.dumps({"prepare": "cifar10", "seconds": round(time.perf_counter() - start, 2)}),
        flush=True,
    )

    imagenet_dir = os.path.join(tmp, "imagenet")
    start = time.perf_counter()
    write_image_folder(imagenet_dir, num_classes=10, per_class=args.imagenet_images // 10)
    prepare_dataset("imagenet_folder", data_dir=data_dir, manual_dir=imagenet_dir)
    print(
        json.dumps(
            {"prepare": "imagenet_folder", "seconds": round(time.perf_counter() - start, 2)}
        ),
        flush=True,
    )

    cases = [
        ("cifar10", "cifar10", args.cifar_batch),
        ("imagenet", "imagenet_folder", args.imagenet_batch),
    ]
    for size, name, batch in cases:
      for mode in ("train", "eval"):
        for workers in args.workers:
          common = dict(
              global_batch_size=batch,
              data_dir=data_dir,
              worker_count=workers,
              process_index=0,
              process_count=1,
              split="train",
          )
          # eval reads the (larger) train split so that one pass outlasts the measurement.
          loader = (
              train_loader(name, seed=0, **common)
              if mode == "train"
              else eval_loader(name, **common)
          )
          with loader:
            result = measure(loader, args.seconds, warmup_batches=3)
          print(
              json.dumps(
                  {
                      "size": size,
                      "mode": mode,
                      "batch": batch,
                      "worker_count": workers,
                      **result,
                      "cpus": os.cpu_count(),
                      "load_avg_1min": os.getloadavg()[0],
                  }
              ),
              flush=True,
          )


if __name__ == "__main__":
  main()
