"""TensorFlow Probability bijectors for SDN models."""

from keras_sdn.bijectors.autoregressive_conv_network import AutoregressiveConvNetwork
from keras_sdn.bijectors.inverse_autoregressive_flow import InverseAutoregressiveFlow

__all__ = [
    "AutoregressiveConvNetwork",
    "InverseAutoregressiveFlow",
]
