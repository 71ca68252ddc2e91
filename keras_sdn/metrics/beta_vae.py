"""The beta-VAE disentanglement metric (Higgins et al., 2017)."""

import numpy as np

from keras_sdn.metrics.logistic_regression import LogisticRegression
from keras_sdn.metrics.representations import check_counts
from keras_sdn.metrics.representations import encode_factors


def beta_vae_score(
    encode_fn,
    ground_truth,
    seed=0,
    batch_size=64,
    num_train=10_000,
    num_eval=5_000,
    encode_batch_size=256,
):
    """The beta-VAE metric: how well a linear classifier finds the fixed factor.

    Each training point fixes one factor k, chosen uniformly, in two batches
    of `batch_size` otherwise independent factor vectors; its feature is the
    mean absolute difference between the two batches' codes, its label k. The
    score is the accuracy of a logistic regression (scikit-learn defaults) on
    `num_eval` fresh points. This is disentanglement_lib's `beta_vae_sklearn`
    with its default settings; chance level is `1 / num_factors`.

    Args:
        encode_fn: maps a batch of observations to latent means `(batch, d)`.
        ground_truth: a `keras_sdn.data.GroundTruthData`.
        seed: int or `numpy.random.Generator`; a seed gives the same score.
        batch_size: pairs of observations averaged per point.
        num_train: training points of the classifier.
        num_eval: evaluation points.
        encode_batch_size: observations passed to `encode_fn` at once.

    Returns:
        dict with "beta_vae_score" (the evaluation accuracy, in [0, 1]),
        "train_accuracy" and "eval_accuracy".

    Example:

    >>> scores = beta_vae_score(model.encode, SyntheticShapes(), num_train=1000, num_eval=500)
    >>> scores["beta_vae_score"]
    """
    check_counts(
        batch_size=batch_size,
        num_train=num_train,
        num_eval=num_eval,
        encode_batch_size=encode_batch_size,
    )
    rng = np.random.default_rng(seed)

    def points(num_points):
        return _beta_vae_points(
            encode_fn, ground_truth, num_points, batch_size, rng, encode_batch_size
        )

    train_features, train_labels = points(num_train)
    eval_features, eval_labels = points(num_eval)
    classifier = LogisticRegression().fit(train_features, train_labels)
    train_accuracy = float(np.mean(classifier.predict(train_features) == train_labels))
    eval_accuracy = float(np.mean(classifier.predict(eval_features) == eval_labels))
    return {
        "beta_vae_score": eval_accuracy,
        "train_accuracy": train_accuracy,
        "eval_accuracy": eval_accuracy,
    }


def _beta_vae_points(encode_fn, ground_truth, num_points, batch_size, rng, encode_batch_size):
    """Features `(num_points, d)` and labels `(num_points,)` of the metric."""
    num_factors = ground_truth.num_factors
    labels = rng.integers(num_factors, size=num_points)
    shape = (num_points, batch_size, num_factors)
    first = ground_truth.sample_factors(num_points * batch_size, rng).reshape(shape)
    second = ground_truth.sample_factors(num_points * batch_size, rng).reshape(shape)
    fixed = np.arange(num_factors) == labels[:, None, None]
    second = np.where(fixed, first, second)
    codes = encode_factors(encode_fn, ground_truth, np.stack([first, second]), encode_batch_size)
    return np.mean(np.abs(codes[0] - codes[1]), axis=1), labels
