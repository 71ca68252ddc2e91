"""The repository passes ruff's linter and formatter (configured in pyproject.toml).

`ruff format . && ruff check --fix .` at the repository root fixes most findings.
"""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pyproject.toml"
# `--diff`: a formatting failure shows what would change, not only the file name.
COMMANDS = {"check": ["check"], "format": ["format", "--check", "--diff"]}


def ruff(command, path, config=None):
    args = [sys.executable, "-m", "ruff", *COMMANDS[command], "--no-cache"]
    if config is not None:
        args += ["--config", str(config)]
    return subprocess.run([*args, str(path)], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_repository_passes_ruff(command):
    result = ruff(command, ".")
    if result.returncode != 0:
        pytest.fail(
            f"`ruff {' '.join(COMMANDS[command])}` found problems; "
            "`ruff format . && ruff check --fix .` fixes most of them.\n"
            f"{result.stdout}{result.stderr}"
        )


# Clean under the repository's configuration; its last line (91 characters) would be wrapped at
# ruff's default line length, 88.
CLEAN = '''\
"""A module."""

import os
from os import path

SEPARATORS = {"operating system": os.sep, "path": path.sep, "alternative": os.altsep or ""}
'''


@pytest.mark.parametrize(
    "command, source, finding",
    [
        ("format", CLEAN.replace('{"operating system": ', "{ 'operating system':"), "+SEPARATORS"),
        ("check", CLEAN + "import sys\n", "F401"),  # unused import
        ("check", CLEAN.replace("from os import path", "from os import path, sep"), "I001"),
        ("check", CLEAN + "\n\ndef f(x=[]):\n    return x\n", "B006"),  # mutable default
    ],
    ids=["format", "unused-import", "one-import-per-line", "mutable-default"],
)
def test_ruff_reports_problems_with_the_repository_configuration(
    tmp_path, command, source, finding
):
    (tmp_path / "clean.py").write_text(CLEAN)
    assert ruff(command, tmp_path, config=CONFIG).returncode == 0
    (tmp_path / "clean.py").write_text(source)
    result = ruff(command, tmp_path, config=CONFIG)
    assert result.returncode == 1
    assert finding in result.stdout
