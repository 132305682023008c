"""The field rehearsal: the automat as it runs at a customer centre, every part its own process.

Head office (the reference server), `kiosk simulate` (the devices on their real transports: the
ccTalk bus and the printer on ptys, the card terminal on TCP, the keys in pcscd's vpcd reader)
and the production `kiosk run --site OUT` on a virtual screen, pointed at the simulators by the
site file `kiosk simulate` wrote. The customer acts through the simulator's control interface
only; what happened is read at head office.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import tomlkit
from sqlalchemy import select

from drivers.chipkey.vpcd import VPCD_READER
from kiosk.domain.site import is_simulated, load_site
from kiosk.ledger.journal import HISTORY as JOURNAL_HISTORY
from kiosk.sim.simulate import SimulatorControl
from kiosk.ui.xvfb import Xvfb
from sync.admin.local import LocalHeadOffice, sqlite_url
from sync.store.tables import count_entries, entries, kiosks, open_db
from sync.wire.release import version
from tests.conftest import ROOT, poll_until

#: never set: a customer's dwell time
PAUSE = threading.Event()


def kiosk_cmd(data: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "kiosk.cli", "--data-dir", str(data), *args]


@contextmanager
def process(
    cmd: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextmanager
def simulate(
    tmp_path: Path, site_in: Path, ho_url: str | None = None
) -> Iterator[tuple[Path, SimulatorControl, subprocess.Popen[bytes]]]:
    out, control = tmp_path / "site-out.toml", tmp_path / "sim.sock"
    args = ["simulate", "--site", str(site_in), "--write-site", str(out), "--control", str(control)]
    if ho_url:
        args += ["--head-office", ho_url]
    with process(kiosk_cmd(tmp_path / "sim-data", *args), tmp_path / "simulate.log") as proc:
        poll_until(lambda: out.exists() or proc.poll() is not None, "the simulators' site file")
        assert proc.poll() is None, (tmp_path / "simulate.log").read_text()
        yield out, SimulatorControl(control), proc


def site_in(tmp_path: Path, **sections: dict[str, object]) -> Path:
    doc = tomlkit.parse((ROOT / "config" / "demo.toml").read_text("utf-8"))
    for name, fields in sections.items():
        table = doc.setdefault(name, tomlkit.table())
        for k, v in fields.items():
            table[k] = v
    path = tmp_path / "site-in.toml"
    path.write_text(tomlkit.dumps(doc), "utf-8")
    return path


def test_kiosk_simulate_writes_the_site_on_real_ports_and_takes_commands(
    pcscd: str, tmp_path: Path
) -> None:
    from drivers.chipkey.reader import card_present

    with simulate(tmp_path, site_in(tmp_path)) as (out, control, proc):
        site = load_site(out)  # a valid site file
        d = site.devices
        ports = [d.coin.port, d.notes.port, d.card.port, d.printer.port]  # type: ignore[union-attr]
        assert not any(is_simulated(p) for p in ports) and d.reader.reader == VPCD_READER
        # the bus behind a stable path, as udev's /dev/serial/by-id/ link, to a pty
        assert str(Path(ports[0]).resolve()).startswith("/dev/pts/") and ports[0] == ports[1]
        assert Path(ports[0]).is_symlink() and ports[2].startswith("tcp://127.0.0.1:")
        secrets = tomlkit.parse(Path(site.secrets.file or "").read_text())
        assert set(secrets["chipkey"]) == {"master", "read", "credit", "debit"}  # type: ignore[arg-type]
        first = (ROOT / "config" / "demo.toml").read_text().splitlines()[0]
        assert first.startswith("#") and out.read_text().splitlines()[0] == first  # comments kept

        assert control.send("insert K-1001") == "key K-1001 in the reader"
        poll_until(lambda: card_present(VPCD_READER), "pcscd to see the key", 5)
        assert "returned" in control.send("coin 2.00")  # nobody enabled the acceptor
        with pytest.raises(ValueError, match="no simulated key K-9999"):
            control.send("insert K-9999")
        with pytest.raises(ValueError, match="unknown command"):
            control.send("dance")
        with pytest.raises(ValueError, match="ok, near_end or out"):
            control.send("paper wet")
        assert control.status()["printed"] == 0 and control.send("paper out") == "paper out"
        assert control.status()["keys"] == ["K-1001", "K-1002", "K-1003", "T-9001"]
        assert control.send("remove") == "key K-1001 removed"
        poll_until(lambda: not card_present(VPCD_READER), "pcscd to see the key gone", 5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert "simulators stopped" in (tmp_path / "simulate.log").read_text()


NOTES = {
    "cctalk": {"port": "sim", "address": 40},
    # an ITL validator that takes nothing but encrypted commands (eSSP, key exchange first)
    "essp-encrypted": {"port": "sim", "protocol": "essp", "encryption": True},
}


@pytest.mark.parametrize("notes", list(NOTES))
def test_field_rehearsal_head_office_simulators_and_the_production_kiosk(
    pcscd: str, tmp_path: Path, notes: str
) -> None:
    """The acceptance of the automat in the field: within sync_interval head office holds the
    kiosk's entries; a key blocked at head office is refused after the next sync; a top-up
    done through the simulator's control interface reaches head office's report. The kiosk is
    registered as the README sets one up: its token, and its chain secret in its secrets file
    (every entry it journals keyed with it, and head office checks each). The key is written
    as a real EV1 takes it (the log record in chained frames of 54 bytes: the virtual card
    refuses a longer one); the notes come over ccTalk, or over eSSP from a validator that
    takes only encrypted commands."""
    with LocalHeadOffice(sqlite_url(tmp_path / "ho.sqlite")) as ho:
        chain = tmp_path / "DEMO-01.chain.toml"
        token = ho.admin("kiosk", "add", "DEMO-01", "--chain-secret-file", str(chain))
        for serial, account in (("K-1001", "4711001"), ("K-1003", "4711003")):
            ho.admin("key", serial, "--status", "active", "--account", account)
        db = open_db(ho.db)
        held = lambda: count_entries(db, "DEMO-01")  # noqa: E731

        def kinds(kind: str, key: str) -> int:
            with db.connect() as conn:
                rows = conn.execute(entries.select().where(
                    entries.c.kiosk_id == "DEMO-01", entries.c.kind == kind, entries.c.key == key
                )).all()  # fmt: skip
            return len(rows)

        source = site_in(tmp_path, head_office={"sync_interval": 1},
                         timeouts={"payment": 5, "message": 3})  # fmt: skip
        doc = tomlkit.parse(source.read_text("utf-8"))
        doc["devices"]["notes"] = NOTES[notes]  # type: ignore[index]
        source.write_text(tomlkit.dumps(doc), "utf-8")
        with simulate(tmp_path, source, ho.url) as (out, control, _sim), Xvfb(1280, 800) as x:
            with open(load_site(out).secrets.file or "", "a", encoding="utf-8") as secrets:
                secrets.write("\n" + chain.read_text("utf-8"))  # cat DEMO-01.chain.toml >> ...
            env = {"KIOSK_HEAD_OFFICE_TOKEN": token, "DISPLAY": x.display, "KIVY_NO_ARGS": "1",
                   "KIVY_HOME": str(tmp_path / "kivy"), "KIOSK_DATA_DIR": ""}  # fmt: skip
            cmd = kiosk_cmd(tmp_path / "kiosk-data", "run", "--site", str(out))
            with process(cmd, tmp_path / "kiosk.log", env) as kiosk:
                poll_until(lambda: held() > 0 or kiosk.poll() is not None, "the first upload", 60)
                assert kiosk.poll() is None, (tmp_path / "kiosk.log").read_text()[-3000:]

                ho.admin("key", "K-1003", "--status", "blocked", "--account", "4711003",
                         "--reason", "lost")  # fmt: skip
                deadline = time.monotonic() + 30
                while not kinds("key_refused", "K-1003"):  # the next sync brings the block
                    assert time.monotonic() < deadline, "K-1003 was never refused"
                    control.send("insert K-1003")
                    PAUSE.wait(1.5)  # a customer's look at the screen, then the key is taken
                    control.send("remove")
                    PAUSE.wait(1.0)  # and a moment before trying again

                control.send("insert K-1001")
                poll_until(lambda: control.status()["coin_enabled"], "the acceptor enabled", 20)
                assert "taken" in control.send("coin 2.00")
                poll_until(lambda: "in escrow" in control.send("note 20.00"), "the note taken", 20)
                poll_until(
                    lambda: kinds("key_written", "K-1001") > 0, "the top-up at head office", 40
                )
                control.send("remove")
                report = ho.admin("report", "--tz", "Europe/Berlin")
                rows = {tuple(line.split()[2:]) for line in report.splitlines()[1:]}
                assert {("coin", "2.00", "EUR"), ("note", "20.00", "EUR")} <= rows, report
                assert kiosk.poll() is None
        with db.connect() as conn:  # keyed from its first entry, and each verified so
            assert conn.execute(select(kiosks.c.keyed_from)).scalar() == 1
            # the release and journal schema the production automat reported
            said = conn.execute(select(kiosks.c.version, kiosks.c.journal_schema)).one()
            assert said == (version(), JOURNAL_HISTORY.head)
        assert ho.admin("verify", "DEMO-01").endswith(" ok")
        db.dispose()


def test_a_kiosk_whose_devices_are_not_there_at_boot_stays_up_and_serves_once_they_come(
    pcscd: str, tmp_path: Path
) -> None:
    """A site whose coin and note port does not exist (an adapter not plugged in, or
    enumerating late) and whose card terminal refuses connections: the production kiosk
    starts, tells systemd it is ready and out of service, naming each device and its port,
    and stays up. Then the port appears (a pty linked to that path, as udev makes one): the
    acceptors come online by themselves and the automat is in service (cash; the terminal
    still refused)."""
    from drivers.cctalk.sim import (
        BusSimulator,
        SimBillValidator,
        SimCoinAcceptor,
        euro_coins,
        euro_notes,
    )
    from tests.conftest import free_port
    from tests.test_systemd import next_with, notify_socket

    with simulate(tmp_path, site_in(tmp_path)) as (out, _control, _sim):
        port = tmp_path / "serial-by-id-ccTalk"  # not there
        doc = tomlkit.parse(out.read_text("utf-8"))
        doc["devices"]["coin"]["port"] = str(port)  # type: ignore[index]
        doc["devices"]["notes"]["port"] = str(port)  # type: ignore[index]
        doc["devices"]["card"]["port"] = f"tcp://127.0.0.1:{free_port()}"  # type: ignore[index]
        site = tmp_path / "site-missing.toml"
        site.write_text(tomlkit.dumps(doc), "utf-8")
        notify = str(tmp_path / "notify")
        with notify_socket(notify) as s, Xvfb(1280, 800) as x:
            env = {"NOTIFY_SOCKET": notify, "DISPLAY": x.display, "KIVY_NO_ARGS": "1",
                   "KIVY_HOME": str(tmp_path / "kivy"), "KIOSK_DATA_DIR": ""}  # fmt: skip
            cmd = kiosk_cmd(tmp_path / "kiosk-data", "run", "--site", str(site))
            with process(cmd, tmp_path / "kiosk.log", env) as kiosk:
                ready = next_with(s, "READY=1", 90)[-1]
                assert "out of service" in ready and f"coin ({port})" in ready, ready
                assert f"notes ({port})" in ready
                assert kiosk.poll() is None
                bus = BusSimulator([SimCoinAcceptor(euro_coins()), SimBillValidator(euro_notes())],
                                   link=port)  # fmt: skip
                bus.start()
                try:
                    seen = next_with(s, "STATUS=in service", 60)
                    assert kiosk.poll() is None, seen
                finally:
                    bus.stop()
    log = (tmp_path / "kiosk.log").read_text()
    assert "Traceback" not in log and f"cannot open {port}" in log


def test_diag_devices_finds_every_simulated_device_on_its_real_port(
    pcscd: str, tmp_path: Path
) -> None:
    """`kiosk diag devices` on the site `kiosk simulate` wrote: every device found (it waits
    for them to come up, as the automat does), no traceback. With the automat (here: any
    program) holding a port, it says so and how to stop it, and opens nothing."""
    import serial

    def diag_devices(site: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            kiosk_cmd(tmp_path / "diag-data", "diag", "devices", "--site", str(site),
                      "--who", "T-7"),
            input="0000\n", capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip

    with simulate(tmp_path, site_in(tmp_path)) as (out, _control, _sim):
        done = diag_devices(out)
        assert done.returncode == 0, done.stdout + done.stderr
        for name in ("READER", "COIN", "NOTES", "CARD", "PRINTER"):
            assert f"{name}: connected" in done.stdout, done.stdout
        assert "Traceback" not in done.stdout + done.stderr
        coin_port = load_site(out).devices.coin.port  # type: ignore[union-attr]
        with serial.Serial(coin_port, exclusive=True, timeout=0):  # the automat would hold it
            held = diag_devices(out)
        assert held.returncode == 2 and f"coin ({coin_port}): in use" in held.stderr
        assert "systemctl stop prepaid-kiosk" in held.stderr
        assert "Traceback" not in held.stdout + held.stderr


def reference_held(data_dir: Path) -> bool:
    """Has the automat taken head office's reference data (its keys) yet? Read from its
    journal's meta, read-only, as `kiosk journal` would."""
    import sqlite3

    found = list(data_dir.glob("journal-*.sqlite"))
    if not found:
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{found[0]}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT value FROM meta WHERE name = 'sync_reference_version'")
            return row.fetchone() is not None
    except sqlite3.Error:  # being made or upgraded: not yet
        return False


def test_field_rehearsal_the_bus_unplugged_for_30_s_mid_payment_loses_nothing(
    pcscd: str, tmp_path: Path
) -> None:
    """The ccTalk bus's adapter pulled out for 30 s while a customer pays, then put back (the
    pty closed, its stable path gone, then a new pty behind it): the automat stays up, comes
    back into service by itself, the payment goes on, and every coin (one dropped while the
    bus was out, owed by the acceptor's event counter) and note is at head office's report
    with the top-up on the key."""
    with LocalHeadOffice(sqlite_url(tmp_path / "ho.sqlite")) as ho:
        chain = tmp_path / "DEMO-01.chain.toml"
        token = ho.admin("kiosk", "add", "DEMO-01", "--chain-secret-file", str(chain))
        ho.admin("key", "K-1001", "--status", "active", "--account", "4711001")
        db = open_db(ho.db)

        def kinds(kind: str) -> int:
            with db.connect() as conn:
                return len(conn.execute(entries.select().where(
                    entries.c.kiosk_id == "DEMO-01", entries.c.kind == kind)).all())  # fmt: skip

        # the payment ends by itself 40 s after the last coin or note (the customer walks
        # away content): longer than the bus is out
        source = site_in(tmp_path, head_office={"sync_interval": 1},
                         timeouts={"payment": 40, "warning": 10, "message": 3})  # fmt: skip
        with simulate(tmp_path, source, ho.url) as (out, control, _sim), Xvfb(1280, 800) as x:
            with open(load_site(out).secrets.file or "", "a", encoding="utf-8") as secrets:
                secrets.write("\n" + chain.read_text("utf-8"))
            env = {"KIOSK_HEAD_OFFICE_TOKEN": token, "DISPLAY": x.display, "KIVY_NO_ARGS": "1",
                   "KIVY_HOME": str(tmp_path / "kivy"), "KIOSK_DATA_DIR": ""}  # fmt: skip
            cmd = kiosk_cmd(tmp_path / "kiosk-data", "run", "--site", str(out))
            with process(cmd, tmp_path / "kiosk.log", env) as kiosk:
                poll_until(lambda: count_entries(db, "DEMO-01") > 0 or kiosk.poll() is not None,
                           "the first upload", 60)  # fmt: skip
                assert kiosk.poll() is None, (tmp_path / "kiosk.log").read_text()[-3000:]
                # the round's second half: the keys (a key before them is one it does not know)
                poll_until(lambda: reference_held(tmp_path / "kiosk-data"), "the keys", 30)
                control.send("insert K-1001")
                # (asked, not tried with coins: inhibited coins every 50 ms overflowed its
                # five-event buffer under load, and the automat rightly took that as a fault)
                poll_until(lambda: control.status()["coin_enabled"], "the acceptor enabled", 30)
                assert "taken" in control.send("coin 2.00")
                poll_until(lambda: kinds("cash_in") >= 1, "the coin at head office", 30)
                unplugged = time.monotonic()
                assert control.send("unplug bus") == "the ccTalk bus unplugged"
                poll_until(lambda: kinds("fault") >= 1, "the fault at head office", 30)
                # the acceptor itself is still enabled: a coin dropped now is taken into its
                # buffer, and owed once the bus is back
                assert "taken" in control.send("coin 2.00")
                PAUSE.wait(max(0.0, 30 - (time.monotonic() - unplugged)))  # 30 s unplugged
                assert kiosk.poll() is None
                assert control.send("plug bus") == "the ccTalk bus plugged"
                poll_until(lambda: "taken" in control.send("coin 2.00"), "the bus back", 60)
                poll_until(lambda: "in escrow" in control.send("note 20.00"), "the note", 20)
                poll_until(lambda: kinds("key_written") > 0, "the top-up at head office", 90)
                control.send("remove")
                report = ho.admin("report", "--tz", "Europe/Berlin")
                rows = {tuple(line.split()[2:]) for line in report.splitlines()[1:]}
                assert {("coin", "6.00", "EUR"), ("note", "20.00", "EUR")} <= rows, report
                assert kinds("cash_unattributed") == 0  # all of it in the customer's top-up
                assert kiosk.poll() is None
        db.dispose()
    log = (tmp_path / "kiosk.log").read_text()
    assert "Traceback" not in log


def test_kiosk_devices_record_reader_through_pcscd_and_its_replay(
    pcscd: str, tmp_path: Path
) -> None:
    """A key in pcscd's vpcd reader (put there by kiosk simulate): its insertion read as the
    automat reads it, into a trace through the real PC/SC stack; the trace replays to the
    same summary with the keys of the site's secrets file."""
    from drivers.chipkey.reader import card_present

    with simulate(tmp_path, site_in(tmp_path)) as (out, control, _sim):
        control.send("insert K-1001")
        poll_until(lambda: card_present(VPCD_READER), "pcscd to see the key", 10)
        trace = tmp_path / "key.trace"
        done = subprocess.run(
            kiosk_cmd(tmp_path / "rec-data", "devices", "record", "reader", "--site", str(out),
                      "--reader", VPCD_READER, "--out", str(trace)),
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        again = subprocess.run(
            kiosk_cmd(tmp_path / "rec-data", "devices", "replay", str(trace), "--site", str(out)),
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert '"contract_account": "4711001"' in again.stdout
        control.send("remove")
