"""Small user-facing promises: --help and --print_config, and one padding default everywhere."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from codajax.models.coda_net import LayerSpec
from codajax.nn import dau
from codajax.nn.modules import CoDAConv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "script,schema",
    [("train.py", "codajax/train/config.py"), ("eval.py", "configs/eval/eval_base.py")],
)
def test_help_exits_0_and_points_to_the_config_schema(script, schema):
  result = subprocess.run(
      [sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert (
      schema in result.stdout and "--print_config" in result.stdout and "--workdir" in result.stdout
  )


def test_print_config_prints_the_resolved_config():
  result = subprocess.run(
      [
          sys.executable,
          "train.py",
          "--print_config",
          "--config",
          "configs/digits.py:smoke",
          "--config.batch_size=24",
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.splitlines()
  assert "batch_size: 24" in lines and "max_steps: 4" in lines and "dataset: digits" in lines


@pytest.mark.parametrize("k,expected", [(1, 0), (3, 1), (5, 2), (7, 3)])
def test_one_padding_default_for_dau_conv_codaconv_and_layerspec(k, expected):
  assert dau.default_padding(k) == expected and LayerSpec(4, 2, k).padding is None
  layer = CoDAConv(features=4, rank=2, kernel_size=k)
  x = jax.random.normal(jax.random.key(k), (2, 9, 9, 3))
  variables = layer.init(jax.random.key(0), x)
  by_module = layer.apply(variables, x)
  params = variables["params"]
  by_function = dau.dau_conv(params, x)
  explicit = dau.dau_conv(params, x, padding=expected)
  assert (
      by_module.shape == by_function.shape == (2, 9, 9, 4)
  )  # (k − 1) // 2 keeps 9 x 9 at stride 1
  np.testing.assert_array_equal(np.asarray(by_function), np.asarray(explicit))
  np.testing.assert_array_equal(np.asarray(by_module), np.asarray(by_function))
  assert not np.array_equal(
      np.asarray(dau.dau_conv(params, x, padding=expected + 1))[:, :9, :9], np.asarray(explicit)
  )
