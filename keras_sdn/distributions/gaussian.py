"""Diagonal Gaussian over spatial latents, with a sampling temperature."""

import tensorflow as tf
import tensorflow_probability as tfp

from keras_sdn._checks import check_temperature

tfd = tfp.distributions


def diagonal_gaussian(loc, log_scale, temperature=1.0):
    """Diagonal Gaussian over latents `(..., height, width, z)`.

    The prior and the posterior of a stochastic layer. `temperature` multiplies
    the standard deviation (sampling "at a temperature" from the prior).
    Half-precision inputs are computed in float32.

    Args:
        loc: float tensor `(..., height, width, z)`, the means.
        log_scale: float tensor broadcastable to `loc`, log standard deviations.
        temperature: finite positive float (or float tensor broadcastable to
            `loc`, not checked).

    Returns:
        `tfd.Independent(tfd.Normal(loc, exp(log_scale) * temperature),
        reinterpreted_batch_ndims=3)`: event shape `(height, width, z)`, batch
        shape `loc.shape[:-3]`.

    Example:

    >>> prior = diagonal_gaussian(tf.zeros([8, 4, 4, 32]), tf.zeros([8, 4, 4, 32]), 0.8)
    >>> z = prior.sample()               # (8, 4, 4, 32)
    >>> prior.log_prob(z).shape          # (8,)
    """
    loc, log_scale = _full_precision(loc), _full_precision(log_scale)
    if loc.shape.rank is not None and loc.shape.rank < 3:
        raise ValueError(
            f"Expected `loc` of shape (..., height, width, z). Received: shape={loc.shape}"
        )
    temperature = check_temperature(temperature)
    temperature = tf.cast(tf.convert_to_tensor(temperature, dtype_hint=loc.dtype), loc.dtype)
    scale = tf.exp(tf.cast(log_scale, loc.dtype)) * temperature
    return tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=3)


def _full_precision(tensor):
    tensor = tf.convert_to_tensor(tensor)
    if tensor.dtype in (tf.float16, tf.bfloat16):
        return tf.cast(tensor, tf.float32)
    return tensor
