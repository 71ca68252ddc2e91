"""Reading the user's images for a model, and writing image grids and arrays."""

import pathlib
import sys

import numpy as np

from keras_sdn.cli.run_folder import CommandError
from keras_sdn.cli.run_folder import write_atomically
from keras_sdn.data.images import IMAGE_EXTENSIONS

# Pixels between the images of a grid.
GAP = 2
# Small images are enlarged (pixels repeated) to at least this side in grids.
MIN_DISPLAY_SIDE = 64


def image_paths(inputs):
    """The image files named by `inputs` (files, or folders searched recursively), in order."""
    paths = []
    for name in inputs:
        path = pathlib.Path(name)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
            )
            if not found:
                raise CommandError(
                    f"the folder {path} holds no PNG or JPEG image "
                    f"({', '.join(IMAGE_EXTENSIONS)}, searched recursively)"
                )
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise CommandError(f"no image file or folder at {path}")
    return paths


def read_images(inputs, model):
    """The images of `inputs` as the model's input: uint8 `(n,) + image_shape`.

    Each image is decoded (PNG or JPEG; grayscale repeated, alpha dropped),
    and, unless it has the model's size already, its centre square is
    cropped and resized (anti-aliased) to the model's size, as
    `keras_sdn.data.load_images` prepares a folder of training images; a note
    on stderr says so. Values keep the model's `num_bits` most significant
    bits.

    Raises:
        CommandError: an input is missing or not a readable PNG or JPEG image.
    """
    import tensorflow as tf

    from keras_sdn.data import quantize
    from keras_sdn.data import square_image

    height, width, channels = model.image_shape
    images = []
    for path in image_paths(inputs):
        try:
            image = tf.io.decode_image(
                tf.io.read_file(str(path)), channels=channels, expand_animations=False
            )
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
            raise CommandError(f"cannot read {path} as a PNG or JPEG image") from None
        original = tuple(image.shape[:2])
        if original != (height, width):
            side = min(original)
            cropped = f"center-cropped to {side}x{side} and " if original[0] != original[1] else ""
            print(
                f"note: {path} is {original[1]}x{original[0]}: {cropped}resized to "
                f"{width}x{height}, the model's image size (as a folder of training images is)",
                file=sys.stderr,
            )
            image = square_image(image, height)
        images.append(image)
    return quantize(tf.stack(images), model.num_bits).numpy()


def grid(rows, scale=None):
    """Rows of equal-sized uint8 images as one image, `GAP` white pixels between them.

    Args:
        rows: A list of lists of `(height, width, channels)` uint8 images; a
            short row is padded with white.
        scale: Integer enlargement (each pixel repeated); default: the
            smallest that makes an image at least `MIN_DISPLAY_SIDE` pixels
            high.

    Returns:
        uint8 array `(rows * (s * height + GAP) - GAP, columns * (s * width
        + GAP) - GAP, channels)` for `s = scale`.
    """
    height, width, channels = rows[0][0].shape
    scale = scale or max(1, -(-MIN_DISPLAY_SIDE // height))
    columns = max(len(row) for row in rows)
    cell_height, cell_width = scale * height + GAP, scale * width + GAP
    picture = np.full(
        (len(rows) * cell_height - GAP, columns * cell_width - GAP, channels), 255, np.uint8
    )
    for row_index, row in enumerate(rows):
        for column_index, image in enumerate(row):
            top, left = row_index * cell_height, column_index * cell_width
            enlarged = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
            picture[top : top + scale * height, left : left + scale * width] = enlarged
    return picture


def chunks(images, columns):
    """`images` in rows of `columns`."""
    return [list(images[start : start + columns]) for start in range(0, len(images), columns)]


def save_png(picture, path):
    """Writes a uint8 `(height, width, channels)` image as a PNG file, never half-written."""
    from PIL import Image

    image = Image.fromarray(picture.squeeze(-1) if picture.shape[-1] == 1 else picture)
    write_atomically(path, lambda temporary: image.save(temporary, format="PNG"))


def save_npy(array, path):
    """Writes `array` as a NumPy `.npy` file, never half-written."""
    write_atomically(path, lambda temporary: np.save(temporary, array))
