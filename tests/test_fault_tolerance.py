"""keras_sdn.distribute.BackupAndRestore: training killed mid-epoch or mid-backup resumes exactly.

Each run is a process of tests/distributed_training.py training a small model
with SDN layers for 3 epochs of 4 steps; a killed run ends with os._exit, as
abruptly as a preemption.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "tests" / "distributed_training.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
TOTAL_STEPS = 3 * 4
KILLED_AT_STEP = 3  # exit codes of tests/distributed_training.py
KILLED_WHILE_SAVING = 4
POINTER = "checkpoint.json"


def start(out, backup, *flags):
    return subprocess.Popen(
        [sys.executable, SCRIPT, "resumable", str(out), str(backup), *map(str, flags)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process, expected_code=0):
    try:
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == expected_code, stderr[-4000:]


def result(out):
    summary = json.loads(pathlib.Path(f"{out}.json").read_text())
    weights = np.load(f"{out}.npz")
    return summary, [weights[name] for name in weights.files]


def backup_files(backup):
    return sorted(os.listdir(backup))


def committed_backup(backup):
    pointer = json.loads((backup / POINTER).read_text())
    assert (backup / pointer["weights"]).exists()
    return pointer


class UninterruptedRun:
    """The reference run, started at once to run beside the interrupted ones."""

    def __init__(self, root):
        self.root = root
        self.process = start(root / "run", root / "backup")
        self._result = None

    def result(self):
        if self._result is None:
            finish(self.process)
            assert not (self.root / "backup").exists()  # deleted once training completes
            self._result = result(self.root / "run")
        return self._result

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = UninterruptedRun(tmp_path_factory.mktemp("uninterrupted"))
    yield run
    run.stop()


def test_killed_mid_epoch_then_while_saving_resumes_exactly(uninterrupted, tmp_path):
    out, backup = tmp_path / "run", tmp_path / "backup"
    # 1. Killed after step 6, half-way through the second epoch (steps 5 to 8).
    finish(start(out, backup, "--die-at-step", 6), expected_code=KILLED_AT_STEP)
    assert committed_backup(backup)["epoch"] == 1
    assert len(backup_files(backup)) == 2  # the pointer and the weights it names

    # 2. Restarted: repeats the second epoch, backs it up, then dies with the
    # weights of the last epoch's backup half-written.
    finish(
        start(out, backup, "--die-saving-epoch", 2, "--keep-backup", 1),
        expected_code=KILLED_WHILE_SAVING,
    )
    pointer = committed_backup(backup)
    assert pointer["epoch"] == 2
    complete = (POINTER, pointer["weights"])
    incomplete = [name for name in backup_files(backup) if name not in complete]
    assert len(incomplete) == 1 and incomplete[0].startswith(".incomplete-")
    assert not pathlib.Path(f"{out}.json").exists()

    # 3. Restarted: resumes after the second epoch, from the complete backup.
    finish(start(out, backup, "--keep-backup", 1))
    summary, weights = result(out)
    assert summary == {"steps": TOTAL_STEPS, "epochs_run": [2]}
    _, expected = uninterrupted.result()
    # The weights equal those of the run that was never interrupted.
    for value, reference in zip(weights, expected, strict=True):
        np.testing.assert_allclose(value, reference, rtol=1e-6, atol=1e-7)
    # Only the final, complete backup is left.
    pointer = committed_backup(backup)
    assert pointer["epoch"] == 3
    assert backup_files(backup) == sorted([POINTER, pointer["weights"]])


def test_uninterrupted_run(uninterrupted):
    summary, _ = uninterrupted.result()
    assert summary == {"steps": TOTAL_STEPS, "epochs_run": [0, 1, 2]}
