"""Dependencies point inward: drivers/ and sync/ never import kiosk/ or Kivy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from kiosk.domain.money import CURRENCY_EXPONENT
from sync.wire.protocol import EXPONENT
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


#: The kiosk's layers, inside out: a module may import its own layer and those before it,
#: never one after it (function-level imports count too).
LAYERS = (
    "kiosk.domain",  # money, events, the site's rules, the top-up session: pure
    "kiosk.ledger",  # the journal, reconciliation
    "kiosk.documents",  # receipts, reports, the customer's languages
    "kiosk.app.ports",  # what the automat needs from its devices and head office
    "kiosk.app.paths",
    "kiosk.app.health",  # disk, journal and clock before money
    "kiosk.adapters",  # the ports on their drivers
    "kiosk.service",  # technician and office functions
    "kiosk.app.runner",  # the engine's thread, journal first
    "kiosk.app.bootstrap",  # the composition root
    "kiosk.app.systemd",  # what systemd hears of the running automat
    "kiosk.app.logs",  # where its log goes: journald, a rotated file
    "kiosk.ui",  # the touch screen
    "kiosk.sim",  # simulation and demonstration only
    "kiosk.cli",  # the `kiosk` command
)


def layer(module: str) -> int | None:
    """The index of the layer `module` (a full module name) belongs to."""
    found = [i for i, name in enumerate(LAYERS) if module == name or module.startswith(name + ".")]
    return found[-1] if found else None


def test_every_kiosk_module_has_a_layer() -> None:
    files = [f for f in (ROOT / "kiosk").rglob("*.py")
             if f.parent != ROOT / "kiosk" and f.name != "__init__.py"]  # fmt: skip
    assert len(files) > 50
    homeless = [str(f.relative_to(ROOT)) for f in files
                if layer(".".join(f.relative_to(ROOT).with_suffix("").parts)) is None]  # fmt: skip
    assert homeless == []
    # the package root holds nothing but its docstring: every module lives in a layer
    assert sorted(f.name for f in (ROOT / "kiosk").glob("*.py")) == ["__init__.py"]


def test_imports_point_inward() -> None:
    """Documents never import the screen, the engine never a device, nothing a simulator (but
    the command line), and only the entry points the composition root."""
    offenders = []
    for f in sorted((ROOT / "kiosk").rglob("*.py")):
        me = layer(".".join(f.relative_to(ROOT).with_suffix("").parts))
        if me is None:
            continue
        for m in modules(f):
            theirs = layer(m)
            if theirs is not None and theirs > me:
                offenders.append(f"{f.relative_to(ROOT)} ({LAYERS[me]}) imports {m}")
    assert offenders == []


def test_the_layering_rule_catches_an_outward_import(tmp_path: Path) -> None:
    """The rule itself: a receipt that imported the screen would be found."""
    bad = tmp_path / "receipt.py"
    bad.write_text("def f():\n    from kiosk.ui.model import ScreenModel\n", "utf-8")
    assert [m for m in modules(bad) if layer(m) > layer("kiosk.documents.receipt")] == [
        "kiosk.ui.model"
    ]


def test_only_the_entry_points_build_the_automat() -> None:
    """The composition root is built by the command line and the simulated rig, and by the
    crash matrix's child: nothing else wires devices to the engine."""
    users = {str(f.relative_to(ROOT)) for f in (ROOT / "kiosk").rglob("*.py")
             if "kiosk.app.bootstrap" in modules(f)}  # fmt: skip
    assert {"kiosk/cli/main.py", "kiosk/cli/run.py", "kiosk/sim/rig.py"} <= users
    assert {u.split("/")[1] for u in users} <= {"cli", "sim"}
    child = modules(ROOT / "tests" / "crash" / "child.py")
    assert "kiosk.app.bootstrap" in child  # the crash matrix's automat is the same build


#: Head office's layers, inside out, as for the kiosk: the wire protocol (shared with the
#: kiosk), the store and its migrations, the credit book, billing, the kiosks' API, the staff
#: console, the composition root, the admin command.
SYNC_LAYERS = (
    "sync.wire",
    "sync.store",
    "sync.book",
    "sync.billing",
    "sync.api",
    "sync.console",
    "sync.app",
    "sync.admin",
)


def sync_layer(module: str) -> int | None:
    found = [i for i, name in enumerate(SYNC_LAYERS)
             if module == name or module.startswith(name + ".")]  # fmt: skip
    return found[-1] if found else None


def test_every_head_office_module_has_a_layer_and_imports_point_inward() -> None:
    files = sorted((ROOT / "sync").rglob("*.py"))
    names = {f: ".".join(f.relative_to(ROOT).with_suffix("").parts) for f in files}
    homeless = [n for f, n in names.items() if sync_layer(n) is None and n != "sync.__init__"]
    assert homeless == []
    offenders = []
    for f, name in names.items():
        me = sync_layer(name)
        for m in modules(f):
            theirs = sync_layer(m)
            if me is not None and theirs is not None and theirs > me:
                offenders.append(f"{name} ({SYNC_LAYERS[me]}) imports {m}")
    assert offenders == []


def test_the_automat_imports_only_head_offices_wire_protocol_and_schema_tool() -> None:
    """The running automat speaks the wire protocol and keeps its journal's schema with the
    same tool; head office's store, book, billing, API, console and admin are not in it (the
    simulated rig and the demo run a head office of their own, so kiosk.sim may)."""
    allowed = ("sync.wire", "sync.store.schema")
    offenders = []
    for f in sorted((ROOT / "kiosk").rglob("*.py")):
        if "sim" in f.relative_to(ROOT).parts:
            continue
        for m in modules(f):
            if m.startswith("sync") and not any(m == a or m.startswith(a + ".") for a in allowed):
                offenders.append(f"{f.relative_to(ROOT)} imports {m}")
    assert offenders == []


def test_the_head_office_layering_rule_catches_an_outward_import(tmp_path: Path) -> None:
    bad = tmp_path / "credits.py"
    bad.write_text("def f():\n    from sync.console.pages import mount\n", "utf-8")
    assert [m for m in modules(bad) if (sync_layer(m) or 0) > sync_layer("sync.book.credits")] \
        == ["sync.console.pages"]  # fmt: skip
