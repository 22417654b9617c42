"""Evaluation of a trained run: accuracy, localisation, pixel removal, ground truth, depths, figures.

``run_evaluation(workdir, ...)`` is what ``eval.py`` runs. It restores a checkpoint written by
``train.py`` and measures, for the CoDA contribution maps ("Ours") and every requested post-hoc
baseline of :mod:`codajax.attribution`, the papers' protocols (``docs/evaluation.md``):

* accuracy (top-1, top-5, per class) on the test split (:func:`codajax.train.evaluate`);
* the grid localisation metric on confidently classified test images (spec 4.1);
* the pixel-removal curve on the first test images in dataset order (spec 4.2);
* ground-truth localisation (mask energy, pointing game) where the dataset has object masks;
* the localisation metric of the contributions at every explainable depth;
* figures (PNG) and ``report.json`` with every number.

Each part is a function of its own. Attributions are ``jax.jit``-compiled once per method and
input shape, with the model variables as an argument (never baked into the program), and run
over padded fixed-size batches sharded over the device mesh.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from codajax import attribution, data, metrics
from codajax.explain import explain
from codajax.train import RestoredRun, evaluate, make_eval_step, parallel, restore

try:  # the interpretable-depth helpers; the generic fallback below does the same without them
  from codajax.explain.hybrid import explain_at_depths, upsample_to_image
except ImportError:  # pragma: no cover - depends on the installed version
  explain_at_depths = upsample_to_image = None

Array = jax.Array
# (variables, images uint8 (N, H, W, C), targets (N,) or (N, T)) -> maps (N, [T,] H, W, C')
AttributionFn = Callable[[Any, Array, Array], Array]

OURS = "Ours"
REPORT_FILE = "report.json"
SCORES_FILE = "scores.npz"
SELECTION_SEED = 42
REMOVAL_FRACTION = 0.25
REMOVAL_POINTS = 128
REMOVAL_DIRECTION = "least"
CHOICES = ("auto", "on", "off")
CHECKPOINTS = ("latest", "best")
# The setting that bounds how many repeated passes (integration steps, noise samples) of a
# gradient method run together; the attributions do not depend on it, the memory does.
_CHUNK_SETTINGS = {attribution.integrated_gradients: "internal_batch_size",
                   attribution.smooth_grad: "nt_samples_batch_size"}


class EvaluationError(ValueError):
  """A request the evaluation cannot satisfy (no checkpoint, unknown method, no object masks)."""


# ------------------------------------------------------------------------------------- methods


def known_methods() -> tuple[str, ...]:
  """``("Ours", *codajax.attribution.METHODS)``: every method name the evaluation accepts."""
  return (OURS, *attribution.METHODS)


def check_methods(methods: Sequence[str] | None) -> tuple[str, ...]:
  """The requested method names without duplicates (all known ones for ``None``/empty).

  Raises :class:`EvaluationError` naming the known methods for an unknown name.
  """
  if not methods:
    return known_methods()
  unknown = [m for m in methods if m not in known_methods()]
  if unknown:
    raise EvaluationError(f"unknown method{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(map(repr, unknown))}; known methods: "
                          f"{', '.join(known_methods())}")
  return tuple(dict.fromkeys(methods))


def parse_method_settings(items: Sequence[str]) -> dict[str, dict[str, Any]]:
  """``["RISE.n_masks=1000", "IntGrad.n_steps=50"]`` -> ``{"RISE": {"n_masks": 1000}, ...}``.

  Values are Python literals (``ast.literal_eval``; anything else stays a string). Each method
  must be a post-hoc preset of :data:`codajax.attribution.METHODS` and each key a keyword of
  its function; otherwise :class:`EvaluationError` says what is accepted.
  """
  parsed: dict[str, dict[str, Any]] = {}
  for item in items:
    name, dot, rest = item.partition(".")
    key, eq, text = rest.partition("=")
    if not (dot and eq and key):
      raise EvaluationError(f"method setting {item!r} is not METHOD.key=value "
                            "(e.g. RISE.n_masks=1000)")
    if name not in attribution.METHODS:
      raise EvaluationError(f"method setting {item!r}: {name!r} is not a post-hoc method; "
                            f"known: {', '.join(attribution.METHODS)}")
    preset = attribution.METHODS[name]
    accepted = [p.name for p in inspect.signature(preset.method).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY]
    if key not in accepted:
      raise EvaluationError(f"method setting {item!r}: {name} ({preset.method.__name__}) takes "
                            f"{', '.join(accepted)}")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    parsed.setdefault(name, {})[key] = value
  return parsed


# --------------------------------------------------------------------------- model structure


class ModelInfo(NamedTuple):
  """What the evaluation needs to know about a model.

  ``num_layers``: explainable layers L (``explain(..., layer=l)`` for l < L).
  ``encoded_input``: the first explainable input is the image encoding ``[x, 1 − x]`` (a CoDA-Net
  or a stage-0 hybrid), so "Ours" maps are image-sized with 2C channels and pixel removal zeroes
  the encoded input; otherwise (a hybrid with a CNN backbone) "Ours" is the embedding's map
  upsampled to the image and pixel removal blackens image pixels.
  """

  num_layers: int
  encoded_input: bool


def inspect_model(model: nn.Module, variables: Any, image_shape: Sequence[int]) -> ModelInfo:
  """:class:`ModelInfo` of ``model`` for images of ``image_shape`` (H, W, C), from shapes only."""
  height, width, channels = image_shape
  inputs = jax.eval_shape(lambda v, x: model.apply(v, x, method="explanation_inputs"),
                          variables, jax.ShapeDtypeStruct((1, height, width, channels), jnp.float32))
  return ModelInfo(len(inputs), tuple(inputs[0].shape[1:]) == (height, width, 2 * channels))


def _upsample_sum(maps: Array, image_hw: tuple[int, int]) -> Array:
  """Per-cell maps (N, h, w) spread over (N, H, W), nearest cell, total kept (each cell / its area)."""
  if upsample_to_image is not None:
    return upsample_to_image(maps, image_hw)
  (_, h, w), (height, width) = maps.shape, image_hw
  rows, cols = (np.arange(height) * h) // height, (np.arange(width) * w) // width
  area = np.outer(np.bincount(rows, minlength=h), np.bincount(cols, minlength=w))
  return (maps.astype(jnp.float32) / area)[:, rows][:, :, cols]


def contributions_at_depths(model: nn.Module, variables: Any, images: Array,
                            targets: Array) -> Array:
  """CoDA contributions of every explainable layer, upsampled to the image: (L, N, H, W).

  Layer l's map explains the logit of ``targets`` (N,) through the top L − l CoDA layers (its
  interpretable depth); every map sums to ``logit − bias``. Uses
  :func:`codajax.explain.hybrid.explain_at_depths` when available.
  """
  if explain_at_depths is not None:
    maps = explain_at_depths(model, variables, images, targets)
    return jnp.stack([maps[layer] for layer in sorted(maps)])
  num_layers = inspect_model(model, variables, images.shape[1:]).num_layers
  return jnp.stack([
      _upsample_sum(explain(model, variables, images, targets, layer=layer)["contribution_map_sum"],
                    images.shape[1:3])
      for layer in range(num_layers)])


def _over_targets(attribute: Callable[[Array], Array], targets: Array, axis: int = 1) -> Array:
  """``attribute(targets)`` for (N,) targets; vmapped over T for (N, T) (T axis at ``axis``)."""
  if targets.ndim == 1:
    return attribute(targets)
  return jax.vmap(attribute, in_axes=1, out_axes=axis)(targets)


def coda_contributions(model: nn.Module, info: ModelInfo, variables: Any, images: Array,
                       targets: Array) -> Array:
  """"Ours": exact contribution maps (N, [T,] H, W, 2C), or (…, 1) upsampled for a CNN embedding.

  Args: images (N, H, W, C) in [0, 1]; targets (N,) or (N, T) class indices.
  """
  def attribute(t):
    explanation = explain(model, variables, images, t)
    if info.encoded_input:
      return explanation["contribution_map"]
    return _upsample_sum(explanation["contribution_map_sum"], images.shape[1:3])[..., None]

  return _over_targets(attribute, targets)


def _last_coda_layer(info: ModelInfo) -> Callable[[nn.Module, str], bool]:
  """Filter for ``layer_function``: the call of the last CoDA layer (``…/layer_{L-1}``)."""
  name = f"layer_{info.num_layers - 1}"
  return lambda module, method_name: method_name == "__call__" and module.path[-1:] == (name,)


def posthoc_attribution(model: nn.Module, info: ModelInfo, method: str, variables: Any,
                        images: Array, targets: Array, *, chunk: int | None = None,
                        settings: Mapping[str, Any] | None = None) -> Array:
  """A :mod:`codajax.attribution` preset on the image: (N, [T,] H, W, C or 1).

  Grad-CAM uses the output of the last CoDA layer (the class map before pooling). ``chunk``:
  integration steps (IntGrad) or noise samples (SmoothGrad) per pass (``None``: all at once).
  ``settings``: keyword overrides of the preset (e.g. ``{"n_masks": 1000}`` for RISE).
  """
  preset = attribution.get_method(method)
  if preset.method is attribution.grad_cam:
    fn = attribution.layer_function(model, variables, _last_coda_layer(info))
  else:
    fn = lambda x: model.apply(variables, x)
  overrides = {_CHUNK_SETTINGS[preset.method]: chunk} if preset.method in _CHUNK_SETTINGS else {}
  return preset(fn, images, targets, **{**overrides, **(settings or {})})


def attribution_function(model: nn.Module, info: ModelInfo, method: str, *,
                         chunk: int | None = None,
                         settings: Mapping[str, Any] | None = None) -> AttributionFn:
  """Jitted ``(variables, images uint8 (N, H, W, C), targets (N,) | (N, T)) -> maps``.

  Maps: (N, [T,] H, W, C') float32 with C' = 2C ("Ours" on an encoded input), C (gradient
  methods) or 1 (Grad-CAM, Occlusion, RISE, "Ours" on a CNN embedding). ``chunk`` and
  ``settings``: see :func:`posthoc_attribution`.
  """
  def attribute(variables, images, targets):
    images = images.astype(jnp.float32) / 255.0
    if method == OURS:
      return coda_contributions(model, info, variables, images, targets)
    return posthoc_attribution(model, info, method, variables, images, targets, chunk=chunk,
                               settings=settings)

  return jax.jit(attribute)


# ----------------------------------------------------------------------------------- batching


def _batches(num: int, size: int) -> Iterator[slice]:
  return (slice(start, min(start + size, num)) for start in range(0, num, size))


def _padded(array: np.ndarray, size: int) -> np.ndarray:
  """``array`` with rows repeated from its last one up to ``size`` rows (fixed jit shapes)."""
  missing = size - len(array)
  return array if missing == 0 else np.concatenate([array, np.repeat(array[-1:], missing, 0)])


def _device_batch_size(size: int, mesh) -> int:
  """``size`` rounded up to a multiple of the mesh's devices (at least one row each)."""
  devices = mesh.devices.size
  return max(devices, -(-size // devices) * devices)


def _shard(arrays: Mapping[str, np.ndarray], rows: slice, size: int, mesh) -> dict[str, Array]:
  """Rows of host arrays, padded to ``size``, as global arrays sharded over the mesh."""
  return parallel.shard_batch({k: _padded(np.asarray(v[rows]), size) for k, v in arrays.items()},
                              mesh)


def _host(tree: Any, count: int) -> Any:
  """The first ``count`` rows of every leaf, as numpy arrays."""
  return jax.tree.map(lambda x: np.asarray(x)[:count], jax.device_get(tree))


def _seconds(fn: Callable[[], Any]) -> tuple[Any, float]:
  """``fn()`` and its wall time, waiting for the device."""
  start = time.perf_counter()
  result = jax.block_until_ready(fn())
  return result, time.perf_counter() - start


# ----------------------------------------------------------------------------------- accuracy


def accuracy(run: RestoredRun, variables: Any, dataset: str, data_dir: str | None, mesh,
             batch_size: int) -> dict[str, Any]:
  """Top-1, top-5, loss and per-class accuracy on the test split, via :func:`codajax.train.evaluate`."""
  eval_step = make_eval_step(run.model, loss=run.config.loss, mesh=mesh)
  loader = data.eval_loader(dataset, global_batch_size=batch_size, data_dir=data_dir)
  result = evaluate(eval_step, variables["params"], tqdm(loader, desc="accuracy", unit="batch",
                                                        total=loader.batches_per_epoch), mesh)
  return {"top1": result["eval/accuracy"], "top5": result["eval/top5"],
          "loss": result["eval/loss"], "per_class": result["eval/per_class_accuracy"],
          "count": result["eval/count"]}


def test_logits(model: nn.Module, variables: Any, dataset: str, data_dir: str | None, mesh,
                batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Logits (N, K) and labels (N,) of the whole test split in dataset order."""
  forward = jax.jit(lambda v, images: model.apply(v, images.astype(jnp.float32) / 255.0))
  loader = data.eval_loader(dataset, global_batch_size=batch_size, data_dir=data_dir)
  logits, labels = [], []
  for batch in tqdm(loader, desc="test logits", unit="batch", total=loader.batches_per_epoch):
    out = np.asarray(forward(variables, parallel.shard_batch({"image": batch["image"]}, mesh)["image"]))
    logits.append(out[batch["valid"]])
    labels.append(batch["label"][batch["valid"]])
  return np.concatenate(logits), np.concatenate(labels)


# ------------------------------------------------------------------------------- localisation


class GridSet(NamedTuple):
  """Localisation grids: images uint8 (G, n·H, n·W, C), tile labels and test indices (G, n²)."""

  images: np.ndarray
  labels: np.ndarray
  indices: np.ndarray
  n_confident: int


def count_grids(labels: np.ndarray, order: np.ndarray, grid: int, limit: int) -> int:
  """How many of ``limit`` grids :func:`codajax.metrics.grid_indices` can build from ``order``."""
  low, high = 0, limit
  while low < high:  # grids are built in sequence, so feasibility is monotone in their number
    middle = (low + high + 1) // 2
    try:
      metrics.grid_indices(labels, order, n_grids=middle, grid=grid)
      low = middle
    except ValueError:
      high = middle - 1
  return low


def localisation_grids(logits: np.ndarray, labels: np.ndarray, dataset: str, split: str,
                       data_dir: str | None, n_grids: int, grid: int) -> GridSet:
  """Steps 1–6 of spec 4.1: confident correct images, seeded class draws, column-major grids.

  Builds at most ``n_grids`` grids; fewer (with a message) when the confident images run out.
  """
  order = metrics.select_confident_images(logits, labels, seed=SELECTION_SEED,
                                          n_per_grid=grid * grid)
  available = count_grids(labels, order, grid, n_grids)
  if available < n_grids:
    print(f"localisation: only {available} of the requested {n_grids} {grid}x{grid} grids can be "
          f"built from the {len(order)} confidently and correctly classified test images (each "
          f"grid needs {grid * grid} distinct classes); evaluating {available}.", flush=True)
  indices = metrics.grid_indices(labels, order, n_grids=available, grid=grid)
  tiles = data.load_examples(dataset, split, data_dir=data_dir, indices=indices.reshape(-1))
  images = tiles["image"].reshape(indices.shape + tiles["image"].shape[1:])
  return GridSet(np.asarray(metrics.tile_grids(images, grid)), labels[indices], indices, len(order))


def localisation_step(attribute: AttributionFn, grid: int):
  """Jitted ``(variables, grids uint8 (B, nH, nW, C), labels (B, n²)) -> (scores, maps)``.

  ``scores`` (B, n²): the localisation metric; ``maps`` (B, n², nH, nW): the channel-summed
  attribution of grid b for the class of its tile k.
  """
  def step(variables, images, labels):
    maps = attribute(variables, images, labels)
    return metrics.localisation_metric(maps, grid), maps.sum(-1)

  return jax.jit(step)


def depth_localisation_step(model: nn.Module, grid: int):
  """Jitted ``(variables, grids uint8 (B, nH, nW, C), labels (B, n²)) -> scores (B, L, n²)``.

  The localisation metric of the contributions at every explainable layer (upsampled to the grid).
  """
  def step(variables, images, labels):
    images = images.astype(jnp.float32) / 255.0
    maps = _over_targets(lambda t: contributions_at_depths(model, variables, images, t), labels,
                         axis=2)                                         # (L, B, n², nH, nW)
    return jnp.moveaxis(jax.vmap(lambda m: metrics.localisation_metric(m, grid))(maps), 0, 1)

  return jax.jit(step)


def _grid_batches(grids: GridSet, batch_size: int, mesh, desc: str) -> Iterator[tuple[int, dict]]:
  """``(real rows, sharded batch)`` over all grids, padded to ``batch_size``, with a progress bar."""
  arrays = {"image": grids.images, "label": grids.labels}
  for rows in tqdm(list(_batches(len(grids.images), batch_size)), desc=desc, unit="batch"):
    yield rows.stop - rows.start, _shard(arrays, rows, batch_size, mesh)


def localisation(step, variables, grids: GridSet, batch_size: int, mesh,
                 desc: str) -> tuple[np.ndarray, np.ndarray]:
  """Scores (G, n²) of one method over all grids, and its maps of the first grid (n², nH, nW)."""
  scores, first_maps = [], None
  for count, batch in _grid_batches(grids, batch_size, mesh, desc):
    batch_scores, maps = step(variables, batch["image"], batch["label"])
    scores.append(_host(batch_scores, count))
    if first_maps is None:
      first_maps = _host(maps, 1)[0]
  return np.concatenate(scores), first_maps


def depth_localisation(step, variables, grids: GridSet, batch_size: int, mesh) -> np.ndarray:
  """Scores (L, G, n²) of the contributions at every depth."""
  scores = [_host(step(variables, batch["image"], batch["label"]), count)
            for count, batch in _grid_batches(grids, batch_size, mesh, "localisation per depth")]
  return np.moveaxis(np.concatenate(scores), 1, 0)


def localisation_summary(scores: np.ndarray) -> dict[str, Any]:
  """:func:`codajax.metrics.summarise` of the flat scores, plus the mean per tile position."""
  return {**metrics.summarise(scores), "per_tile_mean": np.mean(scores, 0).round(6).tolist(),
          "count": int(scores.size)}


# ------------------------------------------------------------- pixel removal and ground truth


def removal_points(image_hw: Sequence[int]) -> int:
  """Points of the removal curve: 128 (the papers), fewer when 25 % of the image has fewer pixels."""
  return min(REMOVAL_POINTS, int(REMOVAL_FRACTION * image_hw[0] * image_hw[1]))


def removal_step(model: nn.Module, info: ModelInfo, n_points: int):
  """Jitted ``(variables, images uint8 (B, H, W, C), labels (B,), importance (B, H, W)) -> (B, P)``.

  Sigmoid probability of the true class while removing the least important pixels (spec 4.2):
  removed pixels are 0 in all channels of the encoded input ("zero_encoded"), or black image
  pixels for a CNN embedding ("black").
  """
  if info.encoded_input:
    mode, forward = "zero_encoded", lambda v: (lambda x: model.apply(v, x, method="forward_from"))
  else:
    mode, forward = "black", lambda v: (lambda x: model.apply(v, x))

  def step(variables, images, labels, importance):
    return metrics.pixel_removal_probabilities(
        forward(variables), images.astype(jnp.float32) / 255.0, labels, importance,
        fraction=REMOVAL_FRACTION, n_points=n_points, direction=REMOVAL_DIRECTION, mode=mode)

  return jax.jit(step)


@jax.jit
def ground_truth_step(importance: Array, masks: Array) -> tuple[Array, Array]:
  """``(importance (B, H, W), masks (B, H, W)) -> (mask energy (B,), pointing game (B,))``."""
  return metrics.mask_energy(importance, masks), metrics.pointing_game(importance, masks)


def image_metrics(attribute: AttributionFn, removal, variables, examples: Mapping[str, np.ndarray],
                  batch_size: int, mesh, desc: str,
                  ground_truth: bool) -> tuple[dict[str, np.ndarray], dict[str, float]]:
  """Pixel removal (and ground-truth scores) of one method on ``examples``, true-class targets.

  Returns per-image arrays ``probabilities (N, P)`` [, ``mask_energy (N,)``, ``pointing_game (N,)``]
  and the seconds spent on ``attribution``, ``pixel_removal`` [and ``ground_truth``]. Both metrics
  take the channel-summed map, so their programs compile once for all methods.
  """
  keys = ("image", "label", "object_mask") if ground_truth else ("image", "label")
  arrays = {k: examples[k] for k in keys}
  num = len(arrays["image"])
  parts = ("attribution", "pixel_removal") + (("ground_truth",) if ground_truth else ())
  seconds = dict.fromkeys(parts, 0.0)
  results: dict[str, list] = {"probabilities": [], "mask_energy": [], "pointing_game": []}
  for rows in tqdm(list(_batches(num, batch_size)), desc=desc, unit="batch"):
    batch, count = _shard(arrays, rows, batch_size, mesh), rows.stop - rows.start
    importance, t = _seconds(
        lambda: jnp.sum(attribute(variables, batch["image"], batch["label"]), axis=-1))
    seconds["attribution"] += t
    probabilities, t = _seconds(lambda: removal(variables, batch["image"], batch["label"], importance))
    seconds["pixel_removal"] += t
    results["probabilities"].append(_host(probabilities, count))
    if ground_truth:
      (energy, pointing), t = _seconds(lambda: ground_truth_step(importance, batch["object_mask"]))
      seconds["ground_truth"] += t
      results["mask_energy"].append(_host(energy, count))
      results["pointing_game"].append(_host(pointing, count))
  return {k: np.concatenate(v) for k, v in results.items() if v}, seconds


# -------------------------------------------------------------------------------------- figures


def figure_maps(attribute: AttributionFn, variables, images: np.ndarray, labels: np.ndarray,
                batch_size: int, mesh) -> np.ndarray:
  """Maps (n, H, W, C') of a few images (n ≤ ``batch_size``), padded to the compiled batch shape."""
  batch = _shard({"image": images, "label": labels}, slice(0, len(images)), batch_size, mesh)
  return _host(attribute(variables, batch["image"], batch["label"]), len(images))


def save_figures(out: str, *, images: np.ndarray, labels: np.ndarray,
                 maps: Mapping[str, np.ndarray], masks: np.ndarray | None,
                 grid_image: np.ndarray | None, grid_labels: np.ndarray | None,
                 grid_maps: Mapping[str, np.ndarray], localisation_scores: Mapping[str, np.ndarray],
                 depth_scores: np.ndarray | None, removal_curves: Mapping[str, np.ndarray],
                 fractions: np.ndarray | None, grid: int) -> list[str]:
  """Writes the PNG figures; returns their file names.

  * ``contributions.png``: images (N, H, W, C) uint8 with, per method, the channel-summed map
    (blue-white-red, symmetric limit per row); "Ours" also as the explanation image in colour;
    the object masks (N, H, W) when given. ``maps``: {method: (N, H, W, C')}.
  * ``localisation_grid.png``: the first grid image with each method's map for each tile's class.
  * ``localisation.png``, ``localisation_depths.png``, ``pixel_removal.png``: box plots and curves.
  """
  from codajax.explain import render

  written = []
  floats = images.astype(np.float32) / 255.0
  rows: dict[str, np.ndarray] = {}
  for method, method_maps in maps.items():
    if method == OURS and method_maps.shape[-1] == 2 * images.shape[-1]:
      rows[f"{OURS} (explanation)"] = render.explanation_image(method_maps)
    rows[method] = method_maps.sum(-1)
  if masks is not None:
    rows["object mask"] = np.concatenate(
        [np.repeat(masks[..., None].astype(np.float64), 3, -1), np.ones(masks.shape + (1,))], -1)
  if rows:
    render.save_grid_figure(os.path.join(out, "contributions.png"), floats, rows,
                            titles=[f"class {c}" for c in labels])
    written.append("contributions.png")
  if grid_image is not None and grid_maps:
    tiles = len(grid_labels)
    render.save_grid_figure(os.path.join(out, "localisation_grid.png"),
                            np.repeat(grid_image[None].astype(np.float32) / 255.0, tiles, 0),
                            dict(grid_maps), titles=[f"tile {k}: class {c}"
                                                     for k, c in enumerate(grid_labels)])
    written.append("localisation_grid.png")
  if localisation_scores:
    render.save_localisation_boxplot(os.path.join(out, "localisation.png"), localisation_scores,
                                     grid=grid)
    written.append("localisation.png")
  if depth_scores is not None:
    layers = len(depth_scores)
    render.save_localisation_boxplot(
        os.path.join(out, "localisation_depths.png"),
        {f"layer {l} (depth {layers - l})": s for l, s in enumerate(depth_scores)}, grid=grid)
    written.append("localisation_depths.png")
  if removal_curves:
    render.save_pixel_removal_curves(os.path.join(out, "pixel_removal.png"), removal_curves,
                                     fractions)
    written.append("pixel_removal.png")
  return written


# ---------------------------------------------------------------------------------------- driver


def load_run(workdir: str, checkpoint: str = "latest") -> RestoredRun:
  """The run ``train.py`` wrote to ``workdir``; :class:`EvaluationError` if there is none."""
  if checkpoint not in CHECKPOINTS:
    raise EvaluationError(
        f"checkpoint must be one of {', '.join(CHECKPOINTS)}; got {checkpoint!r}")
  try:
    return restore(workdir, checkpoint)
  except FileNotFoundError as error:
    raise EvaluationError(str(error)) from None


def _enabled(choice: str, available: bool, name: str, why_not: str) -> bool:
  """Resolves an ``auto|on|off`` option; ``on`` where it cannot run is an :class:`EvaluationError`."""
  if choice not in CHOICES:
    raise EvaluationError(f"{name} must be one of {', '.join(CHOICES)}; got {choice!r}")
  if choice == "on" and not available:
    raise EvaluationError(f"{name} requested but {why_not}")
  return available and choice != "off"


@dataclasses.dataclass(frozen=True)
class Settings:
  """What to evaluate and how much (see ``eval.py --help``)."""

  methods: tuple[str, ...] = ()
  checkpoint: str = "latest"
  n_grids: int = 500
  grid: int = 3
  n_removal: int = 1024
  ground_truth: str = "auto"
  depths: str = "auto"
  batch_size: int = 32
  chunk: int = 4
  n_figure: int = 8
  data_dir: str | None = None
  out: str | None = None
  method_settings: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Job:
  """Everything the parts of one evaluation share."""

  settings: Settings
  methods: tuple[str, ...]
  model: nn.Module
  info: ModelInfo
  variables: Any
  spec: data.DatasetSpec
  data_dir: str | None
  mesh: Any
  attribute: Mapping[str, AttributionFn]
  grid_batch: int
  image_batch: int


def _localisation_part(job: _Job, grids: GridSet, with_depths: bool) -> dict[str, Any]:
  """Localisation of every method on ``grids`` (and per depth): summaries, arrays, maps, timings."""
  part: dict[str, Any] = {"summaries": {}, "scores": {}, "first_grid_maps": {}, "seconds": {},
                          "depth_scores": None}
  grid = job.settings.grid
  for method in job.methods:
    (scores, first), part["seconds"][method] = _seconds(lambda: localisation(
        localisation_step(job.attribute[method], grid), job.variables, grids, job.grid_batch,
        job.mesh, f"localisation {method}"))
    part["scores"][method], part["first_grid_maps"][method] = scores, first
    part["summaries"][method] = localisation_summary(scores)
  if with_depths:
    part["depth_scores"], part["depth_seconds"] = _seconds(lambda: depth_localisation(
        depth_localisation_step(job.model, grid), job.variables, grids, job.grid_batch, job.mesh))
  return part


def _image_part(job: _Job, examples: Mapping[str, np.ndarray], n_points: int,
                with_masks: bool) -> dict[str, Any]:
  """Pixel removal (and ground truth) of every method on ``examples``: results, arrays, timings."""
  part: dict[str, Any] = {"results": {}, "curves": {}, "arrays": {}, "seconds": {}}
  removal = removal_step(job.model, job.info, n_points)
  for method in job.methods:
    per_image, part["seconds"][method] = image_metrics(
        job.attribute[method], removal, job.variables, examples, job.image_batch, job.mesh,
        f"pixel removal {method}", with_masks)
    curve = per_image["probabilities"].mean(0)
    part["curves"][method] = curve
    part["results"][method] = {"pixel_removal": {"mean": float(curve.mean()),
                                                 "curve": curve.round(6).tolist()}}
    part["arrays"][f"pixel_removal/{method}"] = per_image["probabilities"]
    if with_masks:
      part["results"][method]["ground_truth"] = {
          "mask_energy": metrics.summarise(per_image["mask_energy"]),
          "pointing_game": float(per_image["pointing_game"].mean())}
      part["arrays"][f"mask_energy/{method}"] = per_image["mask_energy"]
      part["arrays"][f"pointing_game/{method}"] = per_image["pointing_game"]
  return part


def _figure_indices(grids: GridSet | None, n_figure: int, num_test: int) -> np.ndarray:
  """Test indices of the figure's images: the first grid's tiles (the most confident images of
  distinct classes, then the next grids'), else the first test images."""
  pool = np.arange(0) if grids is None else grids.indices.reshape(-1)
  return pool[:n_figure] if len(pool) >= n_figure else np.arange(min(n_figure, num_test))


def _validated(settings: Mapping[str, Any]) -> tuple[Settings, tuple[str, ...]]:
  """:class:`Settings` and the method names, or an :class:`EvaluationError`."""
  s = Settings(**settings)
  methods = check_methods(s.methods)
  if s.checkpoint not in CHECKPOINTS:
    raise EvaluationError(
        f"checkpoint must be one of {', '.join(CHECKPOINTS)}; got {s.checkpoint!r}")
  if s.grid < 2:
    raise EvaluationError(f"grid must be at least 2; got {s.grid}")
  if min(s.n_grids, s.n_removal, s.n_figure) < 0 or min(s.batch_size, s.chunk) < 1:
    raise EvaluationError(
        "n_grids, n_removal and n_figure must be >= 0; batch_size and chunk >= 1")
  unused = sorted(set(s.method_settings) - set(methods))
  if unused:
    raise EvaluationError(f"settings given for {', '.join(unused)}, which is not evaluated "
                          f"(methods: {', '.join(methods)})")
  return s, methods


def run_evaluation(workdir: str, **settings: Any) -> dict[str, Any]:
  """Evaluates the run in ``workdir``; writes figures, ``report.json`` and ``scores.npz``.

  Args:
    workdir: a directory written by ``train.py``.
    **settings: the fields of :class:`Settings`: ``methods`` (default: ``known_methods()``),
      ``checkpoint`` ("latest" | "best"), ``n_grids`` and ``grid`` (localisation; 0 grids skips
      it), ``n_removal`` (first test images for pixel removal and ground truth; 0 skips them),
      ``ground_truth`` and ``depths`` ("auto" | "on" | "off"), ``batch_size`` (images per
      attribution call; a grid counts as n² images), ``chunk`` (integration steps or noise
      samples per pass of IntGrad and SmoothGrad), ``n_figure`` (images in the figure),
      ``data_dir`` (default: the run's), ``out`` (default ``workdir/eval``),
      ``method_settings`` (``{method: {keyword: value}}`` overrides of the post-hoc presets, e.g.
      ``{"RISE": {"n_masks": 1000}}``; see :func:`parse_method_settings`).

  Returns:
    The report (also written to ``out/report.json``).
  """
  s, methods = _validated(settings)
  started = time.perf_counter()
  run = load_run(workdir, s.checkpoint)
  data_dir = s.data_dir or run.config.data_dir or None
  spec = data.dataset_info(run.config.dataset, data_dir=data_dir)
  split = spec.test_split
  with_masks = _enabled(s.ground_truth, spec.has_object_mask, "ground-truth localisation",
                        f"dataset {spec.name!r} has no object masks (datasets with masks: shapes)")
  if with_masks and s.n_removal == 0:
    raise EvaluationError("ground-truth scores use the pixel-removal images; set n_removal > 0")
  if spec.num_classes <= s.grid * s.grid and s.n_grids:
    raise EvaluationError(f"a {s.grid}x{s.grid} grid needs more than {s.grid * s.grid} classes; "
                          f"{spec.name} has {spec.num_classes}")
  mesh = parallel.make_mesh()
  variables = parallel.replicate(run.variables, mesh)
  info = inspect_model(run.model, variables, spec.image_shape)
  with_depths = _enabled(s.depths, info.num_layers > 1, "depth analysis",
                         "the model has a single explainable layer")
  out = s.out or os.path.join(workdir, "eval")
  os.makedirs(out, exist_ok=True)
  job = _Job(s, methods, run.model, info, variables, spec, data_dir, mesh,
             {m: attribution_function(run.model, info, m, chunk=s.chunk,
                                      settings=s.method_settings.get(m)) for m in methods},
             grid_batch=_device_batch_size(max(1, s.batch_size // (s.grid * s.grid)), mesh),
             image_batch=_device_batch_size(max(s.batch_size, s.n_figure), mesh))
  print(f"codajax eval: {run.config.model.name} on {spec.name}, {s.checkpoint} checkpoint "
        f"(step {run.step}); methods {', '.join(methods)}", flush=True)

  timings: dict[str, Any] = {"methods": {m: {} for m in methods}}
  results: dict[str, dict[str, Any]] = {m: {} for m in methods}
  arrays: dict[str, np.ndarray] = {}
  report: dict[str, Any] = {
      "workdir": os.path.abspath(workdir),
      "checkpoint": {"which": s.checkpoint, "step": run.step},
      "dataset": spec.name, "split": split, "model": run.config.model.name,
      "num_classes": spec.num_classes, "image_shape": list(spec.image_shape),
      "explainable_layers": info.num_layers, "methods_evaluated": list(methods),
      "protocol": {"batch_size": s.batch_size, "grid_batch_size": job.grid_batch,
                   "chunk": s.chunk,
                   "method_settings": {m: {**attribution.METHODS[m].settings,
                                           **s.method_settings.get(m, {})}
                                       for m in methods if m in attribution.METHODS}},
  }

  # ---- accuracy, and the test logits the grid selection needs -------------------------------
  report["accuracy"], timings["accuracy"] = _seconds(
      lambda: accuracy(run, variables, spec.name, data_dir, mesh, run.config.eval_batch_size))
  (logits, labels), timings["test_logits"] = _seconds(
      lambda: test_logits(run.model, variables, spec.name, data_dir, mesh,
                          run.config.eval_batch_size))

  # ---- localisation, per method and per depth -----------------------------------------------
  grids, localised = None, None
  if s.n_grids:
    grids, timings["grid_selection"] = _seconds(
        lambda: localisation_grids(logits, labels, spec.name, split, data_dir, s.n_grids, s.grid))
    if len(grids.images) == 0:
      grids = None
  report["protocol"]["localisation"] = {
      "n_grids_requested": s.n_grids, "n_grids": 0 if grids is None else len(grids.images),
      "grid": s.grid, "selection_seed": SELECTION_SEED, "offset_quirk": True,
      "targets": "class of each tile", "n_confident_images": None if grids is None
      else grids.n_confident, "uniform": 1.0 / s.grid ** 2, "oracle": 1.0}
  if grids is not None:
    localised = _localisation_part(job, grids, with_depths)
    for method in methods:
      results[method]["localisation"] = localised["summaries"][method]
      timings["methods"][method]["localisation"] = localised["seconds"][method]
      arrays[f"localisation/{method}"] = localised["scores"][method]
    arrays["grid_indices"] = grids.indices
    if localised["depth_scores"] is not None:
      report["depths"] = [{"layer": layer, "interpretable_depth": info.num_layers - layer,
                           "localisation": localisation_summary(scores)}
                          for layer, scores in enumerate(localised["depth_scores"])]
      arrays["localisation_depths"] = localised["depth_scores"]
      timings["depths"] = localised["depth_seconds"]

  # ---- pixel removal and ground truth on the first test images ------------------------------
  n_removal = min(s.n_removal, spec.split_sizes[split])
  if n_removal < s.n_removal:
    print(f"pixel removal: the test split has {n_removal} images; using all of them.", flush=True)
  n_points = removal_points(spec.image_shape[:2])
  fractions = metrics.removal_fractions(spec.image_shape[0] * spec.image_shape[1],
                                        REMOVAL_FRACTION, n_points)
  report["protocol"]["pixel_removal"] = {
      "n_images": n_removal, "images": "first test images in dataset order",
      "targets": "true class", "fraction": REMOVAL_FRACTION, "n_points": n_points,
      "direction": REMOVAL_DIRECTION, "mode": "zero_encoded" if info.encoded_input else "black",
      "fractions": fractions.round(6).tolist()}
  curves: dict[str, np.ndarray] = {}
  if n_removal:
    examples = data.load_examples(spec.name, split, data_dir=data_dir,
                                  indices=np.arange(n_removal))
    removed = _image_part(job, examples, n_points, with_masks)
    curves = removed["curves"]
    arrays.update(removed["arrays"])
    for method in methods:
      results[method].update(removed["results"][method])
      timings["methods"][method].update(removed["seconds"][method])
    if with_masks:
      report["protocol"]["ground_truth"] = {
          "n_images": n_removal, "images": "the pixel-removal images", "targets": "true class",
          "mask_fraction": float(examples["object_mask"].astype(bool).mean()),
          "note": "mask_fraction = mask energy of a uniform map"}

  # ---- figures ------------------------------------------------------------------------------
  def figures():
    chosen = _figure_indices(grids, s.n_figure, spec.split_sizes[split])
    shown = data.load_examples(spec.name, split, data_dir=data_dir, indices=chosen)
    maps = {m: figure_maps(job.attribute[m], variables, shown["image"], shown["label"],
                           job.image_batch, mesh) for m in methods}
    return save_figures(
        out, images=shown["image"], labels=shown["label"], maps=maps,
        masks=shown.get("object_mask") if with_masks else None,
        grid_image=None if grids is None else grids.images[0],
        grid_labels=None if grids is None else grids.labels[0],
        grid_maps={} if localised is None else localised["first_grid_maps"],
        localisation_scores={} if localised is None else localised["scores"],
        depth_scores=None if localised is None else localised["depth_scores"],
        removal_curves=curves, fractions=fractions, grid=s.grid)

  report["figures"], timings["figures"] = _seconds(figures) if s.n_figure else ([], 0.0)
  report["methods"] = results
  timings["total"] = time.perf_counter() - started
  report["timings_s"] = jax.tree.map(lambda t: round(float(t), 3), timings)
  report["device"] = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  np.savez_compressed(os.path.join(out, SCORES_FILE), **arrays)
  with open(os.path.join(out, REPORT_FILE), "w") as f:
    json.dump(report, f, indent=2)
  return report


def summary_table(report: Mapping[str, Any]) -> str:
  """A plain-text table of the report: one row per method (localisation, removal, ground truth)."""
  header = f"{'method':<12}{'loc. mean':>11}{'loc. median':>13}{'removal mean':>14}" \
           f"{'mask energy':>13}{'pointing':>10}"
  lines = [f"accuracy: top-1 {report['accuracy']['top1']:.4f}, top-5 {report['accuracy']['top5']:.4f}"
           f" ({report['accuracy']['count']} test images, step {report['checkpoint']['step']})",
           header]
  fmt = lambda x: f"{x:.4f}" if x is not None else "-"
  for method, result in report["methods"].items():
    loc = result.get("localisation", {})
    gt = result.get("ground_truth", {})
    lines.append(f"{method:<12}{fmt(loc.get('mean')):>11}{fmt(loc.get('median')):>13}"
                 f"{fmt(result.get('pixel_removal', {}).get('mean')):>14}"
                 f"{fmt(gt.get('mask_energy', {}).get('mean')):>13}"
                 f"{fmt(gt.get('pointing_game')):>10}")
  for depth in report.get("depths", []):
    lines.append(f"layer {depth['layer']} (depth {depth['interpretable_depth']}): localisation "
                 f"mean {depth['localisation']['mean']:.4f}")
  return "\n".join(lines)
