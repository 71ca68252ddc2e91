"""Generative models built from spatial dependency layers.

The models are built on TensorFlow Probability and need the TensorFlow
backend: under another, importing this package raises a `ValueError`.
"""

from keras_sdn._compat import require_tensorflow_backend

require_tensorflow_backend("keras_sdn.models")

from keras_sdn.models.base_vae import BaseVAE  # noqa: E402
from keras_sdn.models.beta_vae import BetaVAE  # noqa: E402
from keras_sdn.models.presets import PRESETS  # noqa: E402
from keras_sdn.models.sdn_plan import SDNLayerPlan  # noqa: E402
from keras_sdn.models.sdn_plan import format_sdn_plan  # noqa: E402
from keras_sdn.models.sdn_plan import make_sdn_plan  # noqa: E402
from keras_sdn.models.sdn_vae import SDNVAE  # noqa: E402

__all__ = [
    "BaseVAE",
    "BetaVAE",
    "PRESETS",
    "SDNLayerPlan",
    "SDNVAE",
    "format_sdn_plan",
    "make_sdn_plan",
]
