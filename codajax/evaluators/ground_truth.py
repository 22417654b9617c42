"""Ground-truth localisation on datasets with object masks: mask energy (share of the positive
attribution inside the mask) and the pointing game (the map's maximum lies on the object)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from codajax import metrics
from codajax.evaluators import common, pixel_removal
from codajax.evaluators.common import Context, EvaluationError
from codajax.evaluators.methods import MethodsEvaluator

CHOICES = ("auto", "on")


class Evaluator(MethodsEvaluator):
  """Mask energy and pointing game of every method, true-class maps of the first test images.

  Args:
    n_images: the first test images (the pixel-removal images: their maps are shared).
    when: ``"auto"`` (datasets with ``object_mask``) or ``"on"`` (required: an error without).
    **kwargs: see :class:`codajax.evaluators.methods.MethodsEvaluator`.
  """

  def __init__(self, n_images: int = 1024, when: str = "auto", **kwargs):
    super().__init__(**kwargs)
    if when not in CHOICES:
      raise EvaluationError(
          f"ground_truth: when must be one of {', '.join(CHOICES)}; " f"got {when!r}"
      )
    self.n_images, self.when = int(n_images), when

  def check(self, ctx: Context) -> None:
    pixel_removal.count_images(ctx, self.n_images)
    if self.when == "on" and not ctx.spec.has_object_mask:
      raise EvaluationError(
          f"ground-truth localisation requested but dataset "
          f"{ctx.spec.name!r} has no object masks (datasets with masks: shapes)"
      )

  def run(self, ctx: Context) -> Iterator[tuple[str, Any]]:
    """Yields ``protocol/ground_truth``; per method ``methods/<m>/ground_truth`` {mask_energy
    summary, pointing_game}, ``mask_energy/<m>`` and ``pointing_game/<m>`` (N,)."""
    if not ctx.spec.has_object_mask:
      return
    n_images = pixel_removal.count_images(ctx, self.n_images)
    masks = pixel_removal.examples(ctx, n_images)["object_mask"]
    yield "protocol/ground_truth", {
        "n_images": n_images,
        "images": "the pixel-removal images",
        "targets": "true class",
        "mask_fraction": float(masks.astype(bool).mean()),
        "note": "mask_fraction = mask energy of a uniform map",
    }

    def step(variables, importance, mask):
      del variables
      return {
          "mask_energy": metrics.mask_energy(importance, mask),
          "pointing_game": metrics.pointing_game(importance, mask),
      }

    for method in self.methods:
      importance, _ = pixel_removal.importance_maps(ctx, self, method, n_images)
      out, seconds = common.timed(
          lambda: common.map_batches(
              ctx,
              "ground_truth",
              step,
              common.rows_of({"importance": importance, "mask": masks}),
              n_images,
              self.batch_size,
              ("importance", "mask"),
              unit=f"ground_truth/{method}",
          )
      )
      yield f"methods/{method}/ground_truth", {
          "mask_energy": metrics.summarise(out["mask_energy"]),
          "pointing_game": float(out["pointing_game"].mean()),
      }
      yield f"mask_energy/{method}", out["mask_energy"]
      yield f"pointing_game/{method}", out["pointing_game"]
      yield f"timings_s/methods/{method}/ground_truth", seconds
