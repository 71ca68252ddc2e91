"""The layers on the running Keras backend: values and gradients against the
float64 NumPy reference, Keras models, training, mixed precision, saving.

Written with `keras.ops` only (gradients aside: `backend_testing.gradients`),
so that the same tests check TensorFlow, JAX and PyTorch."""

import keras
import numpy as np
import pytest
from backend_testing import layer_gradients
from backend_testing import randomize
from backend_testing import reference_weights
from backend_testing import relative_error
from backend_testing import to_numpy
from keras import ops

import sdn_reference
from keras_sdn import ResidualSpatialDependency
from keras_sdn import SpatialDependency
from keras_sdn import WeightNormalization

LAYERS = [SpatialDependency, ResidualSpatialDependency]


def images(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize(
    "directions, height, width, upsample, weight_normalization",
    [
        (4, 5, 4, 1, False),
        (["down", "left", "up", "right"], 4, 3, 1, True),
        (["right", "right", "up"], 3, 5, 1, False),
        (["left", "down"], 2, 3, 2, True),
    ],
)
def test_spatial_dependency_matches_reference(
    directions, height, width, upsample, weight_normalization
):
    layer = SpatialDependency(
        5,
        num_features=4,
        directions=directions,
        upsample=upsample,
        weight_normalization=weight_normalization,
    )
    x = images((2, height, width, 3))
    layer.build(x.shape)
    randomize(layer, seed=1)

    expected = sdn_reference.spatial_dependency(
        x.astype(np.float64), reference_weights(layer), layer.directions, upsample
    )
    actual = to_numpy(layer(x))

    assert actual.shape == (2, height * upsample, width * upsample, 5)
    assert relative_error(actual, expected) <= 1e-5


@pytest.mark.parametrize("implementation", ["unrolled", "scanned"])
def test_every_implementation_matches_reference(implementation):
    layer = SpatialDependency(3, num_features=4, directions=4, implementation=implementation)
    x = images((2, 3, 4, 2), seed=13)
    layer.build(x.shape)
    randomize(layer, seed=14)

    expected = sdn_reference.spatial_dependency(
        x.astype(np.float64), reference_weights(layer), layer.directions, 1
    )
    assert relative_error(to_numpy(layer(x)), expected) <= 1e-5


@pytest.mark.parametrize("upsample", [1, 2])
def test_residual_spatial_dependency_matches_reference(upsample):
    layer = ResidualSpatialDependency(
        3, num_features=4, directions=2, upsample=upsample, weight_normalization=True
    )
    x = images((2, 4, 3, 2), seed=2)
    layer.build(x.shape)
    randomize(layer, seed=3)
    residual = layer.residual

    expected = sdn_reference.residual_spatial_dependency(
        x.astype(np.float64),
        reference_weights(layer.spatial_dependency),
        to_numpy(residual.kernel).astype(np.float64),
        to_numpy(residual.layer.bias).astype(np.float64),
        layer.directions,
        upsample,
    )
    actual = to_numpy(layer(x))

    assert actual.shape == expected.shape == (2, 4 * upsample, 3 * upsample, 3)
    assert relative_error(actual, expected) <= 1e-5


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("directions, upsample", [(4, 1), (["up", "left"], 2)])
def test_gradients_match_reference_directional_derivatives(directions, upsample, compiled):
    """Each gradient, projected on a random direction, against the float64
    reference's central difference along that direction; eager and compiled
    (with JAX, the eager sweeps are Python loops, the compiled ones scans)."""
    layer = SpatialDependency(4, num_features=3, directions=directions, upsample=upsample)
    x = images((2, 3, 4, 2), seed=4)
    layer.build(x.shape)
    randomize(layer, seed=5)
    cotangent = images(layer.compute_output_shape(x.shape), seed=6)
    names = {id(variable): name for name, variable in _reference_variables(layer).items()}
    weights = reference_weights(layer)

    gradient_of_input, *weight_gradients = layer_gradients(layer, x, cotangent, compiled)

    def loss(x, weights):
        outputs = sdn_reference.spatial_dependency(x, weights, layer.directions, upsample)
        return np.sum(outputs * cotangent)

    rng = np.random.default_rng(7)
    step = 1e-5
    candidates = [("inputs", gradient_of_input)] + [
        (names[id(variable)], gradient)
        for variable, gradient in zip(layer.trainable_variables, weight_gradients)
    ]
    for name, gradient in candidates:
        direction = rng.normal(size=gradient.shape)
        shifted = []
        for sign in (1.0, -1.0):
            moved_x, moved_weights = x.astype(np.float64), dict(weights)
            if name == "inputs":
                moved_x = moved_x + sign * step * direction
            else:
                moved_weights[name] = weights[name] + sign * step * direction
            shifted.append(loss(moved_x, moved_weights))
        expected = (shifted[0] - shifted[1]) / (2 * step)
        actual = np.sum(gradient * direction)
        assert abs(actual - expected) <= 1e-4 * max(1.0, abs(expected)), name


def _reference_variables(layer):
    return {
        "project_in_kernel": layer.project_in.kernel,
        "project_in_bias": layer.project_in.bias,
        "kernel": layer.kernel,
        "recurrent_kernel": layer.recurrent_kernel,
        "bias": layer.bias,
        "project_out_kernel": layer.project_out.kernel,
        "project_out_bias": layer.project_out.bias,
    }


@pytest.mark.parametrize("layer_class", LAYERS)
def test_sequential_and_functional_models(layer_class):
    x = images((2, 6, 5, 3))
    sequential = keras.Sequential(
        [keras.Input((None, None, 3)), layer_class(4, num_features=6, directions=2)]
    )
    inputs = keras.Input((None, None, 3))
    functional = keras.Model(inputs, layer_class(4, num_features=6, upsample=2)(inputs))

    assert tuple(sequential(x).shape) == (2, 6, 5, 4)
    assert tuple(functional(x).shape) == (2, 12, 10, 4)
    assert tuple(functional.output.shape) == (None, None, None, 4)


def test_fit_learns_a_toy_task():
    """Predict, at every pixel, whether any pixel above it in its column is on."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = (rng.uniform(size=(64, 8, 8, 1)) < 0.05).astype("float32")
    y = (np.cumsum(x, axis=1) > 0).astype("float32")
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), SpatialDependency(1, num_features=8, directions=["down"])]
    )
    model.compile(keras.optimizers.Adam(0.02), "mse")
    history = model.fit(x, y, batch_size=16, epochs=25, verbose=0).history["loss"]
    assert history[-1] < 0.2 * history[0]


# Each policy once and each layer once: on JAX, every case compiles its
# operations one by one in eager mode, which makes this the slowest test here.
@pytest.mark.parametrize(
    "layer_class, policy, tolerance",
    [
        (SpatialDependency, "mixed_float16", 2e-2),
        (ResidualSpatialDependency, "mixed_bfloat16", 1e-1),
    ],
)
def test_mixed_precision(layer_class, policy, tolerance):
    x = images((2, 6, 6, 3), seed=8)
    arguments = dict(num_features=8, directions=2, weight_normalization=True)
    exact = layer_class(4, **arguments)
    mixed = layer_class(4, dtype=policy, **arguments)
    exact.build(x.shape)
    mixed.build(x.shape)
    randomize(exact, seed=9, scale=0.3)
    for source, target in zip(exact.weights, mixed.weights):
        target.assign(source)
    cotangent = images(exact.compute_output_shape(x.shape), seed=10)

    outputs = mixed(x)
    gradients = layer_gradients(mixed, x, cotangent)
    exact_gradients = layer_gradients(exact, x, cotangent)

    assert keras.backend.standardize_dtype(outputs.dtype) == policy[len("mixed_") :]
    assert all(weight.dtype == "float32" for weight in mixed.weights)
    assert relative_error(to_numpy(outputs).astype("float32"), to_numpy(exact(x))) <= tolerance
    for gradient, exact_gradient in zip(gradients, exact_gradients):
        assert relative_error(gradient.astype("float32"), exact_gradient) <= 5 * tolerance


@pytest.mark.parametrize("layer_class", LAYERS)
def test_saved_keras_model_gives_identical_outputs(layer_class, tmp_path):
    inputs = keras.Input((None, None, 3))
    hidden = layer_class(4, num_features=5, directions=3, weight_normalization=True)(inputs)
    outputs = layer_class(2, num_features=3, directions=["down"], upsample=2)(hidden)
    model = keras.Model(inputs, outputs)
    x = images((2, 4, 6, 3), seed=11)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)

    np.testing.assert_array_equal(to_numpy(restored(x)), to_numpy(model(x)))


def test_weight_normalization_kernel_has_norm_g():
    layer = WeightNormalization(keras.layers.Conv2DTranspose(3, 4, strides=2, padding="same"))
    layer.build((2, 3, 4, 2))
    randomize(layer, seed=12)
    kernel = to_numpy(layer.kernel).astype(np.float64)

    norms = np.sqrt(np.sum(kernel**2, axis=(0, 1, 3)))
    np.testing.assert_allclose(norms, to_numpy(layer.g), rtol=1e-6)
    assert tuple(ops.shape(layer(images((2, 3, 4, 2))))) == (2, 6, 8, 3)
