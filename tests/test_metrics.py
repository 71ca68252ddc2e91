"""Tests of the disentanglement metrics and their logistic regression."""

import numpy as np
import pytest
import scipy.optimize

from keras_sdn.data import GroundTruthData
from keras_sdn.data import SyntheticShapes
from keras_sdn.metrics import LogisticRegression
from keras_sdn.metrics import beta_vae_score
from keras_sdn.metrics import factor_vae_score
from keras_sdn.metrics import mig_score
from keras_sdn.metrics.mig import discrete_mutual_information
from keras_sdn.metrics.mig import histogram_discretize


class FactorObservations(GroundTruthData):
    """Ground truth whose observations are the factors themselves."""

    def __init__(self, factor_sizes=(10, 10, 10, 8, 4, 15)):
        self._factor_sizes = tuple(factor_sizes)

    @property
    def factor_sizes(self):
        return self._factor_sizes

    def render(self, factors):
        return self.check_factors(factors).astype(np.float32)


GROUND_TRUTH = FactorObservations()
CHANCE = 1.0 / GROUND_TRUTH.num_factors
SMALL = {
    beta_vae_score: dict(batch_size=32, num_train=400, num_eval=300),
    factor_vae_score: dict(batch_size=32, num_train=400, num_eval=300, num_variance_estimate=2000),
    mig_score: dict(num_train=3000),
}
METRICS = list(SMALL)


def _score(metric, encode_fn, seed=0, ground_truth=GROUND_TRUTH, **overrides):
    return metric(encode_fn, ground_truth, seed=seed, **{**SMALL[metric], **overrides})


def permuting_encoder(permutation=(3, 0, 5, 1, 4, 2), scales=(0.5, -2.0, 3.0, 0.2, -1.0, 40.0)):
    return lambda observations: np.asarray(observations)[:, permutation] * np.array(scales) + 1.0


def noise_encoder(seed=0, num_latents=8):
    rng = np.random.default_rng(seed)
    return lambda observations: rng.normal(size=(len(observations), num_latents))


@pytest.mark.parametrize("metric", METRICS)
def test_permuted_rescaled_factors_score_close_to_one(metric):
    scores = _score(metric, permuting_encoder())
    assert scores[metric.__name__] > 0.98
    assert all(isinstance(value, (float, int, list)) for value in scores.values())


@pytest.mark.parametrize("metric", METRICS)
def test_noise_scores_near_chance(metric):
    score = _score(metric, noise_encoder())[metric.__name__]
    if metric is mig_score:
        assert 0.0 <= score < 0.05
    else:
        assert abs(score - CHANCE) < 0.08


@pytest.mark.parametrize("metric", METRICS)
def test_same_seed_same_score(metric):
    first = _score(metric, noise_encoder(), seed=5)
    assert first == _score(metric, noise_encoder(), seed=5)
    assert first != _score(metric, noise_encoder(), seed=6)
    rng = np.random.default_rng(5)
    assert _score(metric, noise_encoder(), seed=rng) == first  # a Generator seeds too


def test_factor_vae_normalises_variances_and_prunes_collapsed_dims():
    noise = np.random.default_rng(0)

    def encoder(observations):
        # Very unequal scales: without the normalisation by the global
        # variance the small-scale dimensions would always have the least
        # variance; constant dimensions must be pruned.
        latents = (np.asarray(observations) + noise.normal(0, 0.2, observations.shape)) * np.array(
            [1e3, 1e-1, 1.0, 1e2, 3.0, 1e-1]
        )
        return np.concatenate([latents, np.zeros((len(latents), 2)) + 7.0], axis=1)

    scores = _score(factor_vae_score, encoder)
    assert scores["num_active_dims"] == 6
    assert scores["factor_vae_score"] > 0.95
    collapsed = _score(factor_vae_score, lambda x: np.zeros((len(x), 3)))
    assert collapsed["factor_vae_score"] == 0.0 and collapsed["num_active_dims"] == 0


def test_metrics_work_on_synthetic_images():
    shapes = SyntheticShapes(image_size=8)

    # The mean colour of the whole image mixes all factors: far from perfect,
    # but above chance for the beta-VAE metric.
    def mean_colour(images):
        return images.reshape(len(images), -1, 3).mean(axis=1)

    score = beta_vae_score(mean_colour, shapes, batch_size=16, num_train=200, num_eval=100)
    assert CHANCE + 0.1 < score["beta_vae_score"] < 0.98


def test_bad_encoder_output_and_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="encode_fn"):
        _score(mig_score, lambda x: np.zeros(len(x)))
    with pytest.raises(ValueError, match="encode_fn"):
        _score(beta_vae_score, lambda x: np.zeros((1, 3)))
    with pytest.raises(ValueError, match="num_train"):
        _score(beta_vae_score, permuting_encoder(), num_train=0)
    with pytest.raises(ValueError, match="batch_size"):
        _score(factor_vae_score, permuting_encoder(), batch_size=1)
    with pytest.raises(ValueError, match="prune_threshold"):
        _score(factor_vae_score, permuting_encoder(), prune_threshold=-1.0)
    with pytest.raises(ValueError, match="ground_truth"):
        mig_score(permuting_encoder(), FactorObservations((1, 3, 3, 3, 3, 3)))


def test_mutual_information_and_discretisation_against_loops():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=500)
    b = (a + rng.integers(0, 3, size=500)) % 5
    reference = 0.0
    for x in set(a.tolist()):
        for y in set(b.tolist()):
            joint = np.mean((a == x) & (b == y))
            if joint > 0:
                reference += joint * np.log(joint / (np.mean(a == x) * np.mean(b == y)))
    np.testing.assert_allclose(discrete_mutual_information(a, b), reference, rtol=1e-12)
    entropy = -sum(np.mean(a == x) * np.log(np.mean(a == x)) for x in set(a.tolist()))
    np.testing.assert_allclose(discrete_mutual_information(a, a), entropy, rtol=1e-12)

    codes = rng.normal(size=(300, 2)) * [1.0, 50.0]
    bins = histogram_discretize(codes, num_bins=7)
    for dim in range(2):
        low, high = codes[:, dim].min(), codes[:, dim].max()
        width = (high - low) / 7
        for value, index in zip(codes[:, dim], bins[:, dim]):
            assert index == min(int((value - low) // width) + 1, 7)


def _softmax(logits):
    logits = logits - np.max(logits, axis=1, keepdims=True)
    return np.exp(logits) / np.sum(np.exp(logits), axis=1, keepdims=True)


def test_logistic_regression_matches_a_scipy_reference():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 3)) * [1.0, 5.0, 0.2]
    classes = np.argmax(features @ rng.normal(size=(3, 4)) + rng.normal(size=(200, 4)), axis=1)
    labels = classes * 10  # arbitrary label values
    C = 0.5
    classifier = LogisticRegression(C=C).fit(features, labels)

    # scikit-learn's objective: C * negative log-likelihood + ||weights||^2 / 2,
    # with an unpenalised intercept (the last row of the coefficients).
    inputs = np.concatenate([features, np.ones((200, 1))], axis=1)

    def objective(flat):
        coefficients = flat.reshape(4, 4)
        log_probs = np.log(_softmax(inputs @ coefficients))
        return -C * np.sum(log_probs[np.arange(200), classes]) + 0.5 * np.sum(coefficients[:3] ** 2)

    reference = scipy.optimize.minimize(
        objective, np.zeros(16), method="BFGS", options={"gtol": 1e-9}
    )
    reference_probs = _softmax(inputs @ reference.x.reshape(4, 4))
    np.testing.assert_allclose(classifier.predict_proba(features), reference_probs, atol=1e-5)
    expected_labels = np.argmax(reference_probs, axis=1) * 10
    np.testing.assert_array_equal(classifier.predict(features), expected_labels)


def test_logistic_regression_separates_separable_data():
    features = np.array([[0.0, 1.0], [0.1, 1.2], [1.0, 0.0], [1.3, 0.1]]) * 1e-3
    labels = np.array([0, 0, 1, 1])
    assert np.array_equal(LogisticRegression().fit(features, labels).predict(features), labels)
