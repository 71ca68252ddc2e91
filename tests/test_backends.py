"""The layers on the JAX and PyTorch backends, and one set of numbers on all three.

Keras fixes its backend when it is imported, so the layer tests of
tests/backends/ (which this process runs under TensorFlow) run again in one
subprocess per backend. Before starting it, this test saves a model of both
layers as a `.keras` file under TensorFlow, with its outputs and gradients;
the subprocess loads the file and checks that it gives the same numbers, and
saves the model again under its own backend, which this process then loads
under TensorFlow.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

BACKEND_TESTS = pathlib.Path(__file__).resolve().parent / "backends"
sys.path.insert(0, str(BACKEND_TESTS))

from backend_testing import exchange_inputs  # noqa: E402
from backend_testing import exchange_model  # noqa: E402
from backend_testing import model_values  # noqa: E402
from backend_testing import to_numpy  # noqa: E402

BACKENDS = [
    "jax",
    pytest.param(
        "torch",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("torch") is None,
            # Not a way to go green: the JAX run covers the keras.ops sweeps on
            # every machine, and the lead's machine runs these with torch installed.
            reason="PyTorch is not installed: its wheels pull several GB of CUDA libraries, "
            "so the test extra leaves it out; `pip install torch` (a CPU build will do) "
            "runs the layer tests on the PyTorch backend",
        ),
    ),
]


@pytest.fixture(scope="module")
def exchange_dir(tmp_path_factory):
    """A folder with the model saved under TensorFlow and its values."""
    directory = tmp_path_factory.mktemp("exchange")
    model = exchange_model()
    model.save(directory / "tensorflow.keras")
    np.savez(directory / "tensorflow.npz", **model_values(model))
    return directory


@pytest.fixture(scope="module", params=BACKENDS)
def backend_run(request, exchange_dir):
    """The layer tests run on a backend: `(backend, completed process)`."""
    backend = request.param
    environment = dict(os.environ, KERAS_BACKEND=backend, KERAS_SDN_EXCHANGE_DIR=str(exchange_dir))
    # One process (-n 0): the suite's own two workers already share the CPU cores.
    command = [sys.executable, "-m", "pytest", str(BACKEND_TESTS), "-q", "-n", "0"]
    command += ["-p", "no:cacheprovider"]
    # The timeout only stops a hung subprocess: on 2 busy CPU cores the JAX run took over 30 minutes.
    process = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=7200)
    return backend, process


def test_layer_tests_pass_on_backend(backend_run):
    backend, process = backend_run
    assert process.returncode == 0, (
        f"{backend}:\n{process.stdout[-6000:]}\n{process.stderr[-3000:]}"
    )
    assert " passed" in process.stdout.splitlines()[-1]


def test_keras_file_saved_under_backend_loads_under_tensorflow(backend_run, exchange_dir):
    backend, _ = backend_run
    model = keras.models.load_model(exchange_dir / f"{backend}.keras")
    x, _ = exchange_inputs()
    with np.load(exchange_dir / "tensorflow.npz") as expected:
        np.testing.assert_allclose(to_numpy(model(x)), expected["outputs"], rtol=0, atol=1e-6)
