"""Dataset names -> TFDS builders, their preprocessing, and preparation.

Names: ``digits``, ``shapes`` (``shapes/train{N}_test{M}_seed{S}`` for other
sizes), ``cifar10``, ``imagenet100`` (= ``imagenet_folder/first100``),
``imagenet_folder`` (= ``imagenet_folder/all``; ``imagenet_folder/first{K}`` for
other subsets), ``tiny_imagenet``, and any other TFDS dataset prepared in
array_record format in the data directory (e.g. ``imagenet2012``).
Embedded datasets (``digits``, ``shapes``) are prepared on first use; every
other dataset must be prepared with ``python -m codajax.data.prepare``.

Remote data directories (``gs://bucket/tfds``): a dataset is prepared in a local staging
folder and uploaded (``dataset_info.json`` last: TFDS counts it as prepared only then).
Its description is read from the bucket; its array_record files, which the array_record
reader opens only on a local file system, are mirrored once per host into
``$CODAJAX_CACHE_DIR/datasets/gs/BUCKET/PATH`` (default ``~/.cache/codajax``) and read there.

Validation splits. Model selection (the evaluation during training, ``best/``) uses a
validation split, never the test split. Datasets without one get it carved from their
training data: a fixed permutation (seed ``VALIDATION_SEED``) of the ``train`` indices puts
the first ``V`` into ``"train.validation"`` and the rest into ``"train.fit"`` (both in stored
order). ``V`` is 200 for digits (1,237 fit / 200 validation), 10 % of the training images
for shapes (18,000 / 2,000 for the default config) and cifar10 (45,000 / 5,000),
and ``ceil(2 %)`` of the training images for ImageNet folders, Tiny ImageNet and TFDS
datasets whose only held-out split is their test split. TFDS datasets with both a
``validation`` and a ``test`` split use them as they are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from codajax import storage
from codajax.data import augment, errors
from codajax.data.builders import cifar10, digits, image_folder, shapes

DATA_DIR_ENV = "CODAJAX_DATA_DIR"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What a model and a trainer need to know about a dataset.

  Attributes:
    name: canonical name (e.g. ``"shapes/train20000_test2000_seed0"``).
    num_classes: number of labels K.
    image_shape: (H, W, C) of the loaders' images (after the eval transform).
    split_sizes: number of examples per stored split (``size(split)`` also knows carved ones).
    has_object_mask: whether examples carry a per-pixel ``object_mask`` (H, W).
    train_split: the split ``train_loader`` reads by default (``"train.fit"`` when the
      validation split is carved from ``train``).
    test_split: the split ``eval_loader`` reads by default (reported test numbers).
    validation_split: the split model selection reads (``"train.validation"`` when carved).
  """

  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  split_sizes: dict[str, int]
  has_object_mask: bool
  train_split: str
  test_split: str
  validation_split: str = ""

  def size(self, split: str) -> int:
    """Examples in ``split``: a stored one (``split_sizes``) or a carved one."""
    if split in (FIT_SPLIT, CARVED_VALIDATION_SPLIT):
      num_train = self.split_sizes["train"]
      num_validation = validation_size(self.name.partition("/")[0], num_train)
      return num_validation if split == CARVED_VALIDATION_SPLIT else num_train - num_validation
    return self.split_sizes[split]


# Carved validation splits (see the module docstring).
VALIDATION_SEED = 20210601
FIT_SPLIT = "train.fit"
CARVED_VALIDATION_SPLIT = "train.validation"
VALIDATION_FRACTION = 0.02  # ImageNet folders, Tiny ImageNet, generic TFDS datasets


def validation_size(base: str, num_train: int) -> int:
  """Examples carved from ``num_train`` training examples into the validation split of ``base``."""
  if num_train < 2:
    raise ValueError(
        f"{base}: {num_train} training examples are too few to carve a validation split."
    )
  if base == "digits":
    size = 200
  else:
    size = math.ceil(num_train * (0.1 if base in ("shapes", "cifar10") else VALIDATION_FRACTION))
  return min(max(size, 1), num_train - 1)


def carved_indices(num_train: int, num_validation: int) -> tuple[np.ndarray, np.ndarray]:
  """``(fit, validation)`` sorted int64 indices into ``train``: disjoint, covering ``[0, num_train)``.

  Deterministic: the first ``num_validation`` of a fixed permutation (seed ``VALIDATION_SEED``).
  """
  order = np.random.default_rng([VALIDATION_SEED, num_train]).permutation(num_train)
  return np.sort(order[num_validation:]), np.sort(order[:num_validation])


class SubsetSource(Sequence):
  """Rows ``indices`` of a data source, as a data source (picklable for grain)."""

  def __init__(self, source: Sequence[dict[str, Any]], indices: np.ndarray):
    self.source, self.indices = source, np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index):
    return self.source[int(self.indices[index])]

  def __getitems__(self, indices):
    return self.source.__getitems__([int(self.indices[i]) for i in indices])


@dataclasses.dataclass(frozen=True)
class _Family:
  """A dataset codajax builds itself."""

  builder_cls: type[tfds.core.GeneratorBasedBuilder]
  preprocessing: augment.Preprocessing
  test_split: str
  embedded: bool = False
  parse_config: Callable[[str], tfds.core.BuilderConfig] | None = None
  default_config: str | None = None
  manual_hint: str | None = None  # what --manual_dir must hold
  url: str | None = None  # archive --download fetches
  has_object_mask: bool = False


_FAMILIES: dict[str, _Family] = {
    "digits": _Family(
        digits.CodajaxDigits,
        augment.small_preprocessing((16, 16, 1), flip=False),
        test_split="test",
        embedded=True,
    ),
    "shapes": _Family(
        shapes.CodajaxShapes,
        augment.small_preprocessing((32, 32, 3), flip=True),
        test_split="test",
        embedded=True,
        parse_config=shapes.parse_shapes_config,
        default_config=shapes.DEFAULT_CONFIG.name,
        has_object_mask=True,
    ),
    "cifar10": _Family(
        cifar10.CodajaxCifar10,
        augment.small_preprocessing((32, 32, 3), flip=True),
        test_split="test",
        manual_hint=f"DIR_WITH_{cifar10.ARCHIVE_NAME}",
        url=cifar10.ARCHIVE_URL,
    ),
    "imagenet_folder": _Family(
        image_folder.CodajaxImagenetFolder,
        augment.imagenet_preprocessing(),
        test_split="validation",
        parse_config=image_folder.parse_image_folder_config,
        default_config="all",
        manual_hint="IMAGENET_ROOT_WITH_train_AND_val",
    ),
    "tiny_imagenet": _Family(
        image_folder.CodajaxTinyImagenet,
        augment.small_preprocessing((64, 64, 3), flip=True),
        test_split="validation",
        manual_hint="DIR_WITH_tiny-imagenet-200",
        url=image_folder.TINY_IMAGENET_URL,
    ),
}
_ALIASES = {"imagenet100": "imagenet_folder/first100"}
KNOWN_NAMES = ("digits", "shapes", "cifar10", "imagenet100", "imagenet_folder", "tiny_imagenet")


CACHE_DIR_ENV = "CODAJAX_CACHE_DIR"
_MIRRORED: dict[str, tfds.core.DatasetBuilder] = {}


def mirror_root(data_dir: str) -> str:
  """The local folder mirroring the remote ``data_dir`` (``gs://b/p`` -> ``CACHE/datasets/gs/b/p``)."""
  cache = os.environ.get(CACHE_DIR_ENV) or os.path.expanduser("~/.cache/codajax")
  scheme, _, rest = data_dir.partition("://")
  return storage.join(cache, "datasets", scheme, *rest.strip("/").split("/"))


def _relative_to_root(builder: tfds.core.DatasetBuilder, root: str) -> str:
  """``builder.data_dir`` relative to its data directory ``root`` (``codajax_digits/1.0.0``)."""
  return os.fspath(builder.data_dir)[len(os.fspath(storage.path(root)).rstrip("/")) + 1 :]


def _mirrored_builder(
    name: str, builder: tfds.core.DatasetBuilder, data_dir: str
) -> tfds.core.DatasetBuilder:
  """The builder of ``name`` on this host's local mirror of its prepared files in ``data_dir``."""
  remote = os.fspath(builder.data_dir)
  if remote not in _MIRRORED:
    root = mirror_root(data_dir)
    storage.mirror(
        remote, storage.join(root, _relative_to_root(builder, data_dir)), last="dataset_info.json"
    )
    _MIRRORED[remote] = builder_for(name, root)
  return _MIRRORED[remote]


def _upload(local: tfds.core.DatasetBuilder, staging: str, data_dir: str) -> None:
  """Copies the prepared ``local`` builder's files from ``staging`` into ``data_dir``."""
  storage.copy_tree(
      local.data_dir,
      storage.join(data_dir, _relative_to_root(local, staging)),
      last="dataset_info.json",
  )


def default_data_dir() -> str:
  """``$CODAJAX_DATA_DIR`` if set, else ``~/tensorflow_datasets``."""
  return os.environ.get(DATA_DIR_ENV) or os.path.expanduser("~/tensorflow_datasets")


@dataclasses.dataclass(frozen=True)
class ResolvedDataset:
  """A dataset name bound to its TFDS builder, feature keys and preprocessing."""

  name: str
  builder: tfds.core.DatasetBuilder
  preprocessing: augment.Preprocessing
  image_key: str
  label_key: str
  mask_key: str | None
  train_split: str
  test_split: str
  validation_split: str = ""
  remote_data_dir: str | None = None  # a gs:// data_dir: files read from a local mirror

  def _reader(self) -> tfds.core.DatasetBuilder:
    """The builder whose files are read (a local mirror for a remote data directory)."""
    if self.remote_data_dir is None:
      return self.builder
    return _mirrored_builder(self.name, self.builder, self.remote_data_dir)

  def _carved(self) -> tuple[np.ndarray, np.ndarray]:
    num_train = int(self.builder.info.splits["train"].num_examples)
    return carved_indices(num_train, validation_size(self.name.partition("/")[0], num_train))

  def source(self, split: str) -> Sequence[dict[str, Any]]:
    """Random-access TFDS data source of ``split`` (any TFDS split string, e.g. ``"train[:10%]"``,
    or a carved split ``"train.fit"`` / ``"train.validation"``).

    Reads that fail (a corrupt array_record file) raise ``DatasetCorruptError`` naming the
    files and the command that prepares them again.
    """
    if split in (FIT_SPLIT, CARVED_VALIDATION_SPLIT):
      fit, validation = self._carved()
      return SubsetSource(self.source("train"), fit if split == FIT_SPLIT else validation)
    where = f"{self.name}[{split}]"
    builder = self._reader()
    try:
      source = builder.as_data_source(split=split)
    except (IndexError, KeyError, ValueError) as error:
      if isinstance(error, errors.DatasetCorruptError) or "split" in str(error).lower():
        raise
      raise _corrupt_error(where, builder, error) from None
    except Exception as error:  # noqa: BLE001  (array_record raises RuntimeError and others)
      raise _corrupt_error(where, builder, error) from None
    return CheckedSource(source, where, _corrupt_message(where, builder))

  def spec(self) -> DatasetSpec:
    """The ``DatasetSpec`` of this dataset."""
    info = self.builder.info
    label = info.features[self.label_key]
    if not isinstance(label, tfds.features.ClassLabel):
      raise ValueError(
          f"{self.name}: feature {self.label_key!r} is not a ClassLabel, so the classes are unknown."
      )
    sizes = {split: int(split_info.num_examples) for split, split_info in info.splits.items()}
    return DatasetSpec(
        name=self.name,
        num_classes=label.num_classes,
        image_shape=tuple(self.preprocessing.image_shape),
        split_sizes=sizes,
        has_object_mask=self.mask_key is not None,
        train_split=self.train_split,
        test_split=self.test_split,
        validation_split=self.validation_split,
    )


class CheckedSource(Sequence):
  """A TFDS data source whose failed reads raise ``DatasetCorruptError`` (picklable for grain)."""

  def __init__(self, source: Sequence[dict[str, Any]], where: str, message: str):
    self.source, self.where, self.message = source, where, message

  def __len__(self) -> int:
    return len(self.source)

  def _checked(self, read, arg):
    try:
      return read(arg)
    except IndexError:
      raise
    except Exception as error:  # noqa: BLE001  (array_record raises RuntimeError and others)
      raise errors.DatasetCorruptError(
          f"{self.message} ({type(error).__name__}: {str(error)[:200]})"
      ) from None

  def __getitem__(self, index):
    return self._checked(self.source.__getitem__, index)

  def __getitems__(self, indices):
    return self._checked(self.source.__getitems__, indices)


def _prepare_again_command(name: str, data_dir: str) -> str:
  """The command that prepares ``name`` again (embedded datasets: rebuilt on first use)."""
  base, _ = _split_name(name)
  family = _FAMILIES.get(base)
  if family is not None and family.embedded:
    return "(it is rebuilt on first use)"
  return "then: " + str(_not_prepared_error(name, data_dir)).split("\n")[1].strip()


def _corrupt_message(where: str, builder: tfds.core.DatasetBuilder) -> str:
  folder = os.fspath(builder.data_dir)
  files = (
      sorted(f for f in os.listdir(folder) if "array_record" in f) if os.path.isdir(folder) else []
  )
  data_dir = os.fspath(builder.data_dir_root) if hasattr(builder, "data_dir_root") else folder
  name = where.split("[")[0]
  return (
      f"Cannot read {where}: the prepared files in {folder} ({', '.join(files) or 'none'}) are "
      f"corrupt. Delete {folder} and prepare it again {_prepare_again_command(name, data_dir)}"
  )


def _corrupt_error(where: str, builder, error: BaseException) -> errors.DatasetCorruptError:
  return errors.DatasetCorruptError(
      f"{_corrupt_message(where, builder)} ({type(error).__name__}: {str(error)[:200]})"
  )


def _split_name(name: str) -> tuple[str, str | None]:
  name = _ALIASES.get(name, name)
  base, _, config = name.partition("/")
  return base, config or None


def _family_builder(
    base: str, family: _Family, config: str | None, data_dir: str
) -> tfds.core.DatasetBuilder:
  if config is not None and family.parse_config is None:
    raise errors.UnknownDatasetError(f"Dataset {base!r} has no configs, got {base}/{config}.")
  if family.parse_config is None:
    return family.builder_cls(data_dir=data_dir, file_format="array_record")
  parsed = family.parse_config(config or family.default_config)
  # TFDS wants predefined configs by name and accepts other (parameterised) ones as objects.
  predefined = parsed.name in family.builder_cls.builder_configs
  return family.builder_cls(
      data_dir=data_dir, file_format="array_record", config=parsed.name if predefined else parsed
  )


def canonical_name(name: str) -> str:
  """``"imagenet100"`` -> ``"imagenet_folder/first100"``, ``"shapes"`` -> ``"shapes/train20000_test2000_seed0"``."""
  base, config = _split_name(name)
  family = _FAMILIES.get(base)
  if family is None or family.parse_config is None:
    return name
  return f"{base}/{family.parse_config(config or family.default_config).name}"


def _prepared_names(data_dir: str) -> list[str]:
  """Dataset folders in ``data_dir``, codajax ones by their public name (``codajax_digits`` -> ``digits``)."""
  public = {family.builder_cls.name: base for base, family in _FAMILIES.items()}
  folders = [
      name for name in storage.listdir(data_dir) if storage.isdir(storage.join(data_dir, name))
  ]
  return sorted({public.get(folder, folder) for folder in folders if folder != "downloads"})


def _unknown_dataset_error(name: str, data_dir: str) -> errors.UnknownDatasetError:
  prepared = _prepared_names(data_dir)
  return errors.UnknownDatasetError(
      f"Unknown dataset {name!r}. Known datasets: {', '.join(KNOWN_NAMES)}, or any TFDS dataset prepared in "
      f"array_record format in the data directory {data_dir} (found there: {', '.join(prepared) or 'none'})."
  )


def _not_prepared_error(name: str, data_dir: str) -> errors.DatasetNotPreparedError:
  base, config = _split_name(name)
  family = _FAMILIES.get(base)
  extra: list[str] = []
  if (
      family is not None
      and family.parse_config is not None
      and config is not None
      and name not in _ALIASES
  ):
    extra = _config_flags(base, family.parse_config(config))
  if family is None:
    command = errors.prepare_command(name, data_dir=data_dir, extra=["--download"])
    hint = (
        "(TFDS builders with Image features need TensorFlow to prepare: then run `tfds build "
        f"{name} --data_dir {data_dir} --file_format array_record` where TensorFlow is installed.)"
    )
  else:
    # Downloads land in data_dir/downloads/manual (local data directories; a gs:// one is
    # prepared in a local staging folder, so it names the source folder instead).
    manual_dir = (
        os.path.join(data_dir, "downloads", "manual", base)
        if family.url and not storage.is_remote(data_dir)
        else family.manual_hint
    )
    command = errors.prepare_command(
        name if name in _ALIASES else base, data_dir=data_dir, manual_dir=manual_dir, extra=extra
    )
    hint = f"(or add --download to fetch {family.url})" if family.url else ""
  return errors.DatasetNotPreparedError(
      f"Dataset {name!r} is not prepared in {data_dir}. Prepare it with:\n  {command}\n{hint}".rstrip()
  )


def _config_flags(base: str, config: tfds.core.BuilderConfig) -> list[str]:
  if base == "shapes":
    return [
        "--num_train",
        str(config.num_train),
        "--num_test",
        str(config.num_test),
        "--seed",
        str(config.seed),
    ]
  if base == "imagenet_folder" and config.num_classes is not None:
    return ["--classes", str(config.num_classes)]
  return []


def builder_for(
    name: str, data_dir: str | os.PathLike[str] | None = None
) -> tfds.core.DatasetBuilder:
  """The TFDS builder of ``name`` in ``data_dir`` (prepared or not); raises ``UnknownDatasetError``."""
  data_dir = os.fspath(data_dir) if data_dir is not None else default_data_dir()
  base, config = _split_name(name)
  if base in _FAMILIES:
    return _family_builder(base, _FAMILIES[base], config, data_dir)
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise _unknown_dataset_error(name, data_dir) from None


def _generic_keys(builder: tfds.core.DatasetBuilder) -> tuple[str, str]:
  keys = builder.info.supervised_keys
  if isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(key, str) for key in keys):
    return keys
  features = builder.info.features
  if "image" in features and "label" in features:
    return "image", "label"
  raise ValueError(
      f"{builder.name}: cannot tell the image and label features apart "
      f"(no (image, label) supervised_keys, features {list(features)})."
  )


def _generic_preprocessing(
    builder: tfds.core.DatasetBuilder, image_key: str
) -> augment.Preprocessing:
  shape = tuple(builder.info.features[image_key].shape)
  if len(shape) == 3 and None not in shape and max(shape[:2]) <= 64:
    return augment.small_preprocessing(shape, flip=shape[2] == 3)
  return augment.imagenet_preprocessing()


def split_crop(name: str) -> tuple[str, int | None]:
  """``"imagenet_folder@224"`` -> ``("imagenet_folder", 224)``; a name without ``@`` -> ``(name, None)``.

  The suffix sets the square crop of a resized (``imagenet``-kind) dataset, e.g. 224 for the
  released B-cos models (the CoDA papers' crop, the default, is 240). It changes only the
  preprocessing: the prepared data are the same.
  """
  base, at, crop = name.rpartition("@")
  if not at:
    return name, None
  if not crop.isdigit() or int(crop) <= 0:
    raise ValueError(
        f"Dataset {name!r}: the text after '@' must be a positive crop size, e.g. "
        f"imagenet_folder@224."
    )
  return base, int(crop)


def _with_crop(prep: augment.Preprocessing, crop: int | None, name: str) -> augment.Preprocessing:
  """``prep`` with its square crop set to ``crop`` (None: unchanged)."""
  if crop is None:
    return prep
  if prep.kind != "imagenet":
    raise ValueError(
        f"Dataset {name!r}: '@{crop}' sets the crop of resized datasets "
        f"(imagenet_folder, ...); this one is used at its stored size "
        f"{prep.image_shape[0]}x{prep.image_shape[1]}."
    )
  if crop > prep.resize:
    raise ValueError(
        f"Dataset {name!r}: the crop {crop} exceeds the resized shorter side {prep.resize}."
    )
  return dataclasses.replace(prep, image_shape=(crop, crop, prep.image_shape[2]))


def resolve(name: str, data_dir: str | os.PathLike[str] | None = None) -> ResolvedDataset:
  """Binds ``name`` to its prepared data in ``data_dir``; prepares embedded datasets on first use.

  ``name`` may end in ``@CROP`` (see :func:`split_crop`), e.g. ``imagenet_folder@224``.

  Raises:
    UnknownDatasetError: the name is neither a codajax nor a TFDS dataset.
    DatasetNotPreparedError: the dataset must be prepared first; the message holds the command.
  """
  full_name = name
  name, crop = split_crop(name)
  data_dir = os.fspath(data_dir) if data_dir is not None else default_data_dir()
  base, _ = _split_name(name)
  family = _FAMILIES.get(base)
  try:
    builder = builder_for(name, data_dir)
    prepared = builder.is_prepared()
  except (errors.UnknownDatasetError, errors.DatasetNotPreparedError):
    raise
  except Exception as error:  # noqa: BLE001  (TFDS raises ParseError, JSONDecodeError, ...)
    folder = os.path.join(data_dir, family.builder_cls.name if family else base)
    infos = (
        sorted(
            storage.join(folder, name)
            for name in storage.files_under(folder)
            if name.rsplit("/", 1)[-1] == "dataset_info.json"
        )
        if storage.isdir(folder)
        else []
    )
    raise errors.DatasetCorruptError(
        f"Cannot read the description of dataset {name!r} ({', '.join(infos) or folder}): "
        f"{type(error).__name__}: {str(error)[:200].rstrip('.')}. The prepared dataset is corrupt: delete "
        f"{os.path.dirname(infos[0]) if infos else folder} and prepare it again "
        f"{_prepare_again_command(name, data_dir)}"
    ) from None
  if not prepared:
    if family is None or not family.embedded:
      raise _not_prepared_error(name, data_dir)
    if storage.is_remote(data_dir):
      with tempfile.TemporaryDirectory(prefix="codajax-prepare-") as staging:
        local = builder_for(name, staging)
        _download_and_prepare(local, manual_dir=None)
        _upload(local, staging, data_dir)
      builder = builder_for(name, data_dir)
    else:
      _download_and_prepare(builder, manual_dir=None)
      builder = builder_for(name, data_dir)  # its info as written (maybe by another process)
  if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
    raise errors.DatasetNotPreparedError(
        f"Dataset {name!r} in {builder.data_dir} is stored as {builder.info.file_format.value}; random access "
        f"needs array_record. Prepare it again in array_record format:\n  "
        f"{errors.prepare_command(name, data_dir=data_dir)}"
    )
  remote = data_dir if storage.is_remote(data_dir) else None
  if family is not None:
    return ResolvedDataset(
        name=canonical_name(name),
        builder=builder,
        preprocessing=_with_crop(family.preprocessing, crop, full_name),
        image_key="image",
        label_key="label",
        mask_key="object_mask" if family.has_object_mask else None,
        train_split=FIT_SPLIT,
        test_split=family.test_split,
        validation_split=CARVED_VALIDATION_SPLIT,
        remote_data_dir=remote,
    )
  image_key, label_key = _generic_keys(builder)
  splits = builder.info.splits
  test_split = next((split for split in ("test", "validation") if split in splits), "test")
  own_validation = test_split == "test" and "validation" in splits
  return ResolvedDataset(
      name=name,
      builder=builder,
      preprocessing=_with_crop(_generic_preprocessing(builder, image_key), crop, full_name),
      image_key=image_key,
      label_key=label_key,
      mask_key=None,
      train_split="train" if own_validation else FIT_SPLIT,
      test_split=test_split,
      validation_split="validation" if own_validation else CARVED_VALIDATION_SPLIT,
      remote_data_dir=remote,
  )


def family_splits(name: str) -> dict[str, str] | None:
  """The train / validation / test splits of a codajax dataset family (``"imagenet_folder@224"``,
  ``"cifar10"``, ...) without reading its data; None for another TFDS dataset."""
  family = _FAMILIES.get(_split_name(split_crop(name)[0])[0])
  if family is None:
    return None
  return {"train": FIT_SPLIT, "validation": CARVED_VALIDATION_SPLIT, "test": family.test_split}


def dataset_info(name: str, *, data_dir: str | os.PathLike[str] | None = None) -> DatasetSpec:
  """The ``DatasetSpec`` of ``name`` (prepares embedded datasets on first use)."""
  return resolve(name, data_dir).spec()


@contextlib.contextmanager
def _preparing(builder: tfds.core.DatasetBuilder):
  """Holds an exclusive ``flock`` on the dataset version's lock file (beside its folder) for
  the block: one process prepares a dataset at a time; another waits for it (said once)."""
  import fcntl

  version_dir = os.fspath(builder.data_dir)
  folder = os.path.dirname(version_dir)
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, f".{os.path.basename(version_dir)}.prepare.lock"), "a") as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      print(f"codajax: waiting for another process preparing {version_dir}", flush=True)
      fcntl.flock(lock, fcntl.LOCK_EX)
    yield


def _download_and_prepare(builder: tfds.core.DatasetBuilder, manual_dir: str | None) -> None:
  """Prepares ``builder`` in array_record format, unless another process (that held the
  preparation lock first) already did."""
  with _preparing(builder):
    if builder.is_prepared():
      return
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False),
    )


def _fetch(url: str, directory: str, *, extract_zip: bool) -> None:
  """Downloads ``url`` into ``directory`` (keeping its file name), unzipping it if asked."""
  os.makedirs(directory, exist_ok=True)
  target = os.path.join(directory, os.path.basename(url))
  with tempfile.NamedTemporaryFile(dir=directory, delete=False) as partial:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310  (user asked for --download)
      shutil.copyfileobj(response, partial)
  os.replace(partial.name, target)
  if extract_zip:
    with zipfile.ZipFile(target) as archive:
      archive.extractall(directory)


def _named_config(
    base: str,
    config: str | None,
    *,
    num_train: int | None,
    num_test: int | None,
    seed: int | None,
    classes: int | None,
) -> str | None:
  """The config name selected by a name suffix and/or the shapes/imagenet flags (they must agree)."""
  family = _FAMILIES[base]
  if base == "shapes" and (num_train, num_test, seed) != (None, None, None):
    default = shapes.DEFAULT_CONFIG
    flagged = shapes.shapes_config(
        num_train if num_train is not None else default.num_train,
        num_test if num_test is not None else default.num_test,
        seed if seed is not None else default.seed,
    ).name
  elif base == "imagenet_folder" and classes is not None:
    flagged = image_folder.image_folder_config(classes).name
  else:
    if (num_train, num_test, seed, classes) != (None, None, None, None):
      raise ValueError(
          f"--num_train/--num_test/--seed apply to shapes and --classes to imagenet_folder; "
          f"not to {base}."
      )
    return config
  if config is not None and family.parse_config(config).name != flagged:
    raise ValueError(f"The name says config {config!r} but the flags say {flagged!r}.")
  return flagged


def prepare_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    manual_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    num_train: int | None = None,
    num_test: int | None = None,
    seed: int | None = None,
    classes: int | None = None,
) -> DatasetSpec:
  """Prepares ``name`` in array_record format in ``data_dir`` (a no-op when already prepared).

  Args:
    name: a dataset name (see the module docstring).
    data_dir: where the dataset is written (default ``default_data_dir()``).
    manual_dir: folder with the source archive/tree (cifar10, imagenet_folder, tiny_imagenet,
      or a TFDS dataset with manual data).
    download: allow network downloads (cifar10 and tiny_imagenet archives into ``manual_dir``
      or ``DATA_DIR/downloads/manual/NAME``; TFDS datasets via TFDS). Off by default.
    num_train, num_test, seed: ``shapes`` sizes and seed.
    classes: ``imagenet_folder``: keep the first K sorted classes (``imagenet100`` is K = 100).

  Returns:
    The ``DatasetSpec``; ``spec.name`` is the name to load it by.
  """
  data_dir = os.fspath(data_dir) if data_dir is not None else default_data_dir()
  manual_dir = os.fspath(manual_dir) if manual_dir is not None else None
  if storage.is_remote(data_dir):
    return _prepare_remote(
        name,
        data_dir,
        manual_dir=manual_dir,
        download=download,
        num_train=num_train,
        num_test=num_test,
        seed=seed,
        classes=classes,
    )
  base, config = _split_name(name)
  family = _FAMILIES.get(base)
  if family is None:
    if (num_train, num_test, seed, classes) != (None, None, None, None):
      raise ValueError(
          f"--num_train/--num_test/--seed/--classes do not apply to the TFDS dataset {name!r}."
      )
    builder = builder_for(name, data_dir)
    if not builder.is_prepared():
      if not download and manual_dir is None:
        raise errors.DatasetNotPreparedError(
            f"Preparing the TFDS dataset {name!r} may download data; allow it with --download (or give the "
            f"manually downloaded files with --manual_dir):\n  "
            f"{errors.prepare_command(name, data_dir=data_dir, extra=['--download'])}"
        )
      _download_and_prepare(builder, manual_dir)
    return resolve(name, data_dir).spec()

  if name in _ALIASES and classes not in (None, 100):
    raise ValueError(
        f"{name} is the first 100 classes; use imagenet_folder --classes {classes} instead."
    )
  config = _named_config(
      base, config, num_train=num_train, num_test=num_test, seed=seed, classes=classes
  )
  canonical = base if config is None else f"{base}/{config}"
  builder = builder_for(canonical, data_dir)
  if not builder.is_prepared():
    if family.url is not None and download and not _has_manual_data(base, manual_dir):
      manual_dir = manual_dir or os.path.join(data_dir, "downloads", "manual", base)
      _fetch(family.url, manual_dir, extract_zip=family.url.endswith(".zip"))
    command_name, command_flags = (
        (name, [])
        if name in _ALIASES
        else (base, _config_flags(base, builder.builder_config) if family.parse_config else [])
    )
    _check_manual_data(base, manual_dir, data_dir=data_dir, name=command_name, extra=command_flags)
    if base == "cifar10":
      cifar10.check_archive(cifar10.find_archive(manual_dir, data_dir=data_dir))
    with _removed_on_failure(
        data_dir, [os.path.join(data_dir, builder.name), os.path.join(data_dir, "downloads")]
    ):
      _download_and_prepare(builder, manual_dir)
  return resolve(canonical, data_dir).spec()


def _prepare_remote(name: str, data_dir: str, **options) -> DatasetSpec:
  """``prepare_dataset`` into a remote ``data_dir``: prepared in a local staging folder (and
  ``manual_dir``/``--download`` as for a local one), then uploaded; a no-op if already there."""
  if all(options.get(k) is None for k in ("num_train", "num_test", "seed", "classes")):
    with contextlib.suppress(errors.UnknownDatasetError):
      if builder_for(name, data_dir).is_prepared():
        return resolve(name, data_dir).spec()
  with tempfile.TemporaryDirectory(prefix="codajax-prepare-") as staging:
    spec = prepare_dataset(name, data_dir=staging, **options)
    _upload(builder_for(spec.name, staging), staging, data_dir)
  return resolve(spec.name, data_dir).spec()


@contextlib.contextmanager
def _removed_on_failure(data_dir: str, paths: list[str]):
  """Removes the ``paths`` (and ``data_dir``) the block created if it raises: a failed
  preparation leaves no empty or partial dataset folder behind."""
  new = [p for p in [data_dir, *paths] if not os.path.exists(p)]
  try:
    yield
  except BaseException:
    for path in reversed(new):
      shutil.rmtree(path, ignore_errors=True)
    raise


def _has_manual_data(base: str, manual_dir: str | None) -> bool:
  try:
    _check_manual_data(base, manual_dir, data_dir=None, name=base, extra=[])
  except errors.ManualDataNotFoundError:
    return False
  return True


def _check_manual_data(
    base: str, manual_dir: str | None, *, data_dir: str | None, name: str, extra: list[str]
) -> None:
  """Raises ``ManualDataNotFoundError`` naming the prepare command when ``base``'s source data is missing."""
  if base == "cifar10":
    cifar10.find_archive(manual_dir, data_dir=data_dir)
  elif base == "imagenet_folder":
    image_folder.find_imagenet_root(manual_dir, name=name, data_dir=data_dir, extra=extra)
  elif base == "tiny_imagenet":
    image_folder.find_tiny_imagenet_root(manual_dir, data_dir=data_dir)
