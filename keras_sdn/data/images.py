"""`load_images`: batched uint8 image pipelines for every dataset of the package."""

import hashlib
import os
import pathlib
import warnings

import tensorflow as tf

from keras_sdn._checks import check_bool
from keras_sdn._checks import check_choice
from keras_sdn._checks import check_int
from keras_sdn._checks import check_number
from keras_sdn.data.synthetic_shapes import SyntheticShapes
from keras_sdn.data.tfds_sources import TFDS_SOURCES
from keras_sdn.data.tfds_sources import tfds_examples

DATASET_NAMES = ("synthetic_shapes",) + tuple(TFDS_SOURCES)
SPLITS = ("train", "test")
# The authors flip the training images of these datasets (`data/get_dataset.py`).
FLIPPED_BY_DEFAULT = ("cifar10", "celebahq256")
# Fraction of a directory's images in its "test" split by default.
DEFAULT_TEST_FRACTION = 0.1
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# Leading bytes of PNG and JPEG files.
_IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
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
    check_int("num_bits", num_bits, 1, 8)
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        raise ValueError(
            f"Expected `images` of dtype uint8. Received: images.dtype={images.dtype.name}"
        )
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
    random_flip=None,
    download=True,
    test_fraction=None,
):
    """A batched, prefetched `tf.data.Dataset` of quantized uint8 images.

    Datasets (`name`):
    - "synthetic_shapes" (default): `SyntheticShapes` scenes, generated in the
      package, offline and deterministic; fixed disjoint splits of 50,000
      "train" and 10,000 "test" images (64x64, or rendered at `image_size`).
    - "cifar10", "imagenet32" (TFDS `imagenet_resized/32x32`, "test" is its
      validation split), "celebahq256" (TFDS `celeb_a_hq/256`; the last 3,000
      images are "test"), "shapes3d" (one split, also served as "test"):
      TFDS datasets. With `download=True` a dataset that is not prepared in
      `data_dir` is downloaded and prepared there first, as `tfds.load` does;
      CelebA-HQ needs a manual download first (TFDS prepares it only from
      files in its manual directory). A `DatasetNotAvailableError` says what
      to do when the data is missing and `download=False`, or when
      downloading or preparing it fails.
    - the path of a directory (str or `os.PathLike`; a dataset name above
      takes precedence, so write e.g. "./cifar10" for a directory of that
      name): every PNG and JPEG file under it (`.png`, `.jpg`, `.jpeg` in any
      case, searched recursively; files whose content is neither are skipped
      with a warning), decoded to RGB (grayscale is repeated, alpha dropped),
      center-cropped to a square and resized (anti-aliased) to `image_size`,
      which is then required. The split is deterministic and stable when
      files are added: an image is in "test" when the SHA-256 of its path
      relative to the directory (with "/" separators), read as a fraction of
      2**64, is below `test_fraction`; so about that fraction of the images
      is "test" and the rest "train". The images of a split are taken in the
      order of their relative paths.

    Args:
        name: one of `DATASET_NAMES`, or the path of a directory of images.
        split: "train" or "test".
        batch_size: images per batch; the last batch of an epoch may be smaller.
        num_bits: bits kept per colour value, 1..8: values `pixel >> (8 - num_bits)`.
        image_size: side to resize to (anti-aliased), or None for the native
            size; required for a directory.
        shuffle: whether to shuffle the examples (and TFDS files), again each epoch.
        repeat: whether to repeat the data indefinitely.
        seed: seed of the shuffling and the flips; a seed gives the same
            images in the same order every run.
        data_dir: TFDS data directory for the TFDS datasets.
        num_examples: use only the first `num_examples` examples of the split
            (all of them, for a TFDS dataset or a directory that has fewer).
        random_flip: whether to mirror each image left-right with probability
            1/2 (anew every epoch). None (default) follows the authors: on for
            the "train" split of "cifar10" and "celebahq256", off for every
            other dataset and split. Off for "synthetic_shapes" because its
            scenes are lit from the left (darker left wall, one-sided shading
            and shadow): a mirrored scene never occurs in its data. Test data
            is never flipped: `random_flip=True` with `split="test"` raises.
        download: whether to download and prepare a TFDS dataset that is not
            prepared in `data_dir` (as `tfds.load(download=True)`).
        test_fraction: for a directory, the expected fraction of its images
            in "test", in (0, 1); None means `DEFAULT_TEST_FRACTION` (0.1).
            Only for a directory.

    Returns:
        `tf.data.Dataset` of uint8 tensors `(batch, H, W, 3)` with values in
        `[0, 2**num_bits - 1]`.

    Raises:
        ValueError: an argument is invalid; a directory holds no readable PNG
            or JPEG image, or none in the requested split.
        DatasetNotAvailableError: a TFDS dataset is not prepared and was not
            (or could not be) downloaded.

    Example:

    >>> images = load_images(batch_size=16, image_size=32, num_bits=5, num_examples=64)
    >>> next(iter(images)).shape
    TensorShape([16, 32, 32, 3])
    >>> photos = load_images("path/to/my/photos", image_size=32, random_flip=True)
    """
    is_named = isinstance(name, str) and name in DATASET_NAMES
    if not is_named and not (isinstance(name, (str, os.PathLike)) and os.path.isdir(name)):
        raise ValueError(
            f"Expected `name` to be one of {DATASET_NAMES} or the path of an existing "
            f"directory of PNG or JPEG images. Received: name={name!r}"
        )
    check_choice("split", split, SPLITS)
    check_int("batch_size", batch_size, 1)
    check_int("num_bits", num_bits, 1, 8)
    check_int("seed", seed, 0)
    if image_size is not None:
        check_int("image_size", image_size, 8)
    if num_examples is not None:
        check_int("num_examples", num_examples, 1)
    random_flip = check_bool("random_flip", random_flip, allow_none=True)
    if random_flip and split == "test":
        raise ValueError(
            "Expected `random_flip` to be None or False for the test split: test data is never "
            f"flipped. Received: random_flip={random_flip!r} with split={split!r}"
        )
    download = check_bool("download", download)
    if test_fraction is not None:
        if is_named:
            raise ValueError(
                "Expected `test_fraction` to be None when `name` is a dataset name (it splits "
                f"a directory). Received: test_fraction={test_fraction!r} with name={name!r}"
            )
        test_fraction = check_number(
            "test_fraction", test_fraction, 0, 1, low_open=True, high_open=True
        )
    if random_flip is None:
        random_flip = split == "train" and name in FLIPPED_BY_DEFAULT

    order = dict(shuffle=shuffle, repeat=repeat, seed=seed, batch_size=batch_size)
    if not is_named:
        if image_size is None:
            raise ValueError(
                "Expected an `image_size` when `name` is a directory: its images are "
                f"center-cropped and resized to it. Received: image_size=None with name={name!r}"
            )
        fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
        images = _directory_images(name, split, fraction, image_size, num_examples, **order)
    elif name == "synthetic_shapes":
        images = _synthetic_images(split, image_size, num_examples, **order)
    else:
        images = _tfds_images(name, split, image_size, num_examples, data_dir, download, **order)
    if random_flip:
        images = _random_flips(images, seed)
    images = images.map(
        lambda batch: quantize(batch, num_bits), num_parallel_calls=tf.data.AUTOTUNE
    )
    return images.prefetch(tf.data.AUTOTUNE)


def _resize(image, image_size):
    """Resizes a uint8 (H, W, C) image to (image_size, image_size, C), anti-aliased."""
    resized = tf.image.resize(image, (image_size, image_size), antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _random_flips(batches, seed):
    """Mirrors each image left-right with probability 1/2.

    The coin flips of batch k come from the stateless seed (seed, k), so a
    seed gives the same flips every run, whatever the parallelism, and every
    epoch of repeated data gets new ones.
    """

    def flip(index, images):
        coins = tf.random.stateless_uniform(
            tf.shape(images)[:1], seed=tf.stack([tf.constant(seed, tf.int64), index])
        )
        mirrored = (coins < 0.5)[:, None, None, None]
        return tf.where(mirrored, tf.reverse(images, axis=[2]), images)

    return batches.enumerate().map(flip, num_parallel_calls=tf.data.AUTOTUNE)


def _shuffled(examples, shuffle, repeat, seed, buffer_size):
    if shuffle:
        examples = examples.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        examples = examples.repeat()
    return examples


def _synthetic_images(split, image_size, num_examples, shuffle, repeat, seed, batch_size):
    """Batches rendered from the split's factors; shuffling them shuffles perfectly."""
    shapes = SyntheticShapes(image_size=image_size or 64)
    factors = shapes.split_factors(split, num_examples)
    dataset = tf.data.Dataset.from_tensor_slices(factors)
    batches = _shuffled(dataset, shuffle, repeat, seed, len(factors)).batch(batch_size)

    def render(batch_factors):
        images = tf.numpy_function(shapes.render, [batch_factors], tf.uint8, stateful=False)
        return tf.ensure_shape(images, (None,) + shapes.observation_shape)

    return batches.map(render, num_parallel_calls=tf.data.AUTOTUNE)


def _tfds_images(
    name, split, image_size, num_examples, data_dir, download, shuffle, repeat, seed, batch_size
):
    # A subset must be the same examples every run, so its files are read in order.
    shuffle_files = shuffle and num_examples is None
    examples = tfds_examples(
        name, split, data_dir, shuffle_files=shuffle_files, seed=seed, download=download
    )
    images = examples.map(lambda example: example["image"], num_parallel_calls=tf.data.AUTOTUNE)
    if num_examples is not None:
        images = images.take(num_examples)
    if image_size is not None:
        images = images.map(
            lambda image: _resize(image, image_size), num_parallel_calls=tf.data.AUTOTUNE
        )
    image_bytes = images.element_spec.shape.num_elements()
    buffer_size = min(10_000, max(1, _SHUFFLE_BUFFER_BYTES // image_bytes))
    return _shuffled(images, shuffle, repeat, seed, buffer_size).batch(batch_size)


def _is_test_file(relative_path, test_fraction):
    digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < test_fraction * 2**64


def _has_image_signature(path):
    try:
        with open(path, "rb") as file:
            head = file.read(8)
    except OSError:
        return False
    return head.startswith(_IMAGE_SIGNATURES)


def directory_split(directory, split, test_fraction=DEFAULT_TEST_FRACTION):
    """The PNG and JPEG files of a split of a directory, as `load_images` reads them.

    Args:
        directory: path of a directory, searched recursively.
        split: "train" or "test".
        test_fraction: expected fraction of the images in "test", in (0, 1).

    Returns:
        The paths (str) of the split's images, sorted by their path relative
        to `directory`.

    Raises:
        ValueError: the directory holds no readable PNG or JPEG file, or none
            in `split`.
    """
    root = pathlib.Path(directory)
    candidates = sorted(
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
    )
    if not candidates:
        raise ValueError(
            f"Expected the directory `name` to hold PNG or JPEG files ({', '.join(IMAGE_EXTENSIONS)}, "
            f"searched recursively); it holds none. Received: name={str(directory)!r}"
        )
    readable = [path for path in candidates if _has_image_signature(root / path)]
    if not readable:
        raise ValueError(
            f"Expected the directory `name` to hold readable PNG or JPEG images; none of its "
            f"{len(candidates)} files named so could be read as one (e.g. {candidates[0]!r}). "
            f"Received: name={str(directory)!r}"
        )
    if len(readable) < len(candidates):
        skipped = sorted(set(candidates) - set(readable))
        warnings.warn(
            f"Skipping {len(skipped)} of the {len(candidates)} image files under {str(directory)!r} "
            f"that are not readable PNG or JPEG files, e.g. {skipped[0]!r}.",
            stacklevel=2,
        )
    chosen = [path for path in readable if _is_test_file(path, test_fraction) == (split == "test")]
    if not chosen:
        raise ValueError(
            f"Expected the {split!r} split of the directory `name` to hold images; none of its "
            f"{len(readable)} images falls in it with test_fraction={test_fraction} "
            f"(add images or change `test_fraction`). Received: name={str(directory)!r}"
        )
    return [str(root / path) for path in chosen]


def square_image(image, image_size):
    """Crops the centre square of a uint8 `(H, W, C)` image and resizes it, anti-aliased.

    What `load_images` does to the images of a directory.

    Args:
        image: uint8 tensor `(height, width, channels)`.
        image_size: side of the result.

    Returns:
        uint8 tensor `(image_size, image_size, channels)`.
    """
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    side = tf.minimum(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return _resize(image[top : top + side, left : left + side], image_size)


def _read_square_image(path, image_size):
    """Decodes a PNG or JPEG file to RGB, crops its centre square and resizes it."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return tf.ensure_shape(square_image(image, image_size), (image_size, image_size, 3))


def _directory_images(
    directory, split, test_fraction, image_size, num_examples, shuffle, repeat, seed, batch_size
):
    paths = directory_split(directory, split, test_fraction)[:num_examples]
    files = tf.data.Dataset.from_tensor_slices(paths)
    # Shuffling the paths shuffles perfectly; images are decoded after it.
    images = _shuffled(files, shuffle, repeat, seed, len(paths)).map(
        lambda path: _read_square_image(path, image_size), num_parallel_calls=tf.data.AUTOTUNE
    )
    return images.batch(batch_size)
