"""Tests of the ground-truth protocol and the SyntheticShapes generator."""

import colorsys

import numpy as np
import pytest

from keras_sdn.data import GroundTruthData
from keras_sdn.data import SyntheticShapes


@pytest.fixture(scope="module")
def shapes():
    return SyntheticShapes()


def test_protocol_sizes_and_sampling(shapes):
    assert isinstance(shapes, GroundTruthData)
    assert shapes.factor_sizes == (10, 10, 10, 8, 4, 15)
    assert shapes.num_factors == 6 == len(shapes.factor_names)
    factors = shapes.sample_factors(6000, seed=3)
    assert factors.shape == (6000, 6) and np.issubdtype(factors.dtype, np.integer)
    for column, size in zip(factors.T, shapes.factor_sizes):
        counts = np.bincount(column, minlength=size)
        assert len(counts) == size  # every value in range ...
        assert counts.min() > 0.6 * len(column) / size  # ... and roughly uniform
    # Independent factors: the joint of two factors is close to the product.
    joint = np.histogram2d(factors[:, 0], factors[:, 4], bins=(10, 4))[0] / len(factors)
    np.testing.assert_allclose(joint, np.full((10, 4), 1 / 40), atol=0.012)


def test_sampling_is_deterministic_for_a_seed(shapes):
    first_factors, first_images = shapes.sample(20, seed=7)
    second_factors, second_images = shapes.sample(20, seed=7)
    np.testing.assert_array_equal(first_factors, second_factors)
    np.testing.assert_array_equal(first_images, second_images)
    assert not np.array_equal(first_factors, shapes.sample_factors(20, seed=8))
    rng = np.random.default_rng(0)
    assert not np.array_equal(shapes.sample_factors(5, rng), shapes.sample_factors(5, rng))


@pytest.mark.parametrize("image_size", [8, 16, 64])
def test_render_shape_dtype_and_determinism(image_size):
    shapes = SyntheticShapes(image_size=image_size)
    factors = shapes.sample_factors(300, seed=0)  # more than one render chunk
    images = shapes.render(factors)
    assert images.shape == (300, image_size, image_size, 3)
    assert images.dtype == np.uint8
    assert images.max() > 200  # fully saturated, bright colours
    np.testing.assert_array_equal(images, SyntheticShapes(image_size=image_size).render(factors))
    np.testing.assert_array_equal(images[123:124], shapes.render(factors[123:124]))


def _rgb255(hue, value):
    return 255.0 * value * np.array(colorsys.hsv_to_rgb(hue / 10.0, 1.0, 1.0))


def test_background_and_object_colours_against_reference(shapes):
    # Orientation 0 puts the room corner at 80% of the width, the object left of
    # the centre; the scene is floor hue 2, wall hue 7, object hue 4, large cube.
    image = shapes.render(np.array([[2, 7, 4, 7, 0, 0]]))[0].astype(np.float64)
    np.testing.assert_allclose(image[0, 0], _rgb255(7, 0.72), atol=1.0)  # left wall plane
    np.testing.assert_allclose(image[0, 63], _rgb255(7, 0.92), atol=1.0)  # right wall plane
    floor_bottom = _rgb255(2, 0.7 + 0.3 * (63.5 / 64 - 0.5 - 0.12 * 0.8) / (1 - 0.5 - 0.12 * 0.8))
    np.testing.assert_allclose(image[63, 63], floor_bottom, atol=1.0)
    # Object pixels carry the object's hue, shaded: proportional to its colour.
    centre = image[int(0.84 * 64 - 0.24 * 64), int((0.5 - 0.22) * 64)]
    reference = _rgb255(4, 1.0)
    assert centre.max() > 100
    np.testing.assert_allclose(centre / centre.max(), reference / reference.max(), atol=0.02)


@pytest.mark.parametrize("image_size", [16, 64])
def test_every_factor_visibly_changes_every_image(image_size):
    shapes = SyntheticShapes(image_size=image_size)
    base = shapes.sample_factors(8, seed=1)
    for factor, size in enumerate(shapes.factor_sizes):
        variants = np.repeat(base[:, None, :], size, axis=1)
        variants[:, :, factor] = np.arange(size)
        images = shapes.render(variants.reshape(-1, 6)).astype(np.int32)
        images = images.reshape((8, size) + shapes.observation_shape)
        for first in range(size):
            for second in range(first + 1, size):
                change = np.abs(images[:, first] - images[:, second]).max(axis=(1, 2, 3))
                assert change.min() >= 20, (shapes.factor_names[factor], first, second)


def test_splits_are_fixed_disjoint_and_sized(shapes):
    train = shapes.split_factors("train")
    test = shapes.split_factors("test")
    assert train.shape == (50_000, 6) and test.shape == (10_000, 6)
    np.testing.assert_array_equal(train, SyntheticShapes(image_size=16).split_factors("train"))
    sizes = shapes.factor_sizes
    train_ids = set(np.ravel_multi_index(train.T, sizes).tolist())
    test_ids = set(np.ravel_multi_index(test.T, sizes).tolist())
    assert len(train_ids) == 50_000 and len(test_ids) == 10_000
    assert not train_ids & test_ids
    all_train = shapes.split_factors("train", num_examples=470_000)
    np.testing.assert_array_equal(all_train[:50_000], train)
    assert len(np.unique(np.ravel_multi_index(all_train.T, sizes))) == 470_000


def test_bad_arguments_raise_value_errors(shapes):
    with pytest.raises(ValueError, match="image_size"):
        SyntheticShapes(image_size=4)
    with pytest.raises(ValueError, match="factors"):
        shapes.render(np.zeros((2, 5), np.int64))
    with pytest.raises(ValueError, match="factors"):
        shapes.render(np.array([[0, 0, 0, 8, 0, 0]]))
    with pytest.raises(ValueError, match="factors"):
        shapes.render(np.zeros((1, 6), np.float32))
    with pytest.raises(ValueError, match="`n`"):
        shapes.sample_factors(-1)
    with pytest.raises(ValueError, match="split"):
        shapes.split_factors("validation")
    with pytest.raises(ValueError, match="num_examples"):
        shapes.split_factors("test", num_examples=10_001)
