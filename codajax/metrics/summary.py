"""Summary statistics of a metric's values, as the CoDA authors' stored results are tabulated."""

from __future__ import annotations

import numpy as np


def summarise(values) -> dict[str, float]:
  """mean, std (population, ddof=0), min, p25, median, p75, max and the share of values > 0.5.

  Args: values, any array-like (flattened). Returns a dict of Python floats.
  """
  values = np.asarray(values, dtype=np.float64).reshape(-1)
  if values.size == 0:
    raise ValueError("cannot summarise an empty array")
  p25, median, p75 = np.percentile(values, [25, 50, 75])
  return {
      "mean": float(values.mean()),
      "std": float(values.std()),
      "min": float(values.min()),
      "p25": float(p25),
      "median": float(median),
      "p75": float(p75),
      "max": float(values.max()),
      "share_above_half": float(np.mean(values > 0.5)),
  }
