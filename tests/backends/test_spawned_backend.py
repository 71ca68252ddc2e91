"""What only a subprocess started by tests/test_backends.py checks, on its backend:
the `.keras` file saved under TensorFlow gives TensorFlow's numbers here, and
this backend's own `.keras` file is written for TensorFlow to load; the layers
import and train without TensorFlow, and without TensorFlow Probability; the
models refuse this backend."""

import os
import pathlib
import subprocess
import sys
import textwrap

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


def test_layers_train_without_importing_tensorflow():
    # A fresh interpreter: this process has imported TensorFlow for other tests.
    # (Keras' own `.keras` saving imports TensorFlow where it is installed.)
    script = textwrap.dedent(
        """
        import sys

        import keras
        import numpy as np

        import keras_sdn

        model = keras.Sequential(
            [
                keras.Input((6, 6, 3)),
                keras_sdn.SpatialDependency(4, num_features=4),
                keras_sdn.ResidualSpatialDependency(4, num_features=4),
            ]
        )
        model.compile(optimizer="adam", loss="mse")
        x = np.random.default_rng(0).normal(size=(4, 6, 6, 3)).astype("float32")
        model.fit(x, x[..., :1].repeat(4, -1), epochs=1, verbose=0)
        model.predict(x, verbose=0)
        print(sorted(name for name in sys.modules if name.split(".")[0] == "tensorflow"))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_models_refuse_another_backend():
    backend = keras.backend.backend()
    pattern = (
        rf"^Expected the TensorFlow backend: `keras_sdn.models` .*Received: backend='{backend}'$"
    )
    with pytest.raises(ValueError, match=pattern):
        import keras_sdn.models  # noqa: F401
    assert "tensorflow_probability" not in sys.modules
