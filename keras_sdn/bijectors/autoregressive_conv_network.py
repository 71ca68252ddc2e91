"""Masked convolutional network giving the shift and log-scale of an IAF step."""

import keras
import numpy as np
from keras import ops

from keras_sdn._checks import check_bool
from keras_sdn._checks import check_choice
from keras_sdn._checks import check_int
from keras_sdn._checks import check_number
from keras_sdn.layers.weight_normalization import kernel_norm
from keras_sdn.layers.weight_normalization import normalize_kernel

# The autoregressive orders of the network (see `ordering`).
ORDERINGS = ("raster", "channels")


@keras.saving.register_keras_serializable(package="keras_sdn")
class AutoregressiveConvNetwork(keras.layers.Layer):
    """Masked convolutional network of IAF-VAE: autoregressive in raster order.

    Computes `(shift, log_scale)` for an inverse autoregressive flow step over
    latents `z` of shape `(batch, height, width, z_channels)`, with the masks
    of IAF-VAE (Kingma et al., 2016). The autoregressive order is the raster
    order over pixels (row by row, left to right) and, within a pixel, the
    order of the channels: output channel `d` at pixel `(i, j)` (of both
    tensors) depends on every latent channel at the pixels before `(i, j)`
    that the network reaches (rows above, and pixels to the left in row `i`),
    on channels `0 .. d - 1` at `(i, j)` itself, on nothing after it, and on
    the context.

    Every masked convolution connects all channel pairs at the kernel taps
    above the centre and left of it in its row (PixelCNN-style), none at the
    taps after the centre, and at the centre tap follows a MADE (Germain et
    al., 2015) over channels: hidden unit `h` has degree `h % z_channels`;
    in the first layer it sees the latent channels below its degree
    (strict), in a hidden layer the hidden units of degree `<=` its own
    (non-strict), and output channel `d` sees the hidden units of degree
    `<= d`. The context is projected by a 1x1 convolution and added to the
    first hidden layer. Hidden layers use ELU (as in IAF-VAE); both outputs
    are multiplied by `output_scale`, so that a new flow starts near the
    identity.

    With `weight_normalization=True` every masked kernel is weight-normalised
    (Salimans & Kingma, 2016), as in the authors' code: the convolution uses
    `g * (v * mask) / ||v * mask||`, the norm taken per output channel (over
    the taps and input channels), with a learned `g` per output channel,
    initialised to `||v * mask||` so that the initial kernel is `v * mask`.
    Masked taps stay zero. The context projection, which the authors' network
    does not have (it adds the context as it is), is not normalised.

    Args:
        z_channels: int >= 1, the number of latent channels `Z`.
        hidden_channels: int >= 1, channels of every hidden layer.
        num_hidden_layers: int >= 1, number of masked hidden convolutions.
        kernel_size: odd int >= 1, spatial kernel size of the masked
            convolutions ("same" padding); 1 removes every dependency across
            pixels.
        output_scale: float, multiplies the shift and the log-scale.
        weight_normalization: bool, whether to weight-normalise the masked
            kernels.
        ordering: `"raster"` (the default, described above) or
            `"channels"`: every tap follows the centre tap's channel mask, so
            that output channel `d` depends on channels `0 .. d - 1` at every
            pixel the kernel reaches, and channel 0 on the context only (the
            autoregressive order is over channels alone).
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
        weight_normalization=False,
        ordering="raster",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.ordering = check_choice("ordering", ordering, ORDERINGS)
        self.z_channels = check_int("z_channels", z_channels, 1)
        self.hidden_channels = check_int("hidden_channels", hidden_channels, 1)
        self.num_hidden_layers = check_int("num_hidden_layers", num_hidden_layers, 1)
        self.kernel_size = check_int("kernel_size", kernel_size, 1)
        if kernel_size % 2 == 0:
            raise ValueError(
                f"Expected `kernel_size` to be an odd int. Received: kernel_size={kernel_size}"
            )
        self.output_scale = check_number("output_scale", output_scale)
        self.weight_normalization = check_bool("weight_normalization", weight_normalization)

    def build(self, z_shape, context_shape):
        _check_image_shape("z", z_shape, channels=self.z_channels)
        _check_image_shape("context", context_shape)
        input_degrees = np.arange(1, self.z_channels + 1)
        hidden_degrees = np.arange(self.hidden_channels) % self.z_channels
        output_degrees = np.tile(np.arange(self.z_channels), 2)  # shift, then log-scale
        centre_taps = [hidden_degrees[None, :] >= input_degrees[:, None]]
        centre_taps += [hidden_degrees[None, :] >= hidden_degrees[:, None]] * (
            self.num_hidden_layers - 1
        )
        centre_taps.append(output_degrees[None, :] >= hidden_degrees[:, None])
        self._masks = [
            _mask(self.kernel_size, centre, self.ordering == "raster") for centre in centre_taps
        ]
        self.kernels, self.kernel_gains, self.biases = [], [], []
        for index, mask in enumerate(self._masks):
            kernel = self.add_weight(
                name=f"kernel_{index}", shape=mask.shape, initializer="glorot_uniform"
            )
            self.kernels.append(kernel)
            if self.weight_normalization:
                self.kernel_gains.append(
                    self.add_weight(
                        name=f"g_{index}",
                        shape=mask.shape[-1:],
                        initializer=lambda shape, dtype, v=kernel, m=mask: kernel_norm(v * m),
                        dtype=kernel.dtype,
                        autocast=False,
                    )
                )
            self.biases.append(
                self.add_weight(name=f"bias_{index}", shape=mask.shape[-1:], initializer="zeros")
            )
        self.context_kernel = self.add_weight(
            name="context_kernel",
            shape=(context_shape[-1], self.hidden_channels),
            initializer="glorot_uniform",
        )

    def call(self, z, context):
        hidden = z
        for index, bias in enumerate(self.biases):
            hidden = ops.conv(hidden, self.masked_kernel(index), padding="same") + bias
            if index == 0:
                hidden = hidden + ops.matmul(context, self.context_kernel)
            if index < self.num_hidden_layers:
                hidden = ops.elu(hidden)
        outputs = hidden * self.output_scale
        shift, log_scale = ops.split(outputs, 2, axis=-1)
        return shift, log_scale

    def masked_kernel(self, index):
        """The kernel of masked convolution `index` as applied: masked, normalised if enabled."""
        kernel = self.kernels[index]
        masked = kernel * ops.cast(self._masks[index], kernel.dtype)
        if self.weight_normalization:
            return normalize_kernel(masked, self.kernel_gains[index])
        return masked

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
            weight_normalization=self.weight_normalization,
            ordering=self.ordering,
        )
        return config


def _mask(kernel_size, centre, raster):
    """`(k, k, fan_in, fan_out)` float mask of an autoregressive convolution.

    The centre tap connects the channel pairs where `centre` (a `(fan_in,
    fan_out)` bool array) is true. In raster order, taps before the centre
    connect every pair and later taps none; otherwise every tap is the centre's.
    """
    if not raster:
        return np.broadcast_to(centre, (kernel_size, kernel_size) + centre.shape).astype("float32")
    taps = kernel_size * kernel_size
    before = (np.arange(taps) < taps // 2).reshape(kernel_size, kernel_size, 1, 1)
    mask = np.broadcast_to(before, before.shape[:2] + centre.shape).astype("float32")
    mask[kernel_size // 2, kernel_size // 2] = centre
    return mask


def _check_image_shape(name, shape, channels=None):
    if len(shape) != 4 or (channels is not None and shape[-1] != channels):
        expected = f"(batch, height, width, {channels if channels is not None else 'channels'})"
        raise ValueError(f"Expected `{name}` of shape {expected}. Received: shape={tuple(shape)}")
