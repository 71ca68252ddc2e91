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
        filters: Number of output channels.
        num_features: Channels of the inner layer's corrected representation.
            Defaults to `filters`.
        directions: An int `k` in 1..4, meaning the first `k` of
            `("up", "left", "right", "down")` (bottom-to-top, right-to-left,
            left-to-right, top-to-bottom), or a sequence of those names,
            swept in the given order.
        kernel_size: Kernel size of the inner layer's project-in and of
            `conv`. Defaults to 3, or to `2 * upsample` when up-sampling.
        upsample: Integer up-sampling factor. With `upsample > 1` the inner
            project-in and `conv` are transposed convolutions with that
            stride.
        activation: Activation applied to `out`. Defaults to none.
        use_bias: Whether `conv`, the inner projections and the sweeps use
            biases.
        kernel_initializer: Initializer of `conv`, of the inner projections
            and of the sweeps' input weights.
        recurrent_initializer: Initializer of the sweeps' neighbourhood
            weights.
        bias_initializer: Initializer of all biases.
        kernel_regularizer, recurrent_regularizer, bias_regularizer:
            Regularizers of the same weights.
        activity_regularizer: Regularizer of the output `out`.
        kernel_constraint, recurrent_constraint, bias_constraint: Constraints
            of the same weights.
        data_format: Only `"channels_last"` is supported.
        weight_normalization: Whether the kernels of `conv` and of the inner
            project-in and project-out are weight-normalised
            (`keras_sdn.layers.WeightNormalization`). The sweeps' gate
            weights never are.
        implementation: How the inner layer's sweeps run: `"auto"`,
            `"unrolled"` or `"scanned"`, as for `SpatialDependency`.
        **kwargs: Base layer arguments (`name`, `dtype`, `trainable`, ...).

    The layer runs on every Keras backend (see `SpatialDependency`).

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
        self,
        filters,
        num_features=None,
        directions=4,
        kernel_size=None,
        upsample=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        data_format=None,
        weight_normalization=False,
        implementation="auto",
        **kwargs,
    ):
        super().__init__(
            filters=filters,
            num_features=num_features,
            directions=directions,
            kernel_size=kernel_size,
            upsample=upsample,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            data_format=data_format,
            weight_normalization=weight_normalization,
            implementation=implementation,
            **kwargs,
        )
        self.spatial_dependency = SpatialDependency(
            2 * self.filters,
            num_features=self.num_features,
            directions=self.directions,
            kernel_size=self.kernel_size,
            upsample=self.upsample,
            recurrent_initializer=self.recurrent_initializer,
            recurrent_regularizer=self.recurrent_regularizer,
            recurrent_constraint=self.recurrent_constraint,
            weight_normalization=self.weight_normalization,
            implementation=self.implementation,
            name="spatial_dependency",
            **self.weight_kwargs(),
        )
        self.residual = self.kernel_layer(
            project_in_layer(
                self.filters,
                self.kernel_size,
                self.upsample,
                name="residual",
                **self.weight_kwargs(),
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
