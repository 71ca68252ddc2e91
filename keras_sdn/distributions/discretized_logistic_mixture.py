"""Discretized mixture of logistics over images (PixelCNN++ observation model)."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_sdn._checks import check_int
from keras_sdn._checks import check_temperature
from keras_sdn._scaling import to_unit_range

tfd = tfp.distributions

# PixelCNN++ floor on the log-scale of a component, in units of the [-1, 1] range.
_MIN_LOG_SCALE = -7.0


class DiscretizedLogisticMixture(tfd.Distribution):
    """Discretized mixture of logistics over images, with sub-pixel coupling.

    The observation model of PixelCNN++ (Salimans et al., 2017). Every pixel is
    a mixture of `K` components whose weights are shared by the pixel's channels.
    Inside a component, channel `c` is a logistic discretized to the integers
    `0 .. 2**num_bits - 1`, whose mean is shifted linearly by the values of the
    channels before it (for RGB: green by red, blue by red and green). The
    lowest and highest values take the whole tail mass. Pixels are independent
    given `params`.

    Values are rescaled to `[-1, 1]` (`2 * v / (2**num_bits - 1) - 1`) as in
    PixelCNN++: the means, log-scales and coupling coefficients of `params` live
    on that scale, so a network's output scale does not depend on `num_bits`.

    The last axis of `params` holds, in this order: `K` mixture logits, `K * C`
    means, `K * C` log-scales (floored at -7) and `K * C * (C - 1) / 2` coupling
    coefficients (squashed by `tanh`), each block laid out as `(K, ...)` in
    row-major order; the coefficients of channel `c` come in the order of the
    channels `0 .. c - 1` they multiply. Its length is
    `DiscretizedLogisticMixture.params_size(K, C)`.

    Args:
        params: float tensor `(..., height, width, P)`, the network output.
            Half-precision params are computed in float32.
        channels: int >= 1, the number of image channels `C` (1 or 3 usually).
        num_bits: int in 1..8, the bit depth of the values.
        temperature: finite positive float (or a scalar float tensor, not
            checked), multiplies the scale of every logistic (the
            distribution, its samples and its log-probabilities are those of
            the tempered model).
        validate_args: Python bool, check the values passed to `log_prob`.
        name: name of the distribution.

    Shapes:
        batch shape `params.shape[:-3]`, event shape `(height, width, channels)`;
        `sample()` and `mode()` return int32 images, `log_prob(x)` returns the
        log-likelihood of each image in nats (summed over its event), float32
        (float64 if `params` are float64). Indexing slices the batch:
        `likelihood[0]` is the distribution of the first image.

    Example:

    >>> params = keras.layers.Conv2D(
    ...     DiscretizedLogisticMixture.params_size(10, 3), 1)(features)
    >>> likelihood = DiscretizedLogisticMixture(params, channels=3, num_bits=5)
    >>> nats = -likelihood.log_prob(images)        # (batch,)
    >>> bits_per_dim = nats / (np.log(2.0) * np.prod(images.shape[1:]))
    >>> samples = likelihood.sample()               # int32 (batch, H, W, 3)
    """

    def __init__(
        self,
        params,
        channels,
        num_bits=8,
        temperature=1.0,
        validate_args=False,
        name="DiscretizedLogisticMixture",
    ):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            params = tf.convert_to_tensor(params)
            if params.dtype in (tf.float16, tf.bfloat16):
                params = tf.cast(params, tf.float32)
            if not params.dtype.is_floating:
                raise ValueError(
                    "Expected `params` to be a floating-point tensor. "
                    f"Received: params.dtype={params.dtype.name}"
                )
            if params.shape.rank is not None and params.shape.rank < 3:
                raise ValueError(
                    "Expected `params` of shape (..., height, width, P). "
                    f"Received: params.shape={params.shape}"
                )
            self._num_mixtures = _num_mixtures(params.shape[-1], channels)
            check_int("num_bits", num_bits, low=1, high=8)
            temperature = check_temperature(temperature)
            self._params = params
            self._channels = channels
            self._num_bits = num_bits
            self._temperature = tf.cast(
                tf.convert_to_tensor(temperature, dtype_hint=params.dtype), params.dtype
            )
            super().__init__(
                dtype=tf.int32,
                reparameterization_type=tfd.NOT_REPARAMETERIZED,
                validate_args=validate_args,
                allow_nan_stats=True,
                parameters=parameters,
                name=name,
            )

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict(
            # An event is one image: the last three axes, (height, width, P).
            params=tfp.util.ParameterProperties(event_ndims=3, shape_fn=_params_shape),
            # A scalar shared by the whole batch: never sliced.
            temperature=tfp.util.ParameterProperties(
                event_ndims=None, default_constraining_bijector_fn=tfp.bijectors.Softplus
            ),
        )

    @staticmethod
    def params_size(num_mixtures, channels):
        """Length `P` of the last axis of `params` for `num_mixtures` components."""
        check_int("num_mixtures", num_mixtures, low=1)
        check_int("channels", channels, low=1)
        return num_mixtures * _params_per_mixture(channels)

    @property
    def params(self):
        return self._params

    @property
    def channels(self):
        return self._channels

    @property
    def num_bits(self):
        return self._num_bits

    @property
    def num_mixtures(self):
        return self._num_mixtures

    @property
    def temperature(self):
        return self._temperature

    def _batch_shape(self):
        return self._params.shape[:-3]

    def _batch_shape_tensor(self):
        return tf.shape(self._params)[:-3]

    def _event_shape(self):
        return self._params.shape[-3:-1].concatenate([self._channels])

    def _event_shape_tensor(self):
        return tf.concat([tf.shape(self._params)[-3:-1], [self._channels]], axis=0)

    @property
    def _max_value(self):
        return 2.0**self._num_bits - 1.0

    def _components(self):
        """Splits `params` into logits (..., K), means, log-scales (..., K, C), coefficients."""
        k, c = self._num_mixtures, self._channels
        logits, means, log_scales, coefficients = tf.split(
            self._params, [k, k * c, k * c, k * c * (c - 1) // 2], axis=-1
        )
        leading = tf.shape(self._params)[:-1]
        means = tf.reshape(means, tf.concat([leading, [k, c]], axis=0))
        log_scales = tf.reshape(log_scales, tf.concat([leading, [k, c]], axis=0))
        coefficients = tf.reshape(
            tf.tanh(coefficients), tf.concat([leading, [k, c * (c - 1) // 2]], axis=0)
        )
        scales = tf.exp(tf.maximum(log_scales, _MIN_LOG_SCALE)) * self._temperature
        return logits, means, scales, coefficients

    @staticmethod
    def _coupled_mean(means, coefficients, earlier_values, channel):
        """Mean of `channel` plus the coupling terms of the earlier channels' values.

        `earlier_values` holds the values of channels `0 .. channel - 1` on the
        [-1, 1] scale; coefficients of channel c start at index c * (c - 1) / 2.
        """
        first = channel * (channel - 1) // 2
        mean = means[..., channel]
        for index, value in enumerate(earlier_values[:channel]):
            mean = mean + coefficients[..., first + index] * value
        return mean

    def _quantized_logistic(self, mean, scale):
        """A logistic on the [-1, 1] scale, quantized to the integers 0 .. 2**num_bits - 1.

        `QuantizedDistribution` puts the mass of (v - 1, v] on v; shifting the
        logistic down by 1/2 puts the mass of (v - 1/2, v + 1/2] there instead.
        """
        half_range = self._max_value / 2.0
        return _QuantizedLogistic(
            tfd.Logistic(loc=(mean + 1.0) * half_range - 0.5, scale=scale * half_range),
            low=tf.zeros([], mean.dtype),
            high=tf.constant(self._max_value, mean.dtype),
        )

    def _pixel_distribution(self, values):
        """Mixture over the channels of each pixel, with means coupled to `values`."""
        logits, means, scales, coefficients = self._components()
        unit_values = to_unit_range(values, self._num_bits)[..., tf.newaxis, :]
        means = tf.broadcast_to(
            means, tf.broadcast_dynamic_shape(tf.shape(means), tf.shape(unit_values))
        )
        earlier = [unit_values[..., c] for c in range(self._channels)]
        coupled_means = tf.stack(
            [self._coupled_mean(means, coefficients, earlier, c) for c in range(self._channels)],
            axis=-1,
        )
        components = tfd.Independent(
            self._quantized_logistic(coupled_means, scales), reinterpreted_batch_ndims=1
        )
        mixture = tfd.Categorical(logits=tf.broadcast_to(logits, tf.shape(coupled_means)[:-1]))
        return tfd.MixtureSameFamily(mixture, components)

    def _log_prob(self, x):
        x = tf.cast(x, self._params.dtype)
        return tf.reduce_sum(self._pixel_distribution(x).log_prob(x), axis=[-2, -1])

    def _select_component(self, component):
        """Means, scales and coefficients of one component per pixel (index tensor)."""
        _, means, scales, coefficients = self._components()
        one_hot = tf.one_hot(component, self._num_mixtures, dtype=self._params.dtype)
        one_hot = one_hot[..., tf.newaxis]
        return [
            tf.reduce_sum(one_hot * parameter, axis=-2)
            for parameter in (means, scales, coefficients)
        ]

    def _sample_n(self, n, seed=None):
        component_seed, *channel_seeds = tfp.random.split_seed(
            seed, n=1 + self._channels, salt="DiscretizedLogisticMixture"
        )
        logits = self._params[..., : self._num_mixtures]
        component = tfd.Categorical(logits=logits).sample(n, seed=component_seed)
        means, scales, coefficients = self._select_component(component)
        values, unit_values = [], []
        for c in range(self._channels):
            mean = self._coupled_mean(means, coefficients, unit_values, c)
            value = self._quantized_logistic(mean, scales[..., c]).sample(seed=channel_seeds[c])
            values.append(value)
            unit_values.append(to_unit_range(value, self._num_bits))
        return tf.cast(tf.stack(values, axis=-1), tf.int32)

    def _mode(self):
        """The most likely image as the authors display it.

        Per pixel: the most probable component, then channel by channel the
        value nearest its (coupled) mean, clipped to the value range. This is
        the mode of the chosen component, not of the mixture.
        """
        logits = self._params[..., : self._num_mixtures]
        means, _, coefficients = self._select_component(tf.argmax(logits, axis=-1))
        values, unit_values = [], []
        for c in range(self._channels):
            mean = self._coupled_mean(means, coefficients, unit_values, c)
            value = tf.clip_by_value(
                tf.round((mean + 1.0) * (self._max_value / 2.0)), 0.0, self._max_value
            )
            values.append(value)
            unit_values.append(to_unit_range(value, self._num_bits))
        return tf.cast(tf.stack(values, axis=-1), tf.int32)

    def _sample_control_dependencies(self, x):
        if not self.validate_args:
            return []
        x = tf.cast(x, self._params.dtype)
        return [
            tf.debugging.assert_equal(
                x,
                tf.round(x),
                message="Expected `x` to be integer-valued. Received: x with other values:",
            ),
            tf.debugging.assert_greater_equal(
                x,
                tf.zeros([], x.dtype),
                message="Expected `x` to be >= 0. Received: x with negative values:",
            ),
            tf.debugging.assert_less_equal(
                x,
                tf.constant(self._max_value, x.dtype),
                message=(
                    f"Expected `x` to be <= 2**num_bits - 1 = {self._max_value:.0f}, with "
                    f"num_bits={self._num_bits}. Received: x with larger values:"
                ),
            ),
        ]

    def _default_event_space_bijector(self):
        return None


class _QuantizedLogistic(tfd.QuantizedDistribution):
    """`QuantizedDistribution` of a `Logistic`, with a log-probability exact in float32.

    TFP's generic `log_prob` takes the difference of two CDF values, which
    cancels in float32 once the logistic is much wider than a bin (off by
    about 1 nat per channel at 10**6 bins, -inf with NaN gradients at 10**10).
    For the logistic CDF sigmoid, with u = (y - loc) / scale, l = u - 1 / scale:

        sigmoid(u) - sigmoid(l) = sigmoid(u) * sigmoid(-l) * (1 - exp(l - u)),

    a product of terms that are each exact in log space. At `low` the lower
    factor is 1 (tail mass below), at `high` the upper one is.
    """

    def _log_prob(self, y):
        y = tf.floor(y)
        low, high = self.low, self.high
        inverse_scale = tf.math.reciprocal(self.distribution.scale)
        upper = (y - self.distribution.loc) * inverse_scale
        zeros = tf.zeros_like(upper)
        log_mass = (
            tf.where(y >= high, zeros, tf.math.log_sigmoid(upper))
            + tf.where(y <= low, zeros, tf.math.log_sigmoid(inverse_scale - upper))
            + tf.where(
                (y <= low) | (y >= high),
                zeros,
                tf.math.log(-tf.math.expm1(-inverse_scale)) + zeros,
            )
        )
        outside = (y < low) | (y > high)
        return tf.where(outside, tf.constant(-np.inf, log_mass.dtype), log_mass)


def _params_per_mixture(channels):
    """Logit, C means, C log-scales and C (C - 1) / 2 coupling coefficients."""
    return 1 + 2 * channels + channels * (channels - 1) // 2


def _num_mixtures(params_size, channels):
    check_int("channels", channels, low=1)
    per_mixture = _params_per_mixture(channels)
    if params_size is None or params_size % per_mixture:
        raise ValueError(
            "Expected the last axis of `params` to have a static size that is a multiple of "
            f"{per_mixture} (DiscretizedLogisticMixture.params_size(1, {channels})). "
            f"Received: params.shape[-1]={params_size}"
        )
    return params_size // per_mixture


def _params_shape(sample_shape):
    """`ParameterProperties.shape_fn` of `params`: not defined by a sample's shape alone."""
    raise NotImplementedError(
        "The shape of `params` depends on the number of mixture components, which a "
        f"sample's shape {sample_shape} does not give: it is (batch..., height, width, "
        "DiscretizedLogisticMixture.params_size(num_mixtures, channels))."
    )
