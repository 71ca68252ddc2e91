"""Tests for keras_sdn.bijectors: AutoregressiveConvNetwork and InverseAutoregressiveFlow."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from keras_sdn.bijectors import AutoregressiveConvNetwork
from keras_sdn.bijectors import InverseAutoregressiveFlow
from keras_sdn.distributions import diagonal_gaussian

BATCH, HEIGHT, WIDTH, Z, CONTEXT = 2, 3, 4, 4, 5


@pytest.fixture(autouse=True)
def seeded_initializers():
    keras.utils.set_random_seed(0)


def make_network(**kwargs):
    """A float64 network with output_scale 1, so that the flow is far from the identity."""
    arguments = dict(z_channels=Z, hidden_channels=8, output_scale=1.0, dtype="float64") | kwargs
    return AutoregressiveConvNetwork(**arguments)


def random_inputs(seed=0):
    rng = np.random.default_rng(seed)
    z = tf.constant(rng.normal(size=(BATCH, HEIGHT, WIDTH, Z)))
    context = tf.constant(rng.normal(size=(BATCH, HEIGHT, WIDTH, CONTEXT)))
    return z, context


class CountingNetwork:
    """Wraps a network and counts its calls."""

    def __init__(self, network):
        self.network, self.calls = network, 0

    def __call__(self, z, context):
        self.calls += 1
        return self.network(z, context)


def flow_jacobian(network, z0, context):
    """Jacobian of the forward pass for the first image, (H*W*Z, H*W*Z) row-major."""
    image = z0[:1]
    flow = InverseAutoregressiveFlow(network, context[:1])
    with tf.GradientTape() as tape:
        tape.watch(image)
        z = flow.forward(image)
    jacobian = tape.jacobian(z, image).numpy()
    return jacobian.reshape(HEIGHT * WIDTH * Z, HEIGHT * WIDTH * Z)


def test_network_output_shapes_and_weights():
    network = make_network(num_hidden_layers=3, kernel_size=3)
    shift, log_scale = network(*random_inputs())
    assert shift.shape == log_scale.shape == (BATCH, HEIGHT, WIDTH, Z)
    # 4 masked convolutions with biases, and the context projection.
    assert len(network.trainable_weights) == 9
    assert network.context_kernel.shape == (CONTEXT, 8)


def test_network_is_autoregressive_over_channels_with_full_spatial_kernel():
    network = make_network(kernel_size=3)
    z, context = random_inputs()
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([z, context])
        shift, log_scale = network(z, context)
    for output in (shift, log_scale):
        # (H, W, Z) outputs of image 0 against (H, W, Z) latents of image 0.
        jacobian = np.abs(tape.jacobian(output, z).numpy()[0, :, :, :, 0])
        pixel, neighbour = (1, 1), (0, 2)
        for d in range(Z):
            for c in range(Z):
                here = jacobian[pixel + (d,) + pixel + (c,)]
                beside = jacobian[pixel + (d,) + neighbour + (c,)]
                if c >= d:
                    assert here == 0 and beside == 0
                else:
                    assert here > 0 and beside > 0
        # Every output channel, channel 0 included, depends on the context.
        context_jacobian = np.abs(tape.jacobian(output, context).numpy()[0, 1, 1, :, 0, 1, 1])
        assert (context_jacobian.sum(axis=-1) > 0).all()


def test_network_with_one_latent_channel_depends_only_on_context():
    network = make_network(z_channels=1)
    rng = np.random.default_rng(1)
    context = rng.normal(size=(1, 2, 2, CONTEXT))
    first = network(rng.normal(size=(1, 2, 2, 1)), context)
    second = network(rng.normal(size=(1, 2, 2, 1)), context)
    np.testing.assert_array_equal(first[0].numpy(), second[0].numpy())
    np.testing.assert_array_equal(first[1].numpy(), second[1].numpy())


def test_output_scale_multiplies_the_outputs():
    z, context = random_inputs()
    unit = make_network(output_scale=1.0)
    unit(z, context)
    tenth = make_network(output_scale=0.1)
    tenth(z, context)
    tenth.set_weights(unit.get_weights())
    for scaled, full in zip(tenth(z, context), unit(z, context)):
        np.testing.assert_allclose(scaled.numpy(), 0.1 * full.numpy(), rtol=1e-12)


def test_network_config_round_trip_and_saving(tmp_path):
    network = AutoregressiveConvNetwork(
        Z, hidden_channels=6, num_hidden_layers=1, kernel_size=5, output_scale=0.5, name="arn"
    )
    clone = AutoregressiveConvNetwork.from_config(network.get_config())
    assert clone.get_config() == network.get_config()

    z_input, context_input = keras.Input((HEIGHT, WIDTH, Z)), keras.Input((HEIGHT, WIDTH, CONTEXT))
    model = keras.Model([z_input, context_input], network(z_input, context_input))
    path = tmp_path / "network.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    z, context = (tf.cast(t, tf.float32) for t in random_inputs())
    for expected, actual in zip(model([z, context]), restored([z, context])):
        np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(z_channels=0), "z_channels"),
        (dict(hidden_channels=0), "hidden_channels"),
        (dict(num_hidden_layers=0), "num_hidden_layers"),
        (dict(kernel_size=2), "kernel_size"),
    ],
)
def test_network_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AutoregressiveConvNetwork(**(dict(z_channels=Z) | kwargs))


def test_network_bad_input_shapes_raise():
    z, context = random_inputs()
    with pytest.raises(ValueError, match="`z` must have shape"):
        make_network(z_channels=Z + 1)(z, context)
    with pytest.raises(ValueError, match="`context` must have shape"):
        make_network()(z, context[0])


def test_forward_and_log_det_are_one_parallel_pass_each():
    counting = CountingNetwork(make_network())
    z0, context = random_inputs()
    flow = InverseAutoregressiveFlow(counting, context)
    flow.forward(z0)
    assert counting.calls == 1
    flow.forward_log_det_jacobian(z0, event_ndims=3)
    assert counting.calls == 2


def test_forward_matches_the_iaf_update():
    network = make_network()
    z0, context = random_inputs()
    shift, log_scale = network(z0, context)
    flow = InverseAutoregressiveFlow(network, context)
    np.testing.assert_allclose(
        flow.forward(z0).numpy(), ((z0 - shift) * tf.exp(-log_scale)).numpy(), rtol=1e-12
    )
    np.testing.assert_allclose(
        flow.forward_log_det_jacobian(z0, event_ndims=3).numpy(),
        -tf.reduce_sum(log_scale, axis=[1, 2, 3]).numpy(),
        rtol=1e-12,
    )


def test_jacobian_is_triangular_in_channel_order():
    z0, context = random_inputs()
    jacobian = flow_jacobian(make_network(), z0, context)
    by_position = jacobian.reshape(HEIGHT * WIDTH, Z, HEIGHT * WIDTH, Z)
    for pixel in range(HEIGHT * WIDTH):
        block = by_position[pixel, :, pixel, :]
        assert np.all(np.triu(block, k=1) == 0)
        assert np.all(np.tril(block, k=-1)[np.tril_indices(Z, -1)] != 0)
    # Channel-major order: every output depends only on earlier channels and
    # on its own coordinate, so the whole Jacobian is lower triangular.
    channel_major = by_position.transpose(1, 0, 3, 2).reshape(jacobian.shape)
    assert np.all(np.triu(channel_major, k=1) == 0)


def test_forward_log_det_jacobian_equals_log_abs_det_of_full_jacobian():
    z0, context = random_inputs()
    network = make_network()
    flow = InverseAutoregressiveFlow(network, context)
    jacobian = flow_jacobian(network, z0, context)
    assert not np.allclose(np.diag(jacobian), 1.0)
    sign, log_abs_det = np.linalg.slogdet(jacobian)
    assert sign != 0
    log_det = flow.forward_log_det_jacobian(z0, event_ndims=3).numpy()
    np.testing.assert_allclose(log_det[0], log_abs_det, rtol=1e-10)


def test_inverse_of_forward_is_identity():
    z0, context = random_inputs()
    flow = InverseAutoregressiveFlow(make_network(), context)
    z = flow.forward(z0)
    np.testing.assert_allclose(flow.inverse(z).numpy(), z0.numpy(), atol=1e-10)
    np.testing.assert_allclose(flow.forward(flow.inverse(z0)).numpy(), z0.numpy(), atol=1e-10)
    np.testing.assert_allclose(
        flow.inverse_log_det_jacobian(z, event_ndims=3).numpy(),
        -flow.forward_log_det_jacobian(z0, event_ndims=3).numpy(),
        rtol=1e-10,
    )


def test_posterior_density_matches_transformed_distribution():
    z0, context = random_inputs()
    rng = np.random.default_rng(2)
    gaussian = diagonal_gaussian(rng.normal(size=z0.shape), rng.normal(size=z0.shape) * 0.3)
    flow = InverseAutoregressiveFlow(make_network(), context)
    log_q = gaussian.log_prob(z0) - flow.forward_log_det_jacobian(z0, event_ndims=3)
    transformed = tfp.distributions.TransformedDistribution(gaussian, flow)
    np.testing.assert_allclose(transformed.log_prob(flow.forward(z0)).numpy(), log_q.numpy(), rtol=1e-10)


def test_gradients_reach_every_network_weight():
    network = AutoregressiveConvNetwork(Z, hidden_channels=8)
    z0, context = (tf.cast(t, tf.float32) for t in random_inputs())
    with tf.GradientTape() as tape:
        flow = InverseAutoregressiveFlow(network, context)
        loss = tf.reduce_sum(flow.forward(z0) ** 2) - tf.reduce_sum(
            flow.forward_log_det_jacobian(z0, event_ndims=3)
        )
    gradients = tape.gradient(loss, network.trainable_weights)
    assert len(gradients) == 7
    for gradient in gradients:
        assert gradient is not None and np.isfinite(gradient.numpy()).all()
        assert np.abs(gradient.numpy()).sum() > 0


def test_mixed_precision_network_keeps_latent_dtype():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        network = AutoregressiveConvNetwork(Z, hidden_channels=8)
    finally:
        keras.config.set_dtype_policy(previous)
    z0, context = (tf.cast(t, tf.float32) for t in random_inputs())
    flow = InverseAutoregressiveFlow(network, tf.cast(context, tf.float16))
    assert flow.forward(z0).dtype == tf.float32
    assert flow.forward_log_det_jacobian(z0, event_ndims=3).dtype == tf.float32


def test_flow_rejects_non_callable_network():
    with pytest.raises(ValueError, match="network"):
        InverseAutoregressiveFlow("not a network", tf.zeros([1, 2, 2, 3]))
