"""Sampling and encoding ground-truth data for the disentanglement metrics."""

import numpy as np

from keras_sdn._checks import check_int


def check_counts(**counts):
    """`check_int(argument, value, 1)` for each keyword argument."""
    for argument, value in counts.items():
        check_int(argument, value, 1)


def encode_factors(encode_fn, ground_truth, factors, batch_size):
    """Renders `factors` `(..., num_factors)` and encodes them in batches.

    Args:
        encode_fn: maps a batch of observations to latent means `(batch, d)`.
        ground_truth: a `keras_sdn.data.GroundTruthData`.
        factors: int array of shape `(..., num_factors)`.
        batch_size: observations rendered and encoded at once.

    Returns:
        float64 codes of shape `(..., d)`.
    """
    factors = np.asarray(factors)
    flat = factors.reshape(-1, factors.shape[-1])
    codes = []
    for start in range(0, len(flat), batch_size):
        batch = flat[start : start + batch_size]
        code = np.asarray(encode_fn(ground_truth.render(batch)), np.float64)
        if code.ndim != 2 or len(code) != len(batch):
            raise ValueError(
                f"Expected `encode_fn` to map {len(batch)} observations to an array of shape "
                f"({len(batch)}, latent_dims). Received: an array of shape {code.shape}"
            )
        codes.append(code)
    codes = np.concatenate(codes)
    return codes.reshape(factors.shape[:-1] + codes.shape[-1:])
