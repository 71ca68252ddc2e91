"""Tests for keras_sdn.bijectors: AutoregressiveConvNetwork and InverseAutoregressiveFlow."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from keras_sdn._compat import bijector_cache_with_attributes
from keras_sdn.bijectors import AutoregressiveConvNetwork
from keras_sdn.bijectors import InverseAutoregressiveFlow
from keras_sdn.distributions import diagonal_gaussian
from tiny_models import tiny_sdn_vae

BATCH, HEIGHT, WIDTH, Z, CONTEXT = 2, 3, 4, 4, 5
EVENT_SIZE = HEIGHT * WIDTH * Z


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


def raster_jacobian(function, z):
    """Jacobian of `function` for the first image, `(H*W*Z, H*W*Z)`.

    Rows and columns are ordered pixel-major in raster order, then by channel.
    """
    image = z[:1]
    with tf.GradientTape() as tape:
        tape.watch(image)
        output = function(image)
    jacobian = tape.jacobian(output, image).numpy()
    return jacobian.reshape(EVENT_SIZE, EVENT_SIZE)


def flow_jacobian(network, z0, context):
    return raster_jacobian(InverseAutoregressiveFlow(network, context[:1]).forward, z0)


def reference_network(network, z, context):
    """Float64 NumPy forward pass, with masks built tap by tap from the IAF-VAE rules."""
    k, centre = network.kernel_size, network.kernel_size // 2

    def degree(unit):
        return unit % Z

    def mask(fan_in, fan_out, connected_at_centre):
        result = np.zeros((k, k, fan_in, fan_out))
        for row, column, i, o in np.ndindex(result.shape):
            if (row, column) < (centre, centre):  # before the centre in raster order
                result[row, column, i, o] = 1.0
            elif (row, column) == (centre, centre):
                result[row, column, i, o] = connected_at_centre(i, o)
        return result

    def conv_same(x, kernel):
        padded = np.pad(x, ((0, 0), (centre, centre), (centre, centre), (0, 0)))
        out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
        for row, column in np.ndindex(k, k):
            window = padded[:, row : row + x.shape[1], column : column + x.shape[2]]
            out += window @ kernel[row, column]
        return out

    def elu(x):
        return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))

    weights = [np.asarray(w) for w in network.kernels]
    biases = [np.asarray(b) for b in network.biases]
    hidden_count, layers = network.hidden_channels, network.num_hidden_layers
    masks = [mask(Z, hidden_count, lambda c, h: c < degree(h))]
    masks += [mask(hidden_count, hidden_count, lambda a, b: degree(a) <= degree(b))] * (layers - 1)
    masks.append(mask(hidden_count, 2 * Z, lambda h, o: degree(h) <= o % Z))
    hidden = np.asarray(z)
    for index, (weight, bias, layer_mask) in enumerate(zip(weights, biases, masks)):
        hidden = conv_same(hidden, weight * layer_mask) + bias
        if index == 0:
            hidden = hidden + np.asarray(context) @ np.asarray(network.context_kernel)
        if index < layers:
            hidden = elu(hidden)
    outputs = hidden * network.output_scale
    return outputs[..., :Z], outputs[..., Z:]


# ----------------------------------------------------------------- network


def test_network_output_shapes_and_weights():
    network = make_network(num_hidden_layers=3, kernel_size=3)
    shift, log_scale = network(*random_inputs())
    assert shift.shape == log_scale.shape == (BATCH, HEIGHT, WIDTH, Z)
    # 4 masked convolutions with biases, and the context projection.
    assert len(network.trainable_weights) == 9
    assert network.context_kernel.shape == (CONTEXT, 8)


@pytest.mark.parametrize("kernel_size, num_hidden_layers", [(3, 2), (5, 1), (3, 3)])
def test_network_matches_numpy_reference(kernel_size, num_hidden_layers):
    network = make_network(kernel_size=kernel_size, num_hidden_layers=num_hidden_layers)
    z, context = random_inputs()
    network(z, context)
    rng = np.random.default_rng(3)
    network.set_weights([rng.normal(size=w.shape) * 0.5 for w in network.get_weights()])
    for actual, expected in zip(network(z, context), reference_network(network, z, context)):
        np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_network_is_autoregressive_in_raster_then_channel_order():
    network = make_network(kernel_size=3)
    z, context = random_inputs()
    for output in range(2):  # shift, log-scale
        jacobian = raster_jacobian(
            lambda image, output=output: network(image, context[:1])[output], z
        )
        # Strictly lower triangular: no output sees its own coordinate or a later one.
        assert np.all(np.triu(jacobian) == 0)
        by_pixel = np.abs(jacobian).reshape(HEIGHT, WIDTH, Z, HEIGHT, WIDTH, Z)
        pixel = (1, 1)
        # At the pixel itself: exactly the earlier channels.
        here = by_pixel[pixel + (slice(None),) + pixel + (slice(None),)]
        np.testing.assert_array_equal(here > 0, np.tril(np.ones((Z, Z)), k=-1) > 0)
        # The kernel's earlier neighbours: every channel pair, channel 0 included.
        for neighbour in [(0, 0), (0, 1), (0, 2), (1, 0)]:
            assert np.all(by_pixel[pixel + (slice(None),) + neighbour + (slice(None),)] > 0)
        # Every output channel, channel 0 included, depends on the context.
        context_image = context[:1]
        with tf.GradientTape() as tape:
            tape.watch(context_image)
            value = network(z[:1], context_image)[output]
        context_jacobian = np.abs(tape.jacobian(value, context_image).numpy()[0, 1, 1, :, 0, 1, 1])
        assert (context_jacobian.sum(axis=-1) > 0).all()


def test_first_coordinate_depends_only_on_context():
    network = make_network()
    rng = np.random.default_rng(1)
    context = rng.normal(size=(1, HEIGHT, WIDTH, CONTEXT))
    first = network(rng.normal(size=(1, HEIGHT, WIDTH, Z)), context)
    second = network(rng.normal(size=(1, HEIGHT, WIDTH, Z)), context)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.numpy()[0, 0, 0, 0], b.numpy()[0, 0, 0, 0])
        assert np.all(a.numpy()[0, 1:] != b.numpy()[0, 1:])


def test_kernel_size_one_has_no_dependency_across_pixels():
    network = make_network(kernel_size=1)
    z, context = random_inputs()
    jacobian = raster_jacobian(lambda image: network(image, context[:1])[1], z)
    by_pixel = jacobian.reshape(HEIGHT * WIDTH, Z, HEIGHT * WIDTH, Z)
    for pixel in range(HEIGHT * WIDTH):
        block = by_pixel[pixel, :, pixel, :]
        np.testing.assert_array_equal(block != 0, np.tril(np.ones((Z, Z)), k=-1) > 0)
        by_pixel[pixel, :, pixel, :] = 0
    assert np.all(by_pixel == 0)


def test_channel_ordering_is_autoregressive_over_channels_at_every_pixel():
    network = make_network(ordering="channels")
    z, context = random_inputs()
    for output in range(2):  # shift, log-scale
        jacobian = raster_jacobian(
            lambda image, output=output: network(image, context[:1])[output], z
        )
        by_channel = np.abs(jacobian).reshape(HEIGHT, WIDTH, Z, HEIGHT, WIDTH, Z)
        pixel = (1, 1)
        # Three 3x3 convolutions reach every pixel of the 3x4 map from (1, 1):
        # at each, exactly the earlier channels, before or after (1, 1).
        for neighbour in np.ndindex(HEIGHT, WIDTH):
            block = by_channel[pixel + (slice(None),) + neighbour + (slice(None),)]
            np.testing.assert_array_equal(block > 0, np.tril(np.ones((Z, Z)), k=-1) > 0)
    # The flow's Jacobian is triangular in channel-major order, and its
    # log-determinant and inverse stay exact.
    flow_jac = flow_jacobian(network, z, context).reshape(HEIGHT * WIDTH, Z, HEIGHT * WIDTH, Z)
    channel_major = flow_jac.transpose(1, 0, 3, 2).reshape(EVENT_SIZE, EVENT_SIZE)
    assert np.all(np.triu(channel_major, k=1) == 0)
    _, log_abs_det = np.linalg.slogdet(channel_major)
    flow = InverseAutoregressiveFlow(network, context)
    np.testing.assert_allclose(
        flow.forward_log_det_jacobian(z, event_ndims=3).numpy()[0], log_abs_det, rtol=1e-10
    )
    inverse = InverseAutoregressiveFlow(network, context).inverse(flow.forward(z))
    np.testing.assert_allclose(inverse.numpy(), z.numpy(), atol=1e-10)


def test_output_scale_multiplies_the_outputs():
    z, context = random_inputs()
    unit = make_network(output_scale=1.0)
    unit(z, context)
    tenth = make_network(output_scale=0.1)
    tenth(z, context)
    tenth.set_weights(unit.get_weights())
    for scaled, full in zip(tenth(z, context), unit(z, context)):
        np.testing.assert_allclose(scaled.numpy(), 0.1 * full.numpy(), rtol=1e-12)


@pytest.mark.parametrize("weight_normalization", [False, True])
def test_network_config_round_trip_and_saving(tmp_path, weight_normalization):
    network = AutoregressiveConvNetwork(
        Z,
        hidden_channels=6,
        num_hidden_layers=1,
        kernel_size=5,
        output_scale=0.5,
        weight_normalization=weight_normalization,
        ordering="channels",
        name="arn",
    )
    clone = AutoregressiveConvNetwork.from_config(network.get_config())
    assert clone.get_config() == network.get_config()

    z_input, context_input = keras.Input((HEIGHT, WIDTH, Z)), keras.Input((HEIGHT, WIDTH, CONTEXT))
    model = keras.Model([z_input, context_input], network(z_input, context_input))
    path = tmp_path / "network.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    z, context = (tf.cast(t, tf.float32) for t in random_inputs())
    assert len(restored.weights) == len(model.weights) == 5 + 2 * weight_normalization
    for expected, actual in zip(model([z, context]), restored([z, context])):
        np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-6)


def test_weight_normalization_gives_each_output_channel_the_norm_g():
    network = make_network(weight_normalization=True, num_hidden_layers=2)
    z, context = random_inputs()
    network(z, context)
    assert len(network.kernel_gains) == 3
    rng = np.random.default_rng(4)
    for index, (gain, mask) in enumerate(zip(network.kernel_gains, network._masks)):
        gain.assign(rng.uniform(0.5, 2.0, size=gain.shape))
        kernel = network.masked_kernel(index).numpy()
        assert np.all(kernel[mask == 0] == 0)
        np.testing.assert_allclose(
            np.sqrt((kernel**2).sum(axis=(0, 1, 2))), gain.numpy(), rtol=1e-12
        )


def test_weight_normalization_starts_from_the_masked_kernel():
    z, context = random_inputs()
    normalised = make_network(weight_normalization=True)
    normalised(z, context)
    for index, gain in enumerate(normalised.kernel_gains):
        masked = normalised.kernels[index].numpy() * normalised._masks[index]
        np.testing.assert_allclose(gain.numpy(), np.sqrt((masked**2).sum(axis=(0, 1, 2))))
    plain = make_network()
    plain(z, context)
    plain.set_weights([w.numpy() for w in normalised.weights if not w.name.startswith("g_")])
    for expected, actual in zip(plain(z, context), normalised(z, context)):
        np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-10, atol=1e-14)


def test_weight_normalization_gradient_matches_finite_differences():
    network = make_network(weight_normalization=True)
    z, context = random_inputs()
    weights = np.random.default_rng(5).normal(size=(2,) + tuple(z.shape))

    def objective():
        shift, log_scale = network(z, context)
        return tf.reduce_sum(shift * weights[0] + log_scale * weights[1])

    objective()
    variables = [network.kernels[1], network.kernel_gains[1]]
    with tf.GradientTape() as tape:
        value = objective()
    gradients = tape.gradient(value, variables)
    step = 1e-6
    for variable, gradient in zip(variables, gradients):
        flat = variable.numpy().ravel()
        for position in (0, flat.size // 2, flat.size - 1):
            shifted = []
            for sign in (1, -1):
                perturbed = flat.copy()
                perturbed[position] += sign * step
                variable.assign(perturbed.reshape(variable.shape))
                shifted.append(objective().numpy())
            variable.assign(flat.reshape(variable.shape))
            numerical = (shifted[0] - shifted[1]) / (2 * step)
            np.testing.assert_allclose(
                gradient.numpy().ravel()[position], numerical, rtol=1e-6, atol=1e-9
            )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(z_channels=0), "z_channels"),
        (dict(hidden_channels=0), "hidden_channels"),
        (dict(num_hidden_layers=0), "num_hidden_layers"),
        (dict(kernel_size=2), "kernel_size"),
        (dict(ordering="columns"), "ordering"),
    ],
)
def test_network_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AutoregressiveConvNetwork(**(dict(z_channels=Z) | kwargs))


def test_network_bad_input_shapes_raise():
    z, context = random_inputs()
    with pytest.raises(ValueError, match="Expected `z` of shape"):
        make_network(z_channels=Z + 1)(z, context)
    with pytest.raises(ValueError, match="Expected `context` of shape"):
        make_network()(z, context[0])


# -------------------------------------------------------------------- flow


def test_forward_then_its_log_det_run_the_network_once():
    counting = CountingNetwork(make_network())
    z0, context = random_inputs()
    flow = InverseAutoregressiveFlow(counting, context)
    z = flow.forward(z0)
    log_det = flow.forward_log_det_jacobian(z0, event_ndims=3)
    flow.forward_log_det_jacobian(z0, event_ndims=3)
    assert counting.calls == 1
    shift, log_scale = counting.network(z0, context)
    np.testing.assert_allclose(z.numpy(), ((z0 - shift) * tf.exp(-log_scale)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(
        log_det.numpy(), -tf.reduce_sum(log_scale, axis=[1, 2, 3]).numpy(), rtol=1e-12
    )


def test_log_det_alone_runs_the_network_once():
    counting = CountingNetwork(make_network())
    z0, context = random_inputs()
    log_det = InverseAutoregressiveFlow(counting, context).forward_log_det_jacobian(z0, 3)
    assert counting.calls == 1
    _, log_scale = counting.network(z0, context)
    np.testing.assert_allclose(
        log_det.numpy(), -tf.reduce_sum(log_scale, axis=[1, 2, 3]).numpy(), rtol=1e-12
    )


def test_inverse_and_its_log_det_share_the_fixed_point_passes():
    network = make_network()
    z0, context = random_inputs()
    z = tf.constant(InverseAutoregressiveFlow(network, context).forward(z0).numpy())
    counting = CountingNetwork(network)
    flow = InverseAutoregressiveFlow(counting, context)
    flow.inverse(z)
    passes = counting.calls
    # More than the channels (order across pixels), at most one per coordinate.
    assert Z < passes <= EVENT_SIZE
    flow.inverse_log_det_jacobian(z, event_ndims=3)
    assert counting.calls == passes


def test_training_step_runs_each_iaf_network_once(monkeypatch):
    num_layers = 3
    model = tiny_sdn_vae(num_layers=num_layers)
    model.compile()
    images = np.random.default_rng(0).integers(0, 256, size=(2, 4, 4, 3))
    model(images)  # builds the model
    calls = []
    network_call = AutoregressiveConvNetwork.call

    def counting_call(network, z, context):
        calls.append(network.path)
        return network_call(network, z, context)

    monkeypatch.setattr(AutoregressiveConvNetwork, "call", counting_call)
    model.train_step(images)
    assert len(calls) == num_layers
    assert len(set(calls)) == num_layers  # one call for each stochastic layer


def test_jacobian_is_lower_triangular_in_raster_then_channel_order():
    network = make_network()
    z0, context = random_inputs()
    jacobian = flow_jacobian(network, z0, context)
    assert np.all(np.triu(jacobian, k=1) == 0)
    _, log_scale = network(z0[:1], context[:1])
    np.testing.assert_allclose(np.diag(jacobian), np.exp(-log_scale.numpy()).ravel(), rtol=1e-12)
    # Outputs depend on earlier pixels too, not only on earlier channels of their own pixel.
    by_pixel = jacobian.reshape(HEIGHT * WIDTH, Z, HEIGHT * WIDTH, Z)
    assert np.all(by_pixel[1, :, 0, :] != 0)


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


@pytest.mark.parametrize("compiled", [False, True])
def test_inverse_is_exact(compiled):
    network = make_network()
    z0, context = random_inputs()

    # A new bijector for every call: TFP's cache would otherwise return the
    # input of a previous call instead of computing.
    def forward(x):
        return InverseAutoregressiveFlow(network, context).forward(x)

    def inverse(x):
        return InverseAutoregressiveFlow(network, context).inverse(x)

    def inverse_log_det(x):
        return InverseAutoregressiveFlow(network, context).inverse_log_det_jacobian(x, 3)

    if compiled:
        inverse, inverse_log_det = tf.function(inverse), tf.function(inverse_log_det)
    z = forward(z0)
    np.testing.assert_allclose(inverse(z).numpy(), z0.numpy(), atol=1e-10)
    np.testing.assert_allclose(forward(inverse(z0)).numpy(), z0.numpy(), atol=1e-10)
    np.testing.assert_allclose(
        inverse_log_det(z).numpy(),
        -InverseAutoregressiveFlow(network, context).forward_log_det_jacobian(z0, 3).numpy(),
        rtol=1e-10,
    )


def test_posterior_density_matches_transformed_distribution():
    z0, context = random_inputs()
    rng = np.random.default_rng(2)
    gaussian = diagonal_gaussian(rng.normal(size=z0.shape), rng.normal(size=z0.shape) * 0.3)
    network = make_network()
    flow = InverseAutoregressiveFlow(network, context)
    log_q = gaussian.log_prob(z0) - flow.forward_log_det_jacobian(z0, event_ndims=3)
    # A second bijector, so that log_prob inverts z instead of finding z0 in the cache.
    transformed = tfp.distributions.TransformedDistribution(
        gaussian, InverseAutoregressiveFlow(network, context)
    )
    z = tf.constant(flow.forward(z0).numpy())
    np.testing.assert_allclose(transformed.log_prob(z).numpy(), log_q.numpy(), rtol=1e-10)


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


@pytest.mark.parametrize("weight_normalization", [False, True])
def test_mixed_precision_network_keeps_latent_dtype(weight_normalization):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        network = AutoregressiveConvNetwork(
            Z, hidden_channels=8, weight_normalization=weight_normalization
        )
    finally:
        keras.config.set_dtype_policy(previous)
    z0, context = (tf.cast(t, tf.float32) for t in random_inputs())
    flow = InverseAutoregressiveFlow(network, tf.cast(context, tf.float16))
    z = flow.forward(z0)
    assert z.dtype == tf.float32 and np.isfinite(z.numpy()).all()
    assert flow.forward_log_det_jacobian(z0, event_ndims=3).dtype == tf.float32
    assert all(gain.dtype == "float32" for gain in network.kernel_gains)


def test_flow_rejects_non_callable_network():
    with pytest.raises(ValueError, match="network"):
        InverseAutoregressiveFlow("not a network", tf.zeros([1, 2, 2, 3]))


def test_without_tfps_attribute_cache_the_flow_keeps_tfps_default_cache(monkeypatch):
    # As if a TFP release had moved its private cache module.
    monkeypatch.setitem(sys.modules, "tensorflow_probability.python.internal.cache_util", None)
    with pytest.warns(UserWarning, match="TFP's default bijector cache is used"):
        assert bijector_cache_with_attributes("_augmented_forward", "_augmented_inverse") is None
    # What the class is then: no cache of its own, the default one it inherits.
    monkeypatch.delattr(InverseAutoregressiveFlow, "_cache")
    counting = CountingNetwork(make_network())
    z0, context = random_inputs()
    flow = InverseAutoregressiveFlow(counting, context)
    z = flow.forward(z0)
    log_det = flow.forward_log_det_jacobian(z0, event_ndims=3)
    assert counting.calls == 2  # the log-determinant runs the network again
    shift, log_scale = counting.network(z0, context)
    np.testing.assert_allclose(z.numpy(), ((z0 - shift) * tf.exp(-log_scale)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(
        log_det.numpy(), -tf.reduce_sum(log_scale, axis=[1, 2, 3]).numpy(), rtol=1e-12
    )
    np.testing.assert_allclose(flow.inverse(z).numpy(), z0.numpy(), rtol=1e-9, atol=1e-9)
