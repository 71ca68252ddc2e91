"""benchmarks/model_speed.py runs end to end on a tiny model and writes what it measures.

Nothing here is timed: the numbers come from running the script.
"""

import pytest

from test_benchmarks import run_script

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


def test_model_speed_writes_consistent_results(tmp_path):
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
        output=tmp_path / "model_speed.json",
    )
    (row,) = result["results"]
    assert (row["preset"], row["image_shape"], row["batch"]) == ("tiny", [8, 8, 3], 2)
    for model in ("sdn", "baseline"):
        assert row[f"{model} step ms"] > 0
        assert row[f"{model} sample images/s"] > 0
        assert row[f"{model} step peak MiB"] > 0
        assert row[f"{model} first step s"] > 0
    assert row["step ratio"] == pytest.approx(
        row["sdn step ms"] / row["baseline step ms"], rel=0.01
    )
    assert row["sample ratio"] == pytest.approx(
        row["baseline sample images/s"] / row["sdn sample images/s"], rel=0.01
    )
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
