"""End-to-end run of examples/train_beta_vae.py with minimal settings."""

import json
import math
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
from PIL import Image

import keras_sdn.models  # noqa: F401 (registers BetaVAE for keras.models.load_model)

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "train_beta_vae.py"
EVAL_IMAGES = 10
# Margins (pixels) around the image grid of the labelled pictures.
LEFT, RIGHT, TOP, BOTTOM = 130, 10, 75, 8


def held_out_images(num_bits):
    """The first held-out scenes as the example shows them (full-range uint8)."""
    from keras_sdn.data import load_images

    images = load_images(
        split="test",
        batch_size=EVAL_IMAGES,
        num_bits=num_bits,
        shuffle=False,
        num_examples=EVAL_IMAGES,
    )
    images = next(images.as_numpy_iterator()).astype(np.float64)
    return np.round(images * 255 / (2**num_bits - 1)).astype(np.uint8)


def test_example_writes_numbers_and_plots(tmp_path):
    betas = [1.0, 3.0]
    latent_dim, num_bits = 4, 5
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [
        sys.executable, str(SCRIPT), "--output-dir", str(tmp_path),
        "--betas", *map(str, betas), "--steps", "4", "--backup-every", "2", "--batch-size", "4",
        "--latent-dim", str(latent_dim), "--sdn-features", "8", "--num-bits", str(num_bits),
        "--eval-batches", "1", "--eval-images", str(EVAL_IMAGES), "--metric-points", "8",
        "--metric-batch-size", "2", "--variance-samples", "20", "--mig-samples", "20", "--verbose", "2",
    ]  # fmt: skip
    completed = subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    report = json.loads((tmp_path / "results.json").read_text())
    assert "output_dir" not in report["settings"]  # no machine paths in the record
    # One run folder per model: its model.keras and results, the backups gone.
    for decoder in ("conv", "sdn"):
        for beta in betas:
            run_dir = tmp_path / f"{decoder}_beta{beta:g}"
            model = keras.models.load_model(run_dir / "model.keras")
            assert (model.decoder, model.beta, int(model.steps_trained.numpy())) == (
                decoder,
                beta,
                4,
            )
            record = json.loads((run_dir / "results.json").read_text())
            assert record["dataset"] == "synthetic_shapes"
            assert record["result"] in report["results"]
            assert not (run_dir / "backup").exists()

    # The same command again keeps the trained models and their numbers.
    again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("Keeping the trained model in") == 4
    assert json.loads((tmp_path / "results.json").read_text()) == report
    assert report["settings"]["betas"] == betas
    runs = {(r["decoder"], r["beta"]): r for r in report["results"]}
    assert set(runs) == {(d, b) for d in ("conv", "sdn") for b in betas}
    for result in runs.values():
        for key in ("elbo", "reconstruction", "kl", "negative_elbo_bits_per_dim"):
            assert math.isfinite(result[key]), key
        np.testing.assert_allclose(
            result["elbo"], -(result["reconstruction"] + result["kl"]), rtol=1e-4
        )
        np.testing.assert_allclose(
            result["negative_elbo_bits_per_dim"],
            -result["elbo"] / (64 * 64 * 3 * math.log(2)),
            rtol=1e-6,
        )
        # 5-bit images: a 32-value likelihood can do no worse than ~5 bits by much.
        assert 0 < result["negative_elbo_bits_per_dim"] < 10
        for key in ("beta_vae_score", "factor_vae_score", "mig_score"):
            assert 0.0 <= result[key] <= 1.0, key
        assert 0.0 < result["reconstruction_mean_absolute_error"] < 255.0
        assert len(result["latent_kls"]) == latent_dim and min(result["latent_kls"]) >= 0.0
        assert result["num_collapsed_latents"] == sum(kl < 0.05 for kl in result["latent_kls"])
        # One curve point per epoch of --backup-every steps; the last one is the final model.
        assert [point["step"] for point in result["curve"]] == [2, 4]
        assert (
            result["curve"][-1]["reconstruction_mean_absolute_error"]
            == result["reconstruction_mean_absolute_error"]
        )
        for point in result["curve"]:
            assert 0 < point["negative_elbo_bits_per_dim"] < 10
    assert runs[("sdn", 1.0)]["parameters"] != runs[("conv", 1.0)]["parameters"]

    for name in ("elbo", "beta_vae_score", "factor_vae_score", "mig_score", "reconstruction_error"):
        with Image.open(tmp_path / f"{name}.png") as plot:
            assert plot.size[0] > 100 and plot.size[1] > 100
    with Image.open(tmp_path / "learning_curves.png") as plot:
        assert plot.size[0] > 400 and plot.size[1] > 100

    shown = held_out_images(num_bits)
    grid_left = LEFT + 64  # the traversals' first column is the input image
    for decoder in ("conv", "sdn"):
        for beta in betas:
            traversal = np.asarray(Image.open(tmp_path / f"traversals_{decoder}_beta{beta:g}.png"))
            # A row per latent; the input image, then 7 values.
            assert traversal.shape == (TOP + latent_dim * 64 + BOTTOM, LEFT + 8 * 64 + RIGHT, 3)
            for row in range(latent_dim):
                top = TOP + 64 * row
                np.testing.assert_array_equal(traversal[top : top + 64, LEFT:grid_left], shown[0])
            # Reconstructions: 8 held-out images (the first full row) above their reconstructions.
            reconstruction = np.asarray(
                Image.open(tmp_path / f"reconstructions_{decoder}_beta{beta:g}.png")
            )
            assert reconstruction.shape == (TOP + 2 * 64 + BOTTOM, LEFT + 8 * 64 + RIGHT, 3)
            inputs = reconstruction[TOP : TOP + 64, LEFT : LEFT + 8 * 64]
            np.testing.assert_array_equal(inputs, np.concatenate(list(shown[:8]), axis=1))
