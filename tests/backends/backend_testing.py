"""Helpers for tests that run unchanged on the TensorFlow, JAX and PyTorch backends."""

import keras
import numpy as np
from keras import ops


def to_numpy(tensor):
    return np.asarray(ops.convert_to_numpy(tensor))


def relative_error(actual, expected):
    return np.max(np.abs(actual - expected)) / np.max(np.abs(expected))


def randomize(layer, seed, scale=0.5):
    """Non-trivial values for every weight of `layer`, biases included, from `seed`."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        values = rng.normal(scale=scale, size=weight.shape)
        if weight.name == "g":  # a weight normalisation's norms
            values = np.abs(values) + 0.5
        weight.assign(values.astype(weight.dtype))


def reference_weights(layer):
    """The weights of a built `SpatialDependency`, as float64 arrays named as
    `sdn_reference.spatial_dependency` expects; a weight-normalised projection
    gives its effective kernel."""

    def projection(sublayer):
        bias = getattr(sublayer, "layer", sublayer).bias
        return to_numpy(sublayer.kernel), to_numpy(bias)

    project_in_kernel, project_in_bias = projection(layer.project_in)
    project_out_kernel, project_out_bias = projection(layer.project_out)
    arrays = {
        "project_in_kernel": project_in_kernel,
        "project_in_bias": project_in_bias,
        "kernel": to_numpy(layer.kernel),
        "recurrent_kernel": to_numpy(layer.recurrent_kernel),
        "bias": to_numpy(layer.bias),
        "project_out_kernel": project_out_kernel,
        "project_out_bias": project_out_bias,
    }
    return {name: array.astype(np.float64) for name, array in arrays.items()}


def gradients(function, arrays):
    """The gradients of the scalar `function(*arrays)` by each array, as NumPy arrays.

    The one part of these tests written per backend: Keras has no `grad` op.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        tensors = [ops.convert_to_tensor(array) for array in arrays]
        return [to_numpy(g) for g in jax.grad(lambda ts: function(*ts))(tensors)]
    if backend == "torch":
        tensors = [ops.convert_to_tensor(array).requires_grad_() for array in arrays]
        function(*tensors).backward()
        return [tensor.grad.cpu().numpy() for tensor in tensors]
    import tensorflow as tf

    tensors = [tf.constant(array) for array in arrays]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        value = function(*tensors)
    return [gradient.numpy() for gradient in tape.gradient(value, tensors)]


def layer_gradients(layer, inputs, cotangent):
    """The gradients of `sum(layer(inputs) * cotangent)` by the inputs and by
    each of `layer.trainable_variables` (in that order), through `stateless_call`."""

    def loss(x, *trainable_values):
        outputs, _ = layer.stateless_call(trainable_values, [], x)
        return ops.sum(ops.cast(outputs, "float32") * ops.convert_to_tensor(cotangent))

    values = [to_numpy(variable) for variable in layer.trainable_variables]
    return gradients(loss, [inputs, *values])
