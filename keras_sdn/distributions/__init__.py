"""TensorFlow Probability distributions for SDN models."""

from keras_sdn.distributions.discretized_logistic_mixture import DiscretizedLogisticMixture
from keras_sdn.distributions.gaussian import diagonal_gaussian

__all__ = [
    "DiscretizedLogisticMixture",
    "diagonal_gaussian",
]
