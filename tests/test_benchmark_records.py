"""The benchmarks' JSON records name files relative to the repository, never by machine path."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def common(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import common

    return common


def test_paths_inside_the_repository_are_recorded_relative_to_it(common, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT / "benchmarks")
    assert common.repository_path("layer_speed.json") == "benchmarks/layer_speed.json"
    assert common.repository_path(str(ROOT / "docs" / "x.png")) == "docs/x.png"
    assert common.repository_path(str(ROOT)) == "."
    # Outside the repository only the name is kept: the rest is the machine's.
    assert common.repository_path(str(tmp_path / "runs" / "t2.json")) == "t2.json"


def test_write_json_records_every_path_argument_portably(common, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    outside = str(tmp_path / "speed.json")
    payload = {
        "args": {
            "output": outside,
            "plot": "benchmarks/curves.png",
            "data_dir": None,
            "dataset": str(tmp_path / "photos"),
            "preset": "tiny",
        },
        "rows": [{"settings": {"output_dir": str(ROOT / "runs" / "a")}, "ms": 1.5}],
        "dataset": "cifar10",
    }
    common.write_json(outside, payload)
    with open(outside) as file:
        record = json.load(file)
    assert record == {
        "args": {
            "output": "speed.json",
            "plot": "benchmarks/curves.png",
            "data_dir": None,
            "dataset": "photos",
            "preset": "tiny",
        },
        "rows": [{"settings": {"output_dir": "runs/a"}, "ms": 1.5}],
        "dataset": "cifar10",
    }
