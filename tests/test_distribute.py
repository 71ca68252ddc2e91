"""keras_sdn.distribute and training under MirroredStrategy and MultiWorkerMirroredStrategy.

The strategies run in subprocesses (tests/distributed_training.py): logical
devices and TF_CONFIG must be set before TensorFlow starts.
"""

import argparse
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sdn.distribute import STRATEGY_NAMES
from keras_sdn.distribute import add_strategy_arguments
from keras_sdn.distribute import is_chief
from keras_sdn.distribute import replica_loss
from keras_sdn.distribute import replica_normal
from keras_sdn.distribute import strategy_from_name

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "tests" / "distributed_training.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
KINDS = ("generic", "sdn_vae", "beta_vae")
STEPS = 2 * 2  # tests/distributed_training.py: 2 epochs of 8 examples in global batches of 4


def start(*arguments, env=ENV):
    """Starts tests/distributed_training.py in a session of its own (killed as a group)."""
    return subprocess.Popen(
        [sys.executable, SCRIPT, *arguments],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish_all(processes):
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=400)
            assert process.returncode == 0, stderr[-4000:]
    finally:
        stop(processes)


def stop(processes):
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class MirroredRuns:
    """The runs on one device and under MirroredStrategy, started at once in the background."""

    def __init__(self, out):
        self.out = out
        self.process = start("mirrored", str(out), *KINDS)
        self._result = None

    def result(self):
        if self._result is None:
            finish_all([self.process])
            self._result = json.loads(self.out.read_text())
        return self._result


@pytest.fixture(scope="module")
def mirrored_runs(tmp_path_factory):
    runs = MirroredRuns(tmp_path_factory.mktemp("mirrored") / "runs.json")
    yield runs
    stop([runs.process])


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def train_on_two_workers(tmp_path, kinds, **environment):
    """Runs two workers of a MultiWorkerMirroredStrategy cluster; returns their results."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = [
        start(
            "worker",
            str(tmp_path / f"worker{index}"),
            str(tmp_path / "backup"),
            *kinds,
            env={
                **ENV,
                **environment,
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}}
                ),
            },
        )  # fmt: skip
        for index in range(2)
    ]
    finish_all(workers)
    return [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2)]


# First in the file: the mirrored runs (a fixture) go on beside the workers.
def test_multi_worker_mirrored_trains_identical_weights_on_two_workers(tmp_path, mirrored_runs):
    results = train_on_two_workers(tmp_path, KINDS)
    for result in results:
        assert result["multi_worker_fit_patched"] and not result["warnings"]
    for kind in KINDS:
        first, second = results[0][kind], results[1][kind]
        assert first["replicas"] == second["replicas"] == 2
        assert first["steps"] == second["steps"] == STEPS
        # Metrics are reduced over the workers: both report the same numbers.
        assert first["history"] == second["history"]
        assert all(np.isfinite(v).all() for v in first["history"].values())
        if kind == "generic":  # deterministic: the global batch is split, the loss averaged
            np.testing.assert_allclose(
                first["history"]["loss"],
                mirrored_runs.result()[kind]["one_device"]["loss"],
                rtol=1e-3,
            )
        weights = [np.load(tmp_path / f"worker{i}.{kind}.npz") for i in range(2)]
        assert len(weights[0].files) == len(weights[1].files) > 0
        for name in weights[0].files:
            np.testing.assert_array_equal(
                weights[0][name], weights[1][name], err_msg=f"{kind} {name}"
            )
        # Only the chief wrote the backup of the last epoch into the shared directory.
        backup = tmp_path / f"backup.{kind}"
        pointer = json.loads((backup / "checkpoint.json").read_text())
        assert pointer["epoch"] == 2
        assert sorted(os.listdir(backup)) == sorted(["checkpoint.json", pointer["weights"]])


@pytest.mark.parametrize("kind", KINDS)
def test_mirrored_over_two_devices_matches_one_device(mirrored_runs, kind):
    run = mirrored_runs.result()[kind]
    assert run["replicas"] == 2
    one_device, mirrored = run["one_device"], run["mirrored"]
    assert set(one_device) == set(mirrored) and "loss" in one_device
    # Every metric, reduced over the replicas, is the one-device value on the
    # global batch; the weights after training agree too (plain SGD, so a
    # gradient summed instead of averaged over the replicas would show).
    for name in one_device:
        np.testing.assert_allclose(mirrored[name], one_device[name], rtol=1e-3, err_msg=name)
    assert run["weights_max_difference"] < 1e-4


def test_replica_normal_and_replica_loss_under_mirrored(mirrored_runs):
    helpers = mirrored_runs.result()["replica_helpers"]
    # The replicas' noise, stacked, is the one-device noise of the global batch.
    assert helpers["noise_max_difference"] == 0.0
    assert helpers["scaled_losses"] == [0.5, 0.5]


def test_strategy_from_name():
    assert STRATEGY_NAMES == ("default", "mirrored", "multi_worker", "tpu")
    assert strategy_from_name("default") is tf.distribute.get_strategy()
    mirrored = strategy_from_name("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == 1  # the one CPU of this process
    with mirrored.scope():
        assert strategy_from_name("default") is mirrored


@pytest.mark.parametrize(
    "name, tpu, message",
    [
        ("gpu", None, r"^Expected `name` to be one of .* Received: name='gpu'$"),
        ("mirrored", "local", r"^Expected `tpu` to be None unless name='tpu'\. Received: tpu="),
        ("tpu", None, r"^Expected `tpu` to be a TPUClusterResolver .* Received: tpu=None$"),
    ],
)
def test_strategy_from_name_rejects_bad_arguments(name, tpu, message):
    with pytest.raises(ValueError, match=message):
        strategy_from_name(name, tpu)


def test_add_strategy_arguments():
    parser = add_strategy_arguments(argparse.ArgumentParser())
    assert parser.parse_args([]).strategy == "default"
    assert parser.parse_args([]).tpu is None
    parsed = parser.parse_args(["--strategy", "tpu", "--tpu", "local"])
    assert (parsed.strategy, parsed.tpu) == ("tpu", "local")
    with pytest.raises(SystemExit):
        parser.parse_args(["--strategy", "horovod"])


def test_replica_helpers_are_identities_on_one_device():
    loss = tf.constant(3.5)
    assert replica_loss(loss) is loss
    generator = keras.random.SeedGenerator(5)
    expected = keras.random.normal((3, 2), seed=keras.random.SeedGenerator(5))
    np.testing.assert_array_equal(replica_normal((3, 2), seed=generator), expected)


def test_is_chief():
    assert is_chief()

    class Resolver:
        def __init__(self, task_type, task_id, jobs):
            self.task_type, self.task_id, self.jobs = task_type, task_id, jobs

        def cluster_spec(self):
            return tf.train.ClusterSpec({job: ["127.0.0.1:1"] for job in self.jobs})

    class Strategy:
        def __init__(self, *resolver):
            self.cluster_resolver = Resolver(*resolver)

    assert is_chief(Strategy("worker", 0, ["worker"]))
    assert not is_chief(Strategy("worker", 1, ["worker"]))
    assert is_chief(Strategy("chief", 0, ["chief", "worker"]))
    assert not is_chief(Strategy("worker", 0, ["chief", "worker"]))


@pytest.mark.parametrize("version", ["3.16.0", "3.99.0"])
def test_multi_worker_fit_on_a_newer_keras_release(tmp_path, version):
    """The workaround depends on Keras' trainer module, not on `keras.__version__`."""
    results = train_on_two_workers(tmp_path, ["generic"], FAKE_KERAS_VERSION=version)
    for result in results:
        assert result["keras_version"] == version
        assert result["multi_worker_fit_patched"] and not result["warnings"]
        assert result["generic"]["replicas"] == 2 and result["generic"]["steps"] == STEPS
    assert results[0]["generic"]["history"] == results[1]["generic"]["history"]
    weights = [np.load(tmp_path / f"worker{i}.generic.npz") for i in range(2)]
    for name in weights[0].files:
        np.testing.assert_array_equal(weights[0][name], weights[1][name])
