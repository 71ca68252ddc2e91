"""Generative models built from spatial dependency layers."""

from keras_sdn.models.beta_vae import BetaVAE
from keras_sdn.models.sdn_vae import SDNVAE
