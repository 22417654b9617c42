"""Prepares a dataset in array_record format: ``python -m codajax.data.prepare NAME [flags]``.

Examples::

    python -m codajax.data.prepare digits
    python -m codajax.data.prepare shapes --num_train 20000 --num_test 2000 --seed 0
    python -m codajax.data.prepare cifar10 --manual_dir DIR_WITH_ARCHIVE --data_dir DATA_DIR
    python -m codajax.data.prepare imagenet100 --manual_dir IMAGENET_ROOT --data_dir DATA_DIR
    python -m codajax.data.prepare imagenet_folder --classes 10 --manual_dir IMAGENET_ROOT
    python -m codajax.data.prepare tiny_imagenet --manual_dir DIR_WITH_tiny-imagenet-200
    python -m codajax.data.prepare imagenet2012 --manual_dir DIR   # any TFDS dataset

Nothing is downloaded unless ``--download`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from codajax.data import catalog, errors


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """Parses the command line (``argv`` without the program name)."""
  parser = argparse.ArgumentParser(
      prog="python -m codajax.data.prepare",
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("name", help=f"dataset: {', '.join(catalog.KNOWN_NAMES)} or a TFDS name")
  parser.add_argument(
      "--data_dir",
      default=None,
      help=f"TFDS data directory (default ${catalog.DATA_DIR_ENV} or ~/tensorflow_datasets)",
  )
  parser.add_argument(
      "--manual_dir", default=None, help="folder holding the source archive or image tree"
  )
  parser.add_argument("--download", action="store_true", help="allow downloading the source data")
  parser.add_argument("--num_train", type=int, default=None, help="shapes: training images")
  parser.add_argument("--num_test", type=int, default=None, help="shapes: test images")
  parser.add_argument("--seed", type=int, default=None, help="shapes: generation seed")
  parser.add_argument(
      "--classes", type=int, default=None, help="imagenet_folder: keep the first K sorted wnids"
  )
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  """Prepares the dataset, prints its ``DatasetSpec`` as JSON; returns the exit status."""
  args = parse_args(argv)
  from absl import logging as absl_logging  # TFDS warns about folders it is about to create

  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    spec = catalog.prepare_dataset(
        args.name,
        data_dir=args.data_dir,
        manual_dir=args.manual_dir,
        download=args.download,
        num_train=args.num_train,
        num_test=args.num_test,
        seed=args.seed,
        classes=args.classes,
    )
  except (
      errors.UnknownDatasetError,
      errors.DatasetNotPreparedError,
      errors.ManualDataNotFoundError,
      ValueError,
  ) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  except Exception as error:  # noqa: BLE001  (one line for anything else, e.g. a full disk)
    print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
    return 2
  print(
      json.dumps(
          {
              "name": spec.name,
              "num_classes": spec.num_classes,
              "image_shape": spec.image_shape,
              "split_sizes": spec.split_sizes,
          }
      )
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
