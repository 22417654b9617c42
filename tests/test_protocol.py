"""codajax.explain.protocol: the layer check and the segment loops the models share."""

import numpy as np
import pytest

from codajax.explain import protocol


def test_check_layer_accepts_ints_in_range_only():
  for layer in (0, 2, np.int64(1)):
    protocol.check_layer(layer, 3)
  for bad in (3, -1, True, 1.0, np.float32(1.0), "1", None):
    with pytest.raises(ValueError, match=r"layer must be in 0\.\.2 \(the model has 3 explainable"):
      protocol.check_layer(bad, 3)


def test_segment_loops_run_in_order():
  calls = []

  def segment(k):
    def run(h, *args):
      calls.append((k, args))
      return 10 * h + k

    return run

  segments = [segment(1), segment(2), segment(3)]
  assert protocol.run_segments(0, segments, range(3), "explain") == 123
  assert calls == [(1, ("explain",)), (2, ("explain",)), (3, ("explain",))]
  calls.clear()
  assert protocol.run_segments(4, segments, range(1, 3)) == 423
  assert calls == [(2, ()), (3, ())]
  assert protocol.run_segments(7, segments, range(0)) == 7
  calls.clear()
  assert protocol.segment_inputs(0, segments) == (0, 1, 12)
  assert calls == [(1, ()), (2, ())]
