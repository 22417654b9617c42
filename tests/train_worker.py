"""Runs in a subprocess with fake CPU devices (XLA_FLAGS set by the caller).

    python tests/train_worker.py parallel_equivalence OUT.npz
        3 steps of the same model and batches with jit over all devices, pmap over
        all devices, and jit on one device; saves the three parameter sets.
"""

import sys

import flax.jax_utils
import jax
import jax.numpy as jnp
import numpy as np
import optax

from codajax.models import get_model
from codajax.train import parallel
from codajax.train.step import TrainState, make_train_step


def _run(mode: str, devices, batches, model, tx):
  mesh = parallel.make_mesh(devices)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                     rng=jax.random.key_data(jax.random.key(1)))
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
  batches = [{"image": rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8),
              "label": rng.integers(0, 10, (16,), dtype=np.int32)} for _ in range(3)]
  devices = jax.devices()
  results = {
      "jit": _run("jit", devices, batches, model, tx),
      "pmap": _run("pmap", devices, batches, model, tx),
      "single": _run("jit", devices[:1], batches, model, tx),
  }
  flat = {f"{mode}/{'/'.join(str(k.key) for k in path)}": leaf
          for mode, tree in results.items()
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
  np.savez(out_path, num_devices=len(devices), **flat)


if __name__ == "__main__":
  {"parallel_equivalence": parallel_equivalence}[sys.argv[1]](*sys.argv[2:])
