"""Tests for keras_sdn.distributions.diagonal_gaussian."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from keras_sdn.distributions import diagonal_gaussian


def test_log_prob_matches_scipy_with_temperature():
    rng = np.random.default_rng(0)
    loc, log_scale = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 4, 5))
    z = rng.normal(size=(2, 3, 4, 5))
    gaussian = diagonal_gaussian(loc, log_scale, temperature=0.7)
    assert gaussian.batch_shape == (2,) and gaussian.event_shape == (3, 4, 5)
    expected = stats.norm.logpdf(z, loc, np.exp(log_scale) * 0.7).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(gaussian.log_prob(z).numpy(), expected, rtol=1e-10)


def test_samples_have_tempered_moments():
    loc, log_scale = (
        np.full((1, 8, 8, 4), 2.0, np.float32),
        np.full((1, 8, 8, 4), np.log(3.0), np.float32),
    )
    samples = diagonal_gaussian(loc, log_scale, temperature=0.5).sample(200, seed=1).numpy()
    assert samples.shape == (200, 1, 8, 8, 4)
    np.testing.assert_allclose(samples.mean(), 2.0, atol=0.03)
    np.testing.assert_allclose(samples.std(), 1.5, rtol=0.02)


def test_half_precision_inputs_are_computed_in_float32():
    gaussian = diagonal_gaussian(
        tf.zeros([2, 2, 2, 3], tf.float16), tf.zeros([2, 2, 2, 3], tf.float16)
    )
    assert gaussian.dtype == tf.float32
    np.testing.assert_allclose(
        gaussian.log_prob(np.zeros([2, 2, 2, 3])).numpy(),
        np.full(2, 12 * stats.norm.logpdf(0.0)),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "loc, temperature, message",
    [(np.zeros((4, 3)), 1.0, "loc"), (np.zeros((1, 2, 2, 3)), 0.0, "temperature")],
)
def test_bad_arguments_raise(loc, temperature, message):
    with pytest.raises(ValueError, match=message):
        diagonal_gaussian(loc, np.zeros_like(loc), temperature)
