"""The layers against the independent float64 NumPy reference in sdn_reference.py."""

import numpy as np
import pytest
import tensorflow as tf

import sdn_reference
from keras_sdn import ResidualSpatialDependency
from keras_sdn import SpatialDependency


def layer_weights(layer):
    """The weights of a built SpatialDependency as float64 arrays."""
    return {
        "project_in_kernel": layer.project_in.kernel.numpy().astype(np.float64),
        "project_in_bias": layer.project_in.bias.numpy().astype(np.float64),
        "kernel": layer.kernel.numpy().astype(np.float64),
        "recurrent_kernel": layer.recurrent_kernel.numpy().astype(np.float64),
        "bias": layer.bias.numpy().astype(np.float64),
        "project_out_kernel": layer.project_out.kernel.numpy().astype(np.float64),
        "project_out_bias": layer.project_out.bias.numpy().astype(np.float64),
    }


def randomize(layer, seed):
    """Non-trivial values for every weight, biases included."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(scale=0.5, size=weight.shape).astype("float32"))


def relative_error(actual, expected):
    return np.max(np.abs(actual - expected)) / np.max(np.abs(expected))


CASES = [
    # (directions, height, width, upsample)
    (["down"], 5, 4, 1),
    (["up"], 5, 4, 1),
    (["left"], 4, 5, 1),
    (["right"], 4, 5, 1),
    (2, 3, 6, 1),
    (4, 5, 3, 1),
    (["down", "left", "up", "right"], 4, 4, 1),
    (["right", "right", "up"], 3, 5, 1),
    (1, 3, 4, 2),
    (["left", "down"], 2, 3, 2),
]


@pytest.mark.parametrize("directions, height, width, upsample", CASES)
def test_spatial_dependency_matches_reference(directions, height, width, upsample):
    layer = SpatialDependency(5, num_features=4, directions=directions, upsample=upsample)
    images = np.random.default_rng(0).normal(size=(2, height, width, 3)).astype("float32")
    layer.build(images.shape)
    randomize(layer, seed=1)

    expected = sdn_reference.spatial_dependency(
        images.astype(np.float64), layer_weights(layer), layer.directions, upsample
    )
    actual = layer(images).numpy()

    assert actual.shape == (2, height * upsample, width * upsample, 5)
    assert relative_error(actual, expected) <= 1e-5


@pytest.mark.parametrize("batch", [1, 3])
def test_unknown_batch_size_matches_reference(batch):
    """A batch dimension that is only known when the function runs (split at run time)."""
    layer = SpatialDependency(4, num_features=3, directions=2)
    layer.build((None, 3, 4, 2))
    randomize(layer, seed=6)
    call = tf.function(layer, input_signature=[tf.TensorSpec((None, 3, 4, 2), tf.float32)])
    images = np.random.default_rng(7).normal(size=(batch, 3, 4, 2)).astype("float32")

    expected = sdn_reference.spatial_dependency(
        images.astype(np.float64), layer_weights(layer), layer.directions, 1
    )
    assert relative_error(call(images).numpy(), expected) <= 1e-5


@pytest.mark.parametrize("directions, upsample, kernel_size", [(2, 1, None), (["up"], 2, 4)])
def test_residual_spatial_dependency_matches_reference(directions, upsample, kernel_size):
    layer = ResidualSpatialDependency(
        3, num_features=4, directions=directions, upsample=upsample, kernel_size=kernel_size
    )
    images = np.random.default_rng(2).normal(size=(2, 4, 3, 2)).astype("float32")
    layer.build(images.shape)
    randomize(layer, seed=3)

    expected = sdn_reference.residual_spatial_dependency(
        images.astype(np.float64),
        layer_weights(layer.spatial_dependency),
        layer.residual.kernel.numpy().astype(np.float64),
        layer.residual.bias.numpy().astype(np.float64),
        layer.directions,
        upsample,
    )
    actual = layer(images).numpy()

    assert actual.shape == expected.shape == (2, 4 * upsample, 3 * upsample, 3)
    assert relative_error(actual, expected) <= 1e-5


@pytest.mark.parametrize(
    "directions, shape",
    [
        (["down"], (1, 3, 4, 2)),
        (["up"], (1, 3, 4, 2)),
        (["left"], (1, 3, 4, 2)),
        (["right"], (1, 3, 4, 2)),
        # An odd batch: on a CPU it is swept in two unequal parts.
        (["up", "left"], (3, 2, 3, 2)),
    ],
)
def test_sweep_gradient_matches_finite_differences(directions, shape):
    """The hand-written sweep gradient against float64 numerical differentiation."""
    layer = SpatialDependency(2, num_features=3, directions=directions, dtype="float64")
    images = tf.constant(np.random.default_rng(4).normal(size=shape))
    layer.build(images.shape)
    randomize(layer, seed=5)
    weights = [tf.constant(w.numpy()) for w in layer.trainable_weights]

    @tf.function
    def output_of(images, *weight_values):
        outputs, _ = layer.stateless_call(list(weight_values), [], images)
        return outputs

    theoretical, numerical = tf.test.compute_gradient(output_of, [images] + weights, delta=1e-6)
    for analytic, numeric in zip(theoretical, numerical):
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-6)


def pixel_dependencies(layer, height, width, seed):
    """`depends[i, j, k, l]`: whether output pixel (i, j) depends on input pixel (k, l)."""
    images = tf.constant(np.random.default_rng(seed).normal(size=(1, height, width, 2)), tf.float32)
    layer.build(images.shape)
    randomize(layer, seed=seed + 1)
    with tf.GradientTape() as tape:
        tape.watch(images)
        outputs = layer(images)
    jacobian = tape.jacobian(outputs, images).numpy()[0, :, :, :, 0]  # (H, W, C', H, W, C)
    return np.abs(jacobian).max(axis=(2, 5)) > 0


def test_one_direction_dependency_cone():
    """With 1x1 projections and the top-to-bottom sweep, output (i, j) depends
    on input (r, c) iff r <= i and |c - j| <= i - r."""
    layer = SpatialDependency(2, num_features=3, directions=["down"])
    depends = pixel_dependencies(layer, 5, 7, seed=6)
    for i, j, r, c in np.ndindex(5, 7, 5, 7):
        assert depends[i, j, r, c] == (r <= i and abs(c - j) <= i - r), (i, j, r, c)


def test_four_directions_connect_every_pixel():
    layer = SpatialDependency(2, num_features=3, directions=4)
    assert pixel_dependencies(layer, 4, 5, seed=8).all()
