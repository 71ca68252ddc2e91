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


def gradients(function, arrays, compiled=False):
    """The gradients of the scalar `function(*arrays)` by each array, as NumPy arrays.

    The one part of these tests written per backend: Keras has no `grad` op.
    `compiled`: computed as the backend's Keras trainer compiles a step
    (`jax.jit`, `tf.function`); PyTorch's trainer runs eagerly by default.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        tensors = [ops.convert_to_tensor(array) for array in arrays]
        gradient = jax.grad(lambda ts: function(*ts))
        return [to_numpy(g) for g in (jax.jit(gradient) if compiled else gradient)(tensors)]
    if backend == "torch":
        tensors = [ops.convert_to_tensor(array).requires_grad_() for array in arrays]
        function(*tensors).backward()
        return [tensor.grad.cpu().numpy() for tensor in tensors]
    import tensorflow as tf

    def tape_gradients(*tensors):
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = function(*tensors)
        return tape.gradient(value, tensors)

    tensors = [tf.constant(array) for array in arrays]
    traced = tf.function(tape_gradients) if compiled else tape_gradients
    return [gradient.numpy() for gradient in traced(*tensors)]


def layer_gradients(layer, inputs, cotangent, compiled=False):
    """The gradients of `sum(layer(inputs) * cotangent)` by the inputs and by
    each of `layer.trainable_variables` (in that order), through `stateless_call`
    (`compiled`: see `gradients`)."""

    def loss(x, *trainable_values):
        outputs, _ = layer.stateless_call(trainable_values, [], x)
        return ops.sum(ops.cast(outputs, "float32") * ops.convert_to_tensor(cotangent))

    values = [to_numpy(variable) for variable in layer.trainable_variables]
    return gradients(loss, [inputs, *values], compiled)


def exchange_model():
    """The model whose `.keras` file every backend saves and loads: both
    layers, every direction, weight normalisation, up-sampling."""
    from keras_sdn import ResidualSpatialDependency
    from keras_sdn import SpatialDependency

    model = keras.Sequential(
        [
            keras.Input((5, 6, 3)),
            SpatialDependency(
                6, num_features=5, directions=4, activation="tanh", weight_normalization=True
            ),
            ResidualSpatialDependency(
                3,
                num_features=4,
                directions=["left", "down"],
                upsample=2,
                weight_normalization=True,
            ),
        ]
    )
    for seed, layer in enumerate(model.layers):
        randomize(layer, seed, scale=0.4)
    return model


def exchange_inputs():
    """The inputs and the output cotangent of `model_values`."""
    rng = np.random.default_rng(0)
    return (
        rng.normal(size=(2, 5, 6, 3)).astype("float32"),
        rng.normal(size=(2, 10, 12, 3)).astype("float32"),
    )


def model_values(model):
    """`model`'s outputs on `exchange_inputs()` and the gradients of the outputs
    times the cotangent, by the inputs and by each trainable weight (keyed by
    position and name: a loaded model's variable paths carry the loading
    backend's layer numbering)."""
    x, cotangent = exchange_inputs()
    gradient_of_input, *weight_gradients = layer_gradients(model, x, cotangent)
    values = {"outputs": to_numpy(model(x)), "inputs gradient": gradient_of_input}
    for index, (variable, gradient) in enumerate(zip(model.trainable_variables, weight_gradients)):
        values[f"weight {index} {variable.name}"] = gradient
    return values


def assert_same_values(actual, expected, tolerance=1e-5):
    """Every value of `expected` in `actual`, within a float32 relative `tolerance`."""
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        assert actual[name].shape == value.shape, name
        assert relative_error(actual[name], value) <= tolerance, name
