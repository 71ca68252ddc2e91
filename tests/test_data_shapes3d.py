"""Tests of 3D Shapes through the ground-truth protocol, on mocked TFDS data."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_sdn.data import DatasetNotAvailableError
from keras_sdn.data import GroundTruthData
from keras_sdn.data import Shapes3D

FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")


def test_shapes3d_renders_the_image_of_each_label():
    with tfds.testing.mock_data(num_examples=30):
        shapes = Shapes3D()
        examples = list(tfds.load("shapes3d", split="train").as_numpy_iterator())
    assert isinstance(shapes, GroundTruthData)
    assert shapes.factor_sizes == (10, 10, 10, 8, 4, 15) and shapes.num_factors == 6
    assert shapes.observation_shape == (64, 64, 3)
    labels = np.array([[example[f"label_{name}"] for name in FACTOR_NAMES] for example in examples])
    images = shapes.render(labels)
    assert images.dtype == np.uint8 and images.shape == (30, 64, 64, 3)
    # Where the mock repeats a label, the last of its examples is kept.
    last = {tuple(label): example["image"] for label, example in zip(labels.tolist(), examples)}
    for label, image in zip(labels.tolist(), images):
        np.testing.assert_array_equal(image, last[tuple(label)])
    assert not shapes.is_complete
    missing = next(f for f in shapes.sample_factors(200, seed=0).tolist() if tuple(f) not in last)
    with pytest.raises(ValueError, match="missing"):
        shapes.render(np.array([missing]))


def test_shapes3d_not_prepared(tmp_path):
    with pytest.raises(DatasetNotAvailableError, match="shapes3d"):
        Shapes3D(data_dir=str(tmp_path))
