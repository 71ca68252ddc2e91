"""Generative models built from spatial dependency layers."""

from keras_sdn.models.base_vae import BaseVAE
from keras_sdn.models.beta_vae import BetaVAE
from keras_sdn.models.presets import PRESETS
from keras_sdn.models.sdn_plan import SDNLayerPlan
from keras_sdn.models.sdn_plan import format_sdn_plan
from keras_sdn.models.sdn_plan import make_sdn_plan
from keras_sdn.models.sdn_vae import SDNVAE

__all__ = [
    "BaseVAE",
    "BetaVAE",
    "PRESETS",
    "SDNLayerPlan",
    "SDNVAE",
    "format_sdn_plan",
    "make_sdn_plan",
]
