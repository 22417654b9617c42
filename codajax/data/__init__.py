"""Datasets and input pipelines: TFDS builders (array_record, no TensorFlow) read with grain.

``dataset_info``, ``train_loader``, ``eval_loader`` and ``load_examples`` take a
dataset name (``digits``, ``shapes``, ``cifar10``, ``imagenet100``,
``imagenet_folder``, ``tiny_imagenet`` or any TFDS dataset prepared in
array_record format) and an optional TFDS ``data_dir``. See ``docs/data.md``.
"""

from codajax.data.catalog import (
    DatasetSpec,
    dataset_info,
    default_data_dir,
    family_splits,
    prepare_dataset,
)
from codajax.data.errors import (
    BadManualDataError,
    DatasetCorruptError,
    DatasetNotPreparedError,
    ManualDataNotFoundError,
    UnknownDatasetError,
)
from codajax.data.pipeline import BatchIterator, eval_loader, load_examples, train_loader

__all__ = [
    "BadManualDataError",
    "BatchIterator",
    "DatasetCorruptError",
    "DatasetNotPreparedError",
    "DatasetSpec",
    "ManualDataNotFoundError",
    "UnknownDatasetError",
    "dataset_info",
    "default_data_dir",
    "family_splits",
    "eval_loader",
    "load_examples",
    "prepare_dataset",
    "train_loader",
]
