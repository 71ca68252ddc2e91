"""benchmarks/model_speed.py runs end to end on a tiny model and writes what it measures.

Nothing here is timed: the numbers come from running the script.
"""

import os

import numpy as np
import tensorflow as tf

from keras_sdn.layers import SpatialDependency
from test_benchmarks import ROOT
from test_benchmarks import run_script
from tiny_models import TWO_LAYER_FLAGS

PARTS = {
    "SDN sweeps: forward loops",
    "SDN sweeps: backward loops",
    "SDN sweeps: around the loops",
    "SDN projections, ResSDN conv and gate",
    "IAF networks",
    "other convolutions",
    "likelihood",
    "update: optimizer, skipping, EMA, metrics",
    "the rest (ELU, residual gates, KL, ...)",
}


def test_model_speed_writes_its_fields(tmp_path):
    result = run_script(
        "model_speed.py",
        "--presets",
        "tiny",
        "--image-size",
        "8",
        "--batch",
        "2",
        "--repeats",
        "1",
        "--sample-images",
        "2",
        "--profile-runs",
        "1",
        "--without-sweeps",
        *TWO_LAYER_FLAGS,
        "--set",
        "num_mixtures=2",
        output=tmp_path / "model_speed.json",
    )
    (row,) = result["results"]
    assert (row["preset"], row["image_shape"], row["batch"]) == ("tiny", [8, 8, 3], 2)
    for model in ("sdn", "baseline"):
        assert row[f"{model} step ms"] > 0
        assert row[f"{model} sample images/s"] > 0
        assert row[f"{model} step peak MiB"] > 0
        assert row[f"{model} first step s"] > 0
    for field in ("step ratio", "sdn without sweeps step ms", "without sweeps step ratio"):
        assert row[field] > 0
    assert row["sample ratio"] > 0
    sdn, baseline = row["profile"]["sdn"], row["profile"]["baseline"]
    assert set(sdn) == set(baseline) == PARTS
    # The SDN-VAE sweeps in both passes; the baseline has no SDN layer.
    for part in PARTS:
        if part.startswith("SDN"):
            assert sdn[part]["ms"] > 0 and sdn[part]["ops"] > 0
            assert baseline[part] == {"ms": 0, "ops": 0}
    for part in (
        "IAF networks",
        "other convolutions",
        "likelihood",
        "update: optimizer, skipping, EMA, metrics",
    ):
        assert sdn[part]["ms"] > 0 and baseline[part]["ms"] > 0


def test_sweeps_skipped_makes_the_correction_stage_the_identity(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    environment = dict(os.environ)
    try:
        import model_speed  # sets TensorFlow's environment variables for its own runs
    finally:
        os.environ.clear()
        os.environ.update(environment)

    layer = SpatialDependency(5, num_features=4, directions=2)
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 6, 6, 3)), tf.float32)
    layer(x)
    projected = tf.tanh(layer.project_in(x))
    with model_speed.sweeps_skipped():
        skipped = layer(x)
    np.testing.assert_allclose(skipped, layer.project_out(projected), rtol=1e-5, atol=1e-6)
    assert np.abs(layer(x) - skipped).max() > 1e-3  # restored on leaving the context
