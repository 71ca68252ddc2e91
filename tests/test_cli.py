"""The `keras-sdn` command on tiny trained runs: every subcommand, its files and its errors."""

import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_sdn.cli import main
from keras_sdn.cli.images import GAP
from keras_sdn.cli.images import read_images
from keras_sdn.cli.run_folder import Run
from keras_sdn.cli.run_folder import save_model
from keras_sdn.cli.run_folder import write_atomically
from keras_sdn.cli.run_folder import write_json
from keras_sdn.data import load_images
from keras_sdn.data import quantize
from keras_sdn.models import BetaVAE
from tiny_models import tiny_sdn_vae

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIDE = 8  # the SDN-VAE's image side
SCALE = 64 // SIDE  # grids enlarge its images to 64 pixels
NUM_BITS = 5
TEST_EXAMPLES = 16


def train(model, image_size, steps):
    images = load_images(
        batch_size=4, image_size=image_size, num_bits=model.num_bits, num_examples=16, repeat=True
    )
    model.compile()
    model.fit(images, steps_per_epoch=steps, epochs=1, verbose=0)


@pytest.fixture(scope="module")
def sdn_run(tmp_path_factory):
    """A run folder of a two-layer SDN-VAE trained for a few steps, as the example writes it."""
    run_dir = tmp_path_factory.mktemp("sdn_run")
    model = tiny_sdn_vae(image_shape=(SIDE, SIDE, 3), num_layers=2, num_bits=NUM_BITS)
    train(model, SIDE, steps=3)
    save_model(model, run_dir)
    write_json(
        run_dir / "results.json", {"dataset": "synthetic_shapes", "test_examples": TEST_EXAMPLES}
    )
    return run_dir


@pytest.fixture(scope="module")
def beta_runs(tmp_path_factory):
    """The output folder of the β-VAE example, with one run: conv_beta1."""
    output_dir = tmp_path_factory.mktemp("beta_vae")
    model = BetaVAE(latent_dim=3, decoder="conv", num_bits=NUM_BITS, seed=0)
    model.build((None, 64, 64, 3))
    train(model, None, steps=2)
    run_dir = output_dir / "conv_beta1"
    save_model(model, run_dir)
    write_json(run_dir / "results.json", {"dataset": "synthetic_shapes", "settings": {}})
    return output_dir


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A 30x40 (height x width) photo, and a folder with two images of the model's size."""
    directory = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), np.uint8)).save(directory / "wide.png")
    folder = directory / "small"
    folder.mkdir()
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), np.uint8)).save(folder / name)
    (directory / "broken.png").write_text("not an image")
    return directory


def cell(picture, row, column, side=SIDE, scale=SCALE):
    """The image at (row, column) of a grid, shrunk back to its pixels."""
    step = scale * side + GAP
    block = picture[
        row * step : row * step + scale * side, column * step : column * step + scale * side
    ]
    return block[::scale, ::scale]


def displayed(images):
    """Images of NUM_BITS bits as the grids show them (0..255)."""
    return np.round(np.asarray(images, np.float64) * 255 / (2**NUM_BITS - 1)).astype(np.uint8)


def grid_size(rows, columns, side=SIDE, scale=SCALE):
    """(width, height) of a grid."""
    return columns * (scale * side + GAP) - GAP, rows * (scale * side + GAP) - GAP


def run_command(capsys, *arguments):
    """`main(arguments)`'s exit status and output (an argparse error raises SystemExit)."""
    try:
        status = main([str(argument) for argument in arguments])
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr()


def assert_one_line_error(stderr, *words):
    """The last line of `stderr` is an error naming `words`; no traceback."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in stderr
    assert "error:" in lines[-1], stderr
    for word in words:
        assert word in lines[-1], stderr


def test_model_keras_loads_with_averaged_weights(sdn_run):
    loaded = keras.models.load_model(sdn_run / "model.keras")
    assert int(loaded.optimizer.iterations.numpy()) == 3
    averaged = [np.asarray(w) for w in loaded.averaged_weights]
    trained = [np.asarray(w) for w in loaded.trainable_weights]
    assert any(not np.allclose(a, t) for a, t in zip(averaged, trained))


def test_sample_grid_and_raw_are_the_same_seeded_draws(sdn_run, tmp_path, capsys):
    grid_path, raw_path = tmp_path / "out" / "grid.png", tmp_path / "raw.npy"
    common = [sdn_run, "--count", 5, "--temperature", 0.7, "--seed", 3]
    assert run_command(capsys, "sample", *common, "--columns", 3, "--output", grid_path)[0] == 0
    assert run_command(capsys, "sample", *common, "--raw", "--output", raw_path)[0] == 0

    raw = np.load(raw_path)
    assert raw.shape == (5, SIDE, SIDE, 3) and raw.dtype == np.uint8
    assert raw.max() <= 2**NUM_BITS - 1 and raw.max() > 0
    picture = np.asarray(Image.open(grid_path))
    assert Image.open(grid_path).size == grid_size(rows=2, columns=3)
    for index in range(5):
        np.testing.assert_array_equal(cell(picture, index // 3, index % 3), displayed(raw[index]))
    assert np.all(cell(picture, 1, 2) == 255)  # the grid's empty sixth place
    # Another seed, other samples.
    other = tmp_path / "other.npy"
    run_command(capsys, "sample", sdn_run, "--count", 5, "--seed", 4, "--raw", "--output", other)
    assert not np.array_equal(np.load(other), raw)


def test_sample_around_an_image(sdn_run, photos, tmp_path, capsys):
    output = tmp_path / "around.png"
    status, captured = run_command(
        capsys, "sample", sdn_run, "--around", photos / "wide.png", "--fixed-layers", 2,
        "--count", 4, "--output", output,
    )  # fmt: skip
    assert status == 0, captured.err
    assert "center-cropped to 30x30 and resized to 8x8" in captured.err
    assert Image.open(output).size == grid_size(rows=2, columns=2)


def test_reconstruct_shows_inputs_above_reconstructions(sdn_run, photos, tmp_path, capsys):
    output = tmp_path / "reconstructions.png"
    status, captured = run_command(
        capsys, "reconstruct", sdn_run, photos / "small", photos / "wide.png",
        "--columns", 2, "--output", output, "--seed", 0,
    )  # fmt: skip
    assert status == 0, captured.err
    assert "wide.png is 40x30" in captured.err and "a.png" not in captured.err
    picture = np.asarray(Image.open(output))
    # Inputs a, b above their reconstructions; then wide above its reconstruction.
    assert Image.open(output).size == grid_size(rows=4, columns=2)
    for column, name in enumerate(("a.png", "b.jpg")):
        original = tf.io.decode_image(tf.io.read_file(str(photos / "small" / name)), channels=3)
        np.testing.assert_array_equal(
            cell(picture, 0, column), displayed(quantize(original, NUM_BITS))
        )
    np.testing.assert_array_equal(cell(picture, 3, 1), 255)  # the grid's empty place
    # The reconstruction rows are the model's reconstructions, with the same seed.
    run = Run(sdn_run)
    images = read_images([photos / "small", photos / "wide.png"], run.model)
    run.reseed(0)
    reconstructions = displayed(run.model.reconstruct(images))
    for index, (row, column) in enumerate([(1, 0), (1, 1), (3, 0)]):
        np.testing.assert_array_equal(cell(picture, row, column), reconstructions[index])


def test_interpolate_strip(sdn_run, photos, tmp_path, capsys):
    output = tmp_path / "strip.png"
    status, captured = run_command(
        capsys, "interpolate", sdn_run, photos / "small" / "a.png", photos / "small" / "b.jpg",
        "--steps", 4, "--fixed-layers", 1, "--output", output,
    )  # fmt: skip
    assert status == 0, captured.err
    picture = np.asarray(Image.open(output))
    assert Image.open(output).size == grid_size(rows=1, columns=6)
    original = tf.io.decode_image(tf.io.read_file(str(photos / "small" / "a.png")), channels=3)
    np.testing.assert_array_equal(cell(picture, 0, 0), displayed(quantize(original, NUM_BITS)))


def test_evaluate_matches_the_models_log_likelihood(sdn_run, tmp_path, capsys):
    output = tmp_path / "evaluation.json"
    status, captured = run_command(
        capsys, "evaluate", sdn_run, "-k", 3, "--batch-size", 8, "--seed", 5, "--output", output
    )
    assert status == 0, captured.err
    results = json.loads(output.read_text())
    assert results["examples"] == TEST_EXAMPLES and results["dataset"] == "synthetic_shapes"
    assert results["importance_samples"] == 3 and results["model"] == "SDNVAE"
    assert results["run"] == os.path.relpath(sdn_run, tmp_path)

    run = Run(sdn_run)
    run.reseed(5)
    model = run.model
    images = load_images(
        split="test", batch_size=8, num_bits=NUM_BITS, image_size=SIDE, shuffle=False,
        num_examples=TEST_EXAMPLES,
    )  # fmt: skip
    elbo, weighted = [], []
    for batch in images:
        elbo.append(model.bits_per_dim(model.log_likelihood(batch, num_samples=1)))
        weighted.append(
            model.bits_per_dim(model.log_likelihood(batch, num_samples=3, max_batch_size=512))
        )
    np.testing.assert_allclose(results["test_bits_per_dim_elbo"], np.mean(elbo), rtol=1e-6)
    np.testing.assert_allclose(
        results["test_bits_per_dim_importance_weighted"], np.mean(weighted), rtol=1e-6
    )
    assert f"{results['test_bits_per_dim_elbo']:.4f} (negative ELBO)" in captured.out


def test_export_serves_signatures(sdn_run, tmp_path, capsys):
    output = tmp_path / "models" / "1"
    assert run_command(capsys, "export", sdn_run, "--output", output)[0] == 0
    served = tf.saved_model.load(str(output))
    samples = served.signatures["sample"](count=tf.constant([2]), temperature=tf.constant([0.8]))
    assert samples["images"].shape == (2, SIDE, SIDE, 3)
    assert int(tf.reduce_max(samples["images"])) <= 2**NUM_BITS - 1
    status, captured = run_command(capsys, "export", sdn_run, "--output", output)
    assert status == 1
    assert_one_line_error(captured.err, "exists", "--overwrite")


def test_beta_vae_run(beta_runs, photos, tmp_path, capsys):
    run_dir = beta_runs / "conv_beta1"
    strip = tmp_path / "strip.png"
    status, captured = run_command(
        capsys, "interpolate", run_dir, photos / "wide.png", photos / "small" / "a.png",
        "--steps", 3, "--output", strip,
    )  # fmt: skip
    assert status == 0, captured.err
    assert Image.open(strip).size == grid_size(rows=1, columns=5, side=64, scale=1)
    output = tmp_path / "evaluation.json"
    status, captured = run_command(
        capsys, "evaluate", run_dir, "--examples", 8, "-k", 4, "--output", output
    )
    assert status == 0, captured.err
    results = json.loads(output.read_text())
    assert results["model"] == "BetaVAE" and results["examples"] == 8
    for key in ("test_bits_per_dim_elbo", "test_bits_per_dim_importance_weighted"):
        assert 0 < results[key] < NUM_BITS + 1, key

    status, captured = run_command(
        capsys, "sample", run_dir, "--around", photos / "wide.png", "--fixed-layers", 1
    )
    assert status == 1
    assert_one_line_error(captured.err, "needs a run of an SDNVAE", "BetaVAE")
    # The example's output folder is not a run: the message names its runs.
    status, captured = run_command(capsys, "sample", beta_runs, "--output", tmp_path / "x.png")
    assert status == 1
    assert_one_line_error(captured.err, "one run per model", "conv_beta1")


@pytest.mark.parametrize(
    "arguments, words",
    [
        (["sample", "{missing}"], ["no run folder"]),
        (["sample", "{run}", "--count", "0"], ["--count", "positive integer"]),
        (["sample", "{run}", "--temperature", "nan"], ["--temperature"]),
        (["interpolate", "{run}", "a.png", "b.png", "--steps", "x"], ["--steps"]),
    ],
)
def test_bad_arguments_exit_2(sdn_run, tmp_path, capsys, arguments, words):
    arguments = [a.format(run=sdn_run, missing=tmp_path / "missing") for a in arguments]
    status, captured = run_command(capsys, *arguments)
    assert status == 2
    assert_one_line_error(captured.err, *words)


def test_failed_commands_exit_1_and_write_nothing(sdn_run, photos, tmp_path, capsys):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    failures = [
        (["reconstruct", sdn_run, photos / "broken.png"], ["cannot read", "broken.png"]),
        (["reconstruct", sdn_run, photos / "nothing.png"], ["no image file or folder"]),
        (["interpolate", sdn_run, photos / "wide.png", photos / "wide.png", "--steps", 1],
         ["--steps 1"]),
        (["sample", sdn_run, "--around", photos / "wide.png"], ["--fixed-layers"]),
        (["sample", sdn_run, "--around", photos / "wide.png", "--fixed-layers", 3],
         ["2 latent layers"]),
        (["sample", sdn_run, "--raw"], ["--raw writes a NumPy array (.npy)"]),
        (["evaluate", sdn_run, "--dataset", photos / "nothing"], ["name"]),
        (["sample", tmp_path], ["holds no model.keras"]),
    ]  # fmt: skip
    for arguments, words in failures:
        status, captured = run_command(capsys, *arguments, "--output", output_dir / "result.png")
        assert status == 1, arguments
        assert_one_line_error(captured.err, *words)
    assert list(output_dir.iterdir()) == []


def test_interrupted_writes_leave_nothing(tmp_path):
    def failing_write(path):
        pathlib.Path(path).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(tmp_path / "grid.png", failing_write)
    assert list(tmp_path.iterdir()) == []


def test_console_script_and_python_m(sdn_run, tmp_path):
    """The installed `keras-sdn` entry point and `python -m keras_sdn` run the command."""
    egg_base = tmp_path / "egg"
    egg_base.mkdir()
    subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(egg_base)],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    (info,) = egg_base.glob("*.egg-info")
    (entry_point,) = [
        ep
        for ep in importlib.metadata.PathDistribution(info).entry_points
        if ep.group == "console_scripts"
    ]
    assert entry_point.name == "keras-sdn" and entry_point.load() is main

    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    script = (
        "import sys, importlib.metadata as m;"
        "from pathlib import Path;"
        f"ep = [e for e in m.PathDistribution(Path({str(info)!r})).entry_points if e.name == 'keras-sdn'][0];"
        "sys.exit(ep.load()())"
    )
    output = tmp_path / "samples.npy"
    completed = subprocess.run(
        [sys.executable, "-c", script, "sample", str(sdn_run), "--count", "3", "--raw",
         "--output", str(output)],
        env=environment, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert np.load(output).shape == (3, SIDE, SIDE, 3)

    completed = subprocess.run(
        [sys.executable, "-m", "keras_sdn", "sample", str(tmp_path / "missing")],
        env=environment, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 2
    assert_one_line_error(completed.stderr, "no run folder")
