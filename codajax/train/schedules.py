"""Learning-rate schedules of the papers, as optax schedules over optimizer updates."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import optax


def base_learning_rate(opt: ml_collections.ConfigDict, batch_size: int) -> tuple[float, float]:
  """``(learning_rate, peak_learning_rate)``, linearly scaled with the batch if asked.

  Large-batch option (``lr_batch_scaling``): both are multiplied by
  ``batch_size / reference_batch_size`` (Goyal et al.'s linear scaling rule; pair
  it with a warm-up, e.g. ``warmup_cosine``).
  """
  scale = batch_size / opt.reference_batch_size if opt.lr_batch_scaling else 1.0
  return opt.learning_rate * scale, opt.peak_learning_rate * scale


def learning_rate_schedule(
    opt: ml_collections.ConfigDict, updates_per_epoch: int, total_updates: int, batch_size: int
) -> optax.Schedule:
  """The schedule named by ``opt.schedule``, as a function of the update count.

  * ``constant``: ``learning_rate``.
  * ``cifar_step`` (CIFAR-10 of the paper): ``lr · decay_factor^−⌊epoch / decay_every_epochs⌋``.
  * ``imagenet_warmup_halving`` (ImageNet-100): linear from ``lr`` to ``peak`` over
    ``warmup_epochs`` epochs (``linspace`` over epochs), then ``peak / 2^⌊epoch / halve_every⌋``.
  * ``warmup_cosine``: linear warm-up from 0 to ``peak`` over ``warmup_epochs``, cosine to 0.
  """
  lr, peak = base_learning_rate(opt, batch_size)
  epoch_of = lambda count: count // max(updates_per_epoch, 1)
  if opt.schedule == "constant":
    return optax.constant_schedule(lr)
  if opt.schedule == "cifar_step":
    return lambda count: lr * jnp.power(
        opt.decay_factor, -(epoch_of(count) // opt.decay_every_epochs)
    )
  if opt.schedule == "imagenet_warmup_halving":
    warmup = opt.warmup_epochs

    def schedule(count):
      epoch = epoch_of(count)
      ramp = lr + (peak - lr) * epoch / max(warmup - 1, 1)
      halved = peak / jnp.power(2.0, epoch // opt.halve_every_epochs)
      return jnp.where(epoch < warmup, ramp, halved)

    return schedule
  if opt.schedule == "warmup_cosine":
    warmup_steps = opt.warmup_epochs * updates_per_epoch
    return optax.warmup_cosine_decay_schedule(
        0.0, peak, max(warmup_steps, 1), max(total_updates, warmup_steps + 1)
    )
  raise ValueError(f"Unknown schedule {opt.schedule!r}.")
