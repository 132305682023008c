"""Dependencies point inward: drivers/ and sync/ never import kiosk/ or Kivy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from kiosk.money import CURRENCY_EXPONENT
from sync.protocol import EXPONENT
from tests.conftest import ROOT


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", ["drivers", "sync"])
def test_inner_packages_do_not_import_the_kiosk_or_kivy(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    offenders = {str(f.relative_to(ROOT)): imported(f) & {"kiosk", "kivy"} for f in files}
    assert {f: names for f, names in offenders.items() if names} == {}


def test_head_office_knows_the_same_currencies_as_the_kiosk() -> None:
    assert EXPONENT == CURRENCY_EXPONENT


def modules(path: Path) -> set[str]:
    """The full module names `path` imports (at any depth in the file)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_only_the_entry_points_build_the_automat() -> None:
    """The composition root (kiosk/app) sits on top: the engine, journal, adapters and
    documents never import it; the command line, the screen's runner and the simulated rig do."""
    entry = {"kiosk/cli.py", "kiosk/rig.py", "kiosk/demo.py", "kiosk/ui/run.py"}
    offenders = {
        str(f.relative_to(ROOT))
        for f in (ROOT / "kiosk").rglob("*.py")
        if f.parent.name != "app"
        and str(f.relative_to(ROOT)) not in entry
        and any(m.startswith("kiosk.app") for m in modules(f))
    }
    assert offenders == set()
    users = {str(f.relative_to(ROOT)) for f in (ROOT / "kiosk").rglob("*.py")
             if any(m.startswith("kiosk.app") for m in modules(f))}  # fmt: skip
    assert {"kiosk/cli.py", "kiosk/rig.py", "kiosk/ui/run.py"} <= users
    child = modules(ROOT / "tests" / "crash" / "child.py")
    assert "kiosk.app.bootstrap" in child  # the crash matrix's automat is the same build
