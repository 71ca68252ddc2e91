"""The protocol for data with known, independent generative factors."""

import abc

import numpy as np

from keras_sdn._checks import check_int


class GroundTruthData(abc.ABC):
    """Data generated from known, independently and uniformly sampled factors.

    A subclass defines `factor_sizes` (the number of values of each factor)
    and `render(factors)`, which maps an integer array of factor values of
    shape `(n, num_factors)` to `n` observations (uint8 images for image data).
    The disentanglement metrics in `keras_sdn.metrics` need nothing else.

    `seed` arguments accept `None`, an int or a `numpy.random.Generator`; a
    generator is used as is, so a metric can draw all its samples from one.

    Example:

    >>> data = SyntheticShapes()
    >>> factors, images = data.sample(8, seed=0)
    >>> factors.shape, images.shape
    ((8, 6), (8, 64, 64, 3))
    """

    factor_names = ()

    @property
    @abc.abstractmethod
    def factor_sizes(self):
        """Tuple of ints: the number of values each factor takes."""

    @abc.abstractmethod
    def render(self, factors):
        """Returns the observations of `factors`, an int array `(n, num_factors)`."""

    @property
    def num_factors(self):
        return len(self.factor_sizes)

    def sample_factors(self, n, seed=None):
        """Draws `n` factor vectors, each factor uniform and independent.

        Returns:
            int64 array of shape `(n, num_factors)`.
        """
        n = check_int("n", n, 0)
        rng = np.random.default_rng(seed)
        return rng.integers(0, self.factor_sizes, size=(n, self.num_factors))

    def sample(self, n, seed=None):
        """Returns `(factors, observations)` for `n` sampled factor vectors."""
        factors = self.sample_factors(n, seed)
        return factors, self.render(factors)

    def check_factors(self, factors):
        """Returns `factors` as an int64 array, or raises a `ValueError`."""
        factors = np.asarray(factors)
        if factors.ndim != 2 or factors.shape[1] != self.num_factors:
            raise ValueError(
                f"Expected `factors` of shape (n, {self.num_factors}). "
                f"Received: factors.shape={factors.shape}"
            )
        if not np.issubdtype(factors.dtype, np.integer):
            raise ValueError(
                f"Expected `factors` to be integers. Received: factors.dtype={factors.dtype}"
            )
        if np.any(factors < 0) or np.any(factors >= np.asarray(self.factor_sizes)):
            raise ValueError(
                f"Expected `factors` in [0, factor_sizes) with factor_sizes="
                f"{tuple(self.factor_sizes)}. Received: factors from {factors.min(0).tolist()} "
                f"to {factors.max(0).tolist()}"
            )
        return factors.astype(np.int64)
