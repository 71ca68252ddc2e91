"""Tests for keras_sdn.distributions.DiscretizedLogisticMixture."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import special
from scipy import stats

from keras_sdn.distributions import DiscretizedLogisticMixture


def random_params(rng, shape, num_mixtures, channels, log_scale_range=(-3.0, 0.0)):
    """Params (*shape, P) with moderate means, scales and coefficients."""
    k, c = num_mixtures, channels
    logits = rng.normal(size=shape + (k,))
    means = rng.uniform(-1.2, 1.2, size=shape + (k * c,))
    log_scales = rng.uniform(*log_scale_range, size=shape + (k * c,))
    coefficients = rng.normal(size=shape + (k * c * (c - 1) // 2,))
    return np.concatenate([logits, means, log_scales, coefficients], axis=-1)


def log_mass_between(upper, lower):
    """log(sigmoid(upper) - sigmoid(lower)) in float64, via the tail farther from 0."""
    if lower > 0:
        upper, lower = -lower, -upper
    return special.log_expit(upper) + np.log1p(
        -np.exp(special.log_expit(lower) - special.log_expit(upper))
    )


def reference_pixel_log_prob(pixel_params, value, channels, num_bits):
    """PixelCNN++ log-likelihood of one pixel, on the [-1, 1] scale (Salimans et al.)."""
    c = channels
    k = len(pixel_params) // (1 + 2 * c + c * (c - 1) // 2)
    bins = 2.0**num_bits - 1.0
    logits = pixel_params[:k]
    means = pixel_params[k : k + k * c].reshape(k, c)
    log_scales = np.maximum(pixel_params[k + k * c : k + 2 * k * c].reshape(k, c), -7.0)
    coefficients = np.tanh(pixel_params[k + 2 * k * c :].reshape(k, c * (c - 1) // 2))
    x = 2.0 * np.asarray(value, np.float64) / bins - 1.0
    component_log_probs = []
    for m in range(k):
        total, index = 0.0, 0
        for channel in range(c):
            mean = means[m, channel]
            for earlier in range(channel):
                mean += coefficients[m, index] * x[earlier]
                index += 1
            inverse_scale = np.exp(-log_scales[m, channel])
            centred = x[channel] - mean
            upper = np.inf if value[channel] == bins else (centred + 1.0 / bins) * inverse_scale
            lower = -np.inf if value[channel] == 0 else (centred - 1.0 / bins) * inverse_scale
            total += log_mass_between(upper, lower)
        component_log_probs.append(total)
    return special.logsumexp(special.log_softmax(logits) + np.array(component_log_probs))


def reference_log_prob(params, images, channels, num_bits):
    """Sum over the pixels of each image; params (B, H, W, P), images (B, H, W, C)."""
    batch, height, width = images.shape[:3]
    result = np.zeros(batch)
    for b, i, j in itertools.product(range(batch), range(height), range(width)):
        result[b] += reference_pixel_log_prob(params[b, i, j], images[b, i, j], channels, num_bits)
    return result


def reference_mode(pixel_params, channels, num_bits):
    """Rounded, clipped coupled means of the most probable component of one pixel."""
    c = channels
    k = len(pixel_params) // (1 + 2 * c + c * (c - 1) // 2)
    bins = 2.0**num_bits - 1.0
    best = np.argmax(pixel_params[:k])
    means = pixel_params[k : k + k * c].reshape(k, c)[best]
    coefficients = np.tanh(pixel_params[k + 2 * k * c :].reshape(k, -1)[best])
    values, index = [], 0
    for channel in range(c):
        mean = means[channel]
        for earlier in range(channel):
            mean += coefficients[index] * (2.0 * values[earlier] / bins - 1.0)
            index += 1
        values.append(np.clip(np.round((mean + 1.0) * bins / 2.0), 0, bins))
    return np.array(values)


def all_values(channels, num_bits):
    """Every image of one pixel: (V**channels, 1, 1, channels)."""
    grid = itertools.product(range(2**num_bits), repeat=channels)
    return np.array(list(grid)).reshape(-1, 1, 1, channels)


@pytest.mark.parametrize(
    "num_mixtures, channels, expected", [(1, 1, 3), (10, 1, 30), (1, 3, 10), (10, 3, 100)]
)
def test_params_size(num_mixtures, channels, expected):
    assert DiscretizedLogisticMixture.params_size(num_mixtures, channels) == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(channels=0), "channels"),
        (dict(channels=3), "multiple of 10"),
        (dict(num_bits=9), "num_bits"),
        (dict(num_bits=0), "num_bits"),
        (dict(temperature=0.0), "temperature"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    arguments = dict(params=np.zeros((1, 2, 2, 6), np.float32), channels=1) | kwargs
    with pytest.raises(ValueError, match=message):
        DiscretizedLogisticMixture(**arguments)


def test_shapes_and_dtypes():
    rng = np.random.default_rng(0)
    params = random_params(rng, (2, 3, 4, 5), num_mixtures=2, channels=3).astype(np.float32)
    distribution = DiscretizedLogisticMixture(params, channels=3, num_bits=5)
    assert distribution.batch_shape == (2, 3)
    assert distribution.event_shape == (4, 5, 3)
    assert list(distribution.batch_shape_tensor().numpy()) == [2, 3]
    assert list(distribution.event_shape_tensor().numpy()) == [4, 5, 3]
    samples = distribution.sample(7, seed=1)
    assert samples.shape == (7, 2, 3, 4, 5, 3) and samples.dtype == tf.int32
    assert 0 <= samples.numpy().min() and samples.numpy().max() <= 31
    log_prob = distribution.log_prob(samples)
    assert log_prob.shape == (7, 2, 3) and log_prob.dtype == tf.float32
    mode = distribution.mode()
    assert mode.shape == (2, 3, 4, 5, 3) and mode.dtype == tf.int32


@pytest.mark.parametrize(
    "channels, num_bits, num_mixtures", [(1, 8, 1), (1, 8, 4), (3, 4, 1), (3, 4, 3)]
)
def test_probabilities_sum_to_one(channels, num_bits, num_mixtures):
    rng = np.random.default_rng(1)
    params = random_params(rng, (6, 1, 1), num_mixtures, channels, log_scale_range=(-7.5, 1.0))
    params[0, ..., num_mixtures : num_mixtures * (1 + channels)] = 3.0  # mass in the top tail
    params[1, ..., num_mixtures : num_mixtures * (1 + channels)] = -3.0  # in the bottom tail
    distribution = DiscretizedLogisticMixture(params.astype(np.float32), channels, num_bits)
    values = all_values(channels, num_bits)[:, np.newaxis]  # (V, 1, 1, 1, C), broadcast over 6
    probabilities = np.exp(distribution.log_prob(values).numpy().astype(np.float64))
    np.testing.assert_allclose(probabilities.sum(axis=0), np.ones(6), atol=1e-5)


@pytest.mark.parametrize(
    "channels, num_bits, num_mixtures", [(1, 8, 1), (1, 1, 3), (3, 5, 1), (3, 8, 5)]
)
def test_log_prob_matches_numpy_reference(channels, num_bits, num_mixtures):
    rng = np.random.default_rng(2)
    params = random_params(rng, (3, 3, 2), num_mixtures, channels)
    images = rng.integers(0, 2**num_bits, size=(3, 3, 2, channels))
    images[0, 0, 0] = 0
    images[0, 0, 1] = 2**num_bits - 1
    expected = reference_log_prob(params, images, channels, num_bits)

    exact = DiscretizedLogisticMixture(params, channels, num_bits).log_prob(images)
    assert exact.dtype == tf.float64
    np.testing.assert_allclose(exact.numpy(), expected, rtol=1e-10)

    single = DiscretizedLogisticMixture(params.astype(np.float32), channels, num_bits)
    np.testing.assert_allclose(
        single.log_prob(images.astype(np.uint8)).numpy(), expected, rtol=1e-5, atol=1e-4
    )


def test_temperature_scales_the_logistic_scales():
    rng = np.random.default_rng(3)
    params = random_params(rng, (2, 2, 2), num_mixtures=2, channels=3)
    images = rng.integers(0, 32, size=(2, 2, 2, 3))
    tempered = DiscretizedLogisticMixture(params, 3, num_bits=5, temperature=0.5)
    shifted = params.copy()
    shifted[..., 2 + 6 : 2 + 12] += np.log(0.5)
    expected = reference_log_prob(shifted, images, 3, 5)
    np.testing.assert_allclose(tempered.log_prob(images).numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_sample_frequencies_match_probabilities(temperature):
    rng = np.random.default_rng(4)
    channels, num_bits, num_samples = 3, 2, 20000
    params = random_params(
        rng, (1, 1), num_mixtures=3, channels=channels, log_scale_range=(-1.5, -0.5)
    )
    distribution = DiscretizedLogisticMixture(
        params.astype(np.float32), channels, num_bits, temperature=temperature
    )
    values = all_values(channels, num_bits)
    probabilities = np.exp(distribution.log_prob(values).numpy().astype(np.float64))
    samples = distribution.sample(num_samples, seed=5).numpy().reshape(num_samples, channels)
    codes = samples @ (2**num_bits) ** np.arange(channels)[::-1]
    observed = np.bincount(codes, minlength=len(values))
    expected = probabilities / probabilities.sum() * num_samples
    # Pool the rare outcomes so that every chi-square cell expects >= 5 samples.
    rare = expected < 5
    if rare.any():
        observed = np.append(observed[~rare], observed[rare].sum())
        expected = np.append(expected[~rare], expected[rare].sum())
    _, p_value = stats.chisquare(observed, expected)
    assert p_value > 1e-3


@pytest.mark.parametrize("channels, num_bits", [(1, 8), (3, 5)])
def test_mode_is_rounded_coupled_mean_of_most_probable_component(channels, num_bits):
    rng = np.random.default_rng(6)
    params = random_params(rng, (2, 3, 3), num_mixtures=4, channels=channels)
    params[0, 0, 0, 4 : 4 + 4 * channels] = 5.0  # clipped to the top value
    mode = DiscretizedLogisticMixture(params, channels, num_bits).mode().numpy()
    for b, i, j in itertools.product(range(2), range(3), range(3)):
        np.testing.assert_array_equal(
            mode[b, i, j], reference_mode(params[b, i, j], channels, num_bits)
        )


def test_mode_is_most_probable_value_of_a_single_narrow_logistic():
    rng = np.random.default_rng(7)
    params = random_params(rng, (5, 1, 1), num_mixtures=1, channels=1, log_scale_range=(-5.0, -3.0))
    distribution = DiscretizedLogisticMixture(params, channels=1, num_bits=8)
    log_probs = distribution.log_prob(all_values(1, 8)[:, np.newaxis]).numpy()
    np.testing.assert_array_equal(
        distribution.mode().numpy().reshape(5), np.argmax(log_probs, axis=0)
    )


@pytest.mark.parametrize("channels", [1, 3])
def test_gradients_finite_for_extreme_parameters_and_edge_pixels(channels):
    num_mixtures, num_bits = 2, 8
    k, c = num_mixtures, channels
    size = DiscretizedLogisticMixture.params_size(k, c)
    settings = []  # (logit, mean, log_scale, coefficient)
    for logit, mean, log_scale, coefficient in itertools.product(
        [-1e4, 1e4], [-50.0, 0.0, 50.0], [-30.0, 0.0, 20.0], [-1e3, 1e3]
    ):
        row = np.zeros(size)
        row[0] = logit
        row[k : k + k * c] = mean
        row[k + k * c : k + 2 * k * c] = log_scale
        row[k + 2 * k * c :] = coefficient
        settings.append(row)
    params = np.array(settings, np.float32)[:, np.newaxis, np.newaxis]  # (N, 1, 1, P)
    edges = np.array([0, 1, 2**num_bits - 2, 2**num_bits - 1])
    images = np.stack(np.meshgrid(*[edges] * c, indexing="ij"), -1).reshape(-1, 1, 1, 1, c)
    variable = tf.Variable(params)
    with tf.GradientTape() as tape:
        log_prob = DiscretizedLogisticMixture(variable, c, num_bits).log_prob(images)
    gradient = tape.gradient(log_prob, variable)
    assert np.isfinite(log_prob.numpy()).all()
    assert np.isfinite(gradient.numpy()).all()


def test_wide_logistic_keeps_exact_likelihood_in_float32():
    # One bin out of a logistic of scale 127.5 * e**12 on the value scale: TFP's
    # CDF difference cancels to 0 in float32 here.
    params = np.array([[[[0.0, 0.0, 12.0]]]], np.float32)
    log_prob = DiscretizedLogisticMixture(params, 1, 8).log_prob(np.array([[[[128]]]]))
    expected = reference_log_prob(params.astype(np.float64), np.array([[[[128]]]]), 1, 8)
    np.testing.assert_allclose(log_prob.numpy(), expected, rtol=1e-6)


def test_validate_args_rejects_out_of_range_values():
    params = np.zeros((1, 1, 1, 3), np.float32)
    distribution = DiscretizedLogisticMixture(params, 1, num_bits=3, validate_args=True)
    assert np.isfinite(distribution.log_prob(np.full((1, 1, 1, 1), 7)).numpy()).all()
    message = r"Expected `x` to be <= 2\*\*num_bits - 1 = 7, with num_bits=3\. Received: x"
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        distribution.log_prob(np.full((1, 1, 1, 1), 8))


def test_float32_computation_under_mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = keras.layers.Conv2D(DiscretizedLogisticMixture.params_size(3, 3), 1)
        params = layer(np.random.default_rng(8).normal(size=(2, 4, 4, 5)).astype(np.float32))
    finally:
        keras.config.set_dtype_policy(previous)
    assert params.dtype == tf.float16
    images = np.random.default_rng(9).integers(0, 256, size=(2, 4, 4, 3)).astype(np.uint8)
    distribution = DiscretizedLogisticMixture(params, channels=3)
    log_prob = distribution.log_prob(images)
    assert log_prob.dtype == tf.float32
    expected = reference_log_prob(params.numpy().astype(np.float64), images, 3, 8)
    np.testing.assert_allclose(log_prob.numpy(), expected, rtol=1e-5)
    assert distribution.sample(seed=0).dtype == tf.int32


@pytest.mark.parametrize(
    "index, batch_shape",
    [(0, (2,)), (-1, (2,)), (slice(None, 2), (2, 2)), ((1, slice(1, None)), (1,)), ((2, 0), ())],
)
def test_batch_slicing(index, batch_shape):
    rng = np.random.default_rng(5)
    params = random_params(rng, (3, 2, 2, 3), num_mixtures=2, channels=3)  # batch (3, 2)
    images = rng.integers(0, 2**5, (3, 2, 2, 3, 3))
    full = DiscretizedLogisticMixture(params, channels=3, num_bits=5)
    sliced = full[index]
    assert sliced.batch_shape == batch_shape
    assert sliced.event_shape == (2, 3, 3)
    assert tuple(sliced.batch_shape_tensor().numpy()) == batch_shape
    assert sliced.sample(seed=(1, 2)).shape == batch_shape + (2, 3, 3)
    log_prob = sliced.log_prob(images[index]).numpy()
    flat_params = params[index].reshape((-1, 2, 3, params.shape[-1]))
    flat_images = images[index].reshape((-1, 2, 3, 3))
    expected = reference_log_prob(flat_params, flat_images, channels=3, num_bits=5)
    np.testing.assert_allclose(log_prob, expected.reshape(batch_shape), rtol=1e-10)
    np.testing.assert_allclose(log_prob, full.log_prob(images).numpy()[index], rtol=1e-12)


def test_batch_slicing_keeps_the_temperature_and_bit_depth():
    rng = np.random.default_rng(6)
    params = random_params(rng, (3, 2, 2), num_mixtures=2, channels=1).astype(np.float32)
    images = rng.integers(0, 2**4, (3, 2, 2, 1))
    full = DiscretizedLogisticMixture(params, channels=1, num_bits=4, temperature=0.7)
    sliced = full[:2]
    rebuilt = DiscretizedLogisticMixture(params[:2], channels=1, num_bits=4, temperature=0.7)
    assert (sliced.num_bits, sliced.channels) == (4, 1)
    assert sliced.temperature.numpy() == np.float32(0.7)
    np.testing.assert_array_equal(sliced.log_prob(images[:2]), rebuilt.log_prob(images[:2]))
