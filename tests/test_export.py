"""9L-S's programs lower for GPU and TPU on a CPU-only host (``jax.export``, shapes only).

Each program a GPU/TPU user compiles (the train step in both parallel modes and both compute
dtypes, the contribution maps, a post-hoc method, the localisation evaluator's program) is
exported for ``platforms=["cuda", "tpu"]`` from ``jax.ShapeDtypeStruct`` arguments, and its
StableHLO is checked: no host callback, and the QR loop in its accelerator form (``vmap``), not
the CPU one (``lax.map``; see ``codajax/nn/dau.py``).
"""

import functools
import re

import jax
import jax.numpy as jnp
import optax
import pytest

from codajax import attribution
from codajax.evaluators import localisation, methods
from codajax.explain import explain_jit
from codajax.models import get_model
from codajax import parallel
from codajax.train.step import TrainState, make_train_step

PLATFORMS = ["cuda", "tpu"]
BATCH = 2
GRID = 3
# The QR loop's two forms are jitted functions of these names: calls to them stay in the
# StableHLO (tests/test_dau.py checks that a CPU export carries the first and not the second).
CPU_FORM = "@_triangular_factors_one_at_a_time"
ACCELERATOR_FORM = "@_triangular_factors_all_at_once"


def custom_call_targets(mlir_text: str) -> set[str]:
  """The ``stablehlo.custom_call`` targets of a module's text (generic or pretty form)."""
  pretty = re.findall(r"custom_call\s*@([\w.$-]+)", mlir_text)
  generic = re.findall(r'call_target_name\s*=\s*"([^"]+)"', mlir_text)
  return set(pretty) | set(generic)


def host_callbacks(mlir_text: str) -> set[str]:
  """The custom calls that call back into the host (``pure_callback``, ``io_callback``,
  ``jax.debug``...): their targets name a callback."""
  return {target for target in custom_call_targets(mlir_text) if "callback" in target.lower()}


def export_text(fn, *specs) -> str:
  """StableHLO text of the jitted ``fn`` exported for GPU and TPU from shapes ``specs``."""
  fn = fn if hasattr(fn, "lower") else jax.jit(fn)
  exported = jax.export.export(fn, platforms=PLATFORMS)(*specs)
  assert tuple(exported.platforms) == tuple(PLATFORMS)
  return exported.mlir_module()


def assert_ready_for_accelerators(mlir_text: str, *, qr_loop: bool = True) -> None:
  """No host callback, no CPU form of the QR loop, and the accelerator form iff ``qr_loop`` (the
  program computes a norm of the implicit DAU form)."""
  assert not host_callbacks(mlir_text), host_callbacks(mlir_text)
  assert CPU_FORM not in mlir_text, "the program carries the CPU form of the QR loop"
  assert (ACCELERATOR_FORM in mlir_text) == qr_loop, f"QR loop expected: {qr_loop}"


def _spec(shape, dtype) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(shape, dtype)


@functools.cache
def _model(dtype=None):
  return get_model("9L-S", dtype=dtype)


@functools.cache
def _state_and_tx(dtype=None):
  """Shapes of a fresh 9L-S train state (``jax.eval_shape``: nothing is initialised)."""
  model, tx = _model(dtype), optax.adam(1e-3)

  def init():
    params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.key_data(jax.random.key(1)),
    )

  return jax.eval_shape(init), tx


def _variables():
  return {"params": _state_and_tx()[0].params}


def _images(size=32, batch=BATCH):
  return _spec((batch, size, size, 3), jnp.float32)


def test_the_checks_see_a_host_callback_and_the_cpu_form():
  """The checks can fail: a ``pure_callback`` is found, and a CPU lowering of a DAU layer
  carries the CPU form of the QR loop."""

  def with_callback(x):
    return jax.pure_callback(lambda v: v, jax.ShapeDtypeStruct(x.shape, x.dtype), x)

  text = jax.jit(with_callback).lower(_spec((3,), jnp.float32)).as_text()
  assert host_callbacks(text), custom_call_targets(text)

  model = _model()
  cpu_text = jax.jit(model.apply).lower(_variables(), _images()).as_text()
  assert CPU_FORM in cpu_text and ACCELERATOR_FORM not in cpu_text
  with pytest.raises(AssertionError, match="CPU form"):
    assert_ready_for_accelerators(cpu_text)


@pytest.mark.parametrize("dtype", [None, jnp.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("parallel_mode", ["jit", "pmap"])
def test_train_step_exports_for_gpu_and_tpu(parallel_mode, dtype):
  state, tx = _state_and_tx(dtype)
  model = _model(dtype)
  batch = {"image": _spec((BATCH, 32, 32, 3), jnp.uint8), "label": _spec((BATCH,), jnp.int32)}
  if parallel_mode == "jit":
    step = make_train_step(model, tx, mesh=parallel.make_mesh(), parallel_mode="jit")
  else:  # one device here: the leading axis is the device axis of size 1
    step = jax.jit(make_train_step(model, tx, parallel_mode="pmap"))
    per_device = lambda s: _spec((1, *s.shape), s.dtype)
    state, batch = jax.tree.map(per_device, (state, batch))
  text = export_text(step, state, batch)
  assert_ready_for_accelerators(text)
  if dtype is not None:
    assert "bf16" in text
  if parallel_mode == "pmap":
    assert "all_reduce" in text  # the gradients' pmean


@pytest.mark.parametrize(
    "targets, form, qr_loop",
    [(None, "auto", True), ("all", "auto", False), ("all", "implicit", True)],
    ids=["predicted", "all_classes", "all_classes_implicit"],
)
def test_explain_jit_exports_for_gpu_and_tpu(targets, form, qr_loop):
  """All classes take the explicit form by default (its norms come from the materialised
  weights: no QR loop); the implicit form is checked too."""
  model = _model()
  explain = lambda v, x: explain_jit(model, v, x, targets, form=form)
  assert_ready_for_accelerators(export_text(explain, _variables(), _images()), qr_loop=qr_loop)


def test_a_posthoc_method_exports_for_gpu_and_tpu():
  """Integrated Gradients (the papers' preset: 20 steps), chunked as the evaluators run it."""
  model, integrated_gradients = _model(), attribution.get_method("IntGrad")

  def program(variables, images, targets):
    fn = lambda x: model.apply(variables, x)
    return integrated_gradients(fn, images, targets, items_per_pass=4)

  text = export_text(program, _variables(), _images(), _spec((BATCH,), jnp.int32))
  assert_ready_for_accelerators(text)


def test_the_localisation_evaluators_program_exports_for_gpu_and_tpu():
  """Its program for "Ours" (the contribution maps of every tile's class) on 3 × 3 grids."""
  model, variables = _model(), _variables()
  info = methods.inspect_model(model, variables, (32, 32, 3))
  program = localisation.grid_program(methods.attribution_function(model, info, "Ours"), GRID)
  size = 32 * GRID
  grids = _spec((BATCH, size, size, 3), jnp.uint8)
  tile_labels = _spec((BATCH, GRID * GRID), jnp.int32)
  text = export_text(program, variables, grids, tile_labels)
  assert_ready_for_accelerators(text)
