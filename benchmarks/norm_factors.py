"""The implicit form's triangular factors ``R_d`` of ``M_d = [A_d | w0_d]``: cost and accuracy.

    python benchmarks/norm_factors.py --arch 9L-S                     # CPU: the LAPACK-free ones
    python benchmarks/norm_factors.py --arch 9L-S --impls mgs,mgs_vmap,cholqr2,cholqr2_lapack
    python benchmarks/norm_factors.py --arch 9L-S --impls mgs,householder

The implicit form evaluates ``‖w_d‖ = ‖R_d [z; 1]‖`` (``codajax.nn.dau``); ``R_d`` depends on the
parameters only, so it is computed once per call, for every layer whose ``M_d`` has more rows
than columns. This script factors the initial parameters of ``--arch`` (every such layer, all in
one jitted program), times each implementation in alternation (``common.time_interleaved``) and
prints, per implementation, the median time and the largest norm error
``|‖R_d v‖ − ‖M_d v‖| / (‖M_d‖_F ‖v‖)`` over random ``v``, in units of float32's ε, against
float64 numpy. Implementations:

- ``mgs``: the library's modified Gram–Schmidt (``lax.map`` over the DAUs on CPU, ``vmap``
  elsewhere);
- ``mgs_vmap``, ``mgs_map4``: the same loop over all DAUs at once / 4 at a time;
- ``cholqr2``: CholeskyQR2 (``R = R₂R₁``; ``R₁ = chol(MᵀM)``, ``Q₁ = M R₁⁻¹``, ``R₂ = chol(Q₁ᵀQ₁)``)
  with the Cholesky factor and the triangular inverse as ``fori_loop``s (no LAPACK call);
- ``cholqr2_lapack``: CholeskyQR2 with ``jnp.linalg.cholesky`` and ``solve_triangular``. Not in
  the default list: on the 2-core CPU (jax 0.10.2) a program with two or more of these LAPACK
  calls hung now and then. CholeskyQR2 needs ``κ(M_d) ≲ ε^(-1/2)``; the library's MGS has no such
  limit.
- ``householder``: LAPACK's Householder QR, ``jnp.linalg.qr(m, mode="r")`` (one batched call per
  layer).
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import solve_triangular

from codajax.models import ARCHITECTURES, get_model
from codajax.nn import dau
from common import emit, time_interleaved


def cholesky_upper(g: jax.Array) -> jax.Array:
  """Upper-triangular ``R`` with ``RᵀR = g`` of one SPD ``(q, q)`` matrix, row by row."""
  q = g.shape[-1]
  cols = jnp.arange(q)

  def step(j, r):
    column = lax.dynamic_index_in_dim(r, j, axis=1, keepdims=False)  # R[:j, j], zeros below
    rest = lax.dynamic_index_in_dim(g, j, axis=0, keepdims=False) - column @ r
    pivot = jnp.sqrt(lax.dynamic_index_in_dim(rest, j, keepdims=False))
    row = jnp.where(cols > j, rest / pivot, 0.0)
    return lax.dynamic_update_index_in_dim(r, jnp.where(cols == j, pivot, row), j, axis=0)

  return lax.fori_loop(0, q, step, jnp.zeros_like(g), unroll=4)


def upper_inverse(r: jax.Array) -> jax.Array:
  """``R⁻¹`` of one upper-triangular ``(q, q)`` matrix by back substitution, last row first."""
  q = r.shape[-1]
  cols = jnp.arange(q)

  def step(i, x):
    j = q - 1 - i
    above = jnp.where(cols > j, lax.dynamic_index_in_dim(r, j, axis=0, keepdims=False), 0.0)
    row = ((cols == j).astype(r.dtype) - above @ x) / r[j, j]
    return lax.dynamic_update_index_in_dim(x, row, j, axis=0)

  return lax.fori_loop(0, q, step, jnp.zeros_like(r), unroll=4)


def cholqr2(m: jax.Array) -> jax.Array:
  """CholeskyQR2's ``R`` of every ``M_d`` without LAPACK: ``(D, P, q) -> (D, q, q)``."""
  r1 = jax.vmap(cholesky_upper)(jnp.einsum("dpk,dpl->dkl", m, m))
  q1 = m @ jax.vmap(upper_inverse)(r1)
  r2 = jax.vmap(cholesky_upper)(jnp.einsum("dpk,dpl->dkl", q1, q1))
  return r2 @ r1


def cholqr2_lapack(m: jax.Array) -> jax.Array:
  """CholeskyQR2's ``R`` with LAPACK's Cholesky and triangular solve: ``(D, P, q) -> (D, q, q)``."""

  def upper(g):
    return jnp.swapaxes(jnp.linalg.cholesky(g), -1, -2)

  r1 = upper(jnp.einsum("dpk,dpl->dkl", m, m))
  q1 = jnp.swapaxes(solve_triangular(r1, jnp.swapaxes(m, -1, -2), trans="T"), -1, -2)
  return upper(jnp.einsum("dpk,dpl->dkl", q1, q1)) @ r1


IMPLEMENTATIONS = {
    "mgs": dau._triangular_factors,
    "mgs_vmap": jax.vmap(dau._triangular_factor),
    "mgs_map4": functools.partial(lax.map, dau._triangular_factor, batch_size=4),
    "cholqr2": cholqr2,
    "cholqr2_lapack": cholqr2_lapack,
    "householder": functools.partial(jnp.linalg.qr, mode="r"),
}


def factor_matrices(arch: str) -> list[jax.Array]:
  """``M = [A_d | w0_d]`` ``(D, P, r + 1)`` of every layer of ``arch`` at init with ``P > r + 1``."""
  size = ARCHITECTURES[arch].image_size
  params = get_model(arch).init(jax.random.key(0), jnp.zeros((1, size, size, 3)))["params"]
  layers = [
      layer
      for layer in jax.tree.leaves(
          params, is_leaf=lambda node: isinstance(node, dict) and "A" in node
      )
      if isinstance(layer, dict)
  ]
  matrices = [dau._factor_matrices(*dau._flat_dynamic_factors(layer)) for layer in layers]
  return [m for m in matrices if m.shape[1] > m.shape[2]]


def norm_error(m: jax.Array, r: jax.Array, samples: int = 32) -> float:
  """``max |‖R v‖ − ‖M v‖| / (‖M‖_F ‖v‖)`` over random ``v``, in float32 ε (float64 numpy)."""
  m64, r64 = np.asarray(m, np.float64), np.asarray(r, np.float64)
  v = np.random.default_rng(0).standard_normal((m64.shape[2], samples))
  exact = np.linalg.norm(m64 @ v, axis=1)  # (D, samples)
  got = np.linalg.norm(r64 @ v, axis=1)
  scale = np.linalg.norm(m64, axis=(1, 2))[:, None] * np.linalg.norm(v, axis=0)[None]
  return float(np.max(np.abs(got - exact) / scale) / np.finfo(np.float32).eps)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--arch", default="9L-S")
  parser.add_argument("--impls", default="mgs,mgs_vmap,mgs_map4,cholqr2")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=5)
  args = parser.parse_args()
  matrices = factor_matrices(args.arch)
  calls, errors = {}, {}
  for name in args.impls.split(","):
    factor = jax.jit(lambda ms, f=IMPLEMENTATIONS[name]: [f(m) for m in ms])
    factors = jax.block_until_ready(factor(matrices))  # compile
    errors[name] = max(norm_error(m, r) for m, r in zip(matrices, factors))
    calls[name] = functools.partial(factor, matrices)
  median = time_interleaved(calls, rounds=args.rounds, steps=args.steps)
  for name in calls:
    emit(
        {
            "name": f"{args.arch}/norm_factors/{name}",
            "layers": [list(m.shape) for m in matrices],
            "ms": round(1e3 * median[name], 2),
            "over_mgs": round(median.get("mgs", np.nan) / median[name], 3),
            "max_norm_error_eps": round(errors[name], 3),
        }
    )


if __name__ == "__main__":
  main()
