"""The `kiosk` command as a newcomer runs it: demo, journal show/verify, the data directory."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from kiosk.domain.clock import utc_now
from kiosk.domain.events import Kind, Record
from kiosk.ledger.journal import Journal
from tests.conftest import CONFIG, ROOT, children, run_kiosk, running


def test_demo_runs_complete_top_ups_and_prints_the_journal(tmp_path: Path) -> None:
    res = run_kiosk("demo", data_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "paid 20.00 EUR = fee 0.00 EUR + debt 5.00 EUR + credit 15.00 EUR" in out
    assert "paid 30.00 EUR = fee 0.00 EUR + debt 0.00 EUR + credit 30.00 EUR" in out
    assert "refused: blocked" in out
    # The 50.00 note is more than the amount: the validator has it inhibited and hands it back.
    after_50 = out.split("insert note 50.00 EUR (inhibited", 1)[1].splitlines()[1]
    assert after_50.strip() == "screen: cash | paid 0.00 EUR"
    assert "outcome: pending" in out and "notice: pending_written" in out
    assert "Keys now: K-1001 18.50 EUR, K-1002 3.50 EUR, K-1003 43.50 EUR" in out
    assert "journal verify: ok" in out
    # no head office configured: one was started on this machine, and it steered the kiosk
    assert "Head office: none configured, started one on http://127.0.0.1:" in out
    scene5 = out.split("5. Head office steers", 1)[1]
    assert (
        "insert key K-1003\n  screen: key_refused | credit on key 43.50 EUR | refused: blocked"
        in scene5
    )
    assert "Keys now: K-1001 23.50 EUR" in scene5  # the 5.00 credit, written once
    held = re.search(r"head office holds (\d+) of (\d+) entries \(backlog 0\)", out)
    assert held is not None and held.group(1) == held.group(2)
    assert re.search(r"DEMO-01 +\d{4}-\d\d-\d\d card +30\.00 EUR", out)  # its money report
    db = tmp_path / "journal-DEMO-01.sqlite"
    assert db.exists()  # state lives in the data directory

    shown = run_kiosk("journal", "show", data_dir=tmp_path)
    assert shown.returncode == 0
    rows = [line for line in shown.stdout.splitlines() if line[:4].isdigit() and "DEMO-01-" in line]
    assert [r.split()[-1] for r in rows] == ["completed", "completed", "pending_written"]
    entries = run_kiosk("journal", "show", "--entries", "--limit", "3", data_dir=tmp_path)
    assert len(entries.stdout.splitlines()) == 3
    verified = run_kiosk("journal", "verify", data_dir=tmp_path)
    assert verified.returncode == 0 and "ok," in verified.stdout
    # again, with a new head office (the demo's own starts empty): the whole journal goes
    (tmp_path / "headoffice.sqlite").unlink()
    again = run_kiosk("demo", data_dir=tmp_path)
    assert again.returncode == 0, again.stderr
    held = re.search(r"head office holds (\d+) of (\d+) entries \(backlog 0\)", again.stdout)
    assert held is not None and held.group(1) == held.group(2)


def test_demo_at_a_cash_only_site_offers_no_card(tmp_path: Path) -> None:
    site = CONFIG / "poessneck-breite-strasse.toml"
    res = run_kiosk("demo", "--site", str(site), data_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Card payment is not offered at this site" in res.stdout
    assert "choose card" not in res.stdout
    assert (tmp_path / "journal-POESS-BR11-01.sqlite").exists()


def test_data_dir_option_wins_over_the_environment(tmp_path: Path) -> None:
    env_dir, opt_dir = tmp_path / "env", tmp_path / "opt"
    opt_dir.mkdir()
    j = Journal(opt_dir / "journal-DEMO-01.sqlite", "DEMO-01")
    j.append([Record(Kind.KIOSK_STARTED, data={"site": "demo"})], utc_now())
    j.close()
    res = run_kiosk("--data-dir", str(opt_dir), "journal", "verify", data_dir=env_dir)
    assert res.returncode == 0 and "ok, 1 entries" in res.stdout, res.stderr
    res = run_kiosk("journal", "verify", data_dir=env_dir)  # the environment's: no journal
    assert res.returncode == 2 and f"no journal at {env_dir}" in res.stderr


def test_journal_commands_without_a_journal_say_so(tmp_path: Path) -> None:
    res = run_kiosk("journal", "verify", data_dir=tmp_path)
    assert res.returncode == 2 and "no journal at" in res.stderr
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_bad_site_file_stops_the_demo_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text((CONFIG / "demo.toml").read_text("utf-8").replace('"EUR"', '"USD"'), "utf-8")
    res = run_kiosk("demo", "--site", str(bad), data_dir=tmp_path / "data")
    assert res.returncode == 2
    assert "money.currency: unknown currency 'USD'" in res.stderr
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").iterdir())


def test_demo_at_the_swiss_site_pays_in_francs_and_its_notes_over_essp(tmp_path: Path) -> None:
    """The Swiss site, here with an ITL note validator over eSSP (`protocol = "essp"`): francs
    through both protocols, its notes through the eSSP driver to the simulated validator."""
    site = tmp_path / "thal-essp.toml"
    text = (CONFIG / "thal-elektra.toml").read_text("utf-8")
    head, notes, rest = text.partition("[devices.notes]\n")
    assert notes, "the Swiss site names its note validator"
    port, _, rest = rest.partition("\n")
    rest = "\n".join(ln for ln in rest.split("\n") if not ln.startswith("address"))
    site.write_text(f'{head}{notes}{port}\nprotocol = "essp"\n{rest}', "utf-8")
    res = run_kiosk("demo", "--site", str(site), data_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "coins over ccTalk, notes over eSSP" in res.stdout
    assert "insert coin 5.00 CHF" in res.stdout
    assert "paid 20.00 CHF = fee 0.00 CHF + debt 0.00 CHF + credit 20.00 CHF" in res.stdout
    assert "journal verify: ok" in res.stdout
    journal = next(tmp_path.glob("journal-*.sqlite"))
    with sqlite3.connect(journal) as db:
        notes_in = db.execute("SELECT count(*) FROM journal WHERE kind = 'cash_in' "
                              "AND data LIKE '%\"medium\":\"note\"%'").fetchone()[0]  # fmt: skip
    assert notes_in >= 2


def test_run_without_a_display_scripts_customers_and_saves_every_screen(tmp_path: Path) -> None:
    """The production command, started as systemd starts it (a real NOTIFY_SOCKET and a
    watchdog): READY=1 once its devices are up, pings while it lives, STOPPING=1 at the end."""
    import contextlib
    import os
    import socket
    import threading

    shots = tmp_path / "shots"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env |= {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
    heard: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(tmp_path / "notify"))
        systemd.settimeout(0.2)
        done = threading.Event()

        def listen() -> None:  # as systemd does, while the automat runs
            while not done.is_set():
                with contextlib.suppress(TimeoutError):
                    heard.append(systemd.recv(4096).decode())

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        res = subprocess.run(
            [sys.executable, "-m", "kiosk.cli", "--data-dir", str(tmp_path / "data"), "run",
             "--screenshots", str(shots)],
            capture_output=True, text=True, timeout=600, env=env, cwd=ROOT,
        )  # fmt: skip
        done.set()
        listener.join(5)
        systemd.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # what came after its last look
            while True:
                heard.append(systemd.recv(4096).decode())
    assert res.returncode == 0, res.stderr[-3000:]
    assert heard[0] == "READY=1\nSTATUS=in service", heard[:3]  # from the automat, nobody else
    assert heard.count("WATCHDOG=1") >= 10 and heard[-1] == "STOPPING=1", heard[-3:]
    assert "No display: started a virtual screen" in res.stdout
    names = sorted(p.name for p in shots.glob("*.png"))
    screens = {"idle", "refused", "amount", "method", "cash", "card", "done", "key-missing"}
    screens |= {"reading", "closed"}
    for lang in ("de", "en"):
        shown = {n.split("-", 2)[2].removesuffix(".png") for n in names if n.startswith(lang)}
        assert screens | {"out-of-service", "amount-large-text"} <= shown, (lang, shown)
    assert all((shots / n).stat().st_size > 10_000 for n in names)  # real pictures
    assert re.search(r"journal verify: ok, \d+ entries", res.stdout)
    assert re.search(r"DEMO-01 +\d{4}-\d\d-\d\d card +60\.00 EUR", res.stdout)  # 2 x 30.00
    said_as_heard(shots, [n for n in names if n[:3] in ("de-", "en-")])


def said_as_heard(shots: Path, customer_shots: list[str]) -> None:
    """Beside each customer screen, what it said: text in the screen's language, and sound."""
    from kiosk.domain.site import load_site
    from tests.test_speech import level
    from tests.vocabulary import foreign

    site = load_site()
    assert len(customer_shots) >= 24
    for name in customer_shots:
        png = shots / name
        lang = name[:2]
        text = png.with_suffix(".txt").read_text("utf-8")
        assert len(text) > 20 and foreign(text, lang, site) == set(), (name, text)
        seconds, rms = level(png.with_suffix(".wav"))
        assert seconds > 1.0 and rms > 300, (name, seconds, rms)
    card = [n for n in customer_shots if n.startswith("de-") and n.endswith("-card.png")]
    said = (shots / card[0]).with_suffix(".txt").read_text("utf-8")  # the terminal's status
    assert "Bitte stecken Sie Ihre Karte ein oder halten Sie sie an das Kartenterminal." in said


def test_the_demo_script_keeps_the_acceptors_dead_man_switch_fed(tmp_path: Path) -> None:
    """The demo's script is the engine's loop: on a busy machine a pause between two scenes
    passed the 1.5 s dead-man switch and the acceptors stayed inhibited (seen once in CI). A
    heartbeat says the script is alive while it runs, and stops with it."""
    import threading
    import time

    from kiosk.sim.demo import _heartbeat

    beats: list[float] = []
    woken = threading.Event()

    class Acceptor:
        def alive(self) -> None:
            beats.append(time.monotonic())
            woken.set()

    class Devices:
        coin, notes = Acceptor(), None

    class Kiosk:
        devices = Devices()

        def alive(self) -> None:
            self.devices.coin.alive()

    with _heartbeat(Kiosk()):  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while len(beats) < 4 and time.monotonic() < deadline:
            woken.wait(0.1)
            woken.clear()
    assert len(beats) >= 4 and max(b - a for a, b in zip(beats, beats[1:], strict=False)) < 1.5
    after = len(beats)
    assert not woken.wait(1.2) and len(beats) == after  # stopped with the script


def test_kiosk_simulate_refuses_a_site_with_nothing_to_simulate(tmp_path: Path) -> None:
    """A site whose devices are all real: nothing is started and no site file is written
    (before, the real ports were written into its output, silently)."""
    out = tmp_path / "out.toml"
    done = subprocess.run(
        [sys.executable, "-m", "kiosk.cli", "--data-dir", str(tmp_path), "simulate", "--site",
         str(CONFIG / "jena-saalstrasse.toml"), "--write-site", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "names no simulated device" in done.stderr
    assert 'port = "sim"' in done.stderr and not out.exists()


def test_kiosk_run_takes_the_screen_size_and_refuses_a_bad_one(tmp_path: Path) -> None:
    """`--screen WxH` (and `--rotation`) instead of [ui]: the headless run's screenshots are
    made at that size; a size that is not WxH is refused before anything starts."""
    bad = subprocess.run(
        [sys.executable, "-m", "kiosk.cli", "--data-dir", str(tmp_path), "run", "--headless",
         "--simulate", "--screen", "1280by1024"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "width x height in pixels" in bad.stderr
    assert not (tmp_path / "screenshots").exists()


#: the normal theme's background, #f4f3ee
BACKGROUND = (244, 243, 238)


def _corner(x: Any) -> tuple[int, int, int]:
    """The colour at the top left of the Xvfb screen `x`, read from its frame buffer."""
    from PIL import Image

    size, pixels = x.picture()
    corner: tuple[int, int, int] = Image.frombuffer("RGB", size, pixels, "raw", "BGRX", 0,
                                                    1).getpixel((5, 5))  # fmt: skip
    return corner


def test_sigterm_stops_the_automat_and_everything_its_simulation_started(
    pcscd: str, tmp_path: Path
) -> None:
    """`systemctl stop`, or the launcher passing SIGTERM on: `kiosk run --simulate` unwinds
    and ends with status 0, and the head office it started on this machine ends with it
    (Python's default for SIGTERM ended the automat on the spot and left that running)."""
    import contextlib
    import os
    import signal
    import threading
    import time

    import requests

    from kiosk.ui.xvfb import Xvfb

    with Xvfb(1280, 800) as x:
        env = {**os.environ, "DISPLAY": x.display, "KIVY_NO_ARGS": "1",
               "KIVY_HOME": str(tmp_path / "kivy"), "KIOSK_DATA_DIR": ""}  # fmt: skip
        log = tmp_path / "run.log"
        with log.open("wb") as said:
            proc = subprocess.Popen(
                [sys.executable, "-m", "kiosk.cli", "--data-dir", str(tmp_path / "data"), "run",
                 "--simulate"], cwd=ROOT, env=env, stdout=said, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            deadline, look = time.monotonic() + 120, threading.Event()
            while "Synced with head office" not in log.read_text() or _corner(x) != BACKGROUND:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                look.wait(0.2)  # until the screen is up: the stop goes through it
            url = re.search(r"started one on (http://127\.0\.0\.1:\d+)", log.read_text())
            assert url is not None, log.read_text()
            started = children(proc.pid)
            assert started, "the local head office runs as a process of its own"
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGUSR1)  # where it hangs, into its log
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(2)  # (it does not end: this only gives it time to write)
                raise AssertionError("still running a minute after SIGTERM:\n"
                                     + log.read_text()[-6000:]) from None  # fmt: skip
            assert proc.returncode == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert "kiosk: stopped (SIGTERM)" in log.read_text()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    alive = [pid for pid in started if running(pid)]
    assert not alive, f"left running: {alive}"
    try:
        requests.get(url.group(1) + "/v1/health", timeout=2)
        raise AssertionError("the local head office still answers")
    except requests.ConnectionError:
        pass  # gone with the automat


def test_sigterm_stops_the_headless_run_at_its_next_screen(tmp_path: Path) -> None:
    """Without a display (the scripted customers and their screenshots), SIGTERM ends the
    run at its next screen, not after the whole script: status 0, no report, the local head
    office and the virtual screen gone with it."""
    import os
    import signal
    import threading
    import time

    shots = tmp_path / "shots"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    log = tmp_path / "run.log"
    with log.open("wb") as said:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kiosk.cli", "--data-dir", str(tmp_path / "data"), "run",
             "--screenshots", str(shots)], cwd=ROOT, env=env, stdout=said,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline, look = time.monotonic() + 120, threading.Event()
        while len(list(shots.glob("*.png"))) < 2:  # the script is under way
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            look.wait(0.1)
        started = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert "kiosk: stopped (SIGTERM)" in text and "Traceback" not in text, text[-3000:]
    assert "Head office report" not in text  # the script did not run to its end
    assert len(list(shots.glob("*.png"))) < 20, "it stopped at its next screen"
    alive = [pid for pid in started if running(pid)]
    assert started and not alive, (started, alive)
