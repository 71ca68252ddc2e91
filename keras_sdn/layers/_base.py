"""Arguments, validation and configuration shared by the spatial dependency layers."""

import collections.abc

import keras
import numpy as np
from keras import activations
from keras import constraints
from keras import initializers
from keras import regularizers

from keras_sdn._checks import check_bool
from keras_sdn._checks import check_choice
from keras_sdn._checks import check_int
from keras_sdn.layers.sweep import DIRECTIONS
from keras_sdn.layers.sweep import IMPLEMENTATIONS
from keras_sdn.layers.weight_normalization import WeightNormalization


def standardize_directions(directions):
    """Returns `directions` as a tuple of names from `DIRECTIONS`.

    Args:
        directions: An int `k` in 1..4 (the first `k` of `DIRECTIONS`), one
            direction name, or a non-empty sequence of names.
    """
    if isinstance(directions, str):
        names = (directions,)
    elif isinstance(directions, (bool, np.bool_)):
        names = ()
    elif isinstance(directions, (int, np.integer)):
        names = DIRECTIONS[:directions] if 1 <= directions <= len(DIRECTIONS) else ()
    elif isinstance(directions, collections.abc.Iterable):
        names = tuple(directions)
    else:
        names = ()
    if not names or any(name not in DIRECTIONS for name in names):
        raise ValueError(
            f"Expected `directions` to be an int in [1, {len(DIRECTIONS)}], a direction name "
            f"or a non-empty sequence of names from {DIRECTIONS}. "
            f"Received: directions={directions!r}"
        )
    return names


def check_channels_last(data_format):
    data_format = data_format or keras.config.image_data_format()
    if data_format != "channels_last":
        raise ValueError(
            "Expected `data_format` to be 'channels_last' (inputs shaped (batch, height, "
            "width, channels)): spatial dependency layers support no other; transpose the "
            f"inputs to channels-last. Received: data_format={data_format!r}"
        )
    return data_format


def project_in_layer(filters, kernel_size, upsample, name, **conv_kwargs):
    """The project-in (or residual) convolution: transposed when up-sampling."""
    if upsample == 1:
        return keras.layers.Conv2D(filters, kernel_size, padding="same", name=name, **conv_kwargs)
    return keras.layers.Conv2DTranspose(
        filters, kernel_size, strides=upsample, padding="same", name=name, **conv_kwargs
    )


def check_image_input(layer_name, input_shape):
    if len(input_shape) != 4:
        raise ValueError(
            f"Expected {layer_name} inputs of rank 4, (batch, height, width, channels). "
            f"Received: input_shape={tuple(input_shape)}"
        )
    if input_shape[-1] is None:
        raise ValueError(
            f"Expected {layer_name} inputs with a known channel dimension (the last axis). "
            f"Received: input_shape={tuple(input_shape)}"
        )


class SpatialDependencyBase(keras.layers.Layer):
    """Holds, checks and serializes the arguments of a spatial dependency layer.

    Subclasses create their sublayers and weights; see `SpatialDependency`
    for the meaning of each argument.
    """

    default_kernel_size = 1

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
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        filters = check_int("filters", filters, 1)
        num_features = filters if num_features is None else num_features
        num_features = check_int("num_features", num_features, 1)
        upsample = check_int("upsample", upsample, 1)
        weight_normalization = check_bool("weight_normalization", weight_normalization)
        if kernel_size is None:
            kernel_size = self.default_kernel_size if upsample == 1 else 2 * upsample
        kernel_size = check_int("kernel_size", kernel_size, 1)
        self.filters = filters
        self.num_features = num_features
        self.directions = standardize_directions(directions)
        self.kernel_size = kernel_size
        self.upsample = upsample
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.recurrent_constraint = constraints.get(recurrent_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.data_format = check_channels_last(data_format)
        self.weight_normalization = weight_normalization
        self.implementation = check_choice("implementation", implementation, IMPLEMENTATIONS)

    def weight_kwargs(self):
        """Keyword arguments that give a sublayer this layer's dtype policy and weight settings."""
        return dict(
            dtype=self.dtype_policy,
            use_bias=self.use_bias,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            kernel_constraint=self.kernel_constraint,
            bias_constraint=self.bias_constraint,
        )

    def kernel_layer(self, layer):
        """`layer`, weight-normalised if `weight_normalization` is on."""
        if self.weight_normalization:
            return WeightNormalization(layer, name=layer.name)
        return layer

    def compute_output_shape(self, input_shape):
        check_image_input(type(self).__name__, input_shape)
        batch, height, width, _ = input_shape

        def scale(size):
            return None if size is None else size * self.upsample

        return (batch, scale(height), scale(width), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "num_features": self.num_features,
                "directions": list(self.directions),
                "kernel_size": self.kernel_size,
                "upsample": self.upsample,
                "activation": activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer),
                "activity_regularizer": regularizers.serialize(self.activity_regularizer),
                "kernel_constraint": constraints.serialize(self.kernel_constraint),
                "recurrent_constraint": constraints.serialize(self.recurrent_constraint),
                "bias_constraint": constraints.serialize(self.bias_constraint),
                "data_format": self.data_format,
                "weight_normalization": self.weight_normalization,
                "implementation": self.implementation,
            }
        )
        return config


def clone_initializer(initializer):
    """A fresh instance of `initializer` (an identifier or an instance).

    Keras initializers draw their seed once, when they are created: one
    instance shared by several weights would give them related values (the
    same random stream), so every weight gets its own copy, as
    `keras.layers.MultiHeadAttention` does. A copy of a seeded initializer
    keeps the seed.
    """
    initializer = initializers.get(initializer)
    return initializer.__class__.from_config(initializer.get_config())
