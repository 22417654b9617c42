"""The named B-cos models, registered with :func:`codajax.models.get_model`.

=========================  ===========================================================  ==========
name                       model                                                         parameters
=========================  ===========================================================  ==========
``bcos-resnet18``          ImageNet B-cos ResNet-18 (frozen uncentred BN), released      11.69M
``bcos-resnet34``          ImageNet B-cos ResNet-34, released                            21.80M
``bcos-resnet50``          ImageNet B-cos ResNet-50, released                            25.54M
``bcos-resnet101``         ImageNet B-cos ResNet-101, released                           44.50M
``bcos-resnet152``         ImageNet B-cos ResNet-152, released                           60.13M
``bcos-vgg11``             ImageNet B-cos VGG-11 with uncentred BN (``vgg11_bnu``)       132.86M
``bcos-vgg13/16/19``       the deeper VGGs, same layout
``bcos-cifar10-resnet20``  B-cos v2's CIFAR-10 ResNet-20 (MaxOut 2, no norm); 32/44/56/110
``bcos-resnet-tiny``       3 one-block stages 16/32/64, uncentred layer norm, 32 px      78k
=========================  ===========================================================  ==========

``get_model`` arguments: ``num_classes`` (default: the model's), ``temperature``
(``None``: none, as released), ``dtype``, ``image_channels``; ``norm``
picks the B-cos norm (``"bn"``, ``"gn"``, ``"ln"``, ``"pn"``, ``"none"``; default:
the model's own, as in the table); further keywords (``b``, ``max_out``,
``logit_bias``, ...) go to the model. CoDA settings (``form``, the CoDA norms)
are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from codajax.bcos import resnet, vgg
from codajax.bcos.norms import check_norm_kind
from codajax.registry import register_model


def _factory(build: Callable[..., Any], default_norm: str) -> Callable[..., Any]:
  """A ``get_model`` factory: ``norm`` is a B-cos norm kind (default: the model's own)."""

  def factory(*, norm: str = default_norm, **kwargs):
    check_norm_kind(norm)
    return build(norm=norm, **kwargs)

  return factory


def _register() -> None:
  for depth_name in resnet.IMAGENET_RESNETS:
    register_model(
        f"bcos-{depth_name}",
        _factory(
            lambda depth_name=depth_name, **kw: resnet.imagenet_resnet(depth_name, **kw), "bn"
        ),
    )
  for depth_name in resnet.CIFAR_RESNETS:
    register_model(
        f"bcos-cifar10-{depth_name}",
        _factory(lambda depth_name=depth_name, **kw: resnet.cifar_resnet(depth_name, **kw), "none"),
    )
  for name in vgg.CONFIGS:
    register_model(f"bcos-{name}", _factory(lambda name=name, **kw: vgg.vgg(name, **kw), "bn"))
  register_model("bcos-resnet-tiny", _factory(resnet.tiny_resnet, "ln"))


_register()
