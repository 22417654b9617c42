"""B-cos networks (Böhle, Fritz & Schiele; B-cos v2, TPAMI 2024) on codajax's explanation core.

* :mod:`codajax.bcos.ops`: functional B-cos convolution / dense layer,
  patch norms, MaxOut, logit layer; the ``[x, 1 − x]`` encoding is
  :func:`codajax.nn.add_inverse`, re-exported here.
* :mod:`codajax.bcos.norms`: the uncentred norms (batch, group, layer, position).
* :mod:`codajax.bcos.layers` (Linen) and :mod:`codajax.bcos.nnx_layers` (NNX).
* Models: :mod:`codajax.bcos.resnet`, :mod:`codajax.bcos.vgg` (Linen, registered with
  ``codajax.models.get_model`` as ``bcos-*``, see :mod:`codajax.bcos.models`),
  :mod:`codajax.bcos.nnx_models` (NNX ResNets); :mod:`codajax.bcos.common` (the
  segments and readout they declare for :mod:`codajax.explain.base`).
* Released checkpoints: :mod:`codajax.convert.bcos`.
* B-cosification of your own trained Linen network: :func:`bcosify`
  (:mod:`codajax.bcos.bcosification`, ``docs/bcos.md``).
"""

from codajax.bcos.bcosification import BcosifiedNet, BcosifyError, bcosify
from codajax.bcos.common import ClassMapSegments, class_map_logits, default_logit_bias
from codajax.bcos.layers import (
    BcosConv,
    BcosDense,
    FrozenBatchNormUncentered,
    GroupNormUncentered,
    PositionNormUncentered,
    make_norm,
)
from codajax.bcos.nnx_layers import (
    NNXBcosConv,
    NNXBcosDense,
    NNXFrozenBatchNormUncentered,
    NNXGroupNormUncentered,
    NNXPositionNormUncentered,
    make_nnx_norm,
)
from codajax.bcos.nnx_models import NNXBcosResNet, load_linen_params
from codajax.bcos.norms import (
    NORM_KINDS,
    batch_norm_uncentered,
    fold_batch_norm,
    group_norm_uncentered,
    layer_norm_uncentered,
    position_norm_uncentered,
)
from codajax.bcos.ops import (
    bcos_conv,
    bcos_dense,
    default_scale,
    dynamic_factor,
    logit_layer,
    maxout,
    patch_norms,
    unit_norm,
)
from codajax.bcos.resnet import BcosResNet
from codajax.bcos.vgg import BcosVGG
from codajax.nn.modules import add_inverse  # the CoDA/B-cos input encoding, shared

__all__ = [
    "NORM_KINDS",
    "BcosConv",
    "BcosDense",
    "BcosResNet",
    "BcosVGG",
    "BcosifiedNet",
    "BcosifyError",
    "ClassMapSegments",
    "FrozenBatchNormUncentered",
    "GroupNormUncentered",
    "NNXBcosConv",
    "NNXBcosDense",
    "NNXBcosResNet",
    "NNXFrozenBatchNormUncentered",
    "NNXGroupNormUncentered",
    "NNXPositionNormUncentered",
    "PositionNormUncentered",
    "add_inverse",
    "batch_norm_uncentered",
    "bcos_conv",
    "bcos_dense",
    "bcosify",
    "class_map_logits",
    "default_logit_bias",
    "default_scale",
    "dynamic_factor",
    "fold_batch_norm",
    "group_norm_uncentered",
    "layer_norm_uncentered",
    "load_linen_params",
    "logit_layer",
    "make_nnx_norm",
    "make_norm",
    "maxout",
    "patch_norms",
    "position_norm_uncentered",
    "unit_norm",
]
