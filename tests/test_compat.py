"""Tests of keras_sdn._compat: the guarded private functions and their fallbacks,
the supported versions, the backend guard."""

import importlib.metadata
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.backend.tensorflow import trainer

from keras_sdn import _compat
from keras_sdn.distribute import enable_multi_worker_fit
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


# Versions the installed Keras pretends to be: the workaround depends on what
# the trainer module holds, not on the version number.
VERSIONS = [keras.__version__, "3.16.0", "3.99.0"]


@pytest.mark.parametrize("version", VERSIONS)
def test_workaround_applies_while_keras_has_the_functions(monkeypatch, keras_trainer, version):
    monkeypatch.setattr(keras, "__version__", version)
    reduce_per_replica, maybe_symbolic_build = keras_trainer
    with warnings.catch_warnings():
        warnings.simplefilter("error")
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


def changed_reduce_per_replica(values, strategy, reduction, axis=0):
    return values


def moved_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras.src.backend.tensorflow.trainer", None)


def moved_function(monkeypatch):
    monkeypatch.delattr(trainer, "reduce_per_replica")


def changed_function(monkeypatch):
    monkeypatch.setattr(trainer, "reduce_per_replica", changed_reduce_per_replica)


@pytest.mark.parametrize("change", [moved_module, moved_function, changed_function])
@pytest.mark.parametrize("version", VERSIONS)
def test_workaround_is_not_applied_when_keras_moved_or_changed_the_functions(
    monkeypatch, keras_trainer, change, version
):
    monkeypatch.setattr(keras, "__version__", version)
    change(monkeypatch)
    before = (
        vars(trainer).get("reduce_per_replica"),
        trainer.TensorFlowTrainer._maybe_symbolic_build,
    )
    with pytest.warns(UserWarning, match=f"Keras {version} does not have in the expected"):
        assert enable_multi_worker_fit() is False
    after = vars(trainer).get("reduce_per_replica"), trainer.TensorFlowTrainer._maybe_symbolic_build
    assert after == before
    assert not getattr(trainer, _compat._PATCHED)


def test_private_attribute():
    assert _compat.private_attribute(
        "keras.src.backend.tensorflow.trainer", "TensorFlowTrainer", ""
    )
    with pytest.warns(UserWarning, match=r"`keras.src.nowhere.f`, .*; the fallback\.$"):
        assert _compat.private_attribute("keras.src.nowhere", "f", "the fallback.") is None
    with pytest.warns(UserWarning, match=r"`keras.src.backend.tensorflow.trainer.gone`"):
        assert _compat.private_attribute(trainer.__name__, "gone", "") is None


# ------------------------------------------------------- supported versions

SETUP = (ROOT / "setup.py").read_text()
COMPATIBILITY = (ROOT / "docs" / "compatibility.md").read_text()
PACKAGES = ("tensorflow", "keras", "tensorflow-probability")


def release(version):
    return tuple(int(part) for part in re.match(r"\d+(\.\d+)*", version).group(0).split("."))


@pytest.mark.parametrize("package", PACKAGES)
def test_setup_bounds_match_the_compatibility_table_and_the_installed_release(package):
    requirement = re.search(rf'"{package}(?:\[\w+\])?>=([\d.]+),<([\d.]+)"', SETUP)
    assert requirement, f"{package} needs a lower and an upper bound in setup.py"
    lowest, below = requirement.groups()
    row = f"| {package} | >={lowest},<{below} | {lowest} | {below} |"
    assert row in COMPATIBILITY.splitlines()
    # The release installed here, which the suite runs on, is within the bounds.
    installed = release(importlib.metadata.version(package))
    assert release(lowest) <= installed < release(below)
    assert release(below) == (release(lowest)[0] + 1,)  # the next major release


# ----------------------------------------------------------- backend guard


@pytest.mark.parametrize("backend", ["jax", "torch", "numpy"])
@pytest.mark.parametrize(
    "construct, name",
    [
        (lambda: UpdateSkipper(), "UpdateSkipper"),
        (lambda: _compat.require_tensorflow_backend("f"), "f"),
    ],
)
def test_tensorflow_only_classes_raise_under_another_backend(monkeypatch, backend, construct, name):
    # The detected backend is patched: Keras' own backend is fixed at import. (The
    # layers run on every backend, and the models refuse others on import:
    # tests/test_backends.py checks both in subprocesses.)
    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    pattern = rf"^Expected the TensorFlow backend: `{name}` .*Received: backend='{backend}'$"
    with pytest.raises(ValueError, match=pattern):
        construct()


def test_tensorflow_backend_passes():
    assert keras.backend.backend() == "tensorflow"
    _compat.require_tensorflow_backend("f")


# --------------------------------------------- TensorFlow's private XLA test


def scan_loops(layer, signature, jit_compile=False):
    """The number of `tf.scan` loops in `layer`'s traced forward graph (none: unrolled)."""
    function = tf.function(layer, jit_compile=jit_compile, input_signature=[signature])
    graph = function.get_concrete_function().graph
    return sum(op.type in ("While", "StatelessWhile") for op in graph.get_operations())


def test_compiling_with_xla():
    assert not _compat.compiling_with_xla()  # eager
    traced = {}

    @tf.function(jit_compile=False)
    def graph(x):
        traced["graph"] = _compat.compiling_with_xla()
        return x

    @tf.function(jit_compile=True)
    def xla(x):
        traced["xla"] = _compat.compiling_with_xla()
        return x

    graph(tf.zeros(1))
    xla(tf.zeros(1))
    assert traced == {"graph": False, "xla": True}


@pytest.mark.parametrize("moved", [False, True])
def test_without_tf_xla_test_auto_sweeps_are_scanned_and_never_halved(monkeypatch, moved):
    """The fallback counts every trace as XLA's: "auto" sweeps are neither unrolled nor halved."""
    if moved:
        monkeypatch.setattr(_compat, "_graph_or_parents_in_xla_context", None)
    # Lines long enough to be swept in halves (128 x 8 x 16 values per half line).
    signature = tf.TensorSpec((256, 8, 8, 2))
    layers = {
        implementation: SpatialDependency(
            3, num_features=16, directions=1, implementation=implementation
        )
        for implementation in sweep.IMPLEMENTATIONS
    }
    loops = {}
    for implementation, layer in layers.items():
        layer.build(signature.shape)
        loops[implementation] = scan_loops(layer, signature)
    if moved:  # one loop: scanned, the batch whole; an explicit choice is kept
        assert loops == {"auto": 1, "unrolled": 0, "scanned": 1}
    else:  # unrolled by default; two loops: the two halves of the batch
        assert loops == {"auto": 0, "unrolled": 0, "scanned": 2}


FALLBACK_CHECK = textwrap.dedent(
    """
    import sys
    import warnings
    import numpy as np
    import tensorflow as tf
    # As if a TF release had moved the private module.
    sys.modules["tensorflow.python.ops.control_flow_util"] = None
    # The TensorFlow sweeps, and with them the check, load on the first call.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import keras_sdn
        layer = keras_sdn.layers.SpatialDependency(3, directions=2)
        x = np.random.default_rng(0).normal(size=(4, 5, 6, 2)).astype("float32")
        eager = layer(x).numpy()
    print([str(warning.message) for warning in caught if warning.category is UserWarning])
    from keras_sdn import _compat
    assert _compat.compiling_with_xla()
    graph = tf.function(layer)(x).numpy()
    np.testing.assert_allclose(graph, eager, rtol=1e-5, atol=1e-6)
    print("fallback ok")
    """
)


def test_keras_sdn_warns_and_runs_when_tf_moves_its_xla_test():
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
    assert "`tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext`" in (
        completed.stdout
    )
    assert "tf.scan loops, never unrolled, and never in batch halves" in completed.stdout
