"""codajax.explain.protocol: the layer and image checks and the segment loops the models share."""

import numpy as np
import pytest

from codajax.explain import protocol


def test_check_layer_accepts_ints_in_range_only():
  for layer in (0, 2, np.int64(1)):
    protocol.check_layer(layer, 3)
  for bad in (3, -1, True, 1.0, np.float32(1.0), "1", None):
    with pytest.raises(ValueError, match=r"layer must be in 0\.\.2 \(the model has 3 explainable"):
      protocol.check_layer(bad, 3)


def test_image_checks_name_the_model_and_the_shape():
  protocol.check_images(np.zeros((2, 4, 4, 3)), 3, "M")
  with pytest.raises(ValueError, match=r"^M expects NHWC images of rank 4, got shape \(4, 4, 3\)"):
    protocol.check_images(np.zeros((4, 4, 3)), 3, "M")
  with pytest.raises(ValueError, match=r"^M was built for 3-channel images, got 1 channels"):
    protocol.check_images(np.zeros((2, 4, 4, 1)), 3, "M")


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
