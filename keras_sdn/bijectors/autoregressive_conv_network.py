"""Masked convolutional network giving the shift and log-scale of an IAF step."""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="keras_sdn")
class AutoregressiveConvNetwork(keras.layers.Layer):
    """Convolutional MADE over the channels of spatial latents, with a context.

    Computes `(shift, log_scale)` for an inverse autoregressive flow step over
    latents `z` of shape `(batch, height, width, z_channels)`: output channel
    `d` (of both tensors) depends on the latent channels `0 .. d - 1` at every
    pixel under the kernel, never on channels `>= d`, and on the context. This
    is a MADE (Germain et al., 2015) whose dense layers are convolutions with a
    full spatial kernel and a mask over channels: hidden unit `h` has degree
    `h % z_channels` and sees the latent channels below its degree; output
    channel `d` sees hidden units of degree `<= d`. Degree-0 units see only the
    context, which is projected by a 1x1 convolution and added to the first
    hidden layer. Hidden layers use ELU (as in IAF-VAE); both outputs are
    multiplied by `output_scale`, so that a new flow starts near the identity.

    Args:
        z_channels: int >= 1, the number of latent channels `Z`.
        hidden_channels: int >= 1, channels of every hidden layer.
        num_hidden_layers: int >= 1, number of masked hidden convolutions.
        kernel_size: odd int >= 1, spatial kernel size of the masked
            convolutions ("same" padding).
        output_scale: float, multiplies the shift and the log-scale.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        z: `(batch, height, width, z_channels)`.
        context: `(batch, height, width, context_channels)`.

    Returns:
        `(shift, log_scale)`, each `(batch, height, width, z_channels)`.

    Example:

    >>> network = AutoregressiveConvNetwork(z_channels=32, hidden_channels=100)
    >>> shift, log_scale = network(np.zeros((2, 8, 8, 32)), np.zeros((2, 8, 8, 100)))
    >>> shift.shape
    TensorShape([2, 8, 8, 32])
    """

    def __init__(
        self,
        z_channels,
        hidden_channels=100,
        num_hidden_layers=2,
        kernel_size=3,
        output_scale=0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_int("z_channels", z_channels, low=1)
        _check_int("hidden_channels", hidden_channels, low=1)
        _check_int("num_hidden_layers", num_hidden_layers, low=1)
        _check_int("kernel_size", kernel_size, low=1)
        if kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd; got {kernel_size}.")
        self.z_channels = z_channels
        self.hidden_channels = hidden_channels
        self.num_hidden_layers = num_hidden_layers
        self.kernel_size = kernel_size
        self.output_scale = float(output_scale)

    def build(self, z_shape, context_shape):
        _check_image_shape("z", z_shape, channels=self.z_channels)
        _check_image_shape("context", context_shape)
        input_degrees = np.arange(1, self.z_channels + 1)
        hidden_degrees = np.arange(self.hidden_channels) % self.z_channels
        output_degrees = np.tile(np.arange(self.z_channels), 2)  # shift, then log-scale
        self._masks = [_mask(hidden_degrees[None, :] >= input_degrees[:, None])]
        self._masks += [_mask(hidden_degrees[None, :] >= hidden_degrees[:, None])] * (
            self.num_hidden_layers - 1
        )
        self._masks.append(_mask(output_degrees[None, :] >= hidden_degrees[:, None]))
        channels = [self.z_channels] + [self.hidden_channels] * self.num_hidden_layers
        channels.append(2 * self.z_channels)
        self.kernels, self.biases = [], []
        for index, (fan_in, fan_out) in enumerate(zip(channels[:-1], channels[1:])):
            self.kernels.append(
                self.add_weight(
                    name=f"kernel_{index}",
                    shape=(self.kernel_size, self.kernel_size, fan_in, fan_out),
                    initializer="glorot_uniform",
                )
            )
            self.biases.append(
                self.add_weight(name=f"bias_{index}", shape=(fan_out,), initializer="zeros")
            )
        self.context_kernel = self.add_weight(
            name="context_kernel",
            shape=(context_shape[-1], self.hidden_channels),
            initializer="glorot_uniform",
        )

    def call(self, z, context):
        hidden = z
        for index, (kernel, bias, mask) in enumerate(zip(self.kernels, self.biases, self._masks)):
            hidden = ops.conv(hidden, kernel * ops.cast(mask, kernel.dtype), padding="same") + bias
            if index == 0:
                hidden = hidden + ops.matmul(context, self.context_kernel)
            if index < self.num_hidden_layers:
                hidden = ops.elu(hidden)
        outputs = hidden * self.output_scale
        shift, log_scale = ops.split(outputs, 2, axis=-1)
        return shift, log_scale

    def compute_output_shape(self, z_shape, context_shape):
        return tuple(z_shape), tuple(z_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            z_channels=self.z_channels,
            hidden_channels=self.hidden_channels,
            num_hidden_layers=self.num_hidden_layers,
            kernel_size=self.kernel_size,
            output_scale=self.output_scale,
        )
        return config


def _mask(connected):
    """(fan_in, fan_out) connectivity as a float mask broadcast over the kernel's pixels."""
    return connected.astype("float32")[None, None]


def _check_image_shape(name, shape, channels=None):
    if len(shape) != 4 or (channels is not None and shape[-1] != channels):
        expected = f"(batch, height, width, {channels if channels is not None else 'channels'})"
        raise ValueError(f"`{name}` must have shape {expected}; got {tuple(shape)}.")


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"`{name}` must be an int >= {low}; got {value!r}.")
