"""The mutual information gap (Chen et al., 2018)."""

import numpy as np

from keras_sdn._checks import check_int
from keras_sdn.metrics.representations import encode_factors


def histogram_discretize(codes, num_bins):
    """Bins each column of `codes` `(n, d)` into `num_bins` equal-width bins.

    Returns:
        int array `(n, d)` of bin indices in [1, num_bins], as
        `np.digitize(column, np.histogram(column, num_bins)[1][:-1])`.
    """
    codes = np.asarray(codes, np.float64)
    bins = np.empty(codes.shape, np.int64)
    for dim, column in enumerate(codes.T):
        bins[:, dim] = np.digitize(column, np.histogram_bin_edges(column, num_bins)[:-1])
    return bins


def discrete_mutual_information(a, b):
    """Mutual information in nats between two integer sequences of equal length."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= len(a)
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    return float(np.sum(joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])))


def mig_score(
    encode_fn, ground_truth, seed=0, num_train=10_000, num_bins=20, encode_batch_size=256
):
    """The mutual information gap between latent dimensions and factors.

    Codes of `num_train` random observations are discretised per dimension
    into `num_bins` equal-width bins. For each factor, the gap between the
    largest and second largest mutual information with a latent dimension is
    divided by the factor's entropy; the score averages the gaps over factors.
    This is disentanglement_lib's `mig` with its default settings (histogram
    discretiser, 20 bins). Chance level is about 0.

    Args:
        encode_fn: maps a batch of observations to latent means `(batch, d)`.
        ground_truth: a `keras_sdn.data.GroundTruthData` whose factors all
            take at least two values.
        seed: int or `numpy.random.Generator`; a seed gives the same score.
        num_train: observations used.
        num_bins: bins of the discretisation of each latent dimension.
        encode_batch_size: observations passed to `encode_fn` at once.

    Returns:
        dict with "mig_score" (in [0, 1]) and "mig_per_factor" (a list).

    Example:

    >>> mig_score(model.encode, SyntheticShapes(), num_train=2000)["mig_score"]
    """
    check_int("num_train", num_train, 2)
    check_int("num_bins", num_bins, 1)
    check_int("encode_batch_size", encode_batch_size, 1)
    if min(ground_truth.factor_sizes) < 2:
        raise ValueError(
            "Expected `ground_truth` factors that take at least 2 values each. "
            f"Received: factor_sizes={ground_truth.factor_sizes}"
        )
    rng = np.random.default_rng(seed)
    factors = ground_truth.sample_factors(num_train, rng)
    codes = encode_factors(encode_fn, ground_truth, factors, encode_batch_size)
    bins = histogram_discretize(codes, num_bins)
    information = np.array(
        [[discrete_mutual_information(code, factor) for factor in factors.T] for code in bins.T]
    )  # (latent dims, factors)
    entropies = np.array([discrete_mutual_information(factor, factor) for factor in factors.T])
    # With a single latent dimension the runner-up carries no information.
    padded = np.concatenate([information, np.zeros_like(information[:1])])
    largest, runner_up = -np.sort(-padded, axis=0)[:2]
    gaps = (largest - runner_up) / entropies
    return {"mig_score": float(np.mean(gaps)), "mig_per_factor": gaps.tolist()}
