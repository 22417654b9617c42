"""Every TFDS builder on small generated inputs (tmp data dirs, no network, no TensorFlow)."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from codajax.data import augment, catalog, dataset_info, eval_loader, load_examples, prepare_dataset, train_loader
from codajax.data.builders import cifar10, digits, image_folder, shapes


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


# ---------------------------------------------------------------------------------------------- digits


def _reference_upsample_x2(image):
  """Bilinear x2 with half-pixel centres and edge clamping, written out per axis."""
  source = (np.arange(2 * image.shape[0]) + 0.5) / 2 - 0.5
  low = np.clip(np.floor(source).astype(int), 0, image.shape[0] - 1)
  high = np.clip(low + 1, 0, image.shape[0] - 1)
  weight = np.clip(source - np.floor(source), 0, 1)
  weight[source < 0] = 0
  rows = image[low] * (1 - weight)[:, None] + image[high] * weight[:, None]
  return rows[:, low] * (1 - weight) + rows[:, high] * weight


def test_digits_are_upsampled_bilinearly_to_16x16():
  from sklearn.datasets import load_digits

  images, labels = digits.upsampled_digits()
  raw = load_digits()
  assert images.shape == (1797, 16, 16, 1) and images.dtype == np.uint8
  np.testing.assert_array_equal(labels, raw.target)
  for index in (0, 500, 1796):
    expected = _reference_upsample_x2(raw.images[index] * 255 / 16)
    np.testing.assert_allclose(images[index, :, :, 0], expected, atol=0.51)
  assert images.max() == 255 and images.min() == 0


def test_digits_builder_keeps_the_fixed_split_in_order(data_dir):
  spec = dataset_info("digits", data_dir=data_dir)
  assert spec.split_sizes == {"train": 1437, "test": 360}
  assert (spec.num_classes, spec.image_shape, spec.has_object_mask) == (10, (16, 16, 1), False)
  images, labels = digits.upsampled_digits()
  test = load_examples("digits", "test", data_dir=data_dir, indices=[0, 1, 359])
  np.testing.assert_array_equal(test["image"], images[[1437, 1438, 1796]])
  np.testing.assert_array_equal(test["label"], labels[[1437, 1438, 1796]])


# ---------------------------------------------------------------------------------------------- shapes


def test_generate_shapes_is_deterministic_balanced_and_masked():
  first = shapes.generate_shapes(500, seed=3, split="train")
  np.testing.assert_array_equal(
      first["image"], shapes.generate_shapes(500, seed=3, split="train")["image"]
  )
  assert not np.array_equal(
      first["image"], shapes.generate_shapes(500, seed=4, split="train")["image"]
  )
  assert not np.array_equal(
      first["image"], shapes.generate_shapes(500, seed=3, split="test")["image"]
  )
  assert first["image"].shape == (500, 32, 32, 3) and first["image"].dtype == np.uint8
  assert first["object_mask"].shape == (500, 32, 32) and set(np.unique(first["object_mask"])) == {
      0,
      1,
  }
  assert np.bincount(first["label"], minlength=10).tolist() == [50] * 10
  area = first["object_mask"].sum(axis=(1, 2))
  assert area.min() >= 20 and area.max() <= 0.35 * 32 * 32


def test_shapes_colour_is_no_shortcut_and_objects_stand_out():
  data = shapes.generate_shapes(2000, seed=0, split="train")
  mask = data["object_mask"].astype(bool)
  image = data["image"].astype(np.float32)
  object_colour = np.stack([image[i][mask[i]].mean(axis=0) for i in range(2000)])
  background_colour = np.stack([image[i][~mask[i]].mean(axis=0) for i in range(2000)])
  per_class = np.stack([object_colour[data["label"] == c].mean(axis=0) for c in range(10)])
  assert np.ptp(per_class, axis=0).max() < 25  # grey levels: the class does not set the colour
  assert np.median(np.linalg.norm(object_colour - background_colour, axis=1)) > 60


def test_shapes_classes_differ_in_form():
  u, v = np.meshgrid(np.linspace(-1, 1, 41), np.linspace(-1, 1, 41))
  masks = np.stack([shapes._class_mask(label, u, v) for label in range(10)]).reshape(10, -1)
  differing = (masks[:, None] != masks[None]).mean(axis=-1)
  assert differing[~np.eye(10, dtype=bool)].min() > 0.05


def test_shapes_config_names_round_trip():
  assert shapes.parse_shapes_config("train256_test64_seed7").num_test == 64
  assert shapes.shapes_config(20000, 2000, 0).name == shapes.DEFAULT_CONFIG.name
  with pytest.raises(ValueError, match="train<N>_test<M>_seed<S>"):
    shapes.parse_shapes_config("small")
  assert catalog.canonical_name("shapes") == "shapes/train20000_test2000_seed0"
  assert catalog.canonical_name("imagenet100") == "imagenet_folder/first100"
  assert catalog.canonical_name("imagenet_folder") == "imagenet_folder/all"
  assert catalog.canonical_name("cifar10") == "cifar10"


def test_shapes_builder_stores_the_generated_examples_in_order(data_dir):
  spec = prepare_dataset("shapes", data_dir=data_dir, num_train=64, num_test=16, seed=5)
  assert spec.name == "shapes/train64_test16_seed5" and spec.has_object_mask
  assert spec.split_sizes == {"train": 64, "test": 16}
  expected = shapes.generate_shapes(16, seed=5, split="test")
  stored = load_examples(spec.name, "test", data_dir=data_dir)
  for key in ("image", "object_mask", "label"):
    np.testing.assert_array_equal(stored[key], expected[key])


# ---------------------------------------------------------------------------------------------- cifar10


def write_cifar_archive(directory, per_batch=4, num_test=3):
  """A CIFAR-10 archive of 5 * per_batch train and num_test test images: example k has R=k, G=100+k%50, B=200."""

  def split(keys):
    pixels = np.stack([keys % 256, 100 + keys % 50, np.full_like(keys, 200)], axis=-1).astype(
        np.uint8
    )
    return np.broadcast_to(pixels[:, None, None], (len(keys), 32, 32, 3)), keys % 10

  cifar10.write_archive(
      os.path.join(directory, cifar10.ARCHIVE_NAME),
      split(np.arange(5 * per_batch)),
      split(np.arange(5 * per_batch, 5 * per_batch + num_test)),
  )


def test_cifar10_builder_reads_the_python_archive_in_order(tmp_path, data_dir):
  write_cifar_archive(str(tmp_path))
  spec = prepare_dataset("cifar10", data_dir=data_dir, manual_dir=str(tmp_path))
  assert spec.split_sizes == {"train": 20, "test": 3}
  assert (spec.num_classes, spec.image_shape) == (10, (32, 32, 3))
  train = load_examples("cifar10", "train", data_dir=data_dir)
  np.testing.assert_array_equal(
      train["image"][:, 5, 7],
      np.stack([np.arange(20), 100 + np.arange(20), np.full(20, 200)], axis=1),
  )
  np.testing.assert_array_equal(train["label"], np.arange(20) % 10)
  test = load_examples("cifar10", "test", data_dir=data_dir)
  np.testing.assert_array_equal(test["image"][:, 0, 0, 0], [20, 21, 22])
  batch = next(
      train_loader(
          "cifar10",
          global_batch_size=8,
          seed=0,
          data_dir=data_dir,
          process_index=0,
          process_count=1,
      )
  )
  assert batch["image"].shape == (8, 32, 32, 3)


# ---------------------------------------------------------------------------------------------- image folders


def _write_jpeg(path, width, height, value):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  colour = np.zeros((height, width, 3), np.uint8)
  colour[..., 0] = value
  colour[: height // 2, :, 1] = 255 - value
  Image.fromarray(colour).save(path, format="JPEG", quality=95)


def _mean_red(image):
  return float(np.asarray(image)[..., 0].mean())


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
  """train/ with 4 wnids (3 images each, mixed sizes) and val/ with class folders (2 each)."""
  root = tmp_path_factory.mktemp("imagenet")
  for label, wnid in enumerate(["n03000000", "n01000000", "n04000000", "n02000000"]):
    for index in range(3):
      size = (300, 260) if index % 2 else (260, 300)
      _write_jpeg(
          str(root / "train" / wnid / f"{wnid}_{index}.JPEG"), *size, value=10 * index + 50 * label
      )
    for index in range(2):
      _write_jpeg(str(root / "val" / wnid / f"val_{index}.JPEG"), 280, 280, value=5 + 50 * label)
  (root / "train" / "n01000000" / "notes.txt").write_text("not an image")
  return str(root)


def test_imagenet_folder_keeps_imagefolder_order_and_decodes_at_read_time(imagenet_root, data_dir):
  spec = prepare_dataset("imagenet_folder", data_dir=data_dir, manual_dir=imagenet_root)
  assert spec.name == "imagenet_folder/all"
  assert (spec.num_classes, spec.image_shape, spec.split_sizes) == (
      4,
      (240, 240, 3),
      {"train": 12, "validation": 8},
  )
  builder = tfds.builder("codajax_imagenet_folder/all", data_dir=data_dir)
  assert builder.info.features["label"].names == [
      "n01000000",
      "n02000000",
      "n03000000",
      "n04000000",
  ]
  record = builder.as_data_source("train")[0]
  assert (
      isinstance(record["image"], bytes)
      and record["file_name"] == b"train/n01000000/n01000000_0.JPEG"
  )
  train = load_examples("imagenet_folder", "train", data_dir=data_dir)
  assert train["image"].shape == (12, 240, 240, 3)
  np.testing.assert_array_equal(train["label"], np.repeat(np.arange(4), 3))
  # wnid n01000000 was written with label index 1 -> red = 10 * index + 50.
  assert [round(_mean_red(image) / 10) for image in train["image"][:3]] == [5, 6, 7]


def test_a_crop_suffix_sets_the_crop_of_a_resized_dataset(imagenet_root, data_dir):
  prepare_dataset("imagenet_folder", data_dir=data_dir, manual_dir=imagenet_root)
  default = load_examples("imagenet_folder", "validation", data_dir=data_dir)["image"]
  cropped = load_examples("imagenet_folder@224", "validation", data_dir=data_dir)["image"]
  # Both resize the 280-px images to 256; the 240 crop starts at 8, the 224 crop at 16.
  assert (default.shape, cropped.shape) == ((8, 240, 240, 3), (8, 224, 224, 3))
  np.testing.assert_array_equal(cropped, default[:, 8:232, 8:232])
  spec = dataset_info("imagenet_folder@224", data_dir=data_dir)
  assert (spec.name, spec.image_shape) == ("imagenet_folder/all", (224, 224, 3))
  with pytest.raises(ValueError, match="resized datasets"):
    catalog.resolve("digits@8", data_dir)
  with pytest.raises(ValueError, match="positive crop size"):
    catalog.resolve("imagenet_folder@big", data_dir)
  with pytest.raises(ValueError, match="exceeds"):
    catalog.resolve("imagenet_folder@300", data_dir)


def test_imagenet_folder_class_subset_relabels_the_first_k_wnids(imagenet_root, data_dir):
  spec = prepare_dataset("imagenet_folder", data_dir=data_dir, manual_dir=imagenet_root, classes=2)
  assert spec.name == "imagenet_folder/first2"
  assert (spec.num_classes, spec.split_sizes) == (2, {"train": 6, "validation": 4})
  assert dataset_info("imagenet_folder/first2", data_dir=data_dir).num_classes == 2
  batches = list(
      eval_loader(
          "imagenet_folder/first2",
          global_batch_size=4,
          data_dir=data_dir,
          process_index=0,
          process_count=1,
      )
  )
  assert [batch["label"].tolist() for batch in batches] == [[0, 0, 1, 1]]
  assert batches[0]["image"].shape == (4, 240, 240, 3)


def test_imagenet100_is_the_first_100_sorted_wnids(tmp_path, data_dir):
  root = tmp_path / "imagenet101"
  for index in range(101):
    wnid = f"n{index:08d}"
    _write_jpeg(str(root / "train" / wnid / "a.JPEG"), 20, 16, value=index)
    _write_jpeg(str(root / "val" / wnid / "b.JPEG"), 16, 20, value=index)
  own_dir = str(tmp_path / "tfds")
  spec = prepare_dataset("imagenet100", data_dir=own_dir, manual_dir=str(root))
  assert (spec.name, spec.num_classes, spec.split_sizes) == (
      "imagenet_folder/first100",
      100,
      {"train": 100, "validation": 100},
  )
  assert dataset_info("imagenet100", data_dir=own_dir) == spec


def test_flat_val_labels_from_kaggle_csv(tmp_path):
  root = tmp_path / "kaggle"
  for wnid, value in (("n01000000", 40), ("n02000000", 200)):
    _write_jpeg(str(root / "train" / wnid / "t.JPEG"), 32, 32, value)
  _write_jpeg(str(root / "val" / "ILSVRC2012_val_00000002.JPEG"), 32, 32, 200)
  _write_jpeg(str(root / "val" / "ILSVRC2012_val_00000001.JPEG"), 32, 32, 40)
  _write_jpeg(str(root / "val" / "ILSVRC2012_val_00000003.JPEG"), 32, 32, 200)
  (root / image_folder.KAGGLE_VAL_LABELS).write_text(
      "ImageId,PredictionString\nILSVRC2012_val_00000001,n01000000 1 2 3 4\n"
      "ILSVRC2012_val_00000002,n02000000 1 2 3 4 n02000000 5 6 7 8\nILSVRC2012_val_00000003,n02000000 0 0 1 1\n"
  )
  wnids, files = image_folder.imagenet_split_files(str(root), None)
  assert wnids == ["n01000000", "n02000000"]
  assert [(os.path.basename(path), label) for path, label in files["validation"]] == [
      ("ILSVRC2012_val_00000001.JPEG", 0),
      ("ILSVRC2012_val_00000002.JPEG", 1),
      ("ILSVRC2012_val_00000003.JPEG", 1),
  ]


def test_flat_val_with_official_names_uses_the_shipped_ilsvrc2012_labels(tmp_path, data_dir):
  root = tmp_path / "official"
  # The official labels of val images 1, 2 and 3 are n01751748, n09193705, n02105855.
  for wnid in ("n01751748", "n02105855", "n09193705"):
    _write_jpeg(str(root / "train" / wnid / "t.JPEG"), 32, 32, 0)
  for number in (1, 2, 3):
    _write_jpeg(str(root / "val" / f"ILSVRC2012_val_{number:08d}.JPEG"), 32, 32, 60 * number)
  own_dir = str(tmp_path / "tfds")
  prepare_dataset("imagenet_folder", data_dir=own_dir, manual_dir=str(root))
  val = load_examples("imagenet_folder", "validation", data_dir=own_dir)
  np.testing.assert_array_equal(val["label"], [0, 1, 2])  # sorted by label: files 1, 3, 2
  assert [round(_mean_red(image) / 60) for image in val["image"]] == [1, 3, 2]


def test_flat_val_without_labels_is_an_error(tmp_path):
  root = tmp_path / "unlabelled"
  _write_jpeg(str(root / "train" / "n01000000" / "t.JPEG"), 8, 8, 0)
  _write_jpeg(str(root / "val" / "holiday.JPEG"), 8, 8, 0)
  with pytest.raises(ValueError, match="LOC_val_solution.csv"):
    image_folder.imagenet_split_files(str(root), None)


def test_tiny_imagenet_from_its_released_layout(tmp_path, data_dir):
  root = tmp_path / "manual" / "tiny-imagenet-200"
  wnids = ["n09000000", "n01000000", "n05000000"]
  (root / "val" / "images").mkdir(parents=True)
  (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
  for label, wnid in enumerate(sorted(wnids)):
    for index in range(2):
      _write_jpeg(
          str(root / "train" / wnid / "images" / f"{wnid}_{index}.JPEG"),
          64,
          64,
          100 * label + index,
      )
  Image.new("L", (64, 64), 90).save(root / "train" / "n05000000" / "images" / "n05000000_2.JPEG")
  annotations = [
      ("val_1.JPEG", "n09000000"),
      ("val_0.JPEG", "n01000000"),
      ("val_2.JPEG", "n01000000"),
  ]
  for file_name, wnid in annotations:
    _write_jpeg(str(root / "val" / "images" / file_name), 64, 64, 30)
  (root / "val" / "val_annotations.txt").write_text(
      "".join(f"{file_name}\t{wnid}\t0\t0\t10\t10\n" for file_name, wnid in annotations)
  )
  spec = prepare_dataset("tiny_imagenet", data_dir=data_dir, manual_dir=str(tmp_path / "manual"))
  assert (spec.num_classes, spec.image_shape, spec.test_split) == (3, (64, 64, 3), "validation")
  assert spec.split_sizes == {"train": 7, "validation": 3}
  train = load_examples("tiny_imagenet", "train", data_dir=data_dir)
  np.testing.assert_array_equal(train["label"], [0, 0, 1, 1, 1, 2, 2])
  grey = train["image"][4]
  assert grey.shape == (64, 64, 3) and np.all(np.abs(grey.astype(int) - 90) <= 2)
  np.testing.assert_array_equal(
      load_examples("tiny_imagenet", "validation", data_dir=data_dir)["label"], [0, 0, 2]
  )


# ---------------------------------------------------------------------------------------------- any TFDS dataset


class CodajaxTestToyDigits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A dataset prepared elsewhere: unknown to this process's TFDS registry, found by name in data_dir."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(
            {
                "pixels": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                "digit": tfds.features.ClassLabel(num_classes=3),
            }
        ),
        supervised_keys=("pixels", "digit"),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(12), "validation": self._generate_examples(5)}

  def _generate_examples(self, count):
    for index in range(count):
      yield index, {"pixels": np.full((8, 8, 1), index, np.uint8), "digit": index % 3}


def test_any_tfds_dataset_prepared_in_array_record_loads_by_name(tmp_path):
  data_dir = str(tmp_path)
  CodajaxTestToyDigits(data_dir=data_dir, file_format="array_record").download_and_prepare()
  spec = dataset_info("codajax_test_toy_digits", data_dir=data_dir)
  assert (spec.num_classes, spec.image_shape, spec.test_split) == (3, (8, 8, 1), "validation")
  assert spec.split_sizes == {"train": 12, "validation": 5}
  batches = list(
      eval_loader(
          "codajax_test_toy_digits",
          global_batch_size=4,
          data_dir=data_dir,
          process_index=0,
          process_count=1,
      )
  )
  np.testing.assert_array_equal(
      np.concatenate([b["image"][b["valid"], 0, 0, 0] for b in batches]), np.arange(5)
  )
  batch = next(
      train_loader(
          "codajax_test_toy_digits",
          global_batch_size=6,
          seed=0,
          data_dir=data_dir,
          process_index=0,
          process_count=1,
      )
  )
  assert batch["image"].shape == (6, 8, 8, 1) and batch["label"].dtype == np.int32


def test_generic_preprocessing_by_image_size():
  assert catalog._generic_preprocessing(
      _FakeBuilder((28, 28, 1)), "image"
  ) == augment.small_preprocessing((28, 28, 1), flip=False)
  assert catalog._generic_preprocessing(_FakeBuilder((None, None, 3)), "image").kind == "imagenet"


class _FakeBuilder:

  def __init__(self, shape):
    self.info = type("Info", (), {"features": {"image": type("Feature", (), {"shape": shape})()}})()


def test_imagenet_folder_skips_and_counts_files_that_do_not_decode(tmp_path, capsys):
  root = tmp_path / "imagenet"
  for label, wnid in enumerate(["n01000000", "n02000000"]):
    for index in range(2):
      _write_jpeg(
          str(root / "train" / wnid / f"{wnid}_{index}.JPEG"), 40, 40, value=60 * label + 10
      )
      _write_jpeg(str(root / "val" / wnid / f"val_{index}.JPEG"), 40, 40, value=60 * label + 10)
  bad = root / "train" / "n01000000"
  (bad / "zero.JPEG").write_bytes(b"")
  (bad / "random.JPEG").write_bytes(np.random.default_rng(0).bytes(2000))
  good = (bad / "n01000000_0.JPEG").read_bytes()
  (bad / "truncated.JPEG").write_bytes(good[: len(good) // 3])
  data_dir = str(tmp_path / "data")
  spec = prepare_dataset("imagenet_folder", data_dir=data_dir, manual_dir=str(root))
  assert spec.split_sizes == {"train": 4, "validation": 4}
  err = capsys.readouterr().err
  assert "train: skipped 3 of 7 image files (2 not decodable, 1 zero-byte)" in err
  for name in ("zero.JPEG", "random.JPEG", "truncated.JPEG"):
    assert name in err
  train = load_examples("imagenet_folder", "train", data_dir=data_dir)  # every stored file decodes
  np.testing.assert_array_equal(train["label"], [0, 0, 1, 1])
