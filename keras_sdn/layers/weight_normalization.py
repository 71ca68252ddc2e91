"""Weight normalisation (Salimans & Kingma, 2016) of a layer's kernel."""

import keras
from keras import ops

# Lower bound of the squared norm: an all-zero output channel gives a zero
# kernel instead of 0 / 0.
_SQUARED_NORM_FLOOR = 1e-12

_TRANSPOSED_CONVOLUTIONS = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
_SUPPORTED_LAYERS = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
) + _TRANSPOSED_CONVOLUTIONS


def _reduction_axes(rank, output_axis):
    if not -rank <= output_axis < rank:
        raise ValueError(
            f"`output_axis` must index an axis of the kernel, which has rank {rank}. "
            f"Received: output_axis={output_axis}"
        )
    return [axis for axis in range(rank) if axis != output_axis % rank]


def _computation_dtype(kernel):
    return keras.backend.result_type(kernel.dtype, "float32")


def kernel_norm(kernel, output_axis=-1):
    """Euclidean norm of each output channel of `kernel`.

    The norm is taken over all axes but `output_axis`, in float32 or wider.

    Args:
        kernel: A kernel tensor or variable, e.g. `(kh, kw, in, out)` for
            `Conv2D`, `(kh, kw, out, in)` for `Conv2DTranspose`.
        output_axis: The axis of `kernel` that indexes the output channels.

    Returns:
        A tensor of shape `(kernel.shape[output_axis],)`.
    """
    axes = _reduction_axes(len(kernel.shape), output_axis)
    kernel = ops.cast(kernel, _computation_dtype(kernel))
    return ops.sqrt(ops.sum(ops.square(kernel), axis=axes))


def normalize_kernel(kernel, g, output_axis=-1):
    """The weight-normalised kernel `g * kernel / ||kernel||`.

    `||kernel||` is the norm of each output channel (over all axes but
    `output_axis`), so output channel `k` of the result has norm exactly
    `g[k]`. The norms and the scaling are computed in float32 or wider (as
    Keras' normalization layers do under mixed precision); the result has
    `kernel`'s dtype. An output channel of `kernel` with squared norm below
    1e-12 is divided by 1e-6 instead of by its norm.

    For a masked kernel (e.g. an autoregressive convolution), pass the masked
    kernel, `normalize_kernel(v * mask, g)`: the effective kernel then has
    norm `g` and its masked taps stay zero.

    Args:
        kernel: The direction `v`: a kernel tensor or variable.
        g: The norm of each output channel, shape
            `(kernel.shape[output_axis],)`. Weight normalisation initialises it
            to `kernel_norm(v)`, so that the initial kernel is `v`.
        output_axis: The axis of `kernel` that indexes the output channels:
            -1 for `Dense` and `Conv*D` kernels, -2 for `Conv*DTranspose`.

    Returns:
        A tensor of `kernel`'s shape and dtype.
    """
    rank = len(kernel.shape)
    axes = _reduction_axes(rank, output_axis)
    dtype = _computation_dtype(kernel)
    direction = ops.cast(kernel, dtype)
    squared_norm = ops.sum(ops.square(direction), axis=axes, keepdims=True)
    scale_shape = [1] * rank
    scale_shape[output_axis] = -1
    scale = ops.reshape(ops.cast(g, dtype), scale_shape) * ops.rsqrt(
        ops.maximum(squared_norm, _SQUARED_NORM_FLOOR)
    )
    return ops.cast(direction * scale, kernel.dtype)


@keras.saving.register_keras_serializable(package="keras_sdn")
class WeightNormalization(keras.layers.Wrapper):
    """Weight normalisation of a `Dense`, convolution or transposed convolution.

    The wrapped layer computes with the kernel `g * v / ||v||` (Salimans &
    Kingma, 2016), where `v` is the wrapped layer's own `kernel` variable,
    `||v||` the norm of each output channel of `v` (over all axes but the
    output-channel axis: the last one, or the second-to-last for transposed
    convolutions, whose kernels are `(..., out, in)`), and `g` a trainable
    vector with one entry per output channel. The bias, activation and every
    other part of the wrapped layer are unchanged.

    `g` is initialised to `||v||` when the wrapper is built, so that the
    initial kernel equals `v` and the wrapped layer's initial outputs are
    unchanged: PyTorch's `torch.nn.utils.weight_norm`, which the SDN authors
    apply to every convolution of their models, not the data-dependent
    initialisation of the paper.

    The wrapped layer runs its own `call`, inside a `keras.StatelessScope`
    that maps its kernel variable to the normalised kernel; the wrapped layer
    therefore must not be LoRA-enabled or quantized. Under mixed precision
    `v` is read at the compute precision (Keras autocasts it), `g` and the
    normalisation are float32. A `kernel_regularizer` or `kernel_constraint`
    of the wrapped layer acts on `v`.

    Args:
        layer: A `keras.layers.Dense`, `Conv1D`, `Conv2D`, `Conv3D`,
            `Conv1DTranspose`, `Conv2DTranspose` or `Conv3DTranspose`
            instance (or of a subclass).
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...). The
            dtype policy defaults to the wrapped layer's.

    Input shape:
        That of the wrapped layer.

    Output shape:
        That of the wrapped layer.

    Example:

    >>> layer = WeightNormalization(keras.layers.Conv2D(8, 3, padding="same"))
    >>> layer(np.zeros((2, 16, 16, 3))).shape
    TensorShape([2, 16, 16, 8])
    >>> layer.g.shape
    TensorShape([8])
    """

    def __init__(self, layer, **kwargs):
        if not isinstance(layer, _SUPPORTED_LAYERS):
            raise ValueError(
                "WeightNormalization expects a Dense, Conv1D/2D/3D or "
                "Conv1D/2D/3DTranspose layer, whose `kernel` has a known "
                f"output-channel axis. Received: layer={layer!r}"
            )
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        self.output_axis = -2 if isinstance(layer, _TRANSPOSED_CONVOLUTIONS) else -1

    def build(self, input_shape):
        super().build(input_shape)
        direction = self.layer.kernel
        if not (
            isinstance(direction, keras.Variable) and keras.backend.is_float_dtype(direction.dtype)
        ):
            raise ValueError(
                "WeightNormalization needs the wrapped layer's `kernel` to be a "
                "float variable; LoRA-enabled and quantized layers are not supported. "
                f"Received: layer={self.layer.name!r} with a kernel of type "
                f"{type(direction).__name__} and dtype {direction.dtype}"
            )
        self.g = self.add_weight(
            name="g",
            shape=(direction.shape[self.output_axis],),
            initializer=lambda shape, dtype: kernel_norm(direction, self.output_axis),
            dtype=direction.dtype,
            autocast=False,
        )

    @property
    def kernel(self):
        """The effective kernel `g * v / ||v||` of the wrapped layer."""
        return normalize_kernel(self.layer.kernel, self.g, self.output_axis)

    def call(self, inputs):
        direction = self.layer.kernel
        # Every other variable of the wrapped layer maps to its value as read
        # here, which honours an enclosing stateless scope's mapping.
        mapping = [(w, w) for w in self.layer.weights if w is not direction]
        mapping.append((direction, self.kernel))
        with keras.StatelessScope(
            mapping, collect_losses=True, initialize_variables=False
        ) as scope:
            outputs = self.layer(inputs)
        for loss in scope.losses:
            self.add_loss(loss)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)
