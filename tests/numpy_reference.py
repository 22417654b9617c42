"""An independent numpy port of the authors' PyTorch forward pass (NCHW, unfold based).

Written from the CVPR 2021 paper's layer definition and the authors' code, sharing no code with codajax, so tests
can check the converter and both DAU forms against it without PyTorch.
"""

import numpy as np


def unfold(x, k, s, p):
  """torch.nn.functional.unfold: (B, C, H, W) -> (B, C·k², H', W'), index c·k² + ki·k + kj."""
  bsz, c, h, w = x.shape
  xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
  ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
  out = np.zeros((bsz, c, k, k, ho, wo), x.dtype)
  for ki in range(k):
    for kj in range(k):
      out[:, :, ki, kj] = xp[:, :, ki : ki + s * ho : s, kj : kj + s * wo : s]
  return out.reshape(bsz, c * k * k, ho, wo)


def coda_layer(x, b_mat, a_mat, beta, k, s, p, norm="squash"):
  """One reference CoDA layer: x (B, C, H, W), Bmat (r, C, k, k), Amat (P·D, r, 1, 1), beta (P·D,)."""
  patches = unfold(x, k, s, p)  # (B, P, H', W')
  bsz, patch, ho, wo = patches.shape
  z = np.einsum("rp,bphw->brhw", b_mat.reshape(b_mat.shape[0], -1), patches)
  v = np.einsum("qr,brhw->bqhw", a_mat[:, :, 0, 0], z) + beta[None, :, None, None]
  d = a_mat.shape[0] // patch
  w = v.reshape(bsz, patch, d, ho, wo)  # q = p·D + d
  u = np.sum(patches[:, :, None] * w, axis=1)  # (B, D, H', W')
  n = np.sqrt(np.sum(w * w, axis=1))
  big_n = (1 + n**2) / n if norm == "squash" else n
  return u / big_n


def coda_net(images_nhwc, state_dict, specs, temperature, logit_bias, norm="squash"):
  """Logits of the reference network; specs: [(k, s, p)] per layer; images (N, H, W, C) in [0, 1]."""
  x = np.transpose(images_nhwc, (0, 3, 1, 2)).astype(np.float64)
  x = np.concatenate([x, 1 - x], axis=1)
  for i, (k, s, p) in enumerate(specs):
    x = coda_layer(
        x,
        state_dict[f"{i}.weight_mod.weighting_f.0.weight"],
        state_dict[f"{i}.weight_mod.weighting_f.1.weight"],
        state_dict[f"{i}.weight_mod.weighting_f.1.bias"],
        k,
        s,
        p,
        norm,
    )
  return x.mean(axis=(2, 3)) * (x.shape[2] * x.shape[3]) / temperature + logit_bias


def random_state_dict(rng, specs_full, in_channels):
  """A reference state dict with PyTorch-default-like uniform values; specs_full: [(D, r, k)]."""
  state, c = {}, in_channels
  for i, (d, r, k) in enumerate(specs_full):
    patch = c * k * k
    state[f"{i}.weight_mod.weighting_f.0.weight"] = rng.uniform(-1, 1, (r, c, k, k)) / np.sqrt(
        patch
    )
    state[f"{i}.weight_mod.weighting_f.1.weight"] = rng.uniform(
        -1, 1, (patch * d, r, 1, 1)
    ) / np.sqrt(r)
    state[f"{i}.weight_mod.weighting_f.1.bias"] = rng.uniform(-1, 1, (patch * d,)) / np.sqrt(r)
    c = d
  return state


def coda_layer_matrix(x, b_mat, a_mat, beta, k, s, p, norm="squash"):
  """The dynamic linear map of one reference CoDA layer at its input ``x`` (C, H, W), float64.

  Returns ``(M, out)``: ``M`` of shape ``(D·H'·W', C·H·W)`` (both sides flattened in
  C-order of (channel, row, column)) with ``out = M @ x.ravel()``; the dynamic weights
  and norm factors are those of ``x`` (explanation mode), built entry by entry from
  the unfold of the input's basis vectors, not from the layer's output.
  """
  x = np.asarray(x, np.float64)
  c, h, w = x.shape
  basis = np.eye(c * h * w).reshape(c * h * w, c, h, w)
  unfolded = unfold(basis, k, s, p)  # (CHW, P, H', W')
  patches = unfold(x[None], k, s, p)[0]  # (P, H', W')
  patch, ho, wo = patches.shape
  z = np.einsum("rp,phw->rhw", b_mat.reshape(b_mat.shape[0], -1), patches)
  v = np.einsum("qr,rhw->qhw", a_mat[:, :, 0, 0], z) + beta[:, None, None]
  d = a_mat.shape[0] // patch
  weights = v.reshape(patch, d, ho, wo)  # q = p·D + d
  n = np.sqrt(np.sum(weights * weights, axis=0))  # (D, H', W')
  factor = n / (1 + n**2) if norm == "squash" else 1 / n
  matrix = np.einsum("pdhw,ipdhw->dhwi", weights * factor, unfolded[:, :, None])
  matrix = matrix.reshape(d * ho * wo, c * h * w)
  return matrix, (matrix @ x.ravel()).reshape(d, ho, wo)
