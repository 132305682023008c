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
