"""The gated residual spatial dependency layer (paper, Figure 3)."""

import keras
from keras import ops

from keras_sdn.layers._base import SpatialDependencyBase
from keras_sdn.layers._base import check_image_input
from keras_sdn.layers._base import project_in_layer
from keras_sdn.layers.spatial_dependency import SpatialDependency


@keras.saving.register_keras_serializable(package="keras_sdn")
class ResidualSpatialDependency(SpatialDependencyBase):
    """Spatial dependency layer with a gated ("highway") convolutional path.

    `out = g * conv(x) + (1 - g) * s`, where `[s, g_logits]` are the
    `2 * filters` outputs of an inner `SpatialDependency` layer with the same
    arguments, `g = sigmoid(g_logits)`, and `conv` is a plain convolution (a
    transposed one when up-sampling) with the kernel size and stride of the
    inner layer's project-in. The activation, if any, is applied to `out`.

    Args:
        Those of `SpatialDependency`; `kernel_size` defaults to 3 (or to
        `2 * upsample` when up-sampling), and `weight_normalization` also
        weight-normalises the convolution `conv`.

    Input shape:
        `(batch, height, width, channels)`; height and width may be `None`.

    Output shape:
        `(batch, height * upsample, width * upsample, filters)`.

    Example:

    >>> layer = ResidualSpatialDependency(16, num_features=32, directions=2)
    >>> layer(np.zeros((2, 8, 8, 16))).shape
    TensorShape([2, 8, 8, 16])
    """

    default_kernel_size = 3

    def __init__(
        self, filters, num_features=None, directions=4, kernel_size=None, upsample=1, **kwargs
    ):
        super().__init__(filters, num_features, directions, kernel_size, upsample, **kwargs)
        self.spatial_dependency = SpatialDependency(
            2 * filters,
            num_features=self.num_features,
            directions=self.directions,
            kernel_size=self.kernel_size,
            upsample=self.upsample,
            recurrent_initializer=self.recurrent_initializer,
            recurrent_regularizer=self.recurrent_regularizer,
            recurrent_constraint=self.recurrent_constraint,
            weight_normalization=self.weight_normalization,
            name="spatial_dependency",
            **self.weight_kwargs(),
        )
        self.residual = self.kernel_layer(
            project_in_layer(
                filters, self.kernel_size, self.upsample, name="residual", **self.weight_kwargs()
            )
        )

    def build(self, input_shape):
        check_image_input(type(self).__name__, input_shape)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: input_shape[-1]})
        self.spatial_dependency.build(input_shape)
        self.residual.build(input_shape)

    def call(self, inputs):
        sweeps, gate_logits = ops.split(self.spatial_dependency(inputs), 2, axis=-1)
        gate = ops.sigmoid(gate_logits)
        return self.activation(gate * self.residual(inputs) + (1.0 - gate) * sweeps)
