"""The benchmark scripts run end to end on tiny shapes and write what they print.

Nothing here is timed: the scripts' numbers are measured by running them.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sdn.layers import SpatialDependency
from tiny_models import TWO_LAYER_FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--batch", "2", "--features", "8"]


def run_script(name, *args, output):
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", name), *args, "--output", str(output)],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    with open(output) as file:
        return json.load(file)


def test_layer_speed_writes_one_row_per_configuration(tmp_path):
    result = run_script(
        "layer_speed.py",
        "--sizes",
        "4",
        "6",
        "--directions",
        "1",
        "4",
        "--repeats",
        "1",
        "--modes",
        "graph",
        *TINY,
        output=tmp_path / "speed.json",
    )
    rows = result["rows"]
    assert [(row["size"], row["directions"]) for row in rows] == [(4, 1), (4, 4), (6, 1), (6, 4)]
    for row in rows:
        # Multiply-adds per pixel are the kernels' weights of 1x1 projections
        # and sweeps and of a 3x3 convolution: counted from the Keras layers.
        sdn = SpatialDependency(8, directions=row["directions"], use_bias=False)
        sdn.build((None, None, None, 8))
        conv = keras.layers.Conv2D(8, 3, use_bias=False)
        conv.build((None, None, None, 8))
        expected = sdn.count_params() / conv.count_params()
        assert row["arithmetic_ratio"] == pytest.approx(expected, abs=0.005)
        for name in ("forward", "forward+backward"):
            assert row[f"{name} sdn ms"] > 0 and row[f"{name} conv ms"] > 0
            assert row[f"{name} ratio"] > 0


@pytest.mark.parametrize("layer", ["sdn", "conv"])
def test_layer_profile_writes_its_kinds(tmp_path, layer):
    result = run_script(
        "layer_profile.py",
        "--size",
        "6",
        "--runs",
        "1",
        "--layer",
        layer,
        *TINY,
        output=tmp_path / "profile.json",
    )
    kinds = result["kinds"]
    assert result["total_ms"] > 0
    assert kinds["products outside the loop"] > 0
    assert ("products in the loop" in kinds) == (layer == "sdn")


def test_product_floor_writes_its_fields(tmp_path):
    result = run_script(
        "product_floor.py",
        "--size",
        "6",
        "--directions",
        "2",
        "--repeats",
        "1",
        *TINY,
        output=tmp_path / "floor.json",
    )
    assert len(result["ms"]) == 3  # the convolution, the projection, the neighbourhood product
    assert all(value > 0 for value in result["ms"].values())
    assert result["floor_ms"] > 0 and result["floor_ratio"] > 0


def test_vae_convergence_records_a_curve_and_plots_it(tmp_path):
    plot = tmp_path / "curve.png"
    result = run_script(
        "vae_convergence.py",
        "--models",
        "baseline",
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--image-size",
        "8",
        "--batch-size",
        "4",
        "--test-examples",
        "8",
        "--fidelity-examples",
        "16",
        *TWO_LAYER_FLAGS,
        "--plot",
        str(plot),
        output=tmp_path / "curve.json",
    )
    curve = result["models"]["baseline"]["curve"]
    assert [point["step"] for point in curve] == [2, 4]
    assert curve[0]["seconds"] <= curve[1]["seconds"]
    assert all(0 < point["test_bpd"] < 16 for point in curve)
    assert result["settings"]["steps"] == 4 and plot.stat().st_size > 0
    fidelity = [result["sample_fidelity_floor"]["test images"]]
    fidelity += result["models"]["baseline"]["samples"].values()
    assert list(result["models"]["baseline"]["samples"]) == ["1.0", "0.8", "0.6"]
    for summary in fidelity:
        assert 0 <= summary["median_distance"] <= 255 and 0 <= summary["share_near"] <= 1


def test_nearest_distances_against_pixel_loops():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import vae_convergence
    finally:
        sys.path.pop(0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 2, 2, 3), dtype=np.uint8)
    references = rng.integers(0, 256, (5, 2, 2, 3), dtype=np.uint8)
    references[4] = images[1]  # an exact match
    expected = []
    for image in images:
        distances = []
        for reference in references:
            total = 0.0
            for index in np.ndindex(image.shape):
                total += abs(float(image[index]) - float(reference[index]))
            distances.append(total / image.size)
        expected.append(min(distances))
    actual = vae_convergence.nearest_distances(images, references)
    np.testing.assert_allclose(actual, expected, rtol=1e-6)
    assert actual[1] == 0


def test_vae_ablation_undoes_the_objective_scale_as_the_old_objective():
    """Adamax on the nats objective with the undone epsilon takes the steps it
    takes on bits per dimension with Keras' default epsilon."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import vae_ablation
    finally:
        sys.path.pop(0)
    args = vae_ablation.parse_args(["--image-size", "16"])
    vae_ablation.undo_objective_scale(args)
    nats_per_bit_per_dim = 16 * 16 * 3 * np.log(2.0)
    target = np.array([3.0, -2.0, 0.5])

    def trajectory(scale, epsilon):
        weights = keras.Variable(np.zeros(3), dtype="float64")
        optimizer = keras.optimizers.Adamax(learning_rate=0.1, epsilon=epsilon)
        steps = []
        for _ in range(5):
            with tf.GradientTape() as tape:
                loss = scale * 1e-9 * tf.reduce_sum((weights - target) ** 2)  # tiny gradients
            optimizer.apply_gradients([(tape.gradient(loss, weights), weights)])
            steps.append(weights.numpy().copy())
        return np.array(steps)

    bits_per_dim = trajectory(1.0, keras.optimizers.Adamax().epsilon)
    nats = trajectory(nats_per_bit_per_dim, args.epsilon)
    np.testing.assert_allclose(nats, bits_per_dim, rtol=1e-6)
    # Not the same without the undone epsilon: the epsilon matters at these gradients.
    assert np.abs(trajectory(nats_per_bit_per_dim, 1e-7) - bits_per_dim).max() > 1e-3
