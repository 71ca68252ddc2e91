"""The spatial dependency layer (Miladinovic et al., ICLR 2021)."""

import keras
from keras import ops

from keras_sdn.layers import sweep
from keras_sdn.layers._base import SpatialDependencyBase
from keras_sdn.layers._base import check_image_input
from keras_sdn.layers._base import clone_initializer
from keras_sdn.layers._base import project_in_layer


@keras.saving.register_keras_serializable(package="keras_sdn")
class SpatialDependency(SpatialDependencyBase):
    """Spatial dependency layer: project-in, directional gated sweeps, project-out.

    The input is projected to `num_features` channels and squashed with tanh
    (project-in). The map is then corrected by one gated sweep per direction,
    in the given order: a sweep visits the rows (or columns) one after
    another and updates every position of a row at once from the three
    neighbouring positions of the already-corrected previous row, with a
    GRU-like gate (see `keras_sdn.layers.sweep`). The first row of a sweep is
    updated from an all-zero previous row (the paper's zero padding). A 1x1
    projection to `filters` channels follows (project-out).

    With one direction, output `(i, j)` depends only on inputs in the cone
    behind it; with all four, every output depends on every input.

    Args:
        filters: Number of output channels.
        num_features: Channels of the corrected representation. Defaults to
            `filters`.
        directions: An int `k` in 1..4, meaning the first `k` of
            `("up", "left", "right", "down")` (bottom-to-top, right-to-left,
            left-to-right, top-to-bottom), or a sequence of those names,
            swept in the given order.
        kernel_size: Kernel size of the project-in convolution. Defaults to 1,
            or to `2 * upsample` when up-sampling.
        upsample: Integer up-sampling factor. With `upsample > 1` project-in is
            a transposed convolution with that stride.
        activation: Activation applied to the output. Defaults to none.
        use_bias: Whether the projections and sweeps use biases.
        kernel_initializer: Initializer of the projections and of the sweeps'
            input weights.
        recurrent_initializer: Initializer of the sweeps' neighbourhood
            weights.
        bias_initializer: Initializer of all biases.
        kernel_regularizer, recurrent_regularizer, bias_regularizer:
            Regularizers of the same weights.
        activity_regularizer: Regularizer of the output.
        kernel_constraint, recurrent_constraint, bias_constraint: Constraints
            of the same weights.
        data_format: Only `"channels_last"` is supported.
        weight_normalization: Whether the project-in and project-out kernels
            are weight-normalised (`keras_sdn.layers.WeightNormalization`), as
            in the authors' models. The sweeps' gate weights never are.
        implementation: How the sweeps run: `"unrolled"` (one copy of the
            step per line in the graph: fastest on small maps, a graph that
            grows with the map; needs a static height and width),
            `"scanned"` (`tf.scan` loops: any size, a compact graph, the
            form XLA compiles well) or `"auto"` (unrolled for maps of at
            most 32 lines of static size outside XLA, scanned otherwise;
            `keras_sdn.export` may make it scanned). See docs/sweeps.md.
            On JAX and PyTorch: `"unrolled"` is a Python loop over the lines,
            `"scanned"` a `keras.ops.scan` (a Python loop as well on
            PyTorch), `"auto"` scanned inside `jax.jit` and unrolled
            elsewhere. See docs/backends.md.
        **kwargs: Base layer arguments (`name`, `dtype`, `trainable`, ...).

    The layer runs on every Keras backend, with the same weights and the same
    numbers: with TensorFlow the sweeps are `keras_sdn.layers.sweep`'s loops
    with their hand-written gradient, with JAX and PyTorch
    `keras_sdn.layers.sweep.keras_ops_sweeps`, differentiated by the backend.

    Input shape:
        `(batch, height, width, channels)`; height and width may be `None`.

    Output shape:
        `(batch, height * upsample, width * upsample, filters)`.

    Example:

    >>> layer = SpatialDependency(16, num_features=32, directions=2)
    >>> layer(np.zeros((2, 8, 12, 3))).shape
    TensorShape([2, 8, 12, 16])
    """

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
        self.project_in = self.kernel_layer(
            project_in_layer(
                self.num_features,
                self.kernel_size,
                self.upsample,
                name="project_in",
                **self.weight_kwargs(),
            )
        )
        self.project_out = self.kernel_layer(
            keras.layers.Dense(self.filters, name="project_out", **self.weight_kwargs())
        )

    def build(self, input_shape):
        check_image_input(type(self).__name__, input_shape)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: input_shape[-1]})
        self.project_in.build(input_shape)
        features = self.num_features
        count = len(self.directions)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(count, features, 3 * features),
            initializer=clone_initializer(self.kernel_initializer),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            name="recurrent_kernel",
            shape=(count, 3 * features, 3 * features),
            initializer=clone_initializer(self.recurrent_initializer),
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(count, 2, 3 * features),
                initializer=clone_initializer(self.bias_initializer),
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None
        self.project_out.build(self.project_in.compute_output_shape(input_shape))

    def call(self, inputs):
        corrected = ops.tanh(self.project_in(inputs))
        dtype = corrected.dtype
        kernel = ops.cast(self.kernel, dtype)
        recurrent_kernel = ops.cast(self.recurrent_kernel, dtype)
        if self.use_bias:
            bias = ops.cast(self.bias, dtype)
        else:
            bias = ops.zeros((len(self.directions), 2, 3 * self.num_features), dtype)
        corrected = _backend_sweeps()(
            corrected, kernel, recurrent_kernel, bias, self.directions, self.implementation
        )
        return self.activation(self.project_out(corrected))


def _backend_sweeps():
    """The sweeps of the running backend: TensorFlow's own loops and gradient, or `keras.ops`."""
    if keras.backend.backend() == "tensorflow":
        return sweep.sweeps
    return sweep.keras_ops_sweeps
