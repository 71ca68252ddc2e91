"""Tests of `load_images` on the built-in dataset and the (mocked) TFDS datasets."""

from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_sdn.data import DATASET_NAMES
from keras_sdn.data import DatasetNotAvailableError
from keras_sdn.data import SyntheticShapes
from keras_sdn.data import load_images
from keras_sdn.data.tfds_sources import TFDS_SOURCES

TFDS_NAMES = ("cifar10", "imagenet32", "celebahq256", "shapes3d")
NATIVE_SIZES = {"cifar10": 32, "imagenet32": 32, "celebahq256": 256, "shapes3d": 64}


def _all_images(dataset):
    return np.concatenate([batch.numpy() for batch in dataset])


def test_dataset_names():
    assert DATASET_NAMES == ("synthetic_shapes",) + TFDS_NAMES


@pytest.mark.parametrize("num_bits", [1, 5, 8])
def test_synthetic_images_are_the_quantized_split(num_bits):
    images = load_images(batch_size=16, num_bits=num_bits, shuffle=False, num_examples=40)
    batches = [batch.numpy() for batch in images]
    assert [len(batch) for batch in batches] == [16, 16, 8]
    assert all(batch.dtype == np.uint8 and batch.shape[1:] == (64, 64, 3) for batch in batches)
    shapes = SyntheticShapes()
    expected = shapes.render(shapes.split_factors("train", 40)) >> (8 - num_bits)
    np.testing.assert_array_equal(np.concatenate(batches), expected)
    assert np.concatenate(batches).max() == 2**num_bits - 1


def test_synthetic_default_sizes_and_image_size():
    train = load_images(batch_size=500, image_size=8)
    test = load_images(split="test", batch_size=500, image_size=8)
    assert sum(int(batch.shape[0]) for batch in train) == 50_000
    test_images = _all_images(test)
    assert test_images.shape == (10_000, 8, 8, 3)
    shapes = SyntheticShapes(image_size=8)
    test_factors = shapes.split_factors("test")
    # Shuffled, but the same images as the split's.
    rendered = shapes.render(test_factors)
    assert sorted(map(bytes, test_images)) == sorted(map(bytes, rendered))


def test_synthetic_splits_differ():
    train = _all_images(load_images(split="train", batch_size=50, shuffle=False, num_examples=50))
    test = _all_images(load_images(split="test", batch_size=50, shuffle=False, num_examples=50))
    assert not set(map(bytes, train)) & set(map(bytes, test))


def test_shuffling_is_seeded_and_repeats_reshuffle():
    def first_epochs(seed):
        images = load_images(batch_size=10, image_size=8, seed=seed, repeat=True, num_examples=30)
        return np.stack([batch.numpy() for batch in images.take(6)])

    run = first_epochs(seed=1)
    np.testing.assert_array_equal(run, first_epochs(seed=1))
    assert not np.array_equal(run, first_epochs(seed=2))
    first_epoch, second_epoch = run[:3].reshape(30, -1), run[3:].reshape(30, -1)
    assert not np.array_equal(first_epoch, second_epoch)  # reshuffled ...
    assert sorted(map(bytes, first_epoch)) == sorted(map(bytes, second_epoch))  # ... same images


def test_static_shapes_for_keras():
    images = load_images(batch_size=4, image_size=16, num_examples=8)
    assert images.element_spec.shape.as_list() == [None, 16, 16, 3]
    assert images.element_spec.dtype == tf.uint8


@pytest.mark.parametrize(
    "arguments, match",
    [
        ({"name": "mnist"}, "name"),
        ({"split": "validation"}, "split"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_bits": 9}, "num_bits"),
        ({"num_bits": 0}, "num_bits"),
        ({"image_size": 4}, "image_size"),
        ({"num_examples": 0}, "num_examples"),
        ({"seed": -1}, "seed"),
        ({"num_examples": 10_001, "split": "test"}, "num_examples"),
    ],
)
def test_bad_arguments_raise_value_errors(arguments, match):
    with pytest.raises(ValueError, match=match):
        load_images(**arguments)


@pytest.mark.parametrize("name", TFDS_NAMES)
def test_mocked_tfds_pipelines(name):
    with tfds.testing.mock_data(num_examples=12):
        # No flips here (the flips have their own tests, test_data_random_flip.py).
        raw = _all_images(load_images(name, batch_size=5, shuffle=False, random_flip=False))
        size = NATIVE_SIZES[name]
        assert raw.shape == (12, size, size, 3) and raw.dtype == np.uint8
        quantized = _all_images(
            load_images(name, split="test", batch_size=5, num_bits=5, shuffle=False)
        )
        np.testing.assert_array_equal(quantized, raw >> 3)  # the mock serves every split alike
        shuffled = _all_images(load_images(name, batch_size=5, seed=3, random_flip=False))
        assert sorted(map(bytes, shuffled)) == sorted(map(bytes, raw))
        reshuffled = _all_images(load_images(name, batch_size=5, seed=3, random_flip=False))
        np.testing.assert_array_equal(shuffled, reshuffled)
        resized = load_images(
            name,
            batch_size=4,
            image_size=8,
            num_bits=4,
            shuffle=False,
            num_examples=6,
            random_flip=False,
        )
        resized_batches = [batch.numpy() for batch in resized]
    assert [batch.shape for batch in resized_batches] == [(4, 8, 8, 3), (2, 8, 8, 3)]
    # Resized (anti-aliased, rounded) before quantizing, and only the first examples.
    expected = tf.image.resize(raw[:6].astype(np.float32), (8, 8), antialias=True).numpy()
    expected = np.clip(np.round(expected), 0, 255).astype(np.uint8) >> 4
    np.testing.assert_array_equal(np.concatenate(resized_batches), expected)


@pytest.mark.parametrize("name", TFDS_NAMES)
def test_missing_tfds_dataset_raises_a_helpful_error(name, tmp_path):
    with pytest.raises(DatasetNotAvailableError) as error:
        load_images(name, data_dir=str(tmp_path), download=False)
    message = str(error.value)
    assert name in message and str(tmp_path) in message and "data_dir" in message
    assert "download=False" in message
    assert "tfds build" in message and "synthetic_shapes" in message and "directory" in message
    assert ("manual" in message) == (name == "celebahq256")
    assert ("download=True" in message) == (name != "celebahq256")
    assert isinstance(error.value, FileNotFoundError)


@pytest.mark.parametrize("name", TFDS_NAMES)
def test_tfds_datasets_are_downloaded_unless_download_is_false(name):
    prepare = mock.Mock()

    def download_and_prepare(builder):
        prepare(builder.name)

    with (
        tfds.testing.mock_data(num_examples=3),
        mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare", download_and_prepare),
    ):
        downloaded = _all_images(load_images(name, batch_size=3, shuffle=False, random_flip=False))
        prepare.assert_called_once_with(TFDS_SOURCES[name].tfds_name.split("/")[0])
        local = _all_images(
            load_images(name, batch_size=3, shuffle=False, random_flip=False, download=False)
        )
        prepare.assert_called_once()  # not again
    np.testing.assert_array_equal(downloaded, local)


@pytest.mark.parametrize("name", TFDS_NAMES)
def test_failed_download_raises_a_helpful_error(name, tmp_path):
    failure = ConnectionError("Failed to resolve 'www.cs.toronto.edu'")
    with mock.patch.object(
        tfds.core.DatasetBuilder, "download_and_prepare", side_effect=failure, autospec=True
    ) as prepare:
        with pytest.raises(DatasetNotAvailableError) as error:
            load_images(name, data_dir=str(tmp_path))
    prepare.assert_called_once()
    message = str(error.value)
    assert name in message and str(tmp_path) in message
    assert "ConnectionError: Failed to resolve 'www.cs.toronto.edu'" in message
    assert "tfds build" in message and "synthetic_shapes" in message
    assert ("manual" in message) == (name == "celebahq256")
    assert error.value.__cause__ is failure
