"""Tests of `load_images`' random horizontal flips."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_sdn.data import SyntheticShapes
from keras_sdn.data import load_images


def _all_images(dataset):
    return np.concatenate([batch.numpy() for batch in dataset])


def _mirrored_mask(images, flipped):
    """Which `flipped` images are the mirror image of `images`; every other must be equal."""
    mirrored = np.all(flipped == images[:, :, ::-1], axis=(1, 2, 3))
    same = np.all(flipped == images, axis=(1, 2, 3))
    assert np.all(mirrored ^ same)  # each image kept or mirrored, never both or neither
    return mirrored


def test_flipped_images_are_the_unflipped_ones_or_their_mirror_images():
    common = dict(batch_size=64, image_size=16, num_examples=512, seed=5)
    images = _all_images(load_images(random_flip=False, **common))
    flipped = _all_images(load_images(random_flip=True, **common))
    mirrored = _mirrored_mask(images, flipped)
    # About half, 256 +- 11.3: seeded, so this is a fixed draw, 3.5 standard deviations allowed.
    assert 216 <= mirrored.sum() <= 296
    # Flipping is per image, not per batch.
    per_batch = mirrored.reshape(8, 64).mean(axis=1)
    assert np.all((per_batch > 0.2) & (per_batch < 0.8))
    np.testing.assert_array_equal(flipped, _all_images(load_images(random_flip=True, **common)))
    # The seed draws the flips (of the images in each position), not only the order.
    unshuffled = dict(common, shuffle=False)
    ordered = _all_images(load_images(random_flip=False, **unshuffled))
    same_seed = _mirrored_mask(ordered, _all_images(load_images(random_flip=True, **unshuffled)))
    unshuffled["seed"] = 6
    other_seed = _mirrored_mask(ordered, _all_images(load_images(random_flip=True, **unshuffled)))
    assert not np.array_equal(same_seed, other_seed)


def test_each_epoch_gets_new_flips():
    common = dict(batch_size=32, image_size=16, num_examples=64, shuffle=False, repeat=True)
    images = np.stack([b.numpy() for b in load_images(random_flip=False, **common).take(4)])
    flipped = np.stack([b.numpy() for b in load_images(random_flip=True, **common).take(4)])
    images, flipped = images.reshape(2, 64, 16, 16, 3), flipped.reshape(2, 64, 16, 16, 3)
    np.testing.assert_array_equal(images[0], images[1])
    first, second = (_mirrored_mask(images[i], flipped[i]) for i in range(2))
    assert not np.array_equal(first, second)


def test_synthetic_shapes_are_not_flipped_by_default():
    # Its scenes are lit from one side: a mirrored scene is far from every
    # scene with the same hues, scale and shape (any camera orientation).
    shapes = SyntheticShapes(image_size=16)
    factors, scenes = shapes.sample(32, seed=0)
    orientations = np.repeat(factors, 15, axis=0)
    orientations[:, 5] = np.tile(np.arange(15), 32)
    candidates = shapes.render(orientations).reshape(32, 15, 16, 16, 3).astype(np.int32)
    distance = np.abs(scenes[:, None, :, ::-1] - candidates).mean(axis=(2, 3, 4))
    assert distance.min() > 5.0  # mean absolute difference, values in 0..255
    common = dict(batch_size=50, image_size=16, num_examples=100)
    np.testing.assert_array_equal(
        _all_images(load_images(**common)), _all_images(load_images(random_flip=False, **common))
    )


@pytest.mark.parametrize(
    "name, flipped_by_default",
    [("cifar10", True), ("celebahq256", True), ("imagenet32", False), ("shapes3d", False)],
)
def test_default_flips_follow_the_authors_and_never_touch_test_data(name, flipped_by_default):
    common = dict(batch_size=20, image_size=8, shuffle=False)
    with tfds.testing.mock_data(num_examples=40):
        images = _all_images(load_images(name, random_flip=False, **common))
        default = _all_images(load_images(name, **common))
        test = _all_images(load_images(name, split="test", **common))
        forced = _all_images(load_images(name, random_flip=True, **common))
    np.testing.assert_array_equal(test, images)  # the mock serves every split alike
    if flipped_by_default:
        np.testing.assert_array_equal(default, forced)
        assert 0 < _mirrored_mask(images, default).sum() < 40
    else:
        np.testing.assert_array_equal(default, images)
        assert 0 < _mirrored_mask(images, forced).sum() < 40


@pytest.mark.parametrize("random_flip", [None, False])
def test_test_split_is_never_flipped(random_flip):
    common = dict(split="test", batch_size=50, image_size=16, num_examples=100, seed=1)
    images = _all_images(load_images(random_flip=random_flip, **common))
    shapes = SyntheticShapes(image_size=16)
    expected = shapes.render(shapes.split_factors("test", 100))
    assert sorted(map(bytes, images)) == sorted(map(bytes, expected))


@pytest.mark.parametrize("random_flip", [True, 1, "yes"])
def test_forcing_flips_on_test_data_or_a_bad_value_raises(random_flip):
    with pytest.raises(ValueError, match="random_flip"):
        load_images(split="test", random_flip=random_flip)
