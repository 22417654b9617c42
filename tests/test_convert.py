"""Import of reference state dicts, checked against an independent numpy port."""

import sys

import jax.numpy as jnp
import numpy as np
import pytest

from codajax.convert import from_reference_state_dict, load_reference_checkpoint
from codajax.models import ARCHITECTURES, get_model
from numpy_reference import coda_net, random_state_dict


def _reference_specs(arch):
  layers = ARCHITECTURES[arch].layers
  return (
      [(s.features, s.rank, s.kernel_size) for s in layers],
      [(s.kernel_size, s.stride, s.padding) for s in layers],
  )


@pytest.mark.parametrize(
    "arch,norm", [("tiny-3L", "squash"), ("tiny-3L", "l2"), ("9L-S", "squash")]
)
def test_converted_model_matches_numpy_reference(arch, norm):
  full, geometry = _reference_specs(arch)
  rng = np.random.default_rng(0)
  state = random_state_dict(rng, full, in_channels=6)
  size = ARCHITECTURES[arch].image_size
  images = rng.uniform(size=(2, size, size, 3))
  model = get_model(arch, norm=norm, logit_bias=0.0)  # compare the evidence unrounded
  variables = from_reference_state_dict(state, arch, norm=norm)
  got = model.apply(variables, jnp.asarray(images, jnp.float32))
  want = coda_net(images, state, geometry, model.temperature, 0.0, norm)
  np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=1e-4)


def test_prefixed_keys_and_extra_entries_are_accepted():
  full, _ = _reference_specs("tiny-3L")
  state = random_state_dict(np.random.default_rng(1), full, in_channels=6)
  prefixed = {f"module.{k}": v for k, v in state.items()}
  prefixed["module.10.logit_bias"] = np.zeros(())
  a = from_reference_state_dict(state, "tiny-3L")
  b = from_reference_state_dict(prefixed, "tiny-3L")
  for name in ("A", "B", "w0"):
    np.testing.assert_array_equal(a["params"]["layer_1"][name], b["params"]["layer_1"][name])


def test_mismatched_state_dicts_fail_clearly():
  full, _ = _reference_specs("tiny-3L")
  state = random_state_dict(np.random.default_rng(2), full, in_channels=6)
  with pytest.raises(ValueError, match="has 9 CoDA layers"):
    from_reference_state_dict(state, "9L-S")
  wrong = random_state_dict(np.random.default_rng(2), [(8, 4, 3), (9, 4, 3), (10, 4, 1)], 6)
  with pytest.raises(ValueError, match="Reference layer 1 has shape"):
    from_reference_state_dict(wrong, "tiny-3L")
  del state["2.weight_mod.weighting_f.1.bias"]
  with pytest.raises(ValueError, match=r"layer 2 lacks its \['w0'\]"):
    from_reference_state_dict(state, "tiny-3L")


def test_loading_a_pickle_without_torch_names_the_extra(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(ImportError, match=r"codajax\[torch\]"):
    load_reference_checkpoint(str(tmp_path / "model.pkl"), "9L-S")
