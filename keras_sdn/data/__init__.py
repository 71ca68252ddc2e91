"""Image datasets and data with known generative factors.

`load_images` serves every dataset (the built-in `SyntheticShapes`, the
default; TFDS datasets, downloaded when needed; a directory of the user's own
PNG and JPEG images) as batched uint8 `tf.data` pipelines. Data with known
factors (for the disentanglement metrics) follows `GroundTruthData`.
"""

from keras_sdn.data.ground_truth import GroundTruthData
from keras_sdn.data.images import DATASET_NAMES
from keras_sdn.data.images import directory_split
from keras_sdn.data.images import load_images
from keras_sdn.data.images import quantize
from keras_sdn.data.images import square_image
from keras_sdn.data.shapes3d import Shapes3D
from keras_sdn.data.synthetic_shapes import SyntheticShapes
from keras_sdn.data.tfds_sources import DatasetNotAvailableError

__all__ = [
    "GroundTruthData",
    "DATASET_NAMES",
    "directory_split",
    "load_images",
    "quantize",
    "square_image",
    "Shapes3D",
    "SyntheticShapes",
    "DatasetNotAvailableError",
]
