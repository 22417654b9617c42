"""Runs in a subprocess with fake CPU devices (XLA_FLAGS set by the caller).

python tests/train_worker.py parallel_equivalence OUT.npz
    3 steps of the same model and batches with jit over all devices, pmap over
    all devices, and jit on one device; saves the three parameter sets.

python tests/train_worker.py pmap_regulariser_rng OUT.npz
    one pmap step over all devices with the regulariser replaced by uniform(rng);
    saves the (pmean'd) penalty and the state's key data.

python tests/train_worker.py fail_at {summarise,eval} WORKDIR DATA_DIR
    trains the digits smoke config (tiny-3L, 4 steps, checkpoints every 2) with the
    step-4 summary (a NaN stop) or the final eval raising, then exits with status 3
    straight away (so a save still in flight would be lost).
"""

import sys

import flax.jax_utils
import jax
import jax.numpy as jnp
import numpy as np
import optax

from codajax.models import get_model
from codajax import parallel
from codajax.train.step import TrainState, make_train_step


def _run(mode: str, devices, batches, model, tx):
  mesh = parallel.make_mesh(devices)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
  state = TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=tx.init(params),
      rng=jax.random.key_data(jax.random.key(1)),
  )
  step = make_train_step(model, tx, mesh=mesh, parallel_mode=mode)
  if mode == "pmap":
    state = flax.jax_utils.replicate(state, devices)
  else:
    state = parallel.replicate(state, mesh)
  for batch in batches:
    if mode == "pmap":
      state, _ = step(state, parallel.split_for_pmap(batch))
    else:
      state, _ = step(state, parallel.shard_batch(batch, mesh))
  params = state.params
  if mode == "pmap":
    params = jax.tree.map(lambda x: x[0], params)
  return jax.tree.map(np.asarray, params)


def parallel_equivalence(out_path: str) -> None:
  model = get_model("tiny-3L")
  tx = optax.adam(1e-2)
  rng = np.random.default_rng(0)
  batches = [
      {
          "image": rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8),
          "label": rng.integers(0, 10, (16,), dtype=np.int32),
      }
      for _ in range(3)
  ]
  devices = jax.devices()
  results = {
      "jit": _run("jit", devices, batches, model, tx),
      "pmap": _run("pmap", devices, batches, model, tx),
      "single": _run("jit", devices[:1], batches, model, tx),
  }
  flat = {
      f"{mode}/{'/'.join(str(k.key) for k in path)}": leaf
      for mode, tree in results.items()
      for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
  }
  np.savez(out_path, num_devices=len(devices), **flat)


def pmap_regulariser_rng(out_path: str) -> None:
  import codajax.train.step

  def logits_and_uniform(model, params, images, labels, rng, **kwargs):
    """The step's logits, and a 'penalty' that shows which RNG key the step passed."""
    return model.apply({"params": params}, images), jax.random.uniform(rng)

  codajax.train.step.logits_and_dynamic_matrix_l1 = logits_and_uniform  # the name the step calls
  model = get_model("tiny-3L")
  tx = optax.sgd(0.0)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
  key_data = jax.random.key_data(jax.random.key(7))
  state = TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=key_data
  )
  step = make_train_step(model, tx, l1_matrix_weight=1.0, parallel_mode="pmap")
  rng = np.random.default_rng(0)
  n = jax.local_device_count()
  batch = {
      "image": rng.integers(0, 256, (2 * n, 8, 8, 3), dtype=np.uint8),
      "label": rng.integers(0, 10, (2 * n,), dtype=np.int32),
  }
  _, metrics = step(flax.jax_utils.replicate(state), parallel.split_for_pmap(batch))
  np.savez(
      out_path,
      penalty=np.asarray(metrics["train/l1_matrix"][0]),
      key_data=np.asarray(key_data),
      num_devices=n,
  )


def fail_at(where: str, workdir: str, data_dir: str) -> None:
  import os

  from codajax.train import loop, train_and_evaluate

  sys.path.insert(
      0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
  )
  import digits  # noqa: E402

  config = digits.get_config("smoke")
  config.data_dir, config.model.name, config.model.temperature = data_dir, "tiny-3L", 10.0
  if where == "summarise":
    real = loop._summarise

    def summarise(pending, step, workdir):
      if step == 4:
        raise loop.TrainingError("Non-finite training metrics at step 4 (injected)")
      return real(pending, step, workdir)

    loop._summarise = summarise
  else:

    def evaluate(*args, **kwargs):
      raise OSError("injected: truncated test file")

    loop.evaluate = evaluate
  try:
    train_and_evaluate(config, workdir)
  except Exception as error:  # noqa: BLE001
    print(f"failed: {error}", flush=True)
    os._exit(3)  # no interpreter clean-up: only what was waited for is on disk
  os._exit(0)


if __name__ == "__main__":
  {
      "parallel_equivalence": parallel_equivalence,
      "pmap_regulariser_rng": pmap_regulariser_rng,
      "fail_at": fail_at,
  }[sys.argv[1]](*sys.argv[2:])
