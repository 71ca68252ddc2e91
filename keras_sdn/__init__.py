"""keras-sdn: spatial dependency networks for Keras 3.

The layers are imported eagerly; the subpackages that pull in TensorFlow
Probability or TensorFlow Datasets (`distributions`, `bijectors`, `models`,
`metrics`, `data`, `export`), and `distribute` and `optimizers`, are imported on first access, so that using only
the layers does not pay for importing those libraries.
"""

import importlib

from keras_sdn import layers
from keras_sdn.layers import ResidualSpatialDependency
from keras_sdn.layers import SpatialDependency
from keras_sdn.layers import WeightNormalization

__all__ = [
    "layers",
    "ResidualSpatialDependency",
    "SpatialDependency",
    "WeightNormalization",
]

__version__ = "0.2.0"

_LAZY_SUBMODULES = (
    "bijectors",
    "data",
    "distribute",
    "distributions",
    "export",
    "metrics",
    "models",
    "optimizers",
)


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"keras_sdn.{name}")
    raise AttributeError(f"module 'keras_sdn' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY_SUBMODULES))
