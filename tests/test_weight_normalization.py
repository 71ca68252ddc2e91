"""WeightNormalization and normalize_kernel: the effective kernel against a float64
NumPy reference, gradients against finite differences, initialisation, losses,
stateless calls, serialization, mixed precision, MirroredStrategy, bad arguments.

The SavedModel export of weight-normalised Conv2D, Conv2DTranspose and Dense
kernels, served without keras_sdn, is tested with the SDN layers that wrap them:
test_spatial_dependency_keras.py::test_export_loads_without_keras_sdn[True]."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_sdn
from keras_sdn.layers import WeightNormalization
from keras_sdn.layers import kernel_norm
from keras_sdn.layers import normalize_kernel

# (layer factory, input shape, output-channel axis of its kernel)
LAYERS = {
    "dense": (lambda **kw: keras.layers.Dense(3, **kw), (2, 4), -1),
    "conv2d": (lambda **kw: keras.layers.Conv2D(3, 3, padding="same", **kw), (2, 5, 4, 2), -1),
    "conv2d_transpose": (
        lambda **kw: keras.layers.Conv2DTranspose(3, 4, strides=2, padding="same", **kw),
        (2, 3, 4, 2),
        -2,
    ),
    "conv1d": (lambda **kw: keras.layers.Conv1D(3, 2, **kw), (2, 5, 2), -1),
}


def random(shape, seed, dtype="float32"):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def reference_kernel(v, g, output_axis):
    """g * v / ||v|| in float64, the norm over every axis but `output_axis`."""
    v = np.asarray(v, np.float64)
    axes = tuple(axis for axis in range(v.ndim) if axis != output_axis % v.ndim)
    norm = np.sqrt(np.sum(v**2, axis=axes, keepdims=True))
    g = np.expand_dims(np.asarray(g, np.float64), axes)
    return g * v / norm


def wrapped(name, seed=0, dtype=None):
    """A built WeightNormalization around layer `name`, with random g, v and bias."""
    factory, input_shape, _ = LAYERS[name]
    layer = WeightNormalization(factory(dtype=dtype))
    layer.build(input_shape)
    variable_dtype = layer.g.dtype
    layer.g.assign(np.abs(random(layer.g.shape, seed, variable_dtype)) + 0.5)
    layer.layer.kernel.assign(random(layer.layer.kernel.shape, seed + 1, variable_dtype))
    layer.layer.bias.assign(random(layer.layer.bias.shape, seed + 2, variable_dtype))
    return layer


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_effective_kernel_has_norm_g_per_output_channel(name):
    layer = wrapped(name)
    _, _, output_axis = LAYERS[name]
    expected = reference_kernel(layer.layer.kernel.numpy(), layer.g.numpy(), output_axis)
    kernel = layer.kernel.numpy()

    np.testing.assert_allclose(kernel, expected, rtol=1e-5, atol=1e-7)
    axes = tuple(axis for axis in range(kernel.ndim) if axis != output_axis % kernel.ndim)
    norms = np.sqrt(np.sum(kernel.astype(np.float64) ** 2, axis=axes))
    np.testing.assert_allclose(norms, layer.g.numpy(), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_output_equals_unwrapped_layer_with_the_effective_kernel(name):
    layer = wrapped(name)
    _, input_shape, output_axis = LAYERS[name]
    plain = layer.layer.__class__.from_config(layer.layer.get_config())
    plain.build(input_shape)
    plain.set_weights(
        [
            reference_kernel(layer.layer.kernel.numpy(), layer.g.numpy(), output_axis),
            layer.layer.bias.numpy(),
        ]
    )
    x = random(input_shape, 5)

    np.testing.assert_allclose(layer(x).numpy(), plain(x).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_initial_g_is_the_norm_of_v_and_outputs_are_unchanged(name):
    factory, input_shape, output_axis = LAYERS[name]
    layer = WeightNormalization(factory(bias_initializer="random_normal"))
    x = random(input_shape, 3)
    outputs = layer(x).numpy()
    v = layer.layer.kernel.numpy().astype(np.float64)
    axes = tuple(axis for axis in range(v.ndim) if axis != output_axis % v.ndim)

    np.testing.assert_allclose(layer.g.numpy(), np.sqrt(np.sum(v**2, axis=axes)), rtol=1e-6)
    np.testing.assert_allclose(outputs, layer.layer(x).numpy(), rtol=1e-5, atol=1e-6)


def central_differences(loss, array, step=1e-6):
    """d loss / d array by central differences; `loss()` reads `array` in place."""
    gradient = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        saved = array[index]
        array[index] = saved + step
        above = loss()
        array[index] = saved - step
        below = loss()
        array[index] = saved
        gradient[index] = (above - below) / (2 * step)
    return gradient


@pytest.mark.parametrize("name", ["dense", "conv2d", "conv2d_transpose"])
def test_gradients_match_float64_finite_differences(name):
    layer = wrapped(name, dtype="float64")
    _, input_shape, _ = LAYERS[name]
    inputs = tf.Variable(random(input_shape, 7, "float64"))
    weights = random(layer.compute_output_shape(input_shape), 8, "float64")
    variables = [layer.g, layer.layer.kernel, inputs]
    arrays = [variable.numpy() for variable in variables]
    forward = tf.function(lambda: tf.reduce_sum(weights * layer(inputs)))

    def loss():
        for variable, array in zip(variables, arrays):
            variable.assign(array)
        return forward().numpy()

    with tf.GradientTape() as tape:
        value = forward()
    analytic = tape.gradient(value, variables)
    numeric = [central_differences(loss, array) for array in arrays]

    for a, n in zip(analytic, numeric):
        np.testing.assert_allclose(a.numpy(), n, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("output_axis", [-1, -2, 0])
def test_normalize_kernel_and_kernel_norm_against_numpy(output_axis):
    v = random((3, 2, 4, 5), 1)
    g = np.abs(random((v.shape[output_axis],), 2)) + 0.1

    np.testing.assert_allclose(
        normalize_kernel(v, g, output_axis).numpy(),
        reference_kernel(v, g, output_axis),
        rtol=1e-5,
        atol=1e-7,
    )
    np.testing.assert_allclose(
        normalize_kernel(v, kernel_norm(v, output_axis), output_axis).numpy(),
        v,
        rtol=1e-5,
        atol=1e-7,
    )


def test_normalize_kernel_keeps_an_all_zero_channel_finite():
    v = random((3, 3, 2, 4), 1)
    v[..., 1] = 0.0
    kernel = normalize_kernel(v, np.ones(4, "float32")).numpy()
    assert np.isfinite(kernel).all() and not kernel[..., 1].any()


def test_losses_of_the_wrapped_layer_are_kept():
    layer = WeightNormalization(keras.layers.Dense(3, activity_regularizer="l2"))
    x = random((2, 4), 0)
    outputs = layer(x)
    assert len(layer.losses) == 1
    # Keras divides an activity regularizer's loss by the batch size.
    expected = 0.01 * np.sum(outputs.numpy().astype(np.float64) ** 2) / len(x)
    np.testing.assert_allclose(layer.losses[0].numpy(), expected, rtol=1e-5)


def test_stateless_call_uses_the_given_values_of_every_variable():
    layer = wrapped("conv2d")
    _, input_shape, output_axis = LAYERS["conv2d"]
    values = {id(w): random(w.shape, 20 + i) for i, w in enumerate(layer.trainable_variables)}
    x = random(input_shape, 4)
    before = [w.numpy() for w in layer.trainable_variables]
    outputs, _ = layer.stateless_call([values[id(w)] for w in layer.trainable_variables], [], x)
    plain = keras.layers.Conv2D(3, 3, padding="same")
    plain.build(input_shape)
    plain.set_weights(
        [
            reference_kernel(values[id(layer.layer.kernel)], values[id(layer.g)], output_axis),
            values[id(layer.layer.bias)],
        ]
    )

    np.testing.assert_allclose(outputs.numpy(), plain(x).numpy(), rtol=1e-5, atol=1e-5)
    for w, value in zip(layer.trainable_variables, before):
        np.testing.assert_array_equal(w.numpy(), value)


def model_of_every_kind(dtype=None):
    inputs = keras.Input((4, 4, 2))
    hidden = WeightNormalization(keras.layers.Conv2D(3, 3, padding="same", dtype=dtype))(inputs)
    hidden = WeightNormalization(
        keras.layers.Conv2DTranspose(3, 4, strides=2, padding="same", dtype=dtype)
    )(hidden)
    outputs = WeightNormalization(keras.layers.Dense(2, dtype=dtype))(hidden)
    return keras.Model(inputs, outputs)


def perturb(model, seed=0):
    """Random weights, so that g differs from ||v||."""
    model.set_weights([random(w.shape, seed + i) for i, w in enumerate(model.weights)])


def test_get_config_round_trips():
    layer = WeightNormalization(keras.layers.Conv2DTranspose(4, 3, strides=2), name="wn")
    config = layer.get_config()
    restored = WeightNormalization.from_config(layer.get_config())  # from_config pops "layer"
    assert restored.get_config() == config
    assert isinstance(restored.layer, keras.layers.Conv2DTranspose)
    assert restored.output_axis == -2


def test_saved_keras_model_gives_identical_outputs(tmp_path):
    model = model_of_every_kind()
    perturb(model)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    x = random((2, 4, 4, 2), 9)

    np.testing.assert_array_equal(restored(x).numpy(), model(x).numpy())


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_mixed_float16_global_policy(mixed_float16):
    mixed = model_of_every_kind()
    reference = model_of_every_kind(dtype="float32")
    perturb(mixed)
    reference.set_weights(mixed.get_weights())
    x = tf.constant(random((2, 4, 4, 2), 9))

    def outputs_and_gradients(model):
        with tf.GradientTape() as tape:
            outputs = model(x)
            loss = tf.reduce_mean(tf.cast(outputs, "float32") ** 2)
        return outputs, tape.gradient(loss, model.trainable_weights)

    outputs, gradients = outputs_and_gradients(mixed)
    expected, expected_gradients = outputs_and_gradients(reference)

    assert outputs.dtype == tf.float16
    assert all(layer.compute_dtype == "float16" for layer in mixed.layers[1:])
    assert all(w.dtype == "float32" for w in mixed.weights)
    np.testing.assert_allclose(outputs.numpy(), expected.numpy(), rtol=2e-2, atol=2e-2)
    for g, e in zip(gradients, expected_gradients):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=5e-2, atol=5e-3)


def fitted_weights(model, x, y):
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False)
    return model.get_weights()


def test_mirrored_strategy_fit_step_matches_one_device():
    x, y = random((4, 4, 4, 2), 1), random((4, 8, 8, 2), 2)
    reference = model_of_every_kind()
    perturb(reference)
    initial = reference.get_weights()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        mirrored = model_of_every_kind()
        mirrored.set_weights(initial)
        assert isinstance(mirrored.layers[1].g.value, tf.distribute.DistributedValues)
        after = fitted_weights(mirrored, x, y)
    expected = fitted_weights(reference, x, y)

    for a, e, i in zip(after, expected, initial):
        assert not np.allclose(e, i)
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "layer, message",
    [
        (keras.layers.Embedding(5, 3), "expects a Dense, Conv1D/2D/3D"),
        (keras.layers.DepthwiseConv2D(3), "expects a Dense, Conv1D/2D/3D"),
        (keras.layers.LayerNormalization(), "expects a Dense, Conv1D/2D/3D"),
        ("conv2d", "expects a Dense, Conv1D/2D/3D"),
    ],
)
def test_layers_without_a_known_kernel_raise_at_construction(layer, message):
    with pytest.raises(ValueError, match=message):
        WeightNormalization(layer)


def test_lora_enabled_layer_raises_at_build():
    layer = WeightNormalization(keras.layers.Dense(3, lora_rank=2))
    with pytest.raises(ValueError, match="LoRA-enabled and quantized layers"):
        layer.build((None, 4))


def test_normalize_kernel_rejects_a_bad_output_axis():
    with pytest.raises(ValueError, match="output_axis=4"):
        normalize_kernel(np.ones((3, 3, 2, 4)), np.ones(4), output_axis=4)


def test_exported_from_the_package():
    assert keras_sdn.WeightNormalization is keras_sdn.layers.WeightNormalization
