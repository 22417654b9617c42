"""The grain pipeline: determinism, sharding, epochs, resume, eval coverage, workers."""

import json

import numpy as np
import pytest

from codajax.data import augment, dataset_info, eval_loader, load_examples, prepare_dataset, train_loader

NAME = "shapes/train256_test64_seed0"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("tfds"))
  prepare_dataset("shapes", data_dir=directory, num_train=256, num_test=64, seed=0)
  return directory


def _train(data_dir, **kwargs):
  options = (
      dict(global_batch_size=48, seed=0, data_dir=data_dir, process_index=0, process_count=1)
      | kwargs
  )
  return train_loader(NAME, **options)


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def _keys(images):
  """Identity of each (unaugmented) image: its bytes."""
  return [image.tobytes() for image in images]


def _assert_same_batches(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_train_batches_have_the_contracted_types_and_ranges(data_dir):
  batch = next(_train(data_dir))
  assert batch.keys() == {"image", "label"}
  assert batch["image"].shape == (48, 32, 32, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].shape == (48,) and batch["label"].dtype == np.int32
  assert (
      0 <= batch["label"].min()
      and batch["label"].max() < dataset_info(NAME, data_dir=data_dir).num_classes
  )


def test_same_seed_same_batches_other_seed_other_batches(data_dir):
  _assert_same_batches(_take(_train(data_dir), 7), _take(_train(data_dir), 7))
  other = next(_train(data_dir, seed=1))
  assert not np.array_equal(next(_train(data_dir))["label"], other["label"])


def test_every_epoch_is_a_new_permutation_without_the_last_partial_batch(data_dir):
  loader = _train(
      data_dir, augment=False, split="train"
  )  # (the default is "train.fit", without validation)
  assert loader.batches_per_epoch == 256 // 48 == 5
  all_images = set(_keys(load_examples(NAME, "train", data_dir=data_dir)["image"]))
  epochs = [[key for batch in _take(loader, 5) for key in _keys(batch["image"])] for _ in range(3)]
  for epoch in epochs:
    assert len(epoch) == len(set(epoch)) == 240 and set(epoch) <= all_images
  assert epochs[0] != epochs[1] != epochs[2] and set(epochs[0]) != set(epochs[1])


def test_augmentation_is_a_padded_crop_or_flip_of_the_same_examples(data_dir):
  plain, augmented = next(_train(data_dir, augment=False)), next(_train(data_dir))
  np.testing.assert_array_equal(plain["label"], augmented["label"])
  changed = 0
  for original, out in zip(plain["image"], augmented["image"]):
    padded = np.pad(original, ((4, 4), (4, 4), (0, 0)))
    candidates = [padded[top : top + 32, left : left + 32] for top in range(9) for left in range(9)]
    assert any(np.array_equal(out, c) or np.array_equal(out, c[:, ::-1]) for c in candidates)
    changed += not np.array_equal(out, original)
  assert changed > 24


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_shards_are_disjoint_cover_and_rebuild_the_global_batch(data_dir, process_count):
  single = _take(_train(data_dir), 6)
  shards = [
      _take(_train(data_dir, process_index=p, process_count=process_count), 6)
      for p in range(process_count)
  ]
  for step, global_batch in enumerate(single):
    parts = [shard[step] for shard in shards]
    assert all(part["image"].shape[0] == 48 // process_count for part in parts)
    for key in ("image", "label"):
      np.testing.assert_array_equal(
          np.concatenate([part[key] for part in parts]), global_batch[key]
      )
  plain = [
      _take(
          _train(
              data_dir, augment=False, split="train", process_index=p, process_count=process_count
          ),
          5,
      )
      for p in range(process_count)
  ]
  per_process = [{key for batch in shard for key in _keys(batch["image"])} for shard in plain]
  assert sum(len(keys) for keys in per_process) == len(set().union(*per_process)) == 240


def test_resume_mid_epoch_and_across_epochs_yields_the_same_batches(data_dir):
  original = _train(data_dir)
  _take(original, 3)
  state = json.loads(json.dumps(original.get_state()))
  assert json.dumps(_train(data_dir, seed=np.int64(0), global_batch_size=np.int64(48)).get_state())
  assert all(isinstance(value, (int, str)) for value in state.values())
  expected = _take(original, 6)  # crosses the epoch boundary after batch 5
  _assert_same_batches(_take(_train(data_dir, start_state=state), 6), expected)
  resumed = _train(data_dir)
  _take(resumed, 1)
  resumed.set_state(state)
  _assert_same_batches(_take(resumed, 6), expected)


def test_resume_on_another_number_of_processes(data_dir):
  original = _train(data_dir)
  _take(original, 4)
  state = original.get_state()
  expected = next(original)
  halves = [
      next(_train(data_dir, process_index=p, process_count=2, start_state=state)) for p in range(2)
  ]
  np.testing.assert_array_equal(
      np.concatenate([half["image"] for half in halves]), expected["image"]
  )


def test_a_state_from_another_loader_is_rejected(data_dir):
  state = _train(data_dir).get_state()
  with pytest.raises(ValueError, match="seed"):
    _train(data_dir, seed=1, start_state=state)
  with pytest.raises(ValueError, match="global_batch_size"):
    _train(data_dir, global_batch_size=32).set_state(state)
  with pytest.raises(ValueError, match="next_batch"):
    _train(data_dir).set_state(state | {"next_batch": -1})


def test_bad_batch_sizes_are_errors(data_dir):
  with pytest.raises(ValueError, match="multiple of the number of processes"):
    _train(data_dir, global_batch_size=50, process_count=4)
  with pytest.raises(ValueError, match="fewer than one global batch"):
    _train(data_dir, global_batch_size=512)
  with pytest.raises(ValueError, match="process_index"):
    _train(data_dir, process_index=2, process_count=2)


@pytest.mark.parametrize("global_batch_size, process_count", [(48, 2), (100, 4), (16, 1)])
def test_eval_sees_every_example_once_in_order_with_masks(
    data_dir, global_batch_size, process_count
):
  reference = load_examples(NAME, "test", data_dir=data_dir)
  shards = [
      list(
          eval_loader(
              NAME,
              global_batch_size=global_batch_size,
              data_dir=data_dir,
              process_index=p,
              process_count=process_count,
          )
      )
      for p in range(process_count)
  ]
  num_batches = -(-64 // global_batch_size)
  assert [len(shard) for shard in shards] == [num_batches] * process_count
  merged = {
      key: np.concatenate(
          [part[key] for step in range(num_batches) for part in (s[step] for s in shards)]
      )
      for key in ("image", "label", "object_mask", "valid")
  }
  assert merged["valid"].dtype == bool and merged["valid"].sum() == 64
  np.testing.assert_array_equal(merged["valid"], np.arange(num_batches * global_batch_size) < 64)
  for key in ("image", "label", "object_mask"):
    np.testing.assert_array_equal(merged[key][merged["valid"]], reference[key])
  assert merged["object_mask"].dtype == np.uint8 and merged["object_mask"].shape[1:] == (32, 32)


def test_eval_state_resumes_the_pass(data_dir):
  loader = eval_loader(
      NAME, global_batch_size=16, data_dir=data_dir, process_index=0, process_count=1
  )
  assert loader.batches_per_epoch == 4
  next(loader)
  state = loader.get_state()
  rest = list(loader)
  resumed = eval_loader(
      NAME, global_batch_size=16, data_dir=data_dir, process_index=0, process_count=1
  )
  resumed.set_state(state)
  _assert_same_batches(list(resumed), rest)
  assert len(rest) == 3


def test_worker_processes_give_the_same_batches_and_states(data_dir):
  expected = _take(_train(data_dir), 7)
  with _train(data_dir, worker_count=2) as loader:
    got = _take(loader, 4)
    state = loader.get_state()
    got += _take(loader, 3)
  _assert_same_batches(got, expected)
  _assert_same_batches(_take(_train(data_dir, start_state=state), 3), expected[4:])
  with eval_loader(
      NAME,
      global_batch_size=24,
      data_dir=data_dir,
      worker_count=2,
      process_index=0,
      process_count=1,
  ) as loader:
    _assert_same_batches(
        list(loader),
        list(
            eval_loader(
                NAME, global_batch_size=24, data_dir=data_dir, process_index=0, process_count=1
            )
        ),
    )


def test_load_examples_by_index(data_dir):
  every = load_examples(NAME, "test", data_dir=data_dir)
  assert every["image"].shape == (64, 32, 32, 3) and every["label"].dtype == np.int32
  some = load_examples(NAME, "test", data_dir=data_dir, indices=[5, 0, 5])
  np.testing.assert_array_equal(some["image"], every["image"][[5, 0, 5]])
  np.testing.assert_array_equal(some["object_mask"], every["object_mask"][[5, 0, 5]])
  assert load_examples(NAME, "test", data_dir=data_dir, indices=[])["image"].shape == (0, 32, 32, 3)
  with pytest.raises(IndexError, match=r"\[0, 64\)"):
    load_examples(NAME, "test", data_dir=data_dir, indices=[64])


def test_process_defaults_come_from_jax(data_dir):
  loader = train_loader(NAME, global_batch_size=8, seed=0, data_dir=data_dir)
  assert next(loader)["image"].shape[0] == 8  # jax.process_count() == 1 here


def test_embedded_datasets_prepare_themselves_in_the_default_data_dir(tmp_path, monkeypatch):
  monkeypatch.setenv("CODAJAX_DATA_DIR", str(tmp_path))
  spec = dataset_info("shapes/train20_test10_seed1")
  assert spec.split_sizes == {"train": 20, "test": 10}
  assert (tmp_path / "codajax_shapes" / "train20_test10_seed1").is_dir()


def test_digits_train_augmentation_shifts_without_flipping(tmp_path):
  spec = dataset_info("digits", data_dir=str(tmp_path))
  plain = next(
      train_loader(
          "digits",
          global_batch_size=32,
          seed=0,
          data_dir=str(tmp_path),
          augment=False,
          process_index=0,
          process_count=1,
      )
  )
  out = next(
      train_loader(
          "digits",
          global_batch_size=32,
          seed=0,
          data_dir=str(tmp_path),
          process_index=0,
          process_count=1,
      )
  )
  assert out["image"].shape == (32, *spec.image_shape)
  prep = augment.small_preprocessing(spec.image_shape, flip=False)
  for original, augmented in zip(plain["image"], out["image"]):
    padded = np.pad(original, ((prep.crop_padding,) * 2, (prep.crop_padding,) * 2, (0, 0)))
    shifts = [padded[t : t + 16, l : l + 16] for t in range(5) for l in range(5)]
    assert any(np.array_equal(augmented, shift) for shift in shifts)
