"""The reference's explainers as presets with one call signature.

``METHODS[name](fn, images, targets, **overrides) -> (N, H, W, C or 1)``. Keyword overrides replace
the preset's settings (e.g. ``items_per_pass`` or a ``key``).

Called eagerly, a preset checks its inputs and runs one jitted program cached per method,
settings, ``fn``, target shape and input shape (see :mod:`codajax.attribution.compiled`); pass
the parameters as arguments of that program with a ``jax.tree_util.Partial``::

    fn = jax.tree_util.Partial(model.apply, variables)
    maps = METHODS["IntGrad"](fn, images, targets)   # later calls of this shape compile nothing

A plain closure ``lambda x: model.apply(variables, x)`` works too but is static: each new
function object compiles a new program with the parameters folded in as constants. Under
``jax.jit`` a preset is traced in place.

"GCam" expects the feature function ``(images, delta) -> (logits, features)`` of
:func:`codajax.attribution.grad_cam` as ``fn`` (build it with
:func:`codajax.attribution.layer_function` on the last CoDA layer; as a ``Partial`` with the
parameters as its argument: ``Partial(lambda v, x, d: layer_function(model, v, name)(x, d),
variables)``, the lambda defined once).
"""

from __future__ import annotations

from typing import Callable

from codajax.attribution import compiled
from codajax.attribution.gradcam import grad_cam
from codajax.attribution.gradients import gradient, input_x_gradient, integrated_gradients, smooth_grad
from codajax.attribution.perturbation import occlusion, rise

AttributionMethod = Callable[..., object]


def _preset(name: str, method: Callable, /, **settings) -> AttributionMethod:
  """``method`` with default ``settings``; call as ``(fn, images, targets, **overrides)``."""

  def configured(fn, images, targets, **overrides):
    return compiled.call(method, fn, images, targets, {**settings, **overrides})

  shown = ", ".join(f"{key}={value!r}" for key, value in settings.items())
  configured.__name__ = configured.__qualname__ = name
  configured.__doc__ = f"{name}: {method.__name__}({shown or 'defaults'}). Returns (N, H, W, C or 1).\n\n{method.__doc__}"
  configured.settings = dict(settings)
  configured.method = method
  return configured


METHODS: dict[str, AttributionMethod] = {
    "Grad": _preset("Grad", gradient, abs=False),
    "IxG": _preset("IxG", input_x_gradient),
    "IntGrad": _preset(
        "IntGrad", integrated_gradients, n_steps=20, method="gausslegendre", baselines=None
    ),
    "SmoothGrad": _preset("SmoothGrad", smooth_grad, key=0, nt_samples=50, stdevs=0.15),
    "GCam": _preset("GCam", grad_cam, relu_attributions=True, upsample=True),
    "Occ5": _preset(
        "Occ5",
        occlusion,
        sliding_window_shapes=5,
        strides=2,
        baselines=0.0,
        reference_window_quirk=True,
    ),
    "Occ9": _preset(
        "Occ9",
        occlusion,
        sliding_window_shapes=9,
        strides=2,
        baselines=0.0,
        reference_window_quirk=True,
    ),
    "RISE": _preset("RISE", rise, key=0, n_masks=6000, s=6, p1=0.1),
}


def get_method(name: str) -> AttributionMethod:
  """The preset ``METHODS[name]``; raises ``KeyError`` naming the known methods otherwise."""
  try:
    return METHODS[name]
  except KeyError:
    raise KeyError(
        f"unknown attribution method {name!r}; known methods: {', '.join(METHODS)}"
    ) from None
