"""Inverse autoregressive flow over spatial latents (Kingma et al., 2016)."""

import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors


class InverseAutoregressiveFlow(tfb.Bijector):
    """One IAF step over latents `(..., height, width, z)`, conditioned on a context.

    With `shift, log_scale = network(z0, context)`, autoregressive over the
    channels (see `AutoregressiveConvNetwork`):

        forward(z0) = (z0 - shift) * exp(-log_scale)   # one parallel pass
        forward_log_det_jacobian(z0) = -sum(log_scale)

    the step of IAF-VAE. Ordering the coordinates channel-major, the Jacobian
    is triangular with diagonal `exp(-log_scale)`, whatever the network does
    across pixels. Forward and its log-determinant are those of
    `tfb.Invert(tfb.MaskedAutoregressiveFlow(...))`; the inverse is computed
    here in `z` parallel passes (the network's channel order needs no more),
    where the MAF would loop over every element of the event.

    The network's weights are ordinary Keras variables owned by the model;
    build the bijector afresh for every context (it is cheap).

    Args:
        network: callable `(z, context) -> (shift, log_scale)`, each shaped
            like `z`, autoregressive over the last axis, e.g. an
            `AutoregressiveConvNetwork`. Its outputs are cast to `z`'s dtype
            (for mixed precision).
        context: tensor `(..., height, width, c)` passed to `network`.
        validate_args: Python bool, passed to the TFP bijectors.
        name: name of the bijector.

    Shapes:
        forward and inverse map `(..., height, width, z)` to the same shape
        (min event ndims 3); the log-determinants have shape `(...)`.

    Example:

    >>> network = AutoregressiveConvNetwork(z_channels=32)   # a model's sublayer
    >>> posterior = diagonal_gaussian(loc, log_scale)
    >>> z0 = posterior.sample()
    >>> flow = InverseAutoregressiveFlow(network, context)
    >>> z = flow.forward(z0)
    >>> log_q = posterior.log_prob(z0) - flow.forward_log_det_jacobian(z0, event_ndims=3)
    """

    def __init__(self, network, context, validate_args=False, name="inverse_autoregressive_flow"):
        parameters = dict(locals())
        if not callable(network):
            raise ValueError(
                f"`network` must be a callable (z, context) -> (shift, log_scale); got {network!r}."
            )
        with tf.name_scope(name) as name:
            self._network = network
            self._context = context
            self._autoregressive_flow = tfb.MaskedAutoregressiveFlow(
                shift_and_log_scale_fn=self._shift_and_log_scale,
                event_ndims=3,
                validate_args=validate_args,
            )
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

    def _forward(self, z0):
        return self._autoregressive_flow.inverse(z0)

    def _forward_log_det_jacobian(self, z0):
        return self._autoregressive_flow.inverse_log_det_jacobian(z0, event_ndims=3)

    def _inverse(self, z):
        # z0 = z * exp(log_scale(z0)) + shift(z0). Channel c of the right-hand
        # side is exact once channels < c of z0 are, so z passes fix z0.
        if z.shape[-1] is None:
            raise ValueError(f"The channel axis of `z` must be static; got shape {z.shape}.")
        z0 = tf.zeros_like(z)
        for _ in range(z.shape[-1]):
            shift, log_scale = self._shift_and_log_scale(z0)
            z0 = z * tf.exp(log_scale) + shift
        return z0
