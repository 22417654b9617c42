"""The hybrid and λ configs: every variant validates and builds its model; bad arguments fail."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import pytest

from codajax.train.config import validate_config
from codajax.runs import build_model

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
VARIANTS = {
    "cifar10_lambda": ["0", "0.1", "0.25", "0.5", "1", "0.25,smoke"],
    "cifar10_hybrid": ["s1", "s2", "s3", "s0,smoke", "s3,smoke", None],
    "imagenet_hybrid": ["s2", "s3", "s4", "s2,smoke", "smoke"],
    "shapes_hybrid": ["s0", "s1", "s2", "s3", "s0,smoke", "s1,smoke", "s3,smoke"],
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
    smoke = arg is not None and "smoke" in arg
    assert (config.max_steps > 0 and config.batch_size <= 8) == smoke, arg
    size = 32 if smoke or "imagenet" not in name else 64
    model = build_model(config, 10, 3)
    logits = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x)[0], jnp.zeros((2, size, size, 3))
    )
    assert logits.shape == (2, 10), (name, arg)
    if "hybrid" in name:
      stage = int(
          (arg or "").replace("smoke", "").strip(",")[1:]
          or {"cifar10_hybrid": 2, "imagenet_hybrid": 3}[name]
      )
      assert model.embedding_stage == stage == config.model.kwargs.embedding_stage


def test_lambda_values_and_paper_setting():
  module = _load("cifar10_lambda")
  for text in ("0", "0.1", "0.25", "0.5", "1"):
    config = module.get_config(text)
    assert config.l1_matrix_weight == float(text)
    assert (config.model.name, config.model.temperature, config.model.norm) == (
        "9L-S",
        64.0,
        "squash",
    )
  assert module.get_config(None).l1_matrix_weight == 0.1
  with pytest.raises(ValueError, match="must be a number"):
    module.get_config("big")
  with pytest.raises(ValueError, match=">= 0"):
    module.get_config("-1")
  with pytest.raises(ValueError, match="one λ"):
    module.get_config("0.1,0.5")


@pytest.mark.parametrize("name", ["cifar10_hybrid", "imagenet_hybrid", "shapes_hybrid"])
def test_bad_stage_arguments_fail(name):
  module = _load(name)
  for arg in ("s9", "2", "s1,s2", "deep"):
    with pytest.raises(ValueError, match="embedding stage"):
      module.get_config(arg)
