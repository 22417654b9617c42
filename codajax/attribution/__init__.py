"""Post-hoc attribution methods for any apply function ``fn: (N, H, W, C) -> (N, K) logits``.

Every method is ``method(fn, images, targets, **settings)`` with images (N, H, W, C) in [0, 1] and
targets an int or (N,) ints, is batched and jit-able, and returns maps (N, H, W, C) (gradient
methods) or (N, H, W, 1) (Grad-CAM, Occlusion, RISE). Targets (N, T) explain T classes per image and
add a T axis after N (Occlusion and RISE share their forward passes between the T classes).
``METHODS`` holds the reference's presets. Each method names the Captum method it mirrors. Loops
over integration steps, noise samples or masks evaluate ``items_per_pass`` items per forward pass
(Captum's ``internal_batch_size``, ``nt_samples_batch_size`` and ``perturbations_per_eval``).
DeepLIFT reduces to Input×Gradient on a CoDA-Net (see :mod:`codajax.attribution.gradients`).
Images and settings are checked as :func:`codajax.explain.explain` checks its input (one error
naming the argument; ``check_range=False`` allows images outside [0, 1]). Under ``jit`` values
cannot be checked: NaN pixels or baselines give NaN maps, and a traced target outside ``[0, K)``
gives an all-zero map for its image.
"""

from codajax.attribution.gradcam import grad_cam, layer_function, layer_grad_cam
from codajax.attribution.gradients import (
    gradient,
    input_x_gradient,
    integrated_gradients,
    integration_rule,
    noise_tunnel,
    smooth_grad,
)
from codajax.attribution.perturbation import occlusion, occlusion_window_bounds, rise, rise_masks
from codajax.attribution.registry import METHODS, get_method

__all__ = [
    "METHODS",
    "get_method",
    "gradient",
    "input_x_gradient",
    "integrated_gradients",
    "integration_rule",
    "noise_tunnel",
    "smooth_grad",
    "grad_cam",
    "layer_function",
    "layer_grad_cam",
    "occlusion",
    "occlusion_window_bounds",
    "rise",
    "rise_masks",
]
