"""Accuracy of the DAU forms when the dynamic weight ``w = Az + b`` is small against ``Az`` and ``b``.

    python benchmarks/dau_small_norm.py                  # float32, δ = 1 … 1e-6
    python benchmarks/dau_small_norm.py --form_impl gram # the former Gram expansion, for comparison

A 1×1 CoDA layer (C = 8 channels, D = 16 DAUs, rank 4) sees one input ``x``; each
``b_d`` is set to ``−A_d z + δ·‖A_d z‖·noise/√C`` (``z = Bx``), so ``‖w_d‖ ≈ δ·‖A_d z‖``.
Prints, per δ, form and norm, the relative error (‖got − ref‖ / ‖ref‖ over all
outputs) of the layer output and of its gradients with respect to ``x`` and ``A``
against a float64 explicit reference written here in numpy, and the condition
number ``κ = max_d ‖[A_d | b_d]‖_F·‖[z; 1]‖ / ‖w_d‖`` (a backward-stable float32
computation has error ~ ε·κ, ε = 1.2e-7).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from codajax.nn import dau
from dau_forms import norm_impl

C, D, RANK = 8, 16, 4


def small_norm_layer(delta: float, seed: int = 0):
  """float32 parameters and input of a 1×1 layer with ``‖w_d‖ ≈ δ·‖A_d z‖``."""
  rng = np.random.default_rng(seed)
  b_mat = rng.uniform(-1, 1, (C, RANK)) / np.sqrt(C)
  a = rng.uniform(-1, 1, (C, D, RANK)) / np.sqrt(RANK)
  x = rng.uniform(0, 1, C).astype(np.float32)
  b_mat, a = b_mat.astype(np.float32), a.astype(np.float32)
  z = x.astype(np.float64) @ b_mat.astype(np.float64)  # (r,)
  az = np.einsum("cdr,r->cd", a.astype(np.float64), z)  # (C, D)
  noise = rng.normal(size=(C, D)) / np.sqrt(C)
  bias = (-az + delta * np.linalg.norm(az, axis=0) * noise).astype(np.float32)
  params = {"B": b_mat[None, None], "A": a[None, None], "w0": bias[None, None]}
  return params, x


def reference(params, x, norm):
  """float64 explicit layer: output (D,), gradients of ``Σ_d g_d·out_d`` w.r.t. x (C,) and A (C, D, r)."""
  b_mat = params["B"][0, 0].astype(np.float64)
  a = params["A"][0, 0].astype(np.float64)
  bias = params["w0"][0, 0].astype(np.float64)
  x = x.astype(np.float64)
  z = x @ b_mat
  w = np.einsum("cdr,r->cd", a, z) + bias  # (C, D)
  n2 = np.sum(w**2, axis=0)
  if norm == "squash":
    s, ds = np.sqrt(n2) / (1 + n2), (1 - n2) / (2 * np.sqrt(n2) * (1 + n2) ** 2)
  else:
    s, ds = n2**-0.5, -0.5 * n2**-1.5
  u = x @ w
  out = u * s
  g = np.linspace(1.0, 2.0, D)  # output cotangent
  a_t_x = np.einsum("cdr,c->dr", a, x)  # A_dᵀx
  a_t_w = np.einsum("cdr,cd->dr", a, w)  # A_dᵀw
  # d out_d / dx = s·(w_d + B A_dᵀx) + u_d·s'·2·B A_dᵀ w_d
  grad_x = (g * s) @ w.T + b_mat @ ((g * s) @ a_t_x) + b_mat @ ((g * u * ds * 2) @ a_t_w)
  # d out_d / dA_d = s·x zᵀ + u_d·s'·2·w_d zᵀ
  grad_a = np.einsum("d,c,r->cdr", g * s, x, z) + np.einsum("d,cd,r->cdr", g * u * ds * 2, w, z)
  kappa = np.max(
      np.sqrt(np.sum(a**2, axis=(0, 2)) + np.sum(bias**2, axis=0))
      * np.sqrt(1 + z @ z)
      / np.sqrt(n2)
  )
  return out, grad_x, grad_a, g, kappa


def layer_and_grads(params, x, norm, form):
  """float32 output and gradients of the codajax layer."""
  g = jnp.linspace(1.0, 2.0, D)

  def loss(params, x):
    return jnp.sum(g * dau.dau_conv(params, x[None, None, None], norm=norm, form=form)[0, 0, 0])

  out = dau.dau_conv(params, jnp.asarray(x)[None, None, None], norm=norm, form=form)[0, 0, 0]
  grads = jax.grad(loss, argnums=(0, 1))(params, jnp.asarray(x))
  return np.asarray(out), np.asarray(grads[1]), np.asarray(grads[0]["A"][0, 0])


def relative_error(got, want):
  return float(np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--deltas", default="1,1e-1,1e-2,1e-3,1e-4,1e-5,1e-6")
  parser.add_argument(
      "--form_impl",
      choices=("qr", "gram"),
      default="qr",
      help="qr: the library's implicit-form norm; gram: the former Gram expansion",
  )
  args = parser.parse_args()
  with norm_impl(args.form_impl):
    run(args.deltas)


def run(deltas: str):
  print("| δ | κ | norm | form | out rel. err | ∂x rel. err | ∂A rel. err |")
  print("|---|---|---|---|---|---|---|")
  for delta in map(float, deltas.split(",")):
    params, x = small_norm_layer(delta)
    for norm in dau.NORMS:
      out, grad_x, grad_a, _, kappa = reference(params, x, norm)
      for form in dau.FORMS:
        got = layer_and_grads({k: jnp.asarray(v) for k, v in params.items()}, x, norm, form)
        errs = [relative_error(g, w) for g, w in zip(got, (out, grad_x, grad_a))]
        print(
            f"| {delta:g} | {kappa:.1e} | {norm} | {form} | "
            + " | ".join(f"{e:.1e}" for e in errs)
            + " |",
            flush=True,
        )


if __name__ == "__main__":
  main()
