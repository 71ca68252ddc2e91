"""End-to-end run of examples/train_beta_vae.py with minimal settings."""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "train_beta_vae.py"


def test_example_writes_numbers_and_plots(tmp_path):
    betas = [1.0, 3.0]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [
        sys.executable, str(SCRIPT), "--output-dir", str(tmp_path),
        "--betas", *map(str, betas), "--steps", "2", "--batch-size", "4",
        "--latent-dim", "4", "--sdn-num-features", "8", "--num-bits", "5",
        "--eval-batches", "1", "--metric-points", "8", "--metric-batch-size", "2",
        "--variance-samples", "20", "--mig-samples", "20", "--verbose", "2",
    ]  # fmt: skip
    completed = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]

    report = json.loads((tmp_path / "results.json").read_text())
    assert report["settings"]["betas"] == betas
    runs = {(r["decoder"], r["beta"]): r for r in report["results"]}
    assert set(runs) == {(d, b) for d in ("conv", "sdn") for b in betas}
    for result in runs.values():
        for key in ("elbo", "reconstruction", "kl", "negative_elbo_bits_per_dim"):
            assert math.isfinite(result[key]), key
        np.testing.assert_allclose(result["elbo"], -(result["reconstruction"] + result["kl"]), rtol=1e-4)
        np.testing.assert_allclose(
            result["negative_elbo_bits_per_dim"], -result["elbo"] / (64 * 64 * 3 * math.log(2)), rtol=1e-6
        )
        # 5-bit images: a 32-value likelihood can do no worse than ~5 bits by much.
        assert 0 < result["negative_elbo_bits_per_dim"] < 10
        for key in ("beta_vae_score", "factor_vae_score", "mig_score"):
            assert 0.0 <= result[key] <= 1.0, key
    assert runs[("sdn", 1.0)]["parameters"] != runs[("conv", 1.0)]["parameters"]

    for name in ("elbo", "beta_vae_score", "factor_vae_score", "mig_score"):
        with Image.open(tmp_path / f"{name}.png") as plot:
            assert plot.size[0] > 100 and plot.size[1] > 100
    for decoder in ("conv", "sdn"):
        for beta in betas:
            traversal = np.asarray(Image.open(tmp_path / f"traversals_{decoder}_beta{beta:g}.png"))
            assert traversal.shape == (4 * 64, 8 * 64, 3)  # 4 latents, original + 7 values
            reconstruction = np.asarray(Image.open(tmp_path / f"reconstructions_{decoder}_beta{beta:g}.png"))
            assert reconstruction.shape == (2 * 64, 8 * 64, 3)
            # The first column of the traversal grid is the shown image.
            np.testing.assert_array_equal(traversal[:64, :64], reconstruction[:64, :64])
