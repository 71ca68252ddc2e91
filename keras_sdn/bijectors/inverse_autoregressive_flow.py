"""Inverse autoregressive flow over spatial latents (Kingma et al., 2016)."""

import tensorflow as tf
import tensorflow_probability as tfp

from keras_sdn._compat import bijector_cache_with_attributes

tfb = tfp.bijectors


class InverseAutoregressiveFlow(tfb.Bijector):
    """One IAF step over latents `(..., height, width, z)`, conditioned on a context.

    With `shift, log_scale = network(z0, context)`, autoregressive in the
    raster order over pixels and the channel order within a pixel (see
    `AutoregressiveConvNetwork`):

        forward(z0) = (z0 - shift) * exp(-log_scale)   # one parallel pass
        forward_log_det_jacobian(z0) = -sum(log_scale)

    the step of IAF-VAE, equal to
    `tfb.Invert(tfb.MaskedAutoregressiveFlow(...))` over that order. Ordering
    the coordinates pixel-major (raster order) then by channel, the Jacobian
    is lower triangular with diagonal `exp(-log_scale)`.

    `forward` then `forward_log_det_jacobian` of the same tensor run the
    network once: the forward pass stores the log-determinant with its
    output in TFP's bijector cache (as TFP's FFJORD does), for as long as
    the output is referenced (if a TFP release moves that private cache,
    TFP's default cache is kept, with a warning, and the log-determinant
    runs the network again). The same holds for `inverse` then
    `inverse_log_det_jacobian`; a log-determinant asked for first runs the
    network for itself. The inverse solves
    `z0 = z * exp(log_scale(z0)) + shift(z0)` by fixed-point passes from
    `z0 = 0`: after `n` passes the first `n` coordinates (in the order
    above) are exact, since each depends only on earlier ones, so
    `height * width * z` passes are enough for any network; the loop stops
    earlier, at the first pass that changes nothing, which is then the
    solution (passes from a fixed point stay there). The inverse costs up to
    that many network calls: it is meant for tests and small latents, and a
    VAE never needs it.

    The network's weights are ordinary Keras variables owned by the model;
    build the bijector afresh for every context (it is cheap).

    Args:
        network: callable `(z, context) -> (shift, log_scale)`, each shaped
            like `z`, autoregressive as above, e.g. an
            `AutoregressiveConvNetwork`. Its outputs are cast to `z`'s dtype
            (for mixed precision).
        context: tensor `(..., height, width, c)` passed to `network`.
        validate_args: Python bool, passed to `tfb.Bijector`.
        name: name of the bijector.

    Shapes:
        forward and inverse map `(..., height, width, z)` to the same shape
        (min event ndims 3); the log-determinants have shape `(...)`.

    Example:

    >>> network = AutoregressiveConvNetwork(z_channels=32)   # a model's sublayer
    >>> posterior = diagonal_gaussian(loc, log_scale)
    >>> z0 = posterior.sample()
    >>> flow = InverseAutoregressiveFlow(network, context)
    >>> z = flow.forward(z0)                      # runs the network
    >>> log_q = posterior.log_prob(z0) - flow.forward_log_det_jacobian(z0, event_ndims=3)
    """

    def __init__(self, network, context, validate_args=False, name="inverse_autoregressive_flow"):
        parameters = dict(locals())
        if not callable(network):
            raise ValueError(
                "Expected `network` to be a callable (z, context) -> (shift, log_scale). "
                f"Received: network={network!r}"
            )
        with tf.name_scope(name) as name:
            self._network = network
            self._context = context
            super().__init__(
                forward_min_event_ndims=3,
                validate_args=validate_args,
                parameters=parameters,
                name=name,
            )

    @property
    def network(self):
        return self._network

    @property
    def context(self):
        return self._context

    @classmethod
    def _parameter_properties(cls, dtype):
        return dict()

    def _shift_and_log_scale(self, z):
        shift, log_scale = self._network(z, self._context)
        return tf.cast(shift, z.dtype), tf.cast(log_scale, z.dtype)

    def _augmented_forward(self, z0):
        shift, log_scale = self._shift_and_log_scale(z0)
        return (z0 - shift) * tf.exp(-log_scale), {"ildj": _sum_event(log_scale)}

    def _augmented_inverse(self, z):
        def fixed_point_pass(passes, z0, unused_log_scale, unused_changed):
            shift, log_scale = self._shift_and_log_scale(z0)
            updated = z * tf.exp(log_scale) + shift
            return passes + 1, updated, log_scale, tf.reduce_any(tf.not_equal(updated, z0))

        def not_solved(passes, unused_z0, unused_log_scale, changed):
            return changed & (passes < event_size)

        # The log-scale of the last pass is exact: it depends only on
        # coordinates that were exact before that pass.
        event_size = tf.reduce_prod(tf.shape(z)[-3:])
        start = (tf.constant(0), tf.zeros_like(z), tf.zeros_like(z), tf.constant(True))
        _, z0, log_scale, _ = tf.while_loop(not_solved, fixed_point_pass, start)
        return z0, {"ildj": _sum_event(log_scale)}

    def _forward(self, z0):
        return self._augmented_forward(z0)[0]

    def _inverse(self, z):
        return self._augmented_inverse(z)[0]

    # TFP calls these only when the cache holds no log-determinant for the
    # tensor, i.e. when no pass from it is alive.
    def _forward_log_det_jacobian(self, z0):
        return -self._augmented_forward(z0)[1]["ildj"]

    def _inverse_log_det_jacobian(self, z):
        return self._augmented_inverse(z)[1]["ildj"]


# `_augmented_forward` and `_augmented_inverse` return `(output, {"ildj": ...})`;
# this cache stores the attributes with the output. Without it (None) the
# class keeps `tfb.Bijector`'s cache.
_ATTRIBUTE_CACHE = bijector_cache_with_attributes("_augmented_forward", "_augmented_inverse")
if _ATTRIBUTE_CACHE is not None:
    InverseAutoregressiveFlow._cache = _ATTRIBUTE_CACHE


def _sum_event(values):
    return tf.reduce_sum(values, axis=[-3, -2, -1])
