"""End-to-end test of examples/train_sdn_vae.py: a handful of steps into a temporary directory."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf
from PIL import Image
from tensorflow.core.util import event_pb2

from keras_sdn.models import SDNVAE

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_sdn_vae.py"
_spec = importlib.util.spec_from_file_location("train_sdn_vae", SCRIPT)
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)
# The convolutional baseline keeps the run short (the SDN model itself is
# covered by test_sdn_vae.py); everything the script writes is the same.
ARGUMENTS = [
    "--no-sdn",
    "--image-size=8",
    "--batch-size=8",
    "--steps-per-epoch=2",
    "--test-examples=16",
    "--importance-samples=2",
    "--samples-per-temperature=2",
]


def run(output_dir, *arguments):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), f"--output-dir={output_dir}", *ARGUMENTS, *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=1200,
    )


def logged_images(log_dir):
    """The images of TensorBoard's image plugin in the event files of `log_dir`, by tag."""
    images = {}
    for path in log_dir.glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "images":
                    width, height, png = tf.make_ndarray(value.tensor)
                    image = tf.io.decode_png(png).numpy()
                    assert image.shape[:2] == (int(height), int(width))
                    images[value.tag] = image
    return images


def test_train_evaluate_sample_export_and_continue(tmp_path, capsys):
    # The first step (it compiles) is not counted: the budget stops training after the second.
    budget = ["--train-seconds=1e-6", "--steps-per-epoch=5"]
    first = run(tmp_path, *budget)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "bpd" in first.stdout  # the progress bar
    assert "Training on synthetic_shapes images at 8x8 (--image-size)" in first.stdout

    results = json.loads((tmp_path / "results.json").read_text())
    assert results["training_steps"] == 2
    assert results["train_seconds_budget"] == 1e-6 and results["training_seconds"] > 0
    assert results["dataset"] == "synthetic_shapes"
    model = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(model, SDNVAE) and int(model.optimizer.iterations.numpy()) == 2
    assert results["use_sdn"] is False and results["image_shape"] == [8, 8, 3]
    assert 0 < results["test_bits_per_dim_importance_weighted"] < 16
    assert 0 < results["test_bits_per_dim_elbo"] < 16

    logged = logged_images(tmp_path / "logs" / "train")
    assert set(logged) == {"samples", "reconstructions"}
    # Four temperatures of two 8x8 samples; two pairs of rows (test images,
    # reconstructions) of two images: each image with a one-pixel gap.
    assert logged["samples"].shape == (4 * 9, 2 * 9, 3)
    assert logged["reconstructions"].shape == (4 * 9, 2 * 9, 3)
    for name in ("samples", "reconstructions"):
        picture = Image.open(tmp_path / f"{name}.png")
        assert picture.size[0] > logged[name].shape[1] and picture.size[1] > logged[name].shape[0]

    exported = tf.saved_model.load(str(tmp_path / "saved_model"))
    served = exported.signatures["serving_default"](images=tf.zeros((3, 8, 8, 3), tf.uint8))
    assert served["bits_per_dim"].shape == (3,) and np.all(served["bits_per_dim"] > 0)
    assert served["reconstruction"].shape == (3, 8, 8, 3)
    samples = exported.signatures["sample"](count=tf.constant([2]), temperature=tf.constant([0.8]))
    assert samples["images"].shape == (2, 8, 8, 3) and samples["images"].dtype == tf.uint8

    # The same command again: the run is finished, the command says so and what to do.
    example.main([f"--output-dir={tmp_path}", *ARGUMENTS, *budget])
    message = capsys.readouterr().out
    assert f"{tmp_path} holds a finished run: 2 steps in 1 epoch" in message
    for advice in ("keras-sdn sample", "--epochs", "--restart"):
        assert advice in message
    assert json.loads((tmp_path / "results.json").read_text()) == results

    # More epochs continue it.
    continued = run(tmp_path, "--epochs=2", "--steps-per-epoch=5")
    assert continued.returncode == 0, continued.stderr[-3000:]
    assert f"Continuing the run in {tmp_path} after epoch 1" in continued.stdout
    assert "Epoch 2/2" in continued.stdout and "Epoch 1/2" not in continued.stdout
    assert json.loads((tmp_path / "results.json").read_text())["training_steps"] == 7


def test_restart_deletes_only_the_run(tmp_path):
    for name in example.RUN_OUTPUTS:
        (tmp_path / name).mkdir()
        (tmp_path / name / "file").write_text("written by a run")
    (tmp_path / "notes.txt").write_text("the user's")
    example.delete_run(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_the_image_size_is_announced_with_how_to_change_it(tmp_path):
    args = example.parse_args(["--dataset", str(tmp_path)])
    note = example.image_size_note(args, 16)
    assert f"Training on {tmp_path} images center-cropped and resized to 16x16" in note
    assert "the tiny preset's size" in note and "--image-size N" in note
    assert "cifar10 32x32" in note
