"""Pixel removal (CoDA Nets, CVPR 2021): the probability of the true class while the least
important 25 % of the pixels are removed, on the first test images in dataset order."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from codajax import metrics
from codajax.evaluators import common
from codajax.evaluators.common import Context, EvaluationError
from codajax.evaluators.methods import MethodsEvaluator

FRACTION = 0.25
POINTS = 128
DIRECTION = "least"


def removal_points(image_hw: Sequence[int]) -> int:
  """Points of the removal curve: 128 (the papers), fewer when 25 % of the image has fewer pixels."""
  return min(POINTS, int(FRACTION * image_hw[0] * image_hw[1]))


def examples(ctx: Context, n_images: int) -> dict[str, np.ndarray]:
  """The first ``n_images`` test examples (memoized; shared with ground truth)."""
  return ctx.memoized(("examples", n_images), lambda: ctx.load(np.arange(n_images)))


def count_images(ctx: Context, n_images: int) -> int:
  """``n_images`` capped at the test split's size."""
  if n_images < 1:
    raise EvaluationError(
        f"n_images must be >= 1 (leave the evaluator out to skip it); " f"got {n_images}"
    )
  return min(n_images, ctx.num_test)


def importance_maps(
    ctx: Context, evaluator: MethodsEvaluator, method: str, n_images: int
) -> tuple[np.ndarray, float]:
  """Channel-summed maps (N, H, W) of ``method`` for the true class of the first ``n_images``
  test images, and their seconds (memoized: pixel removal and ground truth share them)."""
  label = evaluator.label("importance", method)
  attribute = evaluator.attribute(ctx, method)

  def compute():
    step = lambda variables, images, labels: attribute(variables, images, labels).sum(-1)
    return common.timed(
        lambda: common.map_batches(
            ctx,
            label,
            step,
            common.rows_of(examples(ctx, n_images)),
            n_images,
            evaluator.batch_size,
            ("image", "label"),
        )
    )

  return ctx.memoized(("importance", label, n_images), compute)


def removal_step(model, info, n_points: int):
  """``(variables, images uint8 (B, H, W, C), labels (B,), importance (B, H, W)) -> (B, P)``.

  Removed pixels are 0 in all channels of the encoded input ("zero_encoded"), or black image
  pixels for a CNN embedding ("black").
  """
  if info.encoded_input:
    mode, forward = "zero_encoded", lambda v: (lambda x: model.apply(v, x, method="forward_from"))
  else:
    mode, forward = "black", lambda v: (lambda x: model.apply(v, x))

  def step(variables, images, labels, importance):
    return metrics.pixel_removal_probabilities(
        forward(variables),
        images.astype(jnp.float32) / 255.0,
        labels,
        importance,
        fraction=FRACTION,
        n_points=n_points,
        direction=DIRECTION,
        mode=mode,
    )

  return step


class PixelRemovalResult(NamedTuple):
  """What :class:`Evaluator` measured: the removed fractions (P,), the number of images and per
  method the mean curve (P,)."""

  fractions: np.ndarray
  n_images: int
  curves: dict[str, np.ndarray]


class Evaluator(MethodsEvaluator):
  """The pixel-removal curve of every method.

  Args:
    n_images: the first test images in dataset order (papers: 1,024; capped at the split).
    **kwargs: see :class:`codajax.evaluators.methods.MethodsEvaluator`.
  """

  def __init__(self, n_images: int = 1024, **kwargs):
    super().__init__(**kwargs)
    self.n_images = int(n_images)

  def check(self, ctx: Context) -> None:
    count_images(ctx, self.n_images)

  def run(self, ctx: Context) -> Generator[tuple[str, Any], None, PixelRemovalResult]:
    """Yields ``protocol/pixel_removal``; per method ``methods/<m>/pixel_removal`` {mean, curve},
    ``pixel_removal/<m>`` (N, P) probabilities and ``timings_s/methods/<m>/{attribution,
    pixel_removal}``. Returns a :class:`PixelRemovalResult`."""
    n_images = count_images(ctx, self.n_images)
    if n_images < self.n_images and common.is_main_process() and not ctx.probe:
      print(f"pixel removal: the test split has {n_images} images; using all of them.", flush=True)
    hw = ctx.spec.image_shape[:2]
    n_points = removal_points(hw)
    fractions = metrics.removal_fractions(hw[0] * hw[1], FRACTION, n_points)
    result = PixelRemovalResult(fractions, n_images, {})
    yield "protocol/pixel_removal", {
        "n_images": n_images,
        "images": "first test images in dataset order",
        "targets": "true class",
        "fraction": FRACTION,
        "n_points": n_points,
        "direction": DIRECTION,
        "mode": "zero_encoded" if ctx.info.encoded_input else "black",
        "fractions": fractions.round(6).tolist(),
    }
    shown = examples(ctx, n_images)
    step = removal_step(ctx.model, ctx.info, n_points)
    for method in self.methods:
      importance, attribution_seconds = importance_maps(ctx, self, method, n_images)
      probabilities, seconds = common.timed(
          lambda: common.map_batches(
              ctx,
              self.label(f"removal{n_points}", "all"),
              step,
              common.rows_of({**shown, "importance": importance}),
              n_images,
              self.batch_size,
              ("image", "label", "importance"),
              unit=f"removal/{method}",
          )
      )
      curve = probabilities.mean(0)
      result.curves[method] = curve
      yield f"methods/{method}/pixel_removal", {
          "mean": float(curve.mean()),
          "curve": curve.round(6).tolist(),
      }
      yield f"pixel_removal/{method}", probabilities
      yield f"timings_s/methods/{method}/attribution", attribution_seconds
      yield f"timings_s/methods/{method}/pixel_removal", seconds
    return result
