"""benchmarks/serving_speed.py runs end to end on a small model and writes what it prints.

Nothing here is timed: the numbers come from running the script.
"""

from test_benchmarks import run_script


def test_serving_speed_measures_every_signature(tmp_path):
    result = run_script(
        "serving_speed.py", "--preset", "tiny", "--model", "conv", "--image-size", "8",
        "--batch", "1", "--count", "2", "--repeats", "2", output=tmp_path / "serving.json",
    )  # fmt: skip
    assert (result["preset"], result["model"], result["image_shape"]) == ("tiny", "conv", [8, 8, 3])
    assert 0 < result["export_cpu_s"] and 0 < result["export_s"]
    assert sorted(result["signatures"]) == ["encode", "sample", "serving_default"]
    for row in result["signatures"].values():
        assert row["load_s"] > 0 and row["first_request_s"] > 0 and row["steady_request_s"] > 0
