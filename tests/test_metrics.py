"""Tests of codajax.metrics: grid pointing game, pixel removal, ground-truth scores, summaries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codajax import metrics

# ---------------------------------------------------------------------------------- localisation scores


def tile_map(grid, tile, size=4, channels=None, value=1.0):
  """A (grid·size, grid·size[, channels]) map with ``value`` everywhere in tile ``tile`` (column-major)."""
  out = np.zeros((grid * size, grid * size) + ((channels,) if channels else ()), np.float32)
  row, col = tile % grid, tile // grid
  out[row * size : (row + 1) * size, col * size : (col + 1) * size] = value
  return out


@pytest.mark.parametrize("grid", [2, 3])
def test_all_mass_in_one_tile_scores_one_there(grid):
  maps = np.stack([tile_map(grid, k) for k in range(grid * grid)])
  np.testing.assert_allclose(metrics.localisation_scores(maps, grid), np.eye(grid * grid))


@pytest.mark.parametrize("grid", [2, 3])
def test_uniform_map_scores_one_over_n_squared(grid):
  maps = np.ones((2, grid * 5, grid * 5, 3), np.float32)
  np.testing.assert_allclose(
      metrics.localisation_scores(maps, grid), np.full((2, grid * grid), 1 / grid**2), rtol=1e-6
  )


def test_cells_are_flattened_column_major():
  maps = np.zeros((1, 12, 12), np.float32)
  maps[0, 0:4, 4:8] = 1.0  # row 0, column 1 -> cell 1·3 + 0 = 3
  maps[0, 8:12, 0:4] = 3.0  # row 2, column 0 -> cell 2
  np.testing.assert_allclose(
      metrics.localisation_scores(maps, 3)[0], [0, 0, 0.75, 0.25, 0, 0, 0, 0, 0]
  )


def test_channels_are_summed_before_dropping_negative_mass():
  maps = np.zeros((1, 6, 6, 2), np.float32)
  maps[0, 0:3, 0:3] = [2.0, -1.0]  # cell 0: +1 after the channel sum
  maps[0, 3:6, 3:6] = [1.0, 0.0]  # cell 3: +1
  maps[0, 3:6, 0:3] = [-5.0, 1.0]  # cell 1: negative, dropped
  np.testing.assert_allclose(metrics.localisation_scores(maps, 2)[0], [0.5, 0.0, 0.0, 0.5])


def test_map_without_positive_mass_scores_zero():
  maps = -np.ones((1, 9, 9), np.float32)
  np.testing.assert_array_equal(metrics.localisation_scores(maps, 3), np.zeros((1, 9)))


def test_localisation_metric_reads_the_target_tile_of_each_map():
  grid = 3
  perfect = np.stack([tile_map(grid, k, channels=3) for k in range(9)])[None]  # (1, 9, 12, 12, 3)
  uniform = np.ones((1, 9, 12, 12), np.float32)
  wrong = np.stack([tile_map(grid, (k + 1) % 9) for k in range(9)])[None]
  np.testing.assert_allclose(metrics.localisation_metric(perfect, grid), np.ones((1, 9)))
  np.testing.assert_allclose(
      metrics.localisation_metric(uniform, grid), np.full((1, 9), 1 / 9), rtol=1e-6
  )
  np.testing.assert_allclose(metrics.localisation_metric(wrong, grid), np.zeros((1, 9)))
  halves = np.stack([tile_map(2, k) + tile_map(2, 3 - k) for k in range(4)])[None]
  np.testing.assert_allclose(metrics.localisation_metric(halves, 2), np.full((1, 4), 0.5))


def test_localisation_scores_jit_and_reject_bad_shapes():
  maps = np.random.default_rng(0).normal(size=(3, 9, 9)).astype(np.float32)
  np.testing.assert_allclose(
      jax.jit(metrics.localisation_scores, static_argnums=1)(maps, 3),
      metrics.localisation_scores(maps, 3),
      rtol=1e-6,
  )
  with pytest.raises(ValueError, match="divisible"):
    metrics.localisation_scores(np.zeros((1, 10, 9)), 3)
  with pytest.raises(ValueError):
    metrics.localisation_metric(np.zeros((1, 4, 9, 9)), 3)


# ---------------------------------------------------------------------------------- image selection and grids


def test_select_confident_images_follows_the_reference_rules():
  # 3 classes, 2 per grid. Rows: logits; the first column of the comment is (label, kept?).
  logits = np.array(
      [
          [3.0, 0.0, 0.0],  # 0: class 0, conf 3
          [0.0, 2.0, 0.0],  # 1: class 1, conf 2
          [0.0, 0.0, 1.0],  # 2: class 2, conf 1
          [5.0, 0.0, 0.0],  # 3: class 0, conf 5
          [0.0, 4.0, 0.0],  # 4: class 1, conf 4
          [0.0, 0.0, 6.0],  # 5: class 2, conf 6
          [0.0, 9.0, 0.0],  # 6: label 0 but predicted 1 -> misclassified, dropped
          [-0.5, -2.0, -3.0],  # 7: class 0, conf -0.5 -> not confident
          [0.0, 0.0, 2.0],  # 8: class 2, conf 2
          [0.0, 0.0, 3.0],  # 9: class 2, conf 3
      ]
  )
  labels = np.array([0, 1, 2, 0, 1, 2, 0, 0, 2, 2])
  queues = {0: [3, 0], 1: [4, 1], 2: [5, 9, 8, 2]}  # correct & confident, by logit descending
  # The reference's draws: np.random.seed(42), then np.random.choice(available, 2, replace=False)
  # while more than 2 classes are available.
  state = np.random.get_state()
  np.random.seed(42)
  expected, used = [], {c: 0 for c in queues}
  while len(available := [c for c in queues if used[c] < len(queues[c])]) > 2:
    for c in np.random.choice(available, 2, replace=False):
      expected.append(queues[c][used[c]])
      used[c] += 1
  np.random.set_state(state)
  assert len(expected) >= 4  # at least two rounds happened
  got = metrics.select_confident_images(logits, labels, seed=42, n_per_grid=2)
  np.testing.assert_array_equal(got, expected)
  assert 6 not in got and 7 not in got


def test_select_confident_images_blocks_of_distinct_classes_with_decreasing_confidence():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(10), 30)
  logits = rng.normal(size=(300, 10))
  logits[np.arange(300), labels] += 4  # mostly correct and confident
  order = metrics.select_confident_images(logits, labels)
  blocks = labels[order].reshape(-1, 9)
  assert all(len(set(block)) == 9 for block in blocks)
  for cls in range(10):
    picked = order[labels[order] == cls]
    confidences = logits[picked, cls]
    assert np.all(np.diff(confidences) <= 0) and np.all(confidences > 0)


def test_grid_indices_skip_duplicates_and_one_entry_after_each_grid():
  labels = np.arange(16) % 4
  order = np.array([0, 1, 4, 2, 3] + list(range(5, 16)))
  # grid 1 walks 0, 1, (4 skipped: class 0 again), 2, 3 -> 5 entries; the quirk skips entry 5
  quirk = metrics.grid_indices(labels, order, n_grids=3, grid=2)
  np.testing.assert_array_equal(quirk, [[0, 1, 2, 3], [6, 7, 8, 9], [11, 12, 13, 14]])
  plain = metrics.grid_indices(labels, order, n_grids=3, grid=2, offset_quirk=False)
  np.testing.assert_array_equal(plain, [[0, 1, 2, 3], [5, 6, 7, 8], [9, 10, 11, 12]])
  with pytest.raises(ValueError, match="runs out"):
    metrics.grid_indices(labels, order, n_grids=4, grid=2)


def test_tiles_are_placed_column_major():
  tiles = jnp.arange(9, dtype=jnp.float32)[None, :, None, None, None] * jnp.ones((1, 9, 2, 3, 1))
  grid_image = metrics.tile_grids(tiles, 3)[0, ..., 0]
  assert grid_image.shape == (6, 9)
  for k in range(9):
    row, col = k % 3, k // 3
    np.testing.assert_array_equal(grid_image[2 * row : 2 * row + 2, 3 * col : 3 * col + 3], k)


def test_make_grids_tiles_the_selected_images():
  labels = np.arange(16) % 4
  images = np.arange(16, dtype=np.float32)[:, None, None, None] * np.ones((16, 4, 4, 3), np.float32)
  order = np.arange(16)
  grids = metrics.make_grids(images, labels, order, n_grids=2, grid=2)
  assert grids.images.shape == (2, 8, 8, 3)
  np.testing.assert_array_equal(grids.indices, [[0, 1, 2, 3], [5, 6, 7, 8]])
  np.testing.assert_array_equal(grids.labels, [[0, 1, 2, 3], [1, 2, 3, 0]])
  np.testing.assert_array_equal(grids.images[1, 4:8, 0:4, 0], 6)  # tile 1 -> row 1, column 0
  # a map that is positive exactly on each tile's own image scores 1 for every tile
  own = np.stack(
      [[(grids.images[g, ..., 0] == grids.indices[g, k]) for k in range(4)] for g in range(2)]
  ).astype(np.float32)
  np.testing.assert_allclose(metrics.localisation_metric(own, 2), np.ones((2, 4)))


# ---------------------------------------------------------------------------------- pixel removal


def test_removal_schedule_of_the_reference():
  steps = metrics.removal_steps(32 * 32)
  np.testing.assert_array_equal(steps, np.arange(0, 257, 2))
  assert len(steps) == 129
  np.testing.assert_allclose(metrics.removal_fractions(1024)[[0, 8, -1]], [0, 16 / 1024, 0.25])


def test_removal_masks_are_cumulative_and_remove_least_important_first():
  importance = jax.random.normal(jax.random.key(0), (2, 32, 32))
  masks = np.asarray(metrics.removal_masks(importance))
  assert masks.shape == (2, 129, 32, 32)
  np.testing.assert_array_equal(masks[:, 0], 1)
  np.testing.assert_array_equal((1 - masks).sum(axis=(2, 3)), np.tile(np.arange(0, 257, 2), (2, 1)))
  assert np.all(masks[:, 1:] <= masks[:, :-1])
  for n in range(2):
    least = np.argsort(np.asarray(importance[n]).ravel(), kind="stable")[:10]
    np.testing.assert_array_equal(np.sort(np.flatnonzero(masks[n, 5].ravel() == 0)), np.sort(least))
  most = np.asarray(metrics.removal_masks(importance, direction="most"))
  top = np.argsort(np.asarray(importance[0]).ravel())[-6:]
  np.testing.assert_array_equal(np.sort(np.flatnonzero(most[0, 3].ravel() == 0)), np.sort(top))


def test_removal_ties_follow_row_major_pixel_order():
  masks = np.asarray(metrics.removal_masks(jnp.zeros((1, 8, 8, 3)), fraction=0.25, n_points=8))
  assert masks.shape == (1, 9, 8, 8)
  np.testing.assert_array_equal(np.flatnonzero(masks[0, 3].ravel() == 0), np.arange(6))


def test_pixel_removal_curve_zeroes_the_encoded_input():
  rng = np.random.default_rng(1)
  weights = rng.normal(size=(8 * 8 * 6, 3)).astype(np.float32) / 10
  fn = lambda x6: x6.reshape(x6.shape[0], -1) @ weights
  images = rng.uniform(size=(3, 8, 8, 3)).astype(np.float32)
  labels = np.array([0, 2, 1])
  importance = rng.normal(size=(3, 8, 8)).astype(np.float32)
  probabilities = metrics.pixel_removal_probabilities(
      fn, images, labels, importance, n_points=8, items_per_pass=4
  )
  assert probabilities.shape == (3, 9)
  masks = np.asarray(metrics.removal_masks(importance, n_points=8))
  encoded = np.concatenate([images, 1 - images], axis=-1)
  for j in (0, 4, 8):
    logits = (encoded * masks[:, j, :, :, None]).reshape(3, -1) @ weights
    expected = 1 / (1 + np.exp(-logits[np.arange(3), labels]))
    np.testing.assert_allclose(probabilities[:, j], expected, rtol=1e-5)
  curve = metrics.pixel_removal_curve(
      fn, images, labels, importance, n_points=8, items_per_pass=None
  )
  np.testing.assert_allclose(curve, np.asarray(probabilities).mean(axis=0), rtol=1e-6)


def test_pixel_removal_black_mode_masks_the_image():
  rng = np.random.default_rng(2)
  weights = rng.normal(size=(8 * 8 * 3, 2)).astype(np.float32) / 10
  fn = lambda x: x.reshape(x.shape[0], -1) @ weights
  images = rng.uniform(size=(2, 8, 8, 3)).astype(np.float32)
  attributions = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
  probabilities = metrics.pixel_removal_probabilities(
      fn, images, np.array([1, 0]), attributions, n_points=8, mode="black"
  )
  masks = np.asarray(metrics.removal_masks(attributions, n_points=8))
  logits = (images * masks[:, 8, :, :, None]).reshape(2, -1) @ weights
  np.testing.assert_allclose(
      probabilities[:, 8], 1 / (1 + np.exp(-logits[[0, 1], [1, 0]])), rtol=1e-5
  )
  with pytest.raises(ValueError, match="zero_encoded"):
    metrics.pixel_removal_curve(fn, images, np.array([1, 0]), attributions, mode="grey")


# ---------------------------------------------------------------------------------- ground truth, completeness, summary


def test_mask_energy_and_pointing_game():
  masks = np.zeros((3, 4, 4), bool)
  masks[:, :2, :2] = True
  maps = np.zeros((3, 4, 4, 2), np.float32)
  maps[0, 0, 0] = [2.0, 1.0]  # everything inside
  maps[1, 0, 0] = [1.0, 0.0]  # 1 inside ...
  maps[1, 3, 3] = [3.0, 0.0]  # ... 3 outside, and the peak is outside
  maps[1, 2, 2] = [-9.0, 0.0]  # negative, ignored
  maps[2] = -1.0  # no positive mass
  np.testing.assert_allclose(metrics.mask_energy(maps, masks), [1.0, 0.25, 0.0])
  np.testing.assert_array_equal(metrics.pointing_game(maps, masks)[:2], [1.0, 0.0])
  with pytest.raises(ValueError):
    metrics.mask_energy(maps[:, :3], masks)


def test_contribution_sum_error():
  contributions = np.array([[[1.0, 2.0], [3.0, -4.0]], [[0.5, 0.5], [0.0, 0.0]]])
  np.testing.assert_allclose(
      metrics.contribution_sum_error(contributions, np.array([2.0, 1.0])), [0.0, 0.0], atol=1e-7
  )
  np.testing.assert_allclose(
      metrics.contribution_sum_error(contributions, np.array([3.0, 1.5])), [0.1, 0.5], rtol=1e-6
  )


def test_summarise_matches_numpy():
  values = np.random.default_rng(3).uniform(size=101)
  summary = metrics.summarise(values)
  assert summary["median"] == pytest.approx(np.median(values))
  assert summary["std"] == pytest.approx(values.std())
  assert summary["p25"] == pytest.approx(np.percentile(values, 25))
  assert summary["share_above_half"] == pytest.approx(np.mean(values > 0.5))
  assert set(summary) == {"mean", "std", "min", "p25", "median", "p75", "max", "share_above_half"}
  assert all(isinstance(v, float) for v in summary.values())


# ---------------------------------------------------------------------------------- empty batches


def test_per_image_scores_of_an_empty_batch_are_empty_and_curves_raise():
  maps, masks = np.zeros((0, 6, 6, 2), np.float32), np.zeros((0, 6, 6), bool)
  assert metrics.mask_energy(maps, masks).shape == (0,)
  assert metrics.pointing_game(maps, masks).shape == (0,)
  assert metrics.contribution_sum_error(maps, np.zeros((0,))).shape == (0,)
  assert metrics.localisation_scores(maps, grid=3).shape == (0, 9)
  assert metrics.localisation_metric(np.zeros((0, 9, 6, 6)), grid=3).shape == (0, 9)
  weights = np.ones((6 * 6 * 6, 3), np.float32)
  fn = lambda x6: x6.reshape(x6.shape[0], 6 * 6 * 6) @ weights
  images, labels = np.zeros((0, 6, 6, 3), np.float32), np.zeros((0,), int)
  probabilities = metrics.pixel_removal_probabilities(fn, images, labels, maps, n_points=4)
  assert probabilities.shape == (0, len(metrics.removal_steps(36, n_points=4)))
  with pytest.raises(ValueError, match="empty batch"):
    metrics.pixel_removal_curve(fn, images, labels, maps, n_points=4)
  with pytest.raises(ValueError, match="empty"):
    metrics.summarise([])
