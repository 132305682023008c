"""Every benchmark starts as the README runs it (`.venv/bin/python tests/bench/NAME.py`): the
script's own folder comes first on the import path, so no script may hide a package."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPTS = sorted(p.name for p in (ROOT / "tests" / "bench").glob("*.py"))


def test_the_readme_lists_every_benchmark() -> None:
    readme = (ROOT / "README.md").read_text()
    assert SCRIPTS and all(f"tests/bench/{name}" in readme for name in SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_benchmark_starts_as_documented(name: str) -> None:
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert name.removesuffix(".py") not in packages, f"{name} would hide the package"
    res = subprocess.run(
        [sys.executable, f"tests/bench/{name}", "--help"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0 and res.stdout.startswith(f"usage: {name}"), res.stderr[-2000:]
