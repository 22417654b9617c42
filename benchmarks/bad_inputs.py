"""Replays bad inputs (images, targets, configs, flags) and classifies what each one does.

    python benchmarks/bad_inputs.py              # library calls and CLI runs (a few minutes)
    python benchmarks/bad_inputs.py --skip_cli   # library calls only (seconds)

Prints a table ``input | outcome | detail`` and the totals per outcome:

* ``clear error``: an exception of a clear type (ValueError, TypeError, KeyError) with a
  one-line message, of the case's expected class where it names one; for a CLI run, a
  non-zero exit with no Python traceback and at most three lines of error output;
* ``correct``: no error, and the result passes the case's check (e.g. uint8 images explained
  like the same images as floats in [0, 1], an empty batch giving empty results; under jit, an
  out-of-range target flagged as documented: class index -1 and NaN maps for that image only);
* ``WRONG SILENTLY``: no error, and either the input has no valid result (an out-of-range
  target, NaN pixels in eager mode, ``n_masks=0``, ``num_classes=0``, ...) or the result fails
  the case's check (zero or non-finite maps, a different map than the correct one);
* ``wrong error type``: a clear one-line error, but not of the class the case expects (e.g. a
  ValueError for a setting of the wrong type, where a TypeError is expected);
* ``traceback``: any other exception (e.g. ZeroDivisionError, a multi-line message), or a CLI
  run that prints a Python traceback.

Nothing here encodes what each case does today: the outcome comes from running it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from codajax import attribution, metrics  # noqa: E402
from codajax.explain import explain  # noqa: E402
from codajax.models import get_model  # noqa: E402
from codajax.nn import dau_conv, init_dau_params  # noqa: E402

CLEAR_TYPES = (ValueError, TypeError, KeyError)
OUTCOMES = ("clear error", "correct", "WRONG SILENTLY", "wrong error type", "traceback")


@dataclass
class Case:
  """A bad input: ``run()`` returns a result, ``check(result)`` says whether it is correct.

  ``check=None``: the input has no valid result, so only a clear error is right; ``expected``:
  the class that error must have (``None``: any clear type).
  """

  name: str
  run: Callable[[], Any]
  check: Callable[[Any], bool] | None = None
  expected: type[Exception] | None = None


def classify_exception(
    error: BaseException, expected: type[Exception] | None = None
) -> tuple[str, str]:
  message = str(error).strip()
  one_line = message and "\n" not in message and len(message) <= 400
  clear = isinstance(error, CLEAR_TYPES) and not type(error).__module__.startswith("jax")
  outcome = "clear error" if clear and one_line else "traceback"
  first = message.splitlines()[0] if message else ""
  detail = f"{type(error).__name__}: {first[:110]}"
  if outcome == "clear error" and expected is not None and not isinstance(error, expected):
    return "wrong error type", f"expected {expected.__name__}; {detail}"
  return outcome, detail


def run_case(case: Case) -> tuple[str, str]:
  try:
    result = case.run()
    jax.block_until_ready(result)
  except Exception as error:  # noqa: BLE001 (classifying every failure is the point)
    return classify_exception(error, case.expected)
  if case.check is None:
    return "WRONG SILENTLY", "accepted an input that has no valid result"
  try:
    ok = bool(case.check(result))
  except Exception as error:  # noqa: BLE001
    return "WRONG SILENTLY", f"result unusable: {type(error).__name__}: {str(error)[:80]}"
  return ("correct", "result checked") if ok else ("WRONG SILENTLY", "result failed its check")


# ---------------------------------------------------------------------------------- library


def _finite_nonzero(maps) -> bool:
  maps = np.asarray(maps, np.float64)
  return bool(np.all(np.isfinite(maps)) and np.any(maps != 0))


def _close(a, b) -> bool:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-4, atol=1e-6))


def _empty_results(result) -> bool:
  leaves = jax.tree.leaves(result)
  return bool(leaves) and all(np.shape(leaf)[:1] == (0,) for leaf in leaves)


def library_cases() -> list[Case]:
  model = get_model("tiny-3L")
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
  pixels = np.round(images * 255).astype(np.uint8)
  variables = model.init(jax.random.key(0), jnp.asarray(images))
  fn = lambda x: model.apply(variables, x)
  num_classes = fn(jnp.asarray(images)).shape[-1]
  maps = lambda result: result["contribution_map"]
  as_float = lambda x: jnp.asarray(np.asarray(x, np.float32) / 255)
  with_nan, with_inf = images.copy(), images.copy()
  with_nan[0, 3, 3, 0], with_inf[0, 3, 3, 0] = np.nan, np.inf
  explain_jit = jax.jit(lambda x, t: explain(model, variables, x, t))
  empty = jnp.zeros((0, 8, 8, 3))
  empty_targets = jnp.zeros((0,), jnp.int32)

  def nan_propagated_or_error(result):
    """Under jit NaN pixels may propagate (documented) but must not vanish."""
    return not np.all(np.isfinite(np.asarray(maps(result))[0]))

  def flagged_out_of_range(result):
    """Under jit an out-of-range target is flagged (documented): class index -1 and NaN maps for
    that image only; the other image's maps stay finite."""
    flagged = np.asarray(result["explained_class_idx"])[0] == -1
    bad_row, good_row = np.asarray(maps(result))[0], np.asarray(maps(result))[1]
    return flagged and np.all(np.isnan(bad_row)) and np.all(np.isfinite(good_row))

  cases = [
      Case(
          "explain: uint8 images (0..255)",
          lambda: explain(model, variables, pixels, 1),
          lambda r: _close(maps(r), maps(explain(model, variables, as_float(pixels), 1))),
      ),
      Case(
          "explain: int32 images (0..255)",
          lambda: explain(model, variables, pixels.astype(np.int32), 1),
          lambda r: _close(maps(r), maps(explain(model, variables, as_float(pixels), 1))),
      ),
      Case(
          "explain: float images in [0, 255]",
          lambda: explain(model, variables, jnp.asarray(images * 255), 1),
      ),
      Case(
          "explain: float images in [-1, 1]",
          lambda: explain(model, variables, jnp.asarray(images * 2 - 1), 1),
      ),
      Case(
          "explain: a NaN pixel (eager)",
          lambda: explain(model, variables, jnp.asarray(with_nan), 1),
      ),
      Case(
          "explain: an Inf pixel (eager)",
          lambda: explain(model, variables, jnp.asarray(with_inf), 1),
      ),
      Case(
          "explain: a NaN pixel (jit)",
          lambda: explain_jit(jnp.asarray(with_nan), jnp.array([1, 1])),
          nan_propagated_or_error,
      ),
      Case(
          f"explain: target {num_classes} (eager)",
          lambda: explain(model, variables, jnp.asarray(images), num_classes),
      ),
      Case(
          "explain: target -1 (eager)", lambda: explain(model, variables, jnp.asarray(images), -1)
      ),
      Case(
          f"explain: target {num_classes} (jit)",
          lambda: explain_jit(jnp.asarray(images), jnp.array([num_classes, 1])),
          flagged_out_of_range,
      ),
      Case(
          "explain: target -1 (jit)",
          lambda: explain_jit(jnp.asarray(images), jnp.array([-1, 1])),
          flagged_out_of_range,
      ),
      Case(
          "explain: batch size 0",
          lambda: explain(model, variables, empty, empty_targets),
          _empty_results,
      ),
      Case(
          "SmoothGrad: target -1",
          lambda: attribution.smooth_grad(fn, jnp.asarray(images), -1, key=0, nt_samples=2),
      ),
      Case(
          f"SmoothGrad: target {num_classes}",
          lambda: attribution.smooth_grad(
              fn, jnp.asarray(images), num_classes, key=0, nt_samples=2
          ),
      ),
      Case(
          "SmoothGrad: int target 3",
          lambda: attribution.smooth_grad(fn, jnp.asarray(images), 3, key=0, nt_samples=2),
          lambda r: _finite_nonzero(r)
          and _close(
              r,
              attribution.smooth_grad(
                  fn, jnp.asarray(images), jnp.array([3, 3]), key=0, nt_samples=2
              ),
          ),
      ),
      Case(
          "SmoothGrad: numpy int target 3",
          lambda: attribution.smooth_grad(
              fn, jnp.asarray(images), np.int64(3), key=0, nt_samples=2
          ),
          lambda r: _finite_nonzero(r)
          and _close(
              r,
              attribution.smooth_grad(
                  fn, jnp.asarray(images), jnp.array([3, 3]), key=0, nt_samples=2
              ),
          ),
      ),
      Case(
          "RISE: n_masks=0", lambda: attribution.rise(fn, jnp.asarray(images), 1, key=0, n_masks=0)
      ),
  ]
  small = {"SmoothGrad": dict(nt_samples=2), "RISE": dict(n_masks=4), "IntGrad": dict(n_steps=2)}
  for name, method in attribution.METHODS.items():
    method_fn = (
        attribution.layer_function(model, variables, lambda m, n: n == "layers_1")
        if name == "GCam"
        else fn
    )
    cases.append(
        Case(
            f"attribution {name}: batch size 0",
            lambda method=method, method_fn=method_fn, name=name: method(
                method_fn, empty, empty_targets, **small.get(name, {})
            ),
            _empty_results,
        )
    )
  maps0, masks0 = jnp.zeros((0, 6, 6)), jnp.zeros((0, 6, 6), bool)
  fn6 = lambda x6: jnp.zeros((x6.shape[0], 3))
  cases += [
      Case(
          "metrics mask_energy: batch size 0",
          lambda: metrics.mask_energy(maps0, masks0),
          _empty_results,
      ),
      Case(
          "metrics pointing_game: batch size 0",
          lambda: metrics.pointing_game(maps0, masks0),
          _empty_results,
      ),
      Case(
          "metrics contribution_sum_error: batch size 0",
          lambda: metrics.contribution_sum_error(maps0, jnp.zeros((0,))),
          _empty_results,
      ),
      Case(
          "metrics localisation_metric: batch size 0",
          lambda: metrics.localisation_metric(jnp.zeros((0, 9, 6, 6)), 3),
          _empty_results,
      ),
      Case(
          "metrics pixel_removal_probabilities: batch size 0",
          lambda: metrics.pixel_removal_probabilities(
              fn6, jnp.zeros((0, 6, 6, 3)), jnp.zeros((0,), int), maps0, n_points=4
          ),
          _empty_results,
      ),
      Case(
          "metrics pixel_removal_curve: batch size 0 (a mean of nothing)",
          lambda: metrics.pixel_removal_curve(
              fn6, jnp.zeros((0, 6, 6, 3)), jnp.zeros((0,), int), maps0, n_points=4
          ),
      ),
  ]

  cases += lower_entry_point_cases(model, variables, images, num_classes)

  def built_and_applied(**kwargs):
    """get_model(...), then init + apply on 3-channel images (flax checks lazily).

    With ``image_channels`` no image fits the bad model: only get_model itself runs.
    """
    bad = get_model("tiny-3L", **kwargs)
    if "image_channels" in kwargs:
      return jnp.zeros(())
    image = jnp.zeros((1, 8, 8, 3))
    return bad.apply(bad.init(jax.random.key(0), image), image)

  for kwargs, expected in (
      (dict(num_classes=0), ValueError),
      (dict(num_classes=-2), ValueError),
      (dict(temperature=0.0), ValueError),
      (dict(temperature=-1.0), ValueError),
      (dict(temperature=float("inf")), ValueError),
      (dict(temperature=float("nan")), ValueError),
      (dict(dtype=jnp.int32), ValueError),
      (dict(image_channels=0), ValueError),
      (dict(image_channels=-3), ValueError),
      (dict(num_classes=2.5), TypeError),
      (dict(temperature="10"), TypeError),
      (dict(logit_bias=float("nan")), ValueError),
  ):
    shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()).replace("<class 'jax.numpy.", "jnp.")
    cases.append(
        Case(
            f"get_model: {shown.rstrip(chr(39) + '>')}",
            lambda kwargs=kwargs: built_and_applied(**kwargs),
            expected=expected,
        )
    )
  cases.append(
      Case(
          "get_model: unknown architecture 'ResNet-50' (a one-line message)",
          lambda: get_model("ResNet-50"),
          expected=ValueError,
      )
  )
  return cases


def lower_entry_point_cases(model, variables, images, num_classes) -> list[Case]:
  """Attribution settings, metrics, the DAU layer: bad values, NaN settings and jit targets."""
  fn = lambda x: model.apply(variables, x)
  x = jnp.asarray(images)
  features = attribution.layer_function(model, variables, "layer_1")
  nan_image = x.at[0, 3, 3, 0].set(jnp.nan)
  zero_map = lambda result: bool(
      np.all(np.asarray(result)[0] == 0) and np.any(np.asarray(result)[1] != 0)
  )
  V, T = ValueError, TypeError
  cases = []
  # Traced targets outside [0, K): a zero map for that image (documented), the other unchanged.
  for name, bad in (("Grad", -1), ("Grad", num_classes), ("Occ5", -1), ("RISE", -1), ("GCam", -1)):
    method, small = attribution.METHODS[name], {"RISE": dict(n_masks=4)}.get(name, {})
    method_fn = features if name == "GCam" else fn
    cases.append(
        Case(
            f"attribution {name}: target {bad} (jit): a zero map",
            lambda method=method, method_fn=method_fn, small=small, bad=bad: jax.jit(
                lambda x, t: method(method_fn, x, t, **small)
            )(x, jnp.array([bad, 1])),
            zero_map,
        )
    )
  grad, intgrad, occ = attribution.gradient, attribution.integrated_gradients, attribution.occlusion
  smooth, rise = attribution.smooth_grad, attribution.rise
  nested = np.asarray(images).tolist()
  cases += [
      Case("gradient: a NaN pixel (eager)", lambda: grad(fn, nan_image, 1), expected=V),
      Case("gradient: float images in [0, 255]", lambda: grad(fn, x * 255, 1), expected=V),
      Case("gradient: target 2**40", lambda: grad(fn, x, 2**40), expected=V),
      Case("gradient: float target 1.0", lambda: grad(fn, x, 1.0), expected=T),
      Case("gradient: zero-height images", lambda: grad(fn, x[:, :0], 1), expected=V),
      Case(
          "gradient: images as nested lists",
          lambda: grad(fn, nested, 1),
          lambda r: _finite_nonzero(r) and _close(r, grad(fn, x, 1)),
      ),
      Case("IntGrad: NaN baselines", lambda: intgrad(fn, x, 1, baselines=x * np.nan), expected=V),
      Case(
          "IntGrad preset: NaN baselines",
          lambda: attribution.METHODS["IntGrad"](fn, x, 1, baselines=x * np.nan, n_steps=2),
          expected=V,
      ),
      Case(
          "IntGrad: baselines of shape (5, 5)",
          lambda: intgrad(fn, x, 1, baselines=jnp.zeros((5, 5)), n_steps=2),
          expected=V,
      ),
      Case('IntGrad: n_steps="20"', lambda: intgrad(fn, x, 1, n_steps="20"), expected=T),
      Case("IntGrad: n_steps=2.5", lambda: intgrad(fn, x, 1, n_steps=2.5), expected=T),
      Case("IntGrad: n_steps=0", lambda: intgrad(fn, x, 1, n_steps=0), expected=V),
      Case(
          "IntGrad: items_per_pass=0",
          lambda: intgrad(fn, x, 1, n_steps=2, items_per_pass=0),
          expected=V,
      ),
      Case(
          "SmoothGrad: stdevs=nan",
          lambda: smooth(fn, x, 1, key=0, nt_samples=2, stdevs=float("nan")),
          expected=V,
      ),
      Case(
          "SmoothGrad: stdevs=-1",
          lambda: smooth(fn, x, 1, key=0, nt_samples=2, stdevs=-1.0),
          expected=V,
      ),
      Case(
          "SmoothGrad: nt_samples=2.5", lambda: smooth(fn, x, 1, key=0, nt_samples=2.5), expected=T
      ),
      Case("SmoothGrad: key='0'", lambda: smooth(fn, x, 1, key="0", nt_samples=2), expected=T),
      Case("Occlusion: NaN baselines", lambda: occ(fn, x, 1, baselines=float("nan")), expected=V),
      Case(
          "Occlusion: sliding_window_shapes=(5,)",
          lambda: occ(fn, x, 1, sliding_window_shapes=(5,)),
          expected=V,
      ),
      Case(
          "Occlusion: sliding_window_shapes=0",
          lambda: occ(fn, x, 1, sliding_window_shapes=0),
          expected=V,
      ),
      Case("Occlusion: strides=0", lambda: occ(fn, x, 1, strides=0), expected=V),
      Case("Occlusion: strides=-1", lambda: occ(fn, x, 1, strides=-1), expected=V),
      Case(
          "Occ5 preset: strides=0",
          lambda: attribution.METHODS["Occ5"](fn, x, 1, strides=0),
          expected=V,
      ),
      Case('RISE: p1="0.5"', lambda: rise(fn, x, 1, key=0, n_masks=4, p1="0.5"), expected=T),
      Case("RISE: p1=2.0", lambda: rise(fn, x, 1, key=0, n_masks=4, p1=2.0), expected=V),
      Case("RISE: s=2.5", lambda: rise(fn, x, 1, key=0, n_masks=4, s=2.5), expected=T),
      Case(
          "Grad-CAM: a plain apply function",
          lambda: attribution.grad_cam(fn, x, 1),
          expected=T,
      ),
      Case(
          "GCam preset: a plain apply function",
          lambda: attribution.METHODS["GCam"](fn, x, 1),
          expected=T,
      ),
      Case("explain: target 2**40", lambda: explain(model, variables, x, 2**40), expected=V),
      Case(
          "explain: zero-height images", lambda: explain(model, variables, x[:, :0], 1), expected=V
      ),
      Case(
          "explain: images as nested lists",
          lambda: explain(model, variables, nested, 1),
          lambda r: _close(
              r["contribution_map"], explain(model, variables, x, 1)["contribution_map"]
          ),
      ),
  ]
  maps = np.asarray(jax.random.normal(jax.random.key(1), (2, 6, 6)))
  masks = np.zeros((2, 6, 6), bool)
  masks[:, :3] = True
  nan_maps = maps.copy()
  nan_maps[0, 1, 1] = np.nan
  weights = np.asarray(jax.random.normal(jax.random.key(2), (6 * 6 * 6, 3)))
  encoded_fn = lambda x6: x6.reshape(x6.shape[0], -1) @ weights
  pixels6 = np.asarray(jax.random.uniform(jax.random.key(3), (2, 6, 6, 3)))
  removal = lambda labels, **kw: metrics.pixel_removal_probabilities(
      encoded_fn, pixels6, labels, maps, **{"n_points": 4, **kw}
  )
  cases += [
      Case("mask_energy: a NaN map", lambda: metrics.mask_energy(nan_maps, masks), expected=V),
      Case(
          "mask_energy: a soft mask (0.3)",
          lambda: metrics.mask_energy(maps, np.where(masks, 0.3, 0.0)),
          expected=V,
      ),
      Case(
          "mask_energy: a NaN map (jit): 0 for that image (documented)",
          lambda: jax.jit(metrics.mask_energy)(nan_maps, masks),
          lambda r: np.asarray(r)[0] == 0 and np.isfinite(np.asarray(r)[1]),
      ),
      Case("pointing_game: a NaN map", lambda: metrics.pointing_game(nan_maps, masks), expected=V),
      Case(
          "localisation_metric: a NaN map",
          lambda: metrics.localisation_metric(np.full((1, 9, 6, 6), np.nan), 3),
          expected=V,
      ),
      Case(
          "contribution_sum_error: a NaN map",
          lambda: metrics.contribution_sum_error(nan_maps, np.ones(2)),
          expected=V,
      ),
      Case("pixel_removal: label -1", lambda: removal(np.array([-1, 0])), expected=V),
      Case("pixel_removal: label K", lambda: removal(np.array([3, 0])), expected=V),
      Case(
          "pixel_removal: label -1 (jit): a NaN row (documented)",
          lambda: jax.jit(removal)(jnp.array([-1, 0])),
          lambda r: np.all(np.isnan(np.asarray(r)[0])) and np.all(np.isfinite(np.asarray(r)[1])),
      ),
      Case(
          "pixel_removal: fraction=2.0", lambda: removal(np.array([1, 0]), fraction=2.0), expected=V
      ),
      Case(
          "pixel_removal: fraction=nan",
          lambda: removal(np.array([1, 0]), fraction=float("nan")),
          expected=V,
      ),
      Case("pixel_removal: n_points=0", lambda: removal(np.array([1, 0]), n_points=0), expected=V),
      Case(
          "pixel_removal: a NaN map",
          lambda: metrics.pixel_removal_probabilities(
              encoded_fn, pixels6, np.array([1, 0]), nan_maps, n_points=4
          ),
          expected=V,
      ),
  ]
  params = init_dau_params(jax.random.key(0), 6, 4, 2, 3)
  layer_input = jnp.ones((1, 8, 8, 6)) * 0.5
  conv = lambda p=params, x=layer_input, **kw: dau_conv(p, x, **kw)
  wrong_channels = {**params, "B": jnp.zeros((3, 3, 5, 2))}
  cases += [
      Case("dau_conv: padding=-1", lambda: conv(padding=-1), expected=V),
      Case("dau_conv: stride=0", lambda: conv(stride=0), expected=V),
      Case("dau_conv: stride=-1", lambda: conv(stride=-1), expected=V),
      Case("dau_conv: stride=1.5", lambda: conv(stride=1.5), expected=T),
      Case("dau_conv: compute dtype int32", lambda: conv(dtype=jnp.int32), expected=V),
      Case("dau_conv: A for 6 input channels, B for 5", lambda: conv(p=wrong_channels), expected=V),
      Case(
          "dau_conv: w0 for 3 DAUs, A for 4",
          lambda: conv(p={**params, "w0": jnp.zeros((3, 3, 6, 3))}),
          expected=V,
      ),
      Case(
          "dau_conv: A of rank 3, B of rank 2",
          lambda: conv(p={**params, "A": jnp.zeros((3, 3, 6, 4, 3))}),
          expected=V,
      ),
      Case(
          "init_dau_params: rank 0",
          lambda: init_dau_params(jax.random.key(0), 6, 4, 0, 3),
          expected=V,
      ),
      Case(
          'init_dau_params: in_channels="6"',
          lambda: init_dau_params(jax.random.key(0), "6", 4, 2, 3),
          expected=T,
      ),
      Case(
          "init_dau_params: dtype int32",
          lambda: init_dau_params(jax.random.key(0), 6, 4, 2, 3, dtype=jnp.int32),
          expected=V,
      ),
  ]
  return cases


# ---------------------------------------------------------------------------------- CLI


def run_cli(
    args: list[str], env: dict[str, str] | None = None, timeout: int = 300
) -> tuple[int, str]:
  process = subprocess.run(
      [sys.executable, *args],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=timeout,
      env={**os.environ, **(env or {})},
  )
  return process.returncode, process.stderr + process.stdout


def classify_cli(returncode: int, output: str, valid: bool) -> tuple[str, str]:
  lines = [line for line in output.splitlines() if line.strip()]
  if "Traceback (most recent call last)" in output:
    return "traceback", f"exit {returncode}, {len(lines)} lines with a Python traceback"
  if returncode == 0:
    return ("correct", "exit 0") if valid else ("WRONG SILENTLY", "exit 0 on an invalid input")
  errors = [line for line in lines if "error" in line.lower()]
  if errors and len(errors) <= 3:
    return "clear error", f"exit {returncode}: {errors[-1].strip()[:110]}"
  return "traceback", f"exit {returncode}, {len(lines)} lines"


def _edited_run(workdir: str, suffix: str, **model: Any) -> str:
  """A copy of the run ``workdir`` whose run.json has ``model`` settings replaced."""
  import json
  import shutil

  copy = f"{workdir}-{suffix}"
  shutil.rmtree(copy, ignore_errors=True)
  shutil.copytree(workdir, copy)
  with open(os.path.join(copy, "run.json")) as f:
    record = json.load(f)
  record["config"]["model"].update(model)
  with open(os.path.join(copy, "run.json"), "w") as f:
    json.dump(record, f)
  return copy


def cli_cases(workdir: str) -> list[tuple[str, list[str], dict[str, str], bool]]:
  """(name, argv, extra environment, valid): ``valid`` = a run that succeeds is right."""
  smoke = ["train.py", "--config", "configs/digits.py:smoke"]
  tmp = os.path.dirname(workdir)
  no_get_config = os.path.join(tmp, "no_get_config.py")
  with open(no_get_config, "w") as f:
    f.write("NAME = 'a config file without get_config'\n")
  a_file = os.path.join(tmp, "a_file")
  with open(a_file, "w") as f:
    f.write("not a directory")
  # Every method evaluator but localisation left out: the settings' method still runs.
  localisation_only = "--config.skip=depths,pixel_removal,ground_truth,completeness,figures"
  eval_run = ["eval.py", "--workdir", workdir]
  occ5 = [*eval_run, "--config.methods=Ours,Occ5", localisation_only, "--method_setting"]
  accuracy_only = (
      "--config.skip=localisation,depths,pixel_removal,ground_truth,completeness,figures"
  )
  cli = [
      (
          "train.py --config configs/digits.py:smok (a typo of smoke)",
          [*smoke[:2], "configs/digits.py:smok", "--workdir", workdir + "-smok", "--print_config"],
          {},
          False,
      ),
      (
          "train.py with a stray positional argument",
          [*smoke, "--workdir", workdir, "--print_config", "foo"],
          {},
          False,
      ),
      (
          "train.py --config configs/cifar10.py:bogus",
          ["train.py", "--config", "configs/cifar10.py:bogus", "--print_config"],
          {},
          False,
      ),
      (
          "train.py --config FILE without get_config",
          ["train.py", "--config", no_get_config, "--workdir", workdir + "-noget"],
          {},
          False,
      ),
      ("eval.py --method_setting Occ5.strides=0", [*occ5, "Occ5.strides=0"], {}, False),
      (
          "eval.py --method_setting RISE.p1=2.0",
          [
              *occ5[:3],
              "--config.methods=Ours,RISE",
              localisation_only,
              "--method_setting",
              "RISE.p1=2.0",
          ],
          {},
          False,
      ),
      (
          "eval.py --method_setting Occ5.sliding_window_shapes=0",
          [*occ5, "Occ5.sliding_window_shapes=0"],
          {},
          False,
      ),
      (
          "eval.py --method_setting Occ5.strides=20 (16 x 16 images)",
          [*occ5, "Occ5.strides=20"],
          {},
          False,
      ),
      (
          "eval.py --config configs/eval/nope.py",
          [*eval_run, "--config", "configs/eval/nope.py"],
          {},
          False,
      ),
      (
          "eval.py unknown key --config.evals.foo.n=1",
          [*eval_run, "--config.evals.foo.n=1"],
          {},
          False,
      ),
      (
          "eval.py --config.out=<a file>",
          [*eval_run, accuracy_only, f"--config.out={a_file}"],
          {},
          False,
      ),
      (
          "eval.py --config.data_dir=<a file>",
          [*eval_run, accuracy_only, f"--config.data_dir={a_file}"],
          {},
          False,
      ),
      ("eval.py with a stray positional argument", [*eval_run, accuracy_only, "extra"], {}, False),
      (
          "eval.py on a run.json naming an unknown model",
          ["eval.py", "--workdir", _edited_run(workdir, "model", name="digits-9Z"), accuracy_only],
          {},
          False,
      ),
      (
          "eval.py on a run.json with temperature '10' (a string)",
          [
              "eval.py",
              "--workdir",
              _edited_run(workdir, "temperature", temperature="10"),
              accuracy_only,
          ],
          {},
          False,
      ),
      (
          "eval.py --config configs/eval/paper.py:bogus",
          [*eval_run, "--config", "configs/eval/paper.py:bogus", "--print_config"],
          {},
          False,
      ),
  ]
  return cli + [
      (
          "eval.py --method_setting RISE.n_masks=abc",
          [
              "eval.py",
              "--workdir",
              workdir,
              "--config.methods=RISE",
              "--method_setting",
              "RISE.n_masks=abc",
              "--config.skip=localisation,depths,pixel_removal,ground_truth,figures",
          ],
          {},
          False,
      ),
      (
          "train.py --config.model.kwargs.foo=1",
          smoke + ["--workdir", workdir + "-kwargs", "--config.model.kwargs.foo=1"],
          {},
          True,
      ),
      (
          "train.py batch size 7 on 2 devices",
          smoke + ["--workdir", workdir + "-devices", "--config.batch_size=7"],
          {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
          False,
      ),
      (
          "train.py misspelled key --config.optimiser.learning_rate",
          smoke + ["--workdir", workdir + "-typo", "--config.optimiser.learning_rate=0.1"],
          {},
          False,
      ),
  ]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--skip_cli", action="store_true", help="library calls only")
  args = parser.parse_args()

  rows = [(case.name, *run_case(case)) for case in library_cases()]
  if not args.skip_cli:
    with tempfile.TemporaryDirectory(prefix="bad-inputs-") as tmp:
      workdir = os.path.join(tmp, "run")
      code, output = run_cli(
          ["train.py", "--config", "configs/digits.py:smoke", "--workdir", workdir]
      )
      if code != 0:
        print(
            f"warning: the smoke run for eval.py failed (exit {code}); eval.py sees no checkpoint"
        )
      for name, argv, env, valid in cli_cases(workdir):
        try:
          rows.append((name, *classify_cli(*run_cli(argv, env), valid)))
        except subprocess.TimeoutExpired:
          rows.append((name, "traceback", "timed out"))

  print("| input | outcome | detail |")
  print("|---|---|---|")
  for name, outcome, detail in rows:
    print(f"| {name} | {outcome} | {detail.replace('|', '/')} |")
  totals = {outcome: sum(row[1] == outcome for row in rows) for outcome in OUTCOMES}
  print()
  print(
      f"{len(rows)} inputs: " + ", ".join(f"{count} {outcome}" for outcome, count in totals.items())
  )


if __name__ == "__main__":
  main()
