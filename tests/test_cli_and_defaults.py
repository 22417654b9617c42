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


# ------------------------------------------------------------------- bad command lines, one line

_CONFIGS = os.path.join(ROOT, "configs")


def _load_config_module(path):
  import importlib.util

  spec = importlib.util.spec_from_file_location(f"cfg_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _config_files():
  files = [os.path.join(_CONFIGS, n) for n in sorted(os.listdir(_CONFIGS)) if n.endswith(".py")]
  files += [os.path.join(_CONFIGS, "eval", n) for n in ("paper.py", "quick.py")]
  return files


@pytest.mark.parametrize("path", _config_files(), ids=os.path.basename)
def test_every_config_file_refuses_an_argument_it_does_not_take(path):
  from codajax.train.config import ConfigArgumentError

  module = _load_config_module(path)
  name = os.path.relpath(path, ROOT)
  with pytest.raises(ConfigArgumentError) as refused:
    module.get_config("smok")  # a typo of "smoke"
  message = str(refused.value)
  assert "\n" not in message and "'smok'" in message
  if "hybrid" in name:
    assert "embedding stage of s0" in message
  elif "lambda" not in name:
    assert name in message
    assert ("takes no argument" in message) if name.endswith("quick.py") else ("takes '" in message)
  if not name.endswith("paper.py") and not name.endswith("quick.py"):
    assert module.get_config("smoke").max_steps > 0  # the valid argument still works
  else:
    assert module.get_config(None).evals


def test_config_tokens_names_the_valid_tokens():
  from codajax.train.config import ConfigArgumentError, config_tokens

  assert config_tokens(" s2, smoke ,", ("s2", "smoke"), "x.py") == ["s2", "smoke"]
  assert config_tokens("anything,goes") == ["anything", "goes"]  # no check without valid
  with pytest.raises(ConfigArgumentError, match=r"^unknown arguments 'a', 'b' for x.py, which "):
    config_tokens("a,smoke,b", ("smoke", "l2"), "x.py")
  with pytest.raises(ConfigArgumentError, match="x.py, which takes no argument"):
    config_tokens("2x2", (), "x.py")


def test_flag_errors_name_what_is_wrong(tmp_path):
  from codajax import cli

  digits = os.path.join("configs", "digits.py")
  assert cli.config_path(["train.py", "--config", "a.py:x", "--config=b.py"], digits) == "b.py"
  assert cli.config_path(["train.py", "--config.batch_size=2"], digits) == digits
  missing = cli.config_file_problem(os.path.join(_CONFIGS, "eval", "nope.py") + ":x")
  assert missing.endswith(
      "nope.py not found (" + os.path.join(_CONFIGS, "eval") + "/ holds " "paper.py, quick.py)."
  )  # eval_base.py has no get_config
  assert cli.config_file_problem(os.path.join(_CONFIGS, "digits.py") + ":smoke") is None
  no_get = tmp_path / "noget.py"
  no_get.write_text("X = 1\n")
  error = AttributeError("module 'config_config' has no attribute 'get_config'")
  assert "defines no get_config(arg=None) function" in cli.flag_error(
      error, ["train.py", "--config", str(no_get)], digits
  )
  argv = ["train.py", "--config", digits, "--config.optimiser.learning_rate=1"]
  message = cli.flag_error(KeyError("optimiser"), argv, digits)
  assert message.startswith("unknown config key config.optimiser.learning_rate (the config has ")
  assert "; did you mean optimizer?); check the spelling." in message
  argv = ["train.py", "--config.model.kwargs.foo=1"]
  assert "(model.kwargs has no keys); model.kwargs takes no new keys" in cli.flag_error(
      AttributeError("foo"), argv, digits
  )


def _cli(*args):
  return subprocess.run(
      [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
  )


@pytest.mark.parametrize(
    "args,expected",
    [
        (
            ["train.py", "--config", "configs/digits.py:smok"],
            "train.py: error: unknown argument 'smok' for configs/digits.py, which takes 'smoke', 'quick'",
        ),
        (
            ["train.py", "configs/digits.py", "--print_config"],
            "train.py: error: unexpected argument 'configs/digits.py'; for a config file use "
            "--config configs/digits.py; train.py takes only flags: --config FILE[:ARG]",
        ),
        (
            ["eval.py", "--config", "configs/eval/nope.py", "--workdir", "x"],
            "eval.py: error: config file configs/eval/nope.py not found (configs/eval/ holds "
            "paper.py, quick.py).",
        ),
        (
            ["eval.py", "--workdir", "x", "--config.evals.foo.n=1"],
            "eval.py: error: unknown config key config.evals.foo.n (evals has accuracy, ",
        ),
    ],
    ids=["config-arg-typo", "stray-positional", "missing-eval-config", "unknown-evals-key"],
)
def test_a_bad_command_line_is_one_error_line_and_exit_2(args, expected):
  result = _cli(*args)
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
  assert lines[0].startswith(expected), lines[0]
  assert result.stdout == ""  # nothing ran: not even --print_config
