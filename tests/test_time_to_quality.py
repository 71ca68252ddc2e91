"""benchmarks/time_to_quality.py end to end on a tiny problem: step times, curves, front.

Nothing here is timed: the step times the curves use are given in a file.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tiny_models import TWO_LAYER_FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--image-size",
    "8",
    "--batch-size",
    "4",
    "--test-examples",
    "8",
    "--set",
    "hidden_channels=8",
    "--set",
    "iaf_hidden_channels=8",
    "--set",
    "context_channels=8",
    *TWO_LAYER_FLAGS,
    "--set",
    "num_mixtures=2",
    "--configuration",
    "small_sdn",
    "use_sdn=true",
    "sdn_features=8",
    "--configuration",
    "small_baseline",
    "use_sdn=false",
    "learning_rate=0.003",
    "--configurations",
    "small_sdn",
    "small_baseline",
]
STEP_SECONDS = {"small_sdn": 0.5, "small_baseline": 0.25}
BUDGETS = ["--budgets", "1", "2", "--eval-every", "3"]


def run_script(*args, output):
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "time_to_quality.py"), *TINY, *args]
        + ["--output", str(output)],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    with open(output) as file:
        return json.load(file)


def write_step_times(path, step_seconds):
    with open(path, "w") as file:
        json.dump({"step_times": {k: {"step_seconds": v} for k, v in step_seconds.items()}}, file)


def pareto_front(runs):
    """At every evaluated second, the least test bits/dim of any curve up to then."""
    seconds = sorted({point["seconds"] for run in runs for point in run["curve"]})
    front = []
    for second in seconds:
        values = []
        for run in runs:
            x = np.array([point["seconds"] for point in run["curve"]], dtype=np.float64)
            y = np.array([point["test_bpd"] for point in run["curve"]], dtype=np.float64)
            values += [y[j] for j in range(len(x)) if x[j] <= second]
            if x[0] <= second <= x[-1]:
                values.append(np.interp(second, x, y))
        front.append((second, min(values)))
    return front


def test_step_times_are_the_medians_of_alternating_rounds(tmp_path):
    result = run_script(
        "--step-times-only",
        "--rounds",
        "3",
        "--round-steps",
        "1",
        "--warmup-steps",
        "1",
        output=tmp_path / "times.json",
    )
    assert result["runs"] == [] and "front" not in result
    assert list(result["step_times"]) == ["small_sdn", "small_baseline"]
    for times in result["step_times"].values():
        assert len(times["rounds"]) == 3 and all(t > 0 for t in times["rounds"])
        assert times["step_seconds"] == pytest.approx(np.median(times["rounds"]))


def test_curves_front_and_budgets(tmp_path):
    write_step_times(tmp_path / "times.json", STEP_SECONDS)
    plot = tmp_path / "front.png"
    result = run_script(
        "--step-times-from",
        str(tmp_path / "times.json"),
        *BUDGETS,
        "--plot",
        str(plot),
        output=tmp_path / "curves.json",
    )
    assert plot.stat().st_size > 0
    runs = {run["configuration"]: run for run in result["runs"]}
    assert set(runs) == set(STEP_SECONDS)
    # Budgets 1 and 2 s: steps 2 and 4 at 0.5 s a step, 4 and 8 at 0.25 s; and every 3 steps.
    assert [p["step"] for p in runs["small_sdn"]["curve"]] == [2, 3, 4, 6]
    assert [p["step"] for p in runs["small_baseline"]["curve"]] == [3, 4, 6, 8, 9]
    for name, run in runs.items():
        assert run["use_sdn"] == (name == "small_sdn") and run["seed"] == 0
        assert run["step_seconds"] == STEP_SECONDS[name]
        for point in run["curve"]:
            assert point["seconds"] == pytest.approx(point["step"] * STEP_SECONDS[name])
            assert 0 < point["test_bpd"] < 16
    assert runs["small_baseline"]["settings"] == {"use_sdn": False, "learning_rate": 0.003}

    front = pareto_front(result["runs"])
    assert [p["seconds"] for p in result["front"]] == pytest.approx([s for s, _ in front])
    assert [p["test_bpd"] for p in result["front"]] == pytest.approx(
        [v for _, v in front], abs=1e-4
    )
    assert all(a["test_bpd"] >= b["test_bpd"] for a, b in zip(result["front"], result["front"][1:]))

    for row, budget in zip(result["budgets"], (1.0, 2.0)):
        assert row["seconds"] == budget
        for name, run in runs.items():
            x = [p["seconds"] for p in run["curve"]]
            expected = np.interp(budget, x, [p["test_bpd"] for p in run["curve"]])
            assert row["runs"][f"{name} seed 0"] == pytest.approx(expected, abs=1e-4)
        assert row["best_sdn"]["run"] == "small_sdn seed 0"
        assert row["best_baseline"]["test_bpd"] == row["runs"]["small_baseline seed 0"]

    # Merged with other step times: nothing retrained, the time axis redone.
    write_step_times(tmp_path / "slower.json", {k: 2 * v for k, v in STEP_SECONDS.items()})
    merged = run_script(
        "--step-times-from",
        str(tmp_path / "slower.json"),
        "--curves-from",
        str(tmp_path / "curves.json"),
        *BUDGETS,
        "--plot",
        str(plot),
        output=tmp_path / "merged.json",
    )
    for before, after in zip(result["runs"], merged["runs"]):
        assert [p["test_bpd"] for p in after["curve"]] == [p["test_bpd"] for p in before["curve"]]
        assert [p["seconds"] for p in after["curve"]] == pytest.approx(
            [2 * p["seconds"] for p in before["curve"]]
        )


def test_bad_configuration_is_refused_early(tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "time_to_quality.py"),
            "--configuration",
            "odd",
            "learning_rate=0.01",
            "--output",
            str(tmp_path / "never.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert completed.returncode != 0
    assert "Expected use_sdn=true or use_sdn=false in --configuration odd" in completed.stderr
    assert not (tmp_path / "never.json").exists()


def import_benchmark():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import time_to_quality
    finally:
        sys.path.pop(0)
    return time_to_quality


def test_photo_patches_are_the_photographs_cut_side_by_side(tmp_path):
    time_to_quality = import_benchmark()
    from PIL import Image
    from sklearn.datasets import load_sample_images

    time_to_quality.write_photo_patches(str(tmp_path), size=16, stride=64)
    photos = load_sample_images()
    names = sorted(os.listdir(tmp_path))
    # 427x640 photographs: patch corners at 0, 64, ..., 384 down and 0, 64, ..., 576 across.
    assert len(names) == 2 * 7 * 10
    for filename, image in zip(photos.filenames, photos.images):
        stem = os.path.splitext(os.path.basename(filename))[0]
        for top, left in ((0, 0), (384, 576), (128, 320)):
            patch = np.asarray(Image.open(tmp_path / f"{stem}_{top:03d}_{left:03d}.png"))
            np.testing.assert_array_equal(patch, image[top : top + 16, left : left + 16])


def test_photo_patches_need_scikit_learn(tmp_path, monkeypatch):
    time_to_quality = import_benchmark()
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(SystemExit, match="Expected scikit-learn to be installed"):
        time_to_quality.write_photo_patches(str(tmp_path), size=16, stride=16)
    assert os.listdir(tmp_path) == []


def test_configuration_pairs_split_into_recipe_and_model_arguments():
    time_to_quality = import_benchmark()
    configuration = time_to_quality.configuration_from_pairs(
        "wide", ["use_sdn=false", "hidden_channels=48", "learning_rate=0.004", "batch_size=16"]
    )
    assert configuration == {
        "use_sdn": False,
        "hidden_channels": 48,
        "learning_rate": 0.004,
        "batch_size": 16,
    }
    args = time_to_quality.parse_args(["--set", "num_mixtures=3", "--configurations", "sdn"])
    run_args = time_to_quality.recipe(args, configuration, seed=7)
    assert (run_args.seed, run_args.learning_rate, run_args.batch_size) == (7, 0.004, 16)
    assert run_args.set == ["num_mixtures=3", "hidden_channels=48"]
    assert (args.seed, args.learning_rate, args.batch_size) == (0, 2e-3, 32)
    with pytest.raises(SystemExit, match="Expected a JSON value"):
        time_to_quality.configuration_from_pairs("odd", ["use_sdn=true", "sdn_max_scale=eight"])
