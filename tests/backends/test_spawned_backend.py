"""What only a subprocess started by tests/test_backends.py checks, on its backend:
the `.keras` file saved under TensorFlow gives TensorFlow's numbers here, and
this backend's own `.keras` file is written for TensorFlow to load; the layers
import without TensorFlow Probability; the models refuse this backend."""

import os
import pathlib
import sys

import keras
import numpy as np
import pytest
from backend_testing import assert_same_values
from backend_testing import model_values

EXCHANGE_DIR = pathlib.Path(os.environ["KERAS_SDN_EXCHANGE_DIR"])


def test_keras_file_saved_under_tensorflow_gives_the_same_numbers():
    model = keras.models.load_model(EXCHANGE_DIR / "tensorflow.keras")
    values = model_values(model)
    with np.load(EXCHANGE_DIR / "tensorflow.npz") as expected:
        assert_same_values(values, dict(expected))
    model.save(EXCHANGE_DIR / f"{keras.backend.backend()}.keras")


def test_layers_import_without_tensorflow_probability():
    import keras_sdn.layers  # noqa: F401

    assert "tensorflow_probability" not in sys.modules


def test_models_refuse_another_backend():
    backend = keras.backend.backend()
    pattern = (
        rf"^Expected the TensorFlow backend: `keras_sdn.models` .*Received: backend='{backend}'$"
    )
    with pytest.raises(ValueError, match=pattern):
        import keras_sdn.models  # noqa: F401
    assert "tensorflow_probability" not in sys.modules
