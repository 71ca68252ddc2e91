"""The documentation: the site builds without warnings, links resolve, records are portable."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parent.parent
# The project's URL, as setup.py declares it: the README's links into the repository start with it.
REPOSITORY_URL = re.search(r'^URL = "([^"]+)"$', (ROOT / "setup.py").read_text(), re.M).group(1)
REPOSITORY_PREFIXES = (
    f"{REPOSITORY_URL}/blob/main/",
    f"{REPOSITORY_URL}/tree/main/",
    f"{REPOSITORY_URL}/raw/main/",
    REPOSITORY_URL.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/",
)
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HTML_LINK = re.compile(r"<(?:img|a)\s[^>]*?(?:src|href)=\"([^\"]+)\"")
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|tmp|root|home)/")


def markdown_files():
    return [ROOT / "README.md", ROOT / "CHANGELOG.md"] + sorted((ROOT / "docs").rglob("*.md"))


def prose(text):
    """`text` without fenced code blocks and inline code, where links are only examples."""
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.S | re.M)
    text = re.sub(r"^(    |\t).*$", "", text, flags=re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def links(path):
    text = prose(path.read_text(encoding="utf-8"))
    return MARKDOWN_LINK.findall(text) + HTML_LINK.findall(text)


def anchors(path):
    """The heading anchors of a Markdown file, as mkdocs' table of contents makes them."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*$", prose(path.read_text(encoding="utf-8")), re.M)
    return {slugify(re.sub(r"[*_`]", "", heading), "-") for heading in headings}


def test_the_documentation_site_builds_without_warnings(tmp_path):
    environment = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    api_page = (tmp_path / "api" / "layers" / "index.html").read_text(encoding="utf-8")
    # The API reference is generated from the docstrings.
    assert "directional gated sweeps" in api_page


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_and_images_resolve(path):
    broken = []
    for target in links(path):
        if re.match(r"[a-z]+:", target) or target.startswith("#") and path.name == "README.md":
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    assert not broken, f"{path.name}: links to nothing: {broken}"


def test_readme_links_into_the_repository_are_absolute_and_resolve():
    # PyPI shows the README as the project's description, where relative links break.
    readme = ROOT / "README.md"
    relative = [target for target in links(readme) if not re.match(r"[a-z]+:", target)]
    assert not relative, f"README.md: relative links break on PyPI: {relative}"
    missing = []
    for target in links(readme):
        for prefix in REPOSITORY_PREFIXES:
            if target.startswith(prefix):
                if not (ROOT / target[len(prefix) :].partition("#")[0]).exists():
                    missing.append(target)
    assert not missing, f"README.md: links to files the repository does not have: {missing}"


def committed_files():
    """The files under benchmarks/, docs/, examples/ and the top-level documents."""
    folders = ("benchmarks", "docs", "examples")
    tops = ("README.md", "CHANGELOG.md", "mkdocs.yml", "setup.py", "MANIFEST.in")
    listed = subprocess.run(
        ["git", "ls-files", *folders, *tops], cwd=ROOT, capture_output=True, text=True
    )
    if listed.returncode == 0 and listed.stdout.strip():
        return [ROOT / name for name in listed.stdout.split()]
    return [ROOT / top for top in tops if (ROOT / top).exists()] + [
        path for folder in folders for path in (ROOT / folder).rglob("*") if path.is_file()
    ]


def test_no_committed_file_names_a_machine_path():
    named = []
    for path in committed_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue  # images and other binary files
        for number, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATH.search(line):
                named.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not named, "machine paths in committed files:\n" + "\n".join(named)


def test_machine_path_pattern_matches_absolute_paths_only():
    assert MACHINE_PATH.search('"output": "/work/runs/model_speed.json"')
    assert MACHINE_PATH.search("written to /tmp/scratch/t2.json")
    assert not MACHINE_PATH.search('"output": "benchmarks/model_speed.json"')
    assert not MACHINE_PATH.search("~/tensorflow_datasets and runs/work/x")
