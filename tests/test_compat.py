"""Tests of keras_sdn._compat (Keras version gate, backend guard) and of the
fallback of `layers.sweep` when TensorFlow's private XLA-context test moves."""

import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.backend.tensorflow import trainer

from keras_sdn import _compat
from keras_sdn.distribute import enable_multi_worker_fit
from keras_sdn.layers import ResidualSpatialDependency
from keras_sdn.layers import SpatialDependency
from keras_sdn.layers import sweep
from keras_sdn.optimizers import UpdateSkipper

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def keras_trainer(monkeypatch):
    """The Keras functions the workaround replaces, restored after the test, and unpatched."""
    monkeypatch.setattr(trainer, "reduce_per_replica", trainer.reduce_per_replica)
    monkeypatch.setattr(
        trainer.TensorFlowTrainer,
        "_maybe_symbolic_build",
        trainer.TensorFlowTrainer._maybe_symbolic_build,
    )
    monkeypatch.setattr(trainer, _compat._PATCHED, False, raising=False)
    return trainer.reduce_per_replica, trainer.TensorFlowTrainer._maybe_symbolic_build


def test_installed_keras_is_a_tested_version():
    # Fails on a Keras release the workarounds were not tested on: run the
    # distribution tests on it, then add it to TESTED_KERAS_VERSIONS.
    assert _compat.keras_version() in _compat.TESTED_KERAS_VERSIONS


@pytest.mark.parametrize(
    "version, expected", [("3.15.1", (3, 15)), ("3.16.0.dev2026010103", (3, 16)), ("4.0", (4, 0))]
)
def test_keras_version(monkeypatch, version, expected):
    monkeypatch.setattr(keras, "__version__", version)
    assert _compat.keras_version() == expected


def test_keras_version_rejects_an_unknown_format(monkeypatch):
    monkeypatch.setattr(keras, "__version__", "nightly")
    with pytest.raises(ValueError, match="Received: keras.__version__='nightly'"):
        _compat.keras_version()


@pytest.mark.parametrize("version", ["3.15.0", "3.15.1"])
def test_workaround_applies_on_a_tested_version(monkeypatch, keras_trainer, version):
    monkeypatch.setattr(keras, "__version__", version)
    reduce_per_replica, maybe_symbolic_build = keras_trainer
    assert enable_multi_worker_fit() is True
    patched_reduce = trainer.reduce_per_replica
    assert patched_reduce is not reduce_per_replica
    assert trainer.TensorFlowTrainer._maybe_symbolic_build is not maybe_symbolic_build
    assert enable_multi_worker_fit() is True  # idempotent: not wrapped twice
    assert trainer.reduce_per_replica is patched_reduce
    # Outside multi-worker training the replacement gives what Keras gives.
    strategy = tf.distribute.get_strategy()
    values = {"loss": tf.constant(2.5), "outputs": tf.constant([1.0, 2.0])}
    expected = reduce_per_replica(values, strategy, "auto")
    actual = patched_reduce(values, strategy, "auto")
    for name in values:
        np.testing.assert_array_equal(actual[name], expected[name])


@pytest.mark.parametrize("version", ["3.14.0", "3.16.0", "4.0.0"])
def test_workaround_is_not_applied_on_an_untested_version(monkeypatch, keras_trainer, version):
    monkeypatch.setattr(keras, "__version__", version)
    with pytest.warns(UserWarning, match=f"not applied to Keras {version}"):
        assert enable_multi_worker_fit() is False
    assert (trainer.reduce_per_replica, trainer.TensorFlowTrainer._maybe_symbolic_build) == (
        keras_trainer
    )
    assert not getattr(trainer, _compat._PATCHED)


# ----------------------------------------------------------- backend guard


@pytest.mark.parametrize("backend", ["jax", "torch", "numpy"])
@pytest.mark.parametrize(
    "construct, name",
    [
        (lambda: SpatialDependency(4), "SpatialDependency"),
        (lambda: ResidualSpatialDependency(4), "ResidualSpatialDependency"),
        (lambda: UpdateSkipper(), "UpdateSkipper"),
        (lambda: _compat.require_tensorflow_backend("f"), "f"),
    ],
)
def test_tensorflow_only_classes_raise_under_another_backend(monkeypatch, backend, construct, name):
    # jax and torch are not installed here: the detected backend is patched.
    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    pattern = rf"^Expected the TensorFlow backend: `{name}` .*Received: backend='{backend}'$"
    with pytest.raises(ValueError, match=pattern):
        construct()


def test_tensorflow_backend_passes():
    assert keras.backend.backend() == "tensorflow"
    _compat.require_tensorflow_backend("f")


# ------------------------------------------------ sweep.py's private TF import


def test_sweep_in_halves_only_in_cpu_graphs_without_xla():
    inputs = tf.zeros((4, 3, 3, 2))
    assert not sweep._sweep_in_halves(inputs)  # eager
    traced = {}

    @tf.function(jit_compile=False)
    def graph(x):
        traced["halves"] = sweep._sweep_in_halves(x)
        return x

    @tf.function(jit_compile=True)
    def xla(x):
        traced["xla_halves"] = sweep._sweep_in_halves(x)
        return x

    graph(inputs)
    xla(inputs)
    on_cpu = not tf.config.list_logical_devices("GPU")
    assert traced == {"halves": on_cpu, "xla_halves": False}


def test_without_tf_xla_test_the_batch_is_never_halved(monkeypatch):
    monkeypatch.setattr(sweep, "GraphOrParentsInXlaContext", None)
    traced = {}

    @tf.function(jit_compile=False)
    def graph(x):
        traced["halves"] = sweep._sweep_in_halves(x)
        return x

    graph(tf.zeros((4, 3, 3, 2)))
    assert traced == {"halves": False}


FALLBACK_CHECK = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf
    # As if a TF release had moved the private module.
    sys.modules["tensorflow.python.ops.control_flow_util"] = None
    import keras_sdn
    from keras_sdn.layers import sweep
    assert sweep.GraphOrParentsInXlaContext is None
    layer = keras_sdn.layers.SpatialDependency(3, directions=2)
    x = np.random.default_rng(0).normal(size=(4, 5, 6, 2)).astype("float32")
    eager = layer(x).numpy()
    graph = tf.function(layer)(x).numpy()
    np.testing.assert_allclose(graph, eager, rtol=1e-5, atol=1e-6)
    print("fallback ok")
    """
)


def test_keras_sdn_imports_and_runs_when_tf_moves_its_xla_test():
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    completed = subprocess.run(
        [sys.executable, "-c", FALLBACK_CHECK],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "fallback ok" in completed.stdout
