"""codajax._checks: one image check, so explain, attribution and the models agree on bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codajax import attribution
from codajax._checks import check_images
from codajax.explain import explain
from codajax.models import get_model


def test_image_checks_name_the_caller_and_the_shape():
  check_images(np.zeros((2, 4, 4, 3)), name="M", channels=3)
  with pytest.raises(ValueError, match=r"^M expects NHWC images of rank 4, got shape \(4, 4, 3\)"):
    check_images(np.zeros((4, 4, 3)), name="M", channels=3)
  with pytest.raises(ValueError, match=r"^M was built for 3-channel images, got 1 channels"):
    check_images(np.zeros((2, 4, 4, 1)), name="M", channels=3)


def test_value_checks_are_opt_in_and_skip_tracers():
  outside = np.full((1, 2, 2, 3), 2.0, np.float32)
  nan = np.full((1, 2, 2, 3), np.nan, np.float32)
  assert check_images(outside, name="M").shape == (1, 2, 2, 3)
  check_images(nan, name="M", check_range=False)
  with pytest.raises(ValueError, match=r"^M expects images in \[0, 1\], got values in \[2, 2\]"):
    check_images(outside, name="M", check_range=True)
  with pytest.raises(ValueError, match="NaN or Inf"):
    check_images(nan, name="M", check_finite=True)
  jax.jit(lambda x: check_images(x, name="M", check_finite=True, check_range=True))(outside)
  with pytest.raises(ValueError, match="empty batch"):
    check_images(np.zeros((0, 2, 2, 3), np.float32), name="M")
  assert check_images(np.zeros((0, 2, 2, 3), np.float32), name="M", allow_empty=True).shape[0] == 0


@pytest.fixture(scope="module")
def tiny():
  model = get_model("tiny-3L")
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  return model, variables


BAD_IMAGES = [
    pytest.param(jnp.zeros((8, 8, 3)), ValueError, "rank 4", id="rank-3"),
    pytest.param(jnp.zeros((2, 8, 8, 3), jnp.uint8), TypeError, "got dtype uint8", id="uint8"),
    pytest.param(jnp.zeros((2, 8, 8, 3), jnp.int32), TypeError, "got dtype int32", id="int32"),
]


@pytest.mark.parametrize("images,error,message", BAD_IMAGES)
def test_same_bad_images_same_error_from_explain_attribution_and_the_model(
    tiny, images, error, message
):
  model, variables = tiny
  fn = lambda x: model.apply(variables, x)
  with pytest.raises(error, match=message):
    explain(model, variables, images)
  with pytest.raises(error, match=message):
    attribution.gradient(fn, images, 0)
  with pytest.raises(error, match=message):
    attribution.METHODS["Occ5"](fn, images, 0)
  with pytest.raises(error, match=message):
    model.apply(variables, images)
