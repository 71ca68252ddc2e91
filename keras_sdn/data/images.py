"""`load_images`: batched uint8 image pipelines for every dataset of the package."""

import numpy as np
import tensorflow as tf

from keras_sdn.data.synthetic_shapes import SyntheticShapes
from keras_sdn.data.tfds_sources import TFDS_SOURCES
from keras_sdn.data.tfds_sources import tfds_examples

DATASET_NAMES = ("synthetic_shapes",) + tuple(TFDS_SOURCES)
SPLITS = ("train", "test")
# Shuffle buffers hold at most this many bytes of images (and 10,000 images).
_SHUFFLE_BUFFER_BYTES = 2**28


def quantize(images, num_bits):
    """Keeps the `num_bits` most significant bits of uint8 images: `x >> (8 - num_bits)`.

    Args:
        images: uint8 tensor of any shape.
        num_bits: integer in [1, 8].

    Returns:
        uint8 tensor with values in [0, 2**num_bits - 1].
    """
    _check_integer("num_bits", num_bits, minimum=1, maximum=8)
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        raise ValueError(f"`images` must be uint8, got {images.dtype.name}.")
    return tf.bitwise.right_shift(images, tf.constant(8 - num_bits, tf.uint8))


def load_images(
    name="synthetic_shapes",
    split="train",
    batch_size=32,
    num_bits=8,
    image_size=None,
    shuffle=True,
    repeat=False,
    seed=0,
    data_dir=None,
    num_examples=None,
):
    """A batched, prefetched `tf.data.Dataset` of quantized uint8 images.

    Datasets:
    - "synthetic_shapes" (default): `SyntheticShapes` scenes, generated in the
      package, offline and deterministic; fixed disjoint splits of 50,000
      "train" and 10,000 "test" images (64x64, or rendered at `image_size`).
    - "cifar10", "imagenet32" (TFDS `imagenet_resized/32x32`, "test" is its
      validation split), "celebahq256" (TFDS `celeb_a_hq/256`, manual download;
      the last 3,000 images are "test"), "shapes3d" (one split, also served as
      "test"). These are read from TFDS' prepared files and never downloaded;
      when they are missing a `DatasetNotAvailableError` says what to do.

    Args:
        name: one of `DATASET_NAMES`.
        split: "train" or "test".
        batch_size: images per batch; the last batch of an epoch may be smaller.
        num_bits: bits kept per colour value, 1..8: values `pixel >> (8 - num_bits)`.
        image_size: side to resize to (anti-aliased), or None for the native size.
        shuffle: whether to shuffle the examples (and TFDS files), again each epoch.
        repeat: whether to repeat the data indefinitely.
        seed: seed of the shuffling; a seed gives the same order every run.
        data_dir: TFDS data directory for the TFDS datasets.
        num_examples: use only the first `num_examples` examples of the split.

    Returns:
        `tf.data.Dataset` of uint8 tensors `(batch, H, W, 3)` with values in
        `[0, 2**num_bits - 1]`.

    Example:

    >>> images = load_images(batch_size=16, image_size=32, num_bits=5, num_examples=64)
    >>> next(iter(images)).shape
    TensorShape([16, 32, 32, 3])
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"`name` must be one of {DATASET_NAMES}, got {name!r}.")
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}.")
    _check_integer("batch_size", batch_size, minimum=1)
    _check_integer("num_bits", num_bits, minimum=1, maximum=8)
    _check_integer("seed", seed, minimum=0)
    if image_size is not None:
        _check_integer("image_size", image_size, minimum=8)
    if num_examples is not None:
        _check_integer("num_examples", num_examples, minimum=1)

    order = dict(shuffle=shuffle, repeat=repeat, seed=seed, batch_size=batch_size)
    if name == "synthetic_shapes":
        images = _synthetic_images(split, image_size, num_examples, **order)
    else:
        images = _tfds_images(name, split, image_size, num_examples, data_dir, **order)
    images = images.map(
        lambda batch: quantize(batch, num_bits), num_parallel_calls=tf.data.AUTOTUNE
    )
    return images.prefetch(tf.data.AUTOTUNE)


def _check_integer(argument, value, minimum, maximum=None):
    integer = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    valid = integer and value >= minimum
    if not valid or (maximum is not None and value > maximum):
        expected = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise ValueError(f"`{argument}` must be an integer {expected}, got {value!r}.")


def _resize(image, image_size):
    """Resizes a uint8 (H, W, C) image to (image_size, image_size, C), anti-aliased."""
    resized = tf.image.resize(image, (image_size, image_size), antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _synthetic_images(split, image_size, num_examples, shuffle, repeat, seed, batch_size):
    """Batches rendered from the split's factors; shuffling them shuffles perfectly."""
    shapes = SyntheticShapes(image_size=image_size or 64)
    factors = shapes.split_factors(split, num_examples)
    dataset = tf.data.Dataset.from_tensor_slices(factors)
    if shuffle:
        dataset = dataset.shuffle(len(factors), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()

    def render(batch_factors):
        images = tf.numpy_function(shapes.render, [batch_factors], tf.uint8, stateful=False)
        return tf.ensure_shape(images, (None,) + shapes.observation_shape)

    return dataset.batch(batch_size).map(render, num_parallel_calls=tf.data.AUTOTUNE)


def _tfds_images(
    name, split, image_size, num_examples, data_dir, shuffle, repeat, seed, batch_size
):
    # A subset must be the same examples every run, so its files are read in order.
    shuffle_files = shuffle and num_examples is None
    examples = tfds_examples(name, split, data_dir, shuffle_files=shuffle_files, seed=seed)
    images = examples.map(lambda example: example["image"], num_parallel_calls=tf.data.AUTOTUNE)
    if num_examples is not None:
        images = images.take(num_examples)
    if image_size is not None:
        images = images.map(
            lambda image: _resize(image, image_size), num_parallel_calls=tf.data.AUTOTUNE
        )
    if shuffle:
        image_bytes = images.element_spec.shape.num_elements()
        buffer_size = min(10_000, max(1, _SHUFFLE_BUFFER_BYTES // image_bytes))
        images = images.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        images = images.repeat()
    return images.batch(batch_size)
