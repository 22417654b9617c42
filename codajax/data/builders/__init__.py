"""TFDS builders of the codajax datasets (importing this module registers them with TFDS)."""

from codajax.data.builders.cifar10 import CodajaxCifar10
from codajax.data.builders.digits import CodajaxDigits
from codajax.data.builders.image_folder import CodajaxImagenetFolder, CodajaxTinyImagenet
from codajax.data.builders.shapes import CodajaxShapes

__all__ = [
    "CodajaxCifar10",
    "CodajaxDigits",
    "CodajaxImagenetFolder",
    "CodajaxShapes",
    "CodajaxTinyImagenet",
]
