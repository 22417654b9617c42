"""Completeness of the CoDA contributions: at every explainable layer, the contribution map of the
true class should sum to the model's logit minus its bias (up to float round-off)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax.numpy as jnp
import numpy as np

from codajax import metrics
from codajax.evaluators import common, pixel_removal
from codajax.evaluators.common import Context
from codajax.explain import explain


class Evaluator:
  """Relative completeness error ``|Σ c − (logit − bias)| / Σ |c|`` per image and layer.

  The logit is the plain forward pass (``model.apply``), so the check covers the explanation
  mode against the network that is actually evaluated.

  Args:
    n_images: the first test images in dataset order (capped at the split).
    batch_size: images per call.
  """

  def __init__(self, n_images: int = 256, batch_size: int = 32):
    self.n_images, self.batch_size = int(n_images), int(batch_size)

  def check(self, ctx: Context) -> None:
    pixel_removal.count_images(ctx, self.n_images)

  def run(self, ctx: Context) -> Iterator[tuple[str, Any]]:
    """Yields ``completeness/max``, ``completeness/layers`` [{layer, mean, max}] and
    ``completeness_errors`` (L, N)."""
    n_images = pixel_removal.count_images(ctx, self.n_images)
    model, layers = ctx.model, ctx.info.num_layers

    def step(variables, images, labels):
      images = images.astype(jnp.float32) / 255.0
      logits = model.apply(variables, images)
      target = jnp.take_along_axis(logits, labels[:, None], 1)[:, 0] - model.logit_bias
      return jnp.stack(
          [
              metrics.contribution_sum_error(
                  explain(model, variables, images, targets=labels, layer=layer)[
                      "contribution_map"
                  ],
                  target,
              )
              for layer in range(layers)
          ],
          axis=1,
      )  # (B, L)

    errors, seconds = common.timed(
        lambda: common.map_batches(
            ctx,
            "completeness",
            step,
            common.rows_of(pixel_removal.examples(ctx, n_images)),
            n_images,
            self.batch_size,
            ("image", "label"),
        )
    )
    errors = np.asarray(errors, np.float64).T  # (L, N)
    yield "completeness/max", float(errors.max())
    yield "completeness/layers", [
        {"layer": layer, "mean": float(e.mean()), "max": float(e.max())}
        for layer, e in enumerate(errors)
    ]
    yield "completeness_errors", errors
    yield "timings_s/completeness", seconds
