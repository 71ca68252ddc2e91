"""The examples stop on bad data settings with the message and a non-zero status, no traceback.

Every case fails before a model is trained (most before one is built).
"""

import importlib.util
import os
import pathlib
import subprocess
import sys
import types
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sdn_example = _load("train_sdn_vae")
beta_example = _load("train_beta_vae")
# What `datasets` reads of the model.
MODEL = types.SimpleNamespace(num_bits=5, image_shape=(16, 16, 3))


def test_sdn_example_rejects_a_missing_dataset_directory(tmp_path, capsys):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(SystemExit) as exit_info:
        sdn_example.main(["--dataset", str(missing), f"--output-dir={tmp_path / 'run'}"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--dataset" in error and str(missing) in error and "existing directory" in error
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag", ["--batch-size=0", "--epochs=-1", "--learning-rate=0"])
def test_sdn_example_rejects_bad_flag_values(flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sdn_example.main([flag, f"--output-dir={tmp_path}"])
    assert exit_info.value.code == 2
    assert flag.split("=")[0] in capsys.readouterr().err


def test_sdn_example_accepts_a_directory_of_images(tmp_path):
    for index in range(30):
        pixels = np.full((20, 24, 3), 8 * index, np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{index}.{'png' if index % 2 else 'jpg'}")
    args = sdn_example.parse_args(["--dataset", str(tmp_path), "--batch-size=4"])
    train, test = sdn_example.datasets(args, MODEL)
    batch = next(iter(train))
    assert batch.shape == (4, 16, 16, 3) and batch.numpy().max() <= 31
    assert sum(int(b.shape[0]) for b in test) >= 1


def test_sdn_example_stops_on_a_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    args = sdn_example.parse_args(["--dataset", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        sdn_example.datasets(args, MODEL)
    message = exit_info.value.code
    assert message.startswith("error: ") and "PNG or JPEG" in message and str(tmp_path) in message


def test_sdn_example_stops_when_a_download_fails(tmp_path):
    args = sdn_example.parse_args(["--dataset", "cifar10", "--data-dir", str(tmp_path)])
    failure = ConnectionError("no network")
    with mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare", side_effect=failure):
        with pytest.raises(SystemExit) as exit_info:
            sdn_example.datasets(args, MODEL)
    message = exit_info.value.code
    assert message.startswith("error: ") and "cifar10" in message and "no network" in message


def test_beta_example_rejects_bad_values(tmp_path, capsys):
    for arguments, flag in [
        (["--dataset", str(tmp_path)], "--dataset"),
        (["--num-bits", "9"], "--num-bits"),
        (["--steps", "0"], "--steps"),
        (["--betas", "1", "0"], "--betas"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            beta_example.main(arguments + [f"--output-dir={tmp_path / 'run'}"])
        assert exit_info.value.code == 2
        assert flag in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_beta_example_stops_on_missing_shapes3d_without_a_traceback(tmp_path):
    command = [
        sys.executable, str(EXAMPLES / "train_beta_vae.py"), "--dataset", "shapes3d",
        "--data-dir", str(tmp_path / "tfds"), "--output-dir", str(tmp_path / "run"),
    ]  # fmt: skip
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=300
    )
    assert completed.returncode == 1
    assert "error: Dataset 'shapes3d'" in completed.stderr and "tfds build" in completed.stderr
    assert "Traceback" not in completed.stderr
