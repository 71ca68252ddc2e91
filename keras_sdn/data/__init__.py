"""Image datasets and data with known generative factors.

`load_images` serves every dataset as batched uint8 `tf.data` pipelines; the
built-in `SyntheticShapes` needs no download and is the default. Data with
known factors (for the disentanglement metrics) follows `GroundTruthData`.
"""

from keras_sdn.data.ground_truth import GroundTruthData
from keras_sdn.data.images import DATASET_NAMES
from keras_sdn.data.images import load_images
from keras_sdn.data.images import quantize
from keras_sdn.data.shapes3d import Shapes3D
from keras_sdn.data.synthetic_shapes import SyntheticShapes
from keras_sdn.data.tfds_sources import DatasetNotAvailableError
