"""Evaluation methods: their settings (parsed, checked, reaching the attributions), a hybrid model
with a CNN embedding, and requests refused before any work."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codajax import evaluators
from codajax.evaluators import methods as eval_methods
from codajax.evaluators import pixel_removal
from codajax.explain import explain
from codajax.models import get_model

from eval_common import quick_eval_config, record_only_run  # tests/ is on sys.path


def test_method_settings_reach_the_attributions():
  model = get_model("tiny-3L", num_classes=10, image_channels=3)
  images = jax.random.randint(jax.random.key(1), (2, 8, 8, 3), 0, 256).astype(jnp.uint8)
  variables = jax.jit(model.init)(jax.random.key(0), images.astype(jnp.float32) / 255)
  info = eval_methods.inspect_model(model, variables, (8, 8, 3))
  targets = jnp.array([1, 4])
  signed = jax.jit(eval_methods.attribution_function(model, info, "Grad"))(
      variables, images, targets
  )
  absolute = jax.jit(
      eval_methods.attribution_function(model, info, "Grad", settings={"abs": True})
  )(variables, images, targets)
  assert float(signed.min()) < 0.0
  np.testing.assert_allclose(absolute, jnp.abs(signed), rtol=1e-6)


def test_method_settings_are_parsed_and_checked():
  assert evaluators.parse_method_settings(
      ["RISE.n_masks=1000", "RISE.p1=0.2", "Occ5.reference_window_quirk=False"]
  ) == {"RISE": {"n_masks": 1000, "p1": 0.2}, "Occ5": {"reference_window_quirk": False}}
  with pytest.raises(evaluators.EvaluationError, match="not METHOD.key=value"):
    evaluators.parse_method_settings(["RISE:n_masks=10"])
  with pytest.raises(evaluators.EvaluationError, match="'Ours' is not a post-hoc method"):
    evaluators.parse_method_settings(["Ours.n_masks=10"])
  with pytest.raises(evaluators.EvaluationError, match=r"RISE \(rise\) takes .*n_masks"):
    evaluators.parse_method_settings(["RISE.masks=10"])
  for bad, message in (
      ("RISE.n_masks=abc", "must be an integer"),
      ("RISE.n_masks=0", "must be an integer >= 1"),
      ("RISE.n_masks=1.5", "must be an integer"),
      ("IntGrad.n_steps=True", "must be an integer"),
      ("Grad.abs=1", "must be True or False"),
      ("RISE.p1=high", "must be a number"),
  ):
    with pytest.raises(evaluators.EvaluationError, match=message):
      evaluators.parse_method_settings([bad])
  with pytest.raises(evaluators.EvaluationError, match="settings given for RISE, which is not"):
    evaluators.from_config(
        {"localisation": {}}, {"methods": "Ours", "method_settings": {"RISE": {"n_masks": 10}}}
    )


@pytest.mark.slow
def test_hybrid_with_a_cnn_embedding_is_explained_over_the_image():
  model = get_model(
      "hybrid-shapes-s2",
      num_classes=10,
      temperature=10.0,
      backbone_widths=(4, 8, 8),
      coda_layers=((8, 4, 3, 1, 1), (10, 4, 1, 1, 0)),
  )
  images = jax.random.randint(jax.random.key(1), (2, 16, 16, 3), 0, 256).astype(jnp.uint8)
  variables = jax.jit(model.init)(jax.random.key(0), images.astype(jnp.float32) / 255)
  info = eval_methods.inspect_model(model, variables, (16, 16, 3))
  assert info == eval_methods.ModelInfo(num_layers=2, encoded_input=False)

  targets = jnp.array([[1, 4, 9], [0, 2, 5]])
  ours = jax.jit(eval_methods.attribution_function(model, info, "Ours"))(variables, images, targets)
  assert ours.shape == (2, 3, 16, 16, 1)
  evidence = explain(model, variables, images.astype(jnp.float32) / 255, "all")["evidence"]
  np.testing.assert_allclose(
      ours.sum(axis=(2, 3, 4)), jnp.take_along_axis(evidence, targets, 1), rtol=1e-4, atol=1e-6
  )  # upsampling keeps every map's total
  gcam = jax.jit(eval_methods.attribution_function(model, info, "GCam"))(
      variables, images, targets[:, 0]
  )
  assert gcam.shape == (2, 16, 16, 1) and float(gcam.min()) >= 0.0

  removal = jax.jit(pixel_removal.removal_step(model, info, pixel_removal.removal_points((16, 16))))
  probabilities = removal(variables, images, targets[:, 0], ours[:, 0, ..., 0])
  assert probabilities.shape == (2, 65)
  np.testing.assert_allclose(
      probabilities[:, 0],
      jax.nn.sigmoid(jnp.take_along_axis(evidence + model.logit_bias, targets[:, :1], 1)[:, 0]),
      rtol=1e-5,
  )


# ------------------------------------------------------------- refused before any work, one line


@pytest.mark.parametrize(
    "setting,message",
    [
        ({"Occ5": {"strides": 20}}, r"Occ5.strides=20: .*stride=20, size=16 \(images of 16x16x1\)"),
        ({"Occ5": {"sliding_window_shapes": 1}}, "Occ5.sliding_window_shapes=1: .*empty masks"),
    ],
)
def test_a_method_setting_the_images_do_not_allow_fails_before_any_work(tmp_path, setting, message):
  workdir = record_only_run(tmp_path / "run")
  config = quick_eval_config(tmp_path / "out", "Ours,Occ5")
  config.method_settings = setting
  with pytest.raises(evaluators.EvaluationError, match=message):
    evaluators.evaluate_run(workdir, config)
  assert not os.path.exists(tmp_path / "out")
  # Checked and accepted, the same request goes on to look for a checkpoint: there is none.
  config.method_settings = {"Occ5": {"strides": 3}}
  with pytest.raises(evaluators.EvaluationError, match="no restorable checkpoint|No checkpoints"):
    evaluators.evaluate_run(workdir, config)


@pytest.mark.parametrize(
    "item,message",
    [
        ("Occ5.strides=0", "Occ5.strides=0: must be an integer >= 1"),
        ("Occ5.sliding_window_shapes=0", "Occ5.sliding_window_shapes=0: must be an integer >= 1"),
        ("RISE.p1=2.0", r"RISE.p1=2.0: must be a number in \(0, 1\]"),
        ("SmoothGrad.stdevs=-0.1", "SmoothGrad.stdevs=-0.1: must be a number >= 0"),
    ],
)
def test_method_settings_out_of_range_are_refused_when_parsed(item, message):
  with pytest.raises(evaluators.EvaluationError, match=message):
    evaluators.parse_method_settings([item])
  with pytest.raises(evaluators.EvaluationError, match="must be a finite number"):
    eval_methods.check_setting("RISE", "p1", float("nan"))


def test_unusable_output_data_and_run_json_are_refused_before_any_work(tmp_path):
  workdir = record_only_run(tmp_path / "run")
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  config = quick_eval_config(a_file)
  with pytest.raises(evaluators.EvaluationError, match="output directory .*a_file is a file"):
    evaluators.evaluate_run(workdir, config)
  config = quick_eval_config(tmp_path / "out")
  config.data_dir = str(a_file)
  with pytest.raises(evaluators.EvaluationError, match="data directory .*a_file is a file"):
    evaluators.evaluate_run(workdir, config)
  for model, message in (
      (
          {"name": "digits-9Z"},
          r"model.name: Unknown architecture 'digits-9Z' \(did you mean digits-5L\?\)",
      ),
      ({"temperature": "10"}, "model.temperature must be finite and > 0 \\(a number\\), got '10'"),
      ({"temperature": -1.0}, "model.temperature must be finite and > 0 \\(a number\\), got -1.0"),
  ):
    bad = record_only_run(tmp_path / f"bad_{len(message)}", **model)
    with pytest.raises(evaluators.EvaluationError, match="run.json records a model that cannot"):
      evaluators.evaluate_run(bad, quick_eval_config(tmp_path / "out"))
    with pytest.raises(evaluators.EvaluationError, match=message):
      evaluators.evaluate_run(bad, quick_eval_config(tmp_path / "out"))


def test_a_checkpoint_rotated_away_while_read_is_replaced_by_the_newest(
    tmp_path, monkeypatch, capsys
):
  from codajax import runs
  from codajax.evaluators import driver

  workdir = str(tmp_path)
  checkpoints = tmp_path / "checkpoints"
  for step in (2, 4):
    (checkpoints / str(step)).mkdir(parents=True)
  calls = []

  def rotating_restore(where, which):
    """The first read loses its checkpoint to train.py's rotation (4 and 2 go, 6 and 8 come)."""
    calls.append(which)
    if len(calls) == 1:
      for step in (2, 4):
        (checkpoints / str(step)).rmdir()
      for step in (6, 8):
        (checkpoints / str(step)).mkdir()
      raise FileNotFoundError(f"No such file or directory: {checkpoints}/4/state")
    (checkpoints / "10.orbax-checkpoint-tmp-1").mkdir(exist_ok=True)  # a save in flight
    return runs.RestoredRun(None, None, {}, 8, 10, (16, 16, 1), runs.RunDir(workdir))

  monkeypatch.setattr(runs, "restore", rotating_restore)
  assert driver.load_run(workdir).step == 8 and calls == ["latest", "latest"]
  said = capsys.readouterr().out
  assert f"checkpoint 2, 4 in {checkpoints} was removed while being read" in said
  assert "reading step 8, the newest now" in said
  assert "(newer: 10.orbax-checkpoint-tmp-1); evaluating the complete checkpoint of step 8" in said

  calls.clear()  # a checkpoint that fails without being rotated away is not retried

  def failing_restore(where, which):
    calls.append(which)
    raise FileNotFoundError(f"{checkpoints} holds no restorable checkpoint")

  monkeypatch.setattr(runs, "restore", failing_restore)
  with pytest.raises(evaluators.EvaluationError, match="holds no restorable checkpoint"):
    driver.load_run(workdir)
  assert calls == ["latest"]
