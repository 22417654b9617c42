"""The ``shapes`` dataset: synthetic 32x32 RGB images with a known object mask.

Every image holds exactly one object of one of ten classes (distinct shapes and
patterns) at a random position and scale, in a random colour, on a random
textured background with clutter (short line strokes) that belongs to no class.
The object colour is drawn independently of the class, and the clutter takes
random colours too, so neither colour nor background predicts the label: only
the object does. ``object_mask`` marks the object's pixels (1 = object), the
ground truth for "does the explanation point at the evidence".

Every class is symmetric under a horizontal flip, so flipping is a valid
augmentation. Generation is vectorised numpy and deterministic in
``(seed, split)``.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import tensorflow_datasets as tfds

from codajax.data.builders import base

IMAGE_SIZE = 32
CLASS_NAMES = (
    "disk",
    "ring",
    "square",
    "frame",
    "triangle",
    "plus",
    "cross",
    "diamond",
    "stripes",
    "checker",
)
NUM_CLUTTER_STROKES = 5
POLARITIES = ("random", "light")
_CHUNK = 512
_SPLIT_IDS = {"train": 0, "test": 1}


def _class_mask(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Boolean mask of class ``label`` on object coordinates ``u, v`` (object spans [-1, 1])."""
  box = np.maximum(np.abs(u), np.abs(v))
  radius2 = u * u + v * v
  if label == 0:  # disk
    return radius2 <= 1.0
  if label == 1:  # ring
    return (radius2 <= 1.0) & (radius2 >= 0.45)
  if label == 2:  # filled square
    return box <= 0.85
  if label == 3:  # square frame
    return (box <= 0.95) & (box >= 0.5)
  if label == 4:  # upward triangle: apex at the top (v = -0.95), base at v = 0.95
    return (np.abs(v) <= 0.95) & (np.abs(u) <= (v + 0.95) / 1.9)
  if label == 5:  # plus
    return (box <= 1.0) & ((np.abs(u) <= 0.3) | (np.abs(v) <= 0.3))
  if label == 6:  # diagonal cross
    return (box <= 0.95) & ((np.abs(u - v) <= 0.42) | (np.abs(u + v) <= 0.42))
  if label == 7:  # diamond
    return np.abs(u) + np.abs(v) <= 1.0
  if label == 8:  # three horizontal bars
    return (box <= 0.95) & (np.floor((v + 0.95) / 0.38) % 2 == 0)
  if label == 9:  # 3x3 checkerboard, corners filled
    cells = np.floor((u + 0.95) / (1.9 / 3)) + np.floor((v + 0.95) / (1.9 / 3))
    return (box <= 0.95) & (cells % 2 == 0)
  raise ValueError(f"label must be in [0, {len(CLASS_NAMES)}), got {label}.")


def _smooth_field(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
  """Random smooth field in [0, 1]: (n, IMAGE_SIZE, IMAGE_SIZE), bilinear upsampling of a coarse grid."""
  coarse = rng.random((n, cells + 1, cells + 1), dtype=np.float32)
  pos = (np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5) * cells / IMAGE_SIZE
  i0 = np.minimum(pos.astype(np.int32), cells - 1)
  t = pos - i0.astype(np.float32)
  rows = coarse[:, i0] * (1 - t)[None, :, None] + coarse[:, i0 + 1] * t[None, :, None]
  return rows[:, :, i0] * (1 - t) + rows[:, :, i0 + 1] * t


def _far_colours(
    rng: np.random.Generator, reference: np.ndarray, min_distance: float
) -> np.ndarray:
  """Random RGB colours in [0, 1]^3, each at least ``min_distance`` from ``reference`` (n, 3) when possible."""
  candidates = rng.random((reference.shape[0], 8, 3), dtype=np.float32)
  distance = np.linalg.norm(candidates - reference[:, None], axis=-1)
  choice = np.where(
      (distance >= min_distance).any(axis=1),
      np.argmax(distance >= min_distance, axis=1),
      np.argmax(distance, axis=1),
  )
  return candidates[np.arange(reference.shape[0]), choice]


@dataclasses.dataclass(frozen=True)
class Style:
  """The difficulty knobs of a ``shapes`` variant (the defaults are the original ``shapes``).

  Attributes:
    polarity: ``"random"``: object and background colours independent in [0, 1]^3, so the object
      is as likely darker as lighter than its background; ``"light"``: the object colour lies in
      [0.6, 1]^3 and the background colours in [0, 0.4]^3 (every channel of the object brighter
      than the background; hues still random). Clutter colours stay in [0, 1]^3 either way.
    texture: amplitude of the background texture in [0, 1]: 1 = the full blotch/grating texture
      between the two background colours, 0 = a flat background (their midpoint).
    clutter: number of distractor strokes (each drawn with probability 0.8).
  """

  polarity: str = "random"
  texture: float = 1.0
  clutter: int = NUM_CLUTTER_STROKES

  def __post_init__(self):
    if self.polarity not in POLARITIES:
      raise ValueError(f"polarity must be one of {POLARITIES}, got {self.polarity!r}.")
    if not 0.0 <= self.texture <= 1.0:
      raise ValueError(f"texture must be in [0, 1], got {self.texture}.")
    if self.clutter < 0:
      raise ValueError(f"clutter must be >= 0, got {self.clutter}.")

  @property
  def suffix(self) -> str:
    """The name suffix of the non-default knobs: ``""``, ``"_light"``, ``"_light_tex50_clutter3"``."""
    parts = ["light"] if self.polarity == "light" else []
    if self.texture != 1.0:
      parts.append(f"tex{round(self.texture * 100)}")
    if self.clutter != NUM_CLUTTER_STROKES:
      parts.append(f"clutter{self.clutter}")
    return "".join(f"_{part}" for part in parts)


DEFAULT_STYLE = Style()


def _render(
    rng: np.random.Generator, labels: np.ndarray, style: Style = DEFAULT_STYLE
) -> tuple[np.ndarray, np.ndarray]:
  """Images (n, 32, 32, 3) uint8 and object masks (n, 32, 32) uint8 for the given labels (n,)."""
  n = labels.shape[0]
  yy, xx = np.meshgrid(
      np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5,
      np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5,
      indexing="ij",
  )

  object_colour = rng.random((n, 3), dtype=np.float32)
  near, far = _far_colours(rng, object_colour, 0.5), _far_colours(rng, object_colour, 0.5)
  # Texture: a smooth blotchy field mixed with an oriented grating.
  angle = rng.uniform(0, np.pi, n).astype(np.float32)[:, None, None]
  frequency = rng.uniform(0.15, 0.6, n).astype(np.float32)[:, None, None]
  phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)[:, None, None]
  grating = 0.5 + 0.5 * np.sin(frequency * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
  blend = rng.uniform(0.2, 0.8, n).astype(np.float32)[:, None, None]
  texture = blend * _smooth_field(rng, n, 4) + (1 - blend) * grating
  if style.texture != 1.0:
    texture = style.texture * texture + (1 - style.texture) * 0.5
  if style.polarity == "light":
    object_colour = 0.6 + 0.4 * object_colour
    near, far = 0.4 * near, 0.4 * far
  # Channels-first while drawing (inner loops over whole rows, not over 3 channels).
  image = near[:, :, None, None] + (far - near)[:, :, None, None] * texture[:, None]

  # Clutter: short strokes of random colour, length and angle (drawn behind the object).
  for _ in range(style.clutter):
    start = rng.uniform(0, IMAGE_SIZE, (n, 2)).astype(np.float32)
    stroke_angle = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    length = rng.uniform(4, 11, n).astype(np.float32)
    direction = np.stack([np.cos(stroke_angle), np.sin(stroke_angle)], axis=1)
    dx = xx - start[:, 0, None, None]
    dy = yy - start[:, 1, None, None]
    along = np.clip(
        dx * direction[:, 0, None, None] + dy * direction[:, 1, None, None],
        0,
        length[:, None, None],
    )
    distance2 = (dx - along * direction[:, 0, None, None]) ** 2 + (
        dy - along * direction[:, 1, None, None]
    ) ** 2
    drawn = (distance2 <= 0.6) & (rng.random(n) < 0.8)[:, None, None]
    colour = rng.random((n, 3), dtype=np.float32)
    image = np.where(drawn[:, None], colour[:, :, None, None], image)

  # The object: half-size 5..9 px, fully inside the image.
  half = rng.uniform(5.0, 9.0, n).astype(np.float32)
  centre = half[:, None] + rng.random((n, 2), dtype=np.float32) * (IMAGE_SIZE - 2 * half[:, None])
  u = (xx - centre[:, 0, None, None]) / half[:, None, None]
  v = (yy - centre[:, 1, None, None]) / half[:, None, None]
  mask = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
  for label in np.unique(labels):
    rows = labels == label
    mask[rows] = _class_mask(int(label), u[rows], v[rows])
  shading = 0.925 + 0.15 * _smooth_field(rng, n, 2)
  image = np.where(mask[:, None], object_colour[:, :, None, None] * shading[:, None], image)

  # Pixel noise, uniform in +-8 grey levels, then round to uint8.
  image = image * 255 + 0.5
  image += rng.integers(-8, 9, image.shape, dtype=np.int8)
  image = np.clip(image, 0, 255, out=image).astype(np.uint8).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(image), mask.astype(np.uint8)


def generate_shapes(
    num_examples: int, seed: int, split: str, style: Style = DEFAULT_STYLE
) -> dict[str, np.ndarray]:
  """Generates one split of ``shapes``, deterministically in ``(num_examples, seed, split, style)``.

  Args:
    num_examples: number of images n.
    seed: non-negative integer seed.
    split: ``"train"`` or ``"test"`` (each split draws from its own stream).
    style: the difficulty knobs (:class:`Style`; default: the original ``shapes``).

  Returns:
    ``{"image": uint8 (n, 32, 32, 3), "object_mask": uint8 (n, 32, 32) with 1 = object,
    "label": int64 (n,)}``; labels are balanced (counts differ by at most one).
  """
  if num_examples < 0 or seed < 0:
    raise ValueError(f"num_examples and seed must be >= 0, got {num_examples} and {seed}.")
  if split not in _SPLIT_IDS:
    raise ValueError(f"split must be one of {sorted(_SPLIT_IDS)}, got {split!r}.")
  rng = np.random.default_rng([seed, _SPLIT_IDS[split]])
  labels = rng.permutation(np.arange(num_examples) % len(CLASS_NAMES)).astype(np.int64)
  images, masks = [], []
  for start in range(0, num_examples, _CHUNK):
    image, mask = _render(rng, labels[start : start + _CHUNK], style)
    images.append(image)
    masks.append(mask)
  empty = (
      np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8),
      np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8),
  )
  return {
      "image": np.concatenate(images) if images else empty[0],
      "object_mask": np.concatenate(masks) if masks else empty[1],
      "label": labels,
  }


@dataclasses.dataclass(eq=False)
class ShapesConfig(base.ParameterisedConfig):
  """Sizes, seed and style of one ``shapes`` variant; named ``train{N}_test{M}_seed{S}[style suffix]``."""

  num_train: int = 20000
  num_test: int = 2000
  seed: int = 0
  style: Style = DEFAULT_STYLE


def shapes_config(
    num_train: int = 20000, num_test: int = 2000, seed: int = 0, style: Style = DEFAULT_STYLE
) -> ShapesConfig:
  """The ``ShapesConfig`` of these sizes, seed and style (num_train, num_test >= 1; seed >= 0)."""
  if num_train < 1 or num_test < 1 or seed < 0:
    raise ValueError(
        f"shapes needs num_train >= 1, num_test >= 1, seed >= 0; got {num_train}, {num_test}, {seed}."
    )
  knobs = (
      ""
      if style == DEFAULT_STYLE
      else (
          f"; polarity {style.polarity}, texture {style.texture:g}, {style.clutter} clutter strokes"
      )
  )
  return ShapesConfig(
      name=f"train{num_train}_test{num_test}_seed{seed}{style.suffix}",
      num_train=num_train,
      num_test=num_test,
      seed=seed,
      style=style,
      description=f"{num_train} train / {num_test} test images, seed {seed}{knobs}.",
  )


_NAME_PATTERN = re.compile(
    r"train(\d+)_test(\d+)_seed(\d+)(_light)?(?:_tex(\d+))?(?:_clutter(\d+))?"
)


def parse_shapes_config(name: str) -> ShapesConfig:
  """Inverse of ``shapes_config(...).name``: ``"train256_test64_seed0_light_tex50"`` -> ``ShapesConfig``.

  Style suffixes, in this order, each optional: ``_light`` (polarity "light"), ``_tex{P}`` (texture
  P/100), ``_clutter{K}`` (K strokes).
  """
  match = _NAME_PATTERN.fullmatch(name)
  if match is None:
    raise ValueError(
        f"A shapes config is named 'train<N>_test<M>_seed<S>[_light][_tex<P>][_clutter<K>]' "
        f"(e.g. 'train256_test64_seed0' or 'train20000_test2000_seed0_light'), got {name!r}."
    )
  num_train, num_test, seed, light, texture, clutter = match.groups()
  style = Style(
      polarity="light" if light else "random",
      texture=int(texture) / 100 if texture is not None else 1.0,
      clutter=int(clutter) if clutter is not None else NUM_CLUTTER_STROKES,
  )
  config = shapes_config(int(num_train), int(num_test), int(seed), style)
  if config.name != name:
    raise ValueError(f"Write the shapes config {name!r} in its canonical form {config.name!r}.")
  return config


DEFAULT_CONFIG = shapes_config()


class CodajaxShapes(base.OrderedBuilder):
  """Synthetic shapes with object masks; configs named ``train{N}_test{M}_seed{S}``."""

  DESCRIPTION = __doc__
  BUILDER_CONFIGS = [DEFAULT_CONFIG]
  DEFAULT_CONFIG_NAME = DEFAULT_CONFIG.name

  def _features(self) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8),
            "object_mask": tfds.features.Tensor(shape=(IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
        }
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Generated, nothing to download.
    config = self.builder_config
    return {
        "train": self._generate_examples(
            base.rows(generate_shapes(config.num_train, config.seed, "train", config.style))
        ),
        "test": self._generate_examples(
            base.rows(generate_shapes(config.num_test, config.seed, "test", config.style))
        ),
    }
