"""The FactorVAE disentanglement metric (Kim & Mnih, 2018)."""

import numpy as np

from keras_sdn._checks import check_int
from keras_sdn._checks import check_number
from keras_sdn.metrics.representations import check_counts
from keras_sdn.metrics.representations import encode_factors


def factor_vae_score(
    encode_fn,
    ground_truth,
    seed=0,
    batch_size=64,
    num_train=10_000,
    num_eval=5_000,
    num_variance_estimate=10_000,
    prune_threshold=0.05,
    encode_batch_size=256,
):
    """The FactorVAE metric: a majority-vote classifier on least-variance dims.

    Codes are divided by their standard deviation over `num_variance_estimate`
    random observations; dimensions whose standard deviation is below
    `prune_threshold` count as collapsed and are ignored. Each point fixes one
    factor k, chosen uniformly, in a batch of `batch_size` otherwise
    independent factor vectors and votes for (k, the active dimension of least
    normalised variance). Each dimension is classified as the factor with most
    training votes; the score is the accuracy of that classifier on `num_eval`
    fresh votes. This follows disentanglement_lib's `factor_vae_score` with
    its default settings (including `prune_dims.threshold = 0.05`).

    Args:
        encode_fn: maps a batch of observations to latent means `(batch, d)`.
        ground_truth: a `keras_sdn.data.GroundTruthData`.
        seed: int or `numpy.random.Generator`; a seed gives the same score.
        batch_size: observations per vote.
        num_train: training votes.
        num_eval: evaluation votes.
        num_variance_estimate: observations for the global variances.
        prune_threshold: the standard deviation below which a dimension is collapsed.
        encode_batch_size: observations passed to `encode_fn` at once.

    Returns:
        dict with "factor_vae_score" (the evaluation accuracy, in [0, 1]; 0 when
        every dimension is collapsed), "train_accuracy", "eval_accuracy" and
        "num_active_dims".

    Example:

    >>> scores = factor_vae_score(model.encode, SyntheticShapes(), num_train=1000, num_eval=500)
    >>> scores["factor_vae_score"]
    """
    check_counts(
        num_train=num_train,
        num_eval=num_eval,
        encode_batch_size=encode_batch_size,
    )
    check_int("batch_size", batch_size, 2)  # a variance
    check_int("num_variance_estimate", num_variance_estimate, 2)
    check_number("prune_threshold", prune_threshold, low=0)
    rng = np.random.default_rng(seed)

    factors = ground_truth.sample_factors(num_variance_estimate, rng)
    codes = encode_factors(encode_fn, ground_truth, factors, encode_batch_size)
    global_variances = np.var(codes, axis=0, ddof=1)
    active = np.sqrt(global_variances) >= prune_threshold
    if not np.any(active):
        return {
            "factor_vae_score": 0.0,
            "train_accuracy": 0.0,
            "eval_accuracy": 0.0,
            "num_active_dims": 0,
        }

    def votes(num_points):
        return _factor_vae_votes(
            encode_fn,
            ground_truth,
            num_points,
            batch_size,
            rng,
            global_variances[active],
            active,
            encode_batch_size,
        )

    train_votes = votes(num_train)
    eval_votes = votes(num_eval)
    dimension_factors = np.argmax(train_votes, axis=0)  # majority vote per dimension

    def accuracy(vote_counts):
        correct = vote_counts[dimension_factors, np.arange(vote_counts.shape[1])]
        return float(np.sum(correct) / np.sum(vote_counts))

    train_accuracy = accuracy(train_votes)
    eval_accuracy = accuracy(eval_votes)
    return {
        "factor_vae_score": eval_accuracy,
        "train_accuracy": train_accuracy,
        "eval_accuracy": eval_accuracy,
        "num_active_dims": int(np.sum(active)),
    }


def _factor_vae_votes(
    encode_fn,
    ground_truth,
    num_points,
    batch_size,
    rng,
    active_variances,
    active,
    encode_batch_size,
):
    """Votes `(num_factors, num_active_dims)`: how often fixing k left dim j least varied."""
    num_factors = ground_truth.num_factors
    labels = rng.integers(num_factors, size=num_points)
    factors = ground_truth.sample_factors(num_points * batch_size, rng)
    factors = factors.reshape(num_points, batch_size, num_factors)
    fixed = np.arange(num_factors) == labels[:, None, None]
    factors = np.where(fixed, factors[:, :1, :], factors)  # the batch's first value of factor k
    codes = encode_factors(encode_fn, ground_truth, factors, encode_batch_size)
    local_variances = np.var(codes[..., active], axis=1, ddof=1)
    least_varied = np.argmin(local_variances / active_variances, axis=1)
    votes = np.zeros((num_factors, int(np.sum(active))), np.int64)
    np.add.at(votes, (labels, least_varied), 1)
    return votes
