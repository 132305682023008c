"""The automat's log (#18): journald's native protocol on a real datagram socket with the
structured fields, card numbers masked, levels per site and per logger, rotated files where
there is no journald."""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kiosk.app.logs import setup_logging, under_systemd
from kiosk.domain.errors import ConfigError
from kiosk.domain.events import Kind, Record
from kiosk.domain.money import Money
from kiosk.domain.site import LogsSection
from kiosk.ledger.journal import Journal
from tests.conftest import make_site, poll_until

PAN = "4111 1111 1111 1111"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    named = {n: logging.getLogger(n).level for n in ("drivers.cctalk", "kiosk")}
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    for n, lv in named.items():
        logging.getLogger(n).setLevel(lv)


class Journald:
    """journald's end of the native protocol: a datagram socket, read all the time (as
    journald does), each datagram one entry of KEY=VALUE lines (or KEY, a 64-bit
    little-endian length and the bytes, for a value with a newline)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.got: list[dict[str, str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                self.got.append(parse(self.sock.recv(1 << 20)))
            except OSError:
                return

    def until(self, pred: Callable[[dict[str, str]], bool]) -> dict[str, str]:
        """The first entry that satisfies `pred`, once it has come (5 s at most)."""
        poll_until(lambda: any(pred(e) for e in list(self.got)), "a journald entry", 5)
        return next(e for e in list(self.got) if pred(e))


def parse(data: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            i = nl + 1
        else:
            (size,) = struct.unpack("<Q", data[nl + 1 : nl + 9])
            fields[line.decode()] = data[nl + 9 : nl + 9 + size].decode()
            i = nl + 9 + size + 1
    return fields


def test_journald_gets_the_structured_fields_and_nothing_else(tmp_path: Path) -> None:
    journald = Journald(tmp_path / "socket")
    where = setup_logging(LogsSection(target="journald"), tmp_path, socket_path=journald.path)
    assert where.startswith("journald")
    j = Journal(tmp_path / "journal.sqlite", "DEMO-01")
    paid = Record(Kind.CASH_IN, "TX-1", "K-1", Money(1000, "EUR"), {"medium": "note"})
    j.append([paid], datetime(2026, 11, 29, tzinfo=UTC))
    logging.getLogger("drivers.zvt").warning("terminal says: card %s declined", PAN)
    cash = journald.until(lambda e: e.get("EVENT") == "cash_in")
    assert (cash["TXID"], cash["AMOUNT"], cash["CURRENCY"], cash["DEVICE"]) == (
        "TX-1", "1000", "EUR", "note")  # fmt: skip
    assert cash["PRIORITY"] == "6" and cash["SYSLOG_IDENTIFIER"] == "kiosk"
    warning = journald.until(lambda e: e["PRIORITY"] == "4")
    got = list(journald.got)
    assert "**** **** **** 1111" in warning["MESSAGE"] and PAN not in str(got)
    for entry in got:  # no free bag of whatever a record carried, no raw arguments
        assert not any(k.startswith(("EXTRA", "ARGUMENTS", "MESSAGE_RAW")) for k in entry)


def test_a_stalled_journald_does_not_stop_the_automat(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # bound, never read
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.bind(str(tmp_path / "socket"))
    setup_logging(LogsSection(target="journald"), tmp_path, socket_path=tmp_path / "socket")
    log = logging.getLogger("kiosk.test")
    logger = threading.Thread(target=lambda: [log.warning("line %d", n) for n in range(200)])
    logger.start()
    logger.join(timeout=60)
    assert not logger.is_alive()  # every call came back
    assert "line 199" in capfd.readouterr().err  # what journald did not take went to stderr
    stalled.close()


def test_levels_per_site_and_per_logger(tmp_path: Path) -> None:
    journald = Journald(tmp_path / "socket")
    logs = LogsSection(target="journald", level="warning", levels={"drivers.cctalk": "debug"})
    setup_logging(logs, tmp_path, socket_path=journald.path)
    logging.getLogger("drivers.cctalk.bus").debug("poll answered")
    logging.getLogger("kiosk.app").info("an info the site does not want")
    logging.getLogger("kiosk.app").warning("a warning it does")
    journald.until(lambda e: e["MESSAGE"] == "a warning it does")
    assert [e["MESSAGE"] for e in journald.got] == ["poll answered", "a warning it does"]


def test_a_rotated_file_where_there_is_no_journald(tmp_path: Path) -> None:
    logs = LogsSection(file_max_mb=1, file_backups=2)
    where = setup_logging(logs, tmp_path, env={}, socket_path=tmp_path / "none")
    assert where.startswith(str(tmp_path / "logs" / "kiosk.log"))
    log = logging.getLogger("kiosk.test")
    log.info("paid", extra={"event": "cash_in", "txid": "TX-9", "amount_minor": 500})
    first = (tmp_path / "logs" / "kiosk.log").read_text().splitlines()[0]
    assert first.endswith("paid [event=cash_in txid=TX-9 amount=500]")
    for n in range(12_000):  # about 1.3 MB: one rotation
        log.info("line %d of a long day %s", n, "x" * 60)
    assert (tmp_path / "logs" / "kiosk.log.1").exists()
    assert not (tmp_path / "logs" / "kiosk.log.3").exists()


def test_journald_is_chosen_when_systemd_started_the_automat(tmp_path: Path) -> None:
    journald = Journald(tmp_path / "socket")
    assert under_systemd({"JOURNAL_STREAM": "8:1234"}, journald.path)
    assert not under_systemd({}, journald.path)
    assert not under_systemd({"JOURNAL_STREAM": "8:1234"}, tmp_path / "no-socket")
    where = setup_logging(LogsSection(), tmp_path, env={"JOURNAL_STREAM": "8:1"},
                          socket_path=journald.path)  # fmt: skip
    assert where.startswith("journald")


def test_a_wrong_level_in_the_site_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"logs\.levels\.drivers\.cctalk"):
        make_site(logs={"levels": {"drivers.cctalk": "verbose"}})
    with pytest.raises(ConfigError, match=r"logs\.level"):
        make_site(logs={"level": "loud"})
