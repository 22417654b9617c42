"""The B-cos training configs: every variant validates and builds the B-cos model it names."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import pytest

from codajax.bcos.resnet import BcosResNet
from codajax.train.config import validate_config
from codajax.runs import build_model

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
VARIANTS = {
    "bcos_digits": [None, "smoke"],
    "bcos_shapes": [None, "original", "smoke"],
}


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_validates_and_builds(name):
  module = _load(name)
  for arg in VARIANTS[name]:
    config = module.get_config(arg)
    validate_config(config)
    smoke = arg == "smoke"
    assert (config.max_steps > 0 and config.batch_size <= 8) == smoke, arg
    assert config.model.name == "bcos-resnet-tiny" and config.loss == "bce"
    channels, size = (1, 16) if "digits" in name else (3, 32)
    model = build_model(config, 10, channels)
    assert isinstance(model, BcosResNet)
    assert model.norm == "ln"  # statistics-free: train.py carries no batch statistics
    logits = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x)[0],
        jnp.zeros((2, size, size, channels)),
    )
    assert logits.shape == (2, 10), (name, arg)
  assert module.get_config("original" if "shapes" in name else None).dataset in ("shapes", "digits")
  assert "light" in module.get_config(None).dataset or name == "bcos_digits"


def test_bad_overrides_fail_validation():
  config = _load("bcos_shapes").get_config(None)
  config.model.kwargs = {"widht": 3}
  with pytest.raises(ValueError, match="not accepted"):
    validate_config(config)


def test_a_bcos_norm_kind_chosen_in_the_config_is_trained_and_restored(tmp_path):
  """``model.norm`` is the family's own setting: a B-cos norm kind from a training config
  reaches the model that is trained, and the restored run has it; CoDA settings are refused."""
  from codajax.train import restore, train_and_evaluate

  config = _load("bcos_digits").get_config("smoke")
  config.data_dir = str(tmp_path / "tfds")
  config.model.norm = "none"  # the tiny ResNet's default is "ln"
  config.max_steps = 2
  validate_config(config)
  assert build_model(config, 10, 1).norm == "none"
  workdir = str(tmp_path / "run")
  assert train_and_evaluate(config, workdir)["step"] == 2
  run = restore(workdir)
  assert run.model.norm == "none" and run.config.model.norm == "none"
  assert "scale" not in str(jax.tree_util.tree_structure(run.params))  # no norm parameters

  for key, value in (("norm", "squash"), ("form", "explicit")):  # CoDA-only settings
    bad = _load("bcos_digits").get_config("smoke")
    bad.model[key] = value
    with pytest.raises(ValueError, match="not accepted by 'bcos-resnet-tiny'"):
      validate_config(bad)
