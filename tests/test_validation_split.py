"""Validation splits carved from the training data, and model selection that never reads test."""

import numpy as np
import pytest

from codajax.data import catalog, load_examples
from configs import digits as digits_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def test_digits_validation_is_carved_from_train_disjoint_and_deterministic(data_dir):
  spec = catalog.dataset_info("digits", data_dir=data_dir)
  assert (spec.train_split, spec.validation_split, spec.test_split) == (
      "train.fit",
      "train.validation",
      "test",
  )
  assert (spec.size("train.fit"), spec.size("train.validation"), spec.size("test")) == (
      1237,
      200,
      360,
  )
  fit, validation = catalog.carved_indices(1437, 200)
  assert len(np.intersect1d(fit, validation)) == 0
  np.testing.assert_array_equal(np.union1d(fit, validation), np.arange(1437))
  again = catalog.carved_indices(1437, 200)
  np.testing.assert_array_equal(again[1], validation)
  # The carved rows are the train rows at those indices; none of them is a test row.
  train = load_examples("digits", "train", data_dir=data_dir)
  held_out = load_examples("digits", "train.validation", data_dir=data_dir)
  fitted = load_examples("digits", "train.fit", data_dir=data_dir)
  np.testing.assert_array_equal(held_out["image"], train["image"][validation])
  np.testing.assert_array_equal(fitted["label"], train["label"][fit])
  test = load_examples("digits", "test", data_dir=data_dir)
  test_rows = {row.tobytes() for row in test["image"]}
  train_rows = {row.tobytes() for row in train["image"]}
  held_rows = {row.tobytes() for row in held_out["image"]}
  assert held_rows <= train_rows
  # Index-level disjointness from test: the validation images that also occur in test are
  # exact duplicates inside scikit-learn's digits (they occur in train as often).
  assert (
      len(held_rows & test_rows)
      <= len(train_rows & test_rows) * len(held_rows) / len(train_rows) + 5
  )
  # A fresh resolve gives the same split.
  np.testing.assert_array_equal(
      load_examples("digits", "train.validation", data_dir=data_dir)["image"], held_out["image"]
  )


@pytest.mark.parametrize(
    "base,num_train,expected",
    [
        ("digits", 1437, 200),
        ("cifar10", 50000, 5000),
        ("shapes", 20000, 2000),
        ("imagenet_folder", 126689, 2534),
        ("tiny_imagenet", 100000, 2000),
        ("imagenet_folder", 4, 1),
    ],
)
def test_validation_sizes_are_the_documented_ones(base, num_train, expected):
  assert catalog.validation_size(base, num_train) == expected


def test_best_checkpoint_is_chosen_on_validation_when_validation_and_test_disagree(
    data_dir, tmp_path, monkeypatch
):
  from codajax.train import loop, restore

  calls = []
  validation_accuracy = iter([0.9, 0.5, 0.1])  # validation prefers the first eval (step 2)
  test_accuracy = iter([0.7, 0.3])  # final model, then the best-on-validation model

  def stub_evaluate(eval_step, params, loader, mesh, parallel_mode="jit"):
    split = loader.get_state()["split"]
    calls.append(split)
    accuracy = next(validation_accuracy if split == "train.validation" else test_accuracy)
    return {
        "eval/accuracy": accuracy,
        "eval/top5": 1.0,
        "eval/loss": 1.0 - accuracy,
        "eval/per_class_accuracy": [accuracy] * 10,
        "eval/count": 200 if split != "test" else 360,
    }

  monkeypatch.setattr(loop, "evaluate", stub_evaluate)
  config = digits_config.get_config("smoke")
  config.data_dir, config.model.name, config.model.temperature = data_dir, "tiny-3L", 10.0
  config.batch_size, config.num_epochs, config.max_steps = 600, 3, 0  # 2 steps an epoch
  config.eval_every_epochs = 1  # evals at steps 2, 4, 6
  workdir = str(tmp_path / "run")
  metrics = loop.train_and_evaluate(config, workdir)
  assert calls == ["train.validation"] * 3 + ["test", "test"]  # test is read only at the end
  assert restore(workdir, which="best").step == 2
  assert (
      metrics["test/best_step"],
      metrics["test/accuracy_best"],
      metrics["test/accuracy_final"],
  ) == (2, 0.3, 0.7)
  assert metrics["eval/accuracy"] == 0.1 and metrics["step"] == 6
