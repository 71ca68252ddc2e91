"""3D Shapes (Burgess & Kim 2018) from TFDS, as `GroundTruthData`."""

import numpy as np

from keras_sdn.data.ground_truth import GroundTruthData
from keras_sdn.data.tfds_sources import tfds_examples


class Shapes3D(GroundTruthData):
    """The TFDS `shapes3d` dataset, indexed by its factors.

    All examples are read into memory (about 5.9 GB for the full 480,000
    images) and indexed by their labels, so `render(factors)` returns the
    image of each factor combination. Factors, in this order: `floor_hue`
    (10), `wall_hue` (10), `object_hue` (10), `scale` (8), `shape` (4),
    `orientation` (15), the same as `SyntheticShapes`.

    Args:
        data_dir: TFDS data directory holding the prepared `shapes3d`.

    Raises:
        DatasetNotAvailableError: `shapes3d` is not prepared in `data_dir`.

    Output: `render(factors)` with factors `(n, 6)` returns uint8 `(n, 64, 64, 3)`.

    Example:

    >>> shapes = Shapes3D(data_dir="~/tensorflow_datasets")
    >>> factors, images = shapes.sample(16, seed=0)
    """

    factor_names = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")

    def __init__(self, data_dir=None):
        examples = tfds_examples("shapes3d", "train", data_dir).batch(4096)
        images, factors = [], []
        for batch in examples.as_numpy_iterator():
            images.append(batch["image"])
            factors.append(np.stack([batch[f"label_{name}"] for name in self.factor_names], 1))
        self._images = np.concatenate(images)
        factors = self.check_factors(np.concatenate(factors))
        # Row of each factor combination in `_images`, -1 where it is missing.
        self._rows = np.full(np.prod(self.factor_sizes), -1, np.int64)
        self._rows[np.ravel_multi_index(factors.T, self.factor_sizes)] = np.arange(len(factors))

    @property
    def factor_sizes(self):
        return (10, 10, 10, 8, 4, 15)

    @property
    def observation_shape(self):
        return self._images.shape[1:]

    @property
    def is_complete(self):
        """Whether every factor combination has an image."""
        return bool(np.all(self._rows >= 0))

    def render(self, factors):
        factors = self.check_factors(factors)
        rows = self._rows[np.ravel_multi_index(factors.T, self.factor_sizes)]
        if np.any(rows < 0):
            missing = factors[np.argmax(rows < 0)].tolist()
            raise ValueError(
                "Expected `factors` to be combinations present in the loaded data. "
                f"Received: factors including {missing}, which is missing"
            )
        return self._images[rows]
