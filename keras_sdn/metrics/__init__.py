"""Disentanglement metrics on `keras_sdn.data.GroundTruthData`.

Each metric takes `encode_fn` (observations -> latent means `(n, d)`), the
ground truth and a seed, follows disentanglement_lib's procedure and default
settings, and returns a dict of floats whose key of the same name is the score.
"""

from keras_sdn.metrics.beta_vae import beta_vae_score
from keras_sdn.metrics.factor_vae import factor_vae_score
from keras_sdn.metrics.logistic_regression import LogisticRegression
from keras_sdn.metrics.mig import mig_score

__all__ = [
    "beta_vae_score",
    "factor_vae_score",
    "LogisticRegression",
    "mig_score",
]
