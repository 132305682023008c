"""The composition root builds the automat a site file describes, head office included: the
production automat syncs in the background on its `sync_interval`, and without a token (or with
a refused one) it serves offline and says why."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from drivers.printer.sim import PrinterSim
from drivers.zvt.sim import TerminalSim
from kiosk.adapters.cash import start_simulator
from kiosk.adapters.head_office import HeadOfficeLink
from kiosk.app.bootstrap import Automat, automat
from kiosk.app.ports import NoHeadOffice
from kiosk.domain.clock import utc_now
from kiosk.domain.engine import State
from kiosk.domain.events import KeyStatus
from kiosk.domain.site import Site
from kiosk.service.diag import Diagnostics
from kiosk.sim.fakes import FakeKey, FakeKeyReader
from kiosk.sim.simulate import with_ports
from sync.admin.local import LocalHeadOffice, sqlite_url
from sync.store.tables import count_entries, open_db
from tests.conftest import make_site, poll_until


@contextmanager
def field_site(url: str | None) -> Iterator[Site]:
    """The demo site as a customer centre would have it: every device on a real port (here the
    simulators' ptys and socket), head office at `url`, synced every second."""
    site = make_site("demo", head_office={"url": url, "sync_interval": 1})
    with ExitStack() as stack:
        bus, _coin, _notes = start_simulator(site)
        stack.callback(bus.stop)
        terminal = TerminalSim("tcp")
        terminal.start()
        stack.callback(terminal.stop)
        printer = stack.enter_context(PrinterSim())
        ports = {
            "coin": bus.path,
            "notes": bus.path,
            "card": terminal.port,
            "printer": printer.path,
        }
        yield with_ports(site, **ports)


@contextmanager
def running(
    site: Site, tmp_path: Path, out: io.StringIO
) -> Iterator[tuple[Automat, FakeKeyReader]]:
    reader = FakeKeyReader()
    with automat(site, tmp_path / "journal.sqlite", utc_now, out, reader=reader) as a:
        yield a, reader


def test_the_production_automat_syncs_with_its_head_office(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalHeadOffice(sqlite_url(tmp_path / "ho.sqlite")) as ho:
        monkeypatch.setenv("KIOSK_HEAD_OFFICE_TOKEN", ho.register("DEMO-01"))
        ho.admin("key", "K1", "--status", "active", "--account", "4711")
        db = open_db(ho.db)
        out = io.StringIO()
        with field_site(ho.url) as site, running(site, tmp_path, out) as (a, reader):
            assert (
                isinstance(a.kiosk.head_office, HeadOfficeLink)
                and "head office" not in out.getvalue()
            )
            j = a.journal
            poll_until(lambda: count_entries(db, "DEMO-01") >= j.last_seq() > 0, "the upload")
            status = lambda: j.account_for("K1", "4711", "EUR").status  # noqa: E731
            poll_until(lambda: status() == KeyStatus.ACTIVE, "the keys")

            ho.admin("key", "K1", "--status", "blocked", "--account", "4711", "--reason", "lost")
            poll_until(lambda: status() == KeyStatus.BLOCKED, "the block at the next round")
            reader.insert(FakeKey("K1", "4711"))
            a.kiosk.drain()
            assert a.kiosk.view().state == State.KEY_REFUSED
            refused = j.last_seq()
            poll_until(
                lambda: count_entries(db, "DEMO-01") >= refused, "the refusal at head office"
            )
            check = Diagnostics(a.kiosk, "key T-9001").head_office_check()
            assert check.ok and ho.url in check.lines[0]
        db.dispose()


def test_without_a_token_the_automat_serves_offline_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KIOSK_HEAD_OFFICE_TOKEN", raising=False)
    out = io.StringIO()
    with field_site("http://127.0.0.1:9") as site, running(site, tmp_path, out) as (a, reader):
        assert "no token is set (environment variable KIOSK_HEAD_OFFICE_TOKEN" in out.getvalue()
        assert isinstance(a.kiosk.head_office, NoHeadOffice)
        a.journal.set_key("K1", KeyStatus.ACTIVE, "4711")  # what the last sync left
        reader.insert(FakeKey("K1", "4711"))
        a.kiosk.drain()
        assert a.kiosk.view().state == State.CHOOSING_AMOUNT  # serving, offline
        d = Diagnostics(a.kiosk, "key T-9001")
        check = d.head_office_check()
        assert not check.ok and "KIOSK_HEAD_OFFICE_TOKEN" in check.lines[0]
        assert any("KIOSK_HEAD_OFFICE_TOKEN" in line for line in d.sync_now())


def test_a_refused_token_is_a_sync_error_and_the_automat_serves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalHeadOffice(sqlite_url(tmp_path / "ho.sqlite")) as ho:
        ho.register("DEMO-01")
        monkeypatch.setenv("KIOSK_HEAD_OFFICE_TOKEN", "not-the-kiosks-token")
        out = io.StringIO()
        with field_site(ho.url) as site, running(site, tmp_path, out) as (a, reader):
            link = a.kiosk.head_office
            assert isinstance(link, HeadOfficeLink)
            poll_until(lambda: link.status.rounds >= 1, "a round")
            assert link.status.last_error is not None and "401" in link.status.last_error
            a.journal.set_key("K1", KeyStatus.ACTIVE, "4711")
            reader.insert(FakeKey("K1", "4711"))
            a.kiosk.drain()
            assert a.kiosk.view().state == State.CHOOSING_AMOUNT
            lines = Diagnostics(a.kiosk, "key T-9001").sync_now()
            assert any("401" in line for line in lines), lines
