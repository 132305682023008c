"""Crash and fault matrix: no money lost, no credit minted (DESIGN promises 1 and 2).

The automat runs as its own process (tests/crash/child.py) on the real drivers; the devices
are simulators in this process, on their real transports, so they outlive the automat: a
ccTalk bus with a coin acceptor and a note validator on a pty, a ZVT terminal on TCP, a
receipt printer on a pty, and the customer's key as a virtual DESFire card in pcscd's vpcd
reader (its state in a file). Head office is unreachable throughout, except in the head-office
columns: there a head office process on 127.0.0.1 (its own SQLite database) is reachable and
the automat syncs every second (`head_office`), and in `ho_credit` it also holds a 5.00 credit
for the key that the automat claims when the key is inserted. Besides the journaled steps, those
columns kill the automat during an upload (head office stored a transaction's entries, the
kiosk never heard its answer) and during a credit claim (head office handed the credit over,
the kiosk never journaled it).

For each flow (cash, card) a clean run first lists the steps: the journal commits that carry a
transaction entry. Then, for every step, a fresh automat is killed with SIGKILL right after
that commit, started again, and the customer puts the key back in. A fault column adds a device
fault to the same flow. After each run the invariants are checked against what the devices
know (notes stacked, card payments the terminal kept, the key's credit and top-up log) and the
journal:

  money received = credit added to the key + pending credits + debt recovered + fees
                   (+ cash taken with no key, unattributed)
  no transaction id on the key twice, none both written and pending
  each printed receipt matches its transaction's journal entries
  the journal's hash chain verifies
  with a head office, after recovery and one sync (`kiosk sync now`): head office holds every
  journal entry exactly once (same sequence numbers, same hashes), and its credit book agrees
  with the kiosk's (a credit open at one is open at the other; one written is on the key)

    python -m tests.crash.matrix [--flows cash,card] [--exhaustive] [--cell FLOW:FAULT:STEP]

(STEP: a journaled step's number, or `upload` / `claim` in a head-office column.)

Prints the matrix; exits 1 if any cell fails. Needs pcscd with vsmartcard's vpcd (the README's
test command installs them).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from drivers.chipkey.profile import ChipKey, Identity
from drivers.chipkey.reader import list_readers
from drivers.chipkey.sim import VirtualCard
from drivers.chipkey.vpcd import VPCD_PORT, VPCD_READER, VpcdCard
from drivers.errors import TransportError
from drivers.printer.sim import PrinterSim
from drivers.zvt.sim import TerminalSim
from kiosk.adapters.cash import start_simulator
from kiosk.adapters.key import DEMO_KEYS
from kiosk.domain.events import KeyStatus, Kind
from kiosk.domain.money import Money
from kiosk.domain.site import load_site
from kiosk.ledger.journal import Journal, claim_of
from kiosk.service.diag import demo_pin_hash
from kiosk.service.keytool import virtual_uid
from kiosk.sim.simulate import bill_id, coin_id
from sync.admin.local import LocalHeadOffice, sqlite_url
from sync.store.tables import credits as ho_credits
from sync.store.tables import entries as ho_entries
from sync.store.tables import open_db
from sync.wire.protocol import decimals
from tests.crash.forkserver import ForkServer

ROOT = Path(__file__).resolve().parents[2]
LOST = re.compile(r"(\d+) event\(s\) lost")
SERIAL, ACCOUNT = "K-2001", "2000471100"
START_CREDIT = 350
#: vpcd's two reader slots (pcscd's name, vpcd's port): two cells run side by side, one each;
#: only this process's slot when KIOSK_VPCD_SLOT says (a test worker has the other one)
SLOTS = (
    ((VPCD_READER, VPCD_PORT),)
    if os.environ.get("KIOSK_VPCD_SLOT")
    else (("Virtual PCD 00 00", 35963), ("Virtual PCD 00 01", 35964))
)
_free_slots: queue.Queue[tuple[str, int]] = queue.Queue()
for _slot in SLOTS:
    _free_slots.put(_slot)
FLOWS = {"cash": 2000, "card": 3000}  # what the customer tops up
#: device faults per flow (head office unreachable), and the columns with a head office
FAULTS = {
    "cash": ["none", "counterfeit", "note_jam", "coin_burst", "coin_reset", "printer_out",
             "head_office", "ho_credit"],
    "card": ["none", "card_silent", "card_drop", "printer_out", "head_office"],
}  # fmt: skip
#: the columns with a head office, and where their automat is also killed (`--crash-in`)
HEAD_OFFICE = {"head_office": ("upload",), "ho_credit": ("upload", "claim")}
OFFICE_CREDIT = 500  # what head office holds for the key in `ho_credit` (from its admin)
#: faults brought in right after a journaled step (tests/crash/child.py --fault): the engine
#: raises, the journal's disk fills up, another writer locks the journal for 10 s, the clock
#: steps back 2 hours or forward 2 days, the devices vanish and come back (the ccTalk
#: adapter's cable out and the card terminal off the network, until the automat has seen the
#: acceptors go; then both back)
INJECTED = ("engine_error", "disk_full", "journal_locked", "clock_back", "clock_forward",
            "devices_vanish")  # fmt: skip
#: the steps each injected fault is brought in after by default (in CI): the first payment step
#: of each flow, where money is in the automat and not yet on the key. Not every step: five
#: classes at every step of both flows would add about four minutes (the journal lock alone
#: holds each of its cells for 10 s) to a CI matrix that must stay under five; `--injected all`
#: runs every step.
INJECTED_SAMPLE = {"cash": (2,), "card": (2,)}
TOKEN_ENV = "KIOSK_HEAD_OFFICE_TOKEN"


# ---------------------------------------------------------------- the simulators


@dataclass
class Bench:
    """The devices, in this process: they survive the automat's death."""

    folder: Path
    site_file: Path
    journal_file: Path
    bus: Any
    coins: Any
    notes: Any
    terminal: TerminalSim
    printer: PrinterSim
    card: VirtualCard
    slot: VpcdCard
    reader: str  # pcscd's name for the slot the key goes into
    ho: LocalHeadOffice | None = None  # reachable in the head-office columns
    token: str = ""  # the automat's head-office token
    coins_in: int = 0  # coins the acceptor took (the harness put them in)
    at_insert: int = 0  # the key's command count when the customer inserted it
    read_commands: int = 0  # the key's commands from its insertion up to the summary screen
    put_back: int = 0  # times the customer put a torn key back
    bounces: int = 0  # times the reader lost the key and found it again before a payment

    def key(self) -> Any:
        return ChipKey(VirtualCard(self.card.uid, self.card.path), DEMO_KEYS).read_all()


#: the note validator's protocol in every cell (`--notes`): ccTalk on the coin acceptor's bus,
#: or an ITL validator over eSSP on a port of its own
NOTES = {"protocol": "cctalk"}


def site_text(bus: str, terminal: str, printer: str, reader: str, ho: str | None = None,
              notes: str | None = None) -> str:  # fmt: skip
    text = (ROOT / "config" / "demo.toml").read_text("utf-8")
    head, _, _devices = text.partition("[devices.coin]")
    notes_section = (
        f'[devices.notes]\nport = "{notes}"\nprotocol = "essp"\n\n'
        if notes
        else f'[devices.notes]\nport = "{bus}"\naddress = 40\n\n'
    )
    return (
        head
        + (
            f'[devices.coin]\nport = "{bus}"\naddress = 2\n\n'
            + notes_section
            + f'[devices.card]\nport = "{terminal}"\n\n'
            f'[devices.reader]\nreader = "{reader}"\n\n'
            f'[devices.printer]\nport = "{printer}"\nreceipt = "always"\n'
        )
        + (f'\n[head_office]\nurl = "{ho}"\nsync_interval = 1\n' if ho else "")
    )


def demo_secrets(path: Path) -> Path:
    """A secrets file with the demo keys and PIN: the matrix's devices are real ports (ptys,
    TCP, pcscd), and a site with real ports must name its secrets."""
    keys = {k: getattr(DEMO_KEYS, k).hex() for k in ("master", "read", "credit", "debit")}
    lines = ["[chipkey]", *(f'{k} = "{v}"' for k, v in keys.items()),
             "[technician]", f'pin_hash = "{demo_pin_hash()}"']  # fmt: skip
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


@contextlib.contextmanager
def bench(folder: Path, fault: str) -> Iterator[Bench]:
    """A cell's devices, with one of vpcd's reader slots to itself while it runs."""
    reader, port = _free_slots.get()
    try:
        with _bench(folder, reader, port, fault) as b:
            yield b
    finally:
        _free_slots.put((reader, port))


def head_office(folder: Path, credit: int) -> tuple[LocalHeadOffice, str]:
    """A head office of the cell's own that knows the key (and holds `credit` for it)."""
    ho = LocalHeadOffice(sqlite_url(folder / "headoffice.sqlite"))
    token = ho.register("DEMO-01")
    ho.admin("key", SERIAL, "--status", "active", "--account", ACCOUNT)
    if credit:
        ho.admin("credit", SERIAL, decimals(credit, "EUR"), "--currency", "EUR")
    ho.start()
    return ho, token


def take_out(slot: VpcdCard) -> None:
    """The customer's key out of the reader (if it is in), when the cell ends."""
    with contextlib.suppress(Exception):
        slot.remove()


@contextlib.contextmanager
def _bench(folder: Path, reader: str, port: int, fault: str) -> Iterator[Bench]:
    folder.mkdir(parents=True, exist_ok=True)
    demo = load_site(ROOT / "config" / "demo.toml")
    with contextlib.ExitStack() as stack:  # whatever fails on the way, nothing is left running
        ho, token = None, ""
        if fault in HEAD_OFFICE:
            ho, token = head_office(folder, OFFICE_CREDIT if fault == "ho_credit" else 0)
            stack.callback(ho.stop)
        essp = NOTES["protocol"] == "essp"
        if essp:
            d = demo.devices
            assert d.notes is not None
            essp_notes = d.notes.model_copy(update={"protocol": "essp", "address": None})
            demo = dataclasses.replace(demo, devices=d.model_copy(update={"notes": essp_notes}))
        bus, coins, notes = start_simulator(demo, link=folder / "ttyUSB-ccTalk",
                                            notes_link=folder / "ttyUSB-eSSP")  # fmt: skip
        stack.callback(bus.stop)
        terminal = TerminalSim("tcp")
        terminal.start()
        stack.callback(terminal.stop)
        printer = PrinterSim()
        printer.start()
        stack.callback(printer.stop)
        site_file = folder / "site.toml"
        text = site_text(bus.path, terminal.port, printer.path, reader, ho.url if ho else None,
                         notes.path if essp else None)  # fmt: skip
        text += f'\n[secrets]\nfile = "{demo_secrets(folder / "secrets.toml")}"\n'

        if fault == "disk_full":  # its 16 MB are the whole disk: a floor the cell can meet
            text += "\n[health]\ndisk_floor_mb = 4\n"
        site_file.write_text(text, "utf-8")
        site = load_site(site_file)
        card = VirtualCard(virtual_uid(SERIAL), folder / "key.json")
        ChipKey(card, DEMO_KEYS).personalise(
            Identity(site.utility_id, ACCOUNT, "1ESY1160012345", "electricity", SERIAL,
                     "customer", site.currency),
            upper=site.key_credit_limit.minor, initial=START_CREDIT,
        )  # fmt: skip
        journal_file = folder / "journal.sqlite"
        if fault == "disk_full":  # the journal on a small file system of its own
            disk = folder / "disk"
            disk.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
                           check=True)  # fmt: skip
            stack.callback(subprocess.run, ["umount", "-l", str(disk)], check=False)
            journal_file = disk / "journal.sqlite"
        j = Journal(journal_file, site.kiosk_id)
        j.set_key(SERIAL, KeyStatus.ACTIVE, ACCOUNT)  # what head office said before it left
        j.close()
        slot = VpcdCard(card, port=port)
        stack.callback(take_out, slot)
        yield Bench(folder, site_file, journal_file, bus, coins, notes, terminal, printer, card,
                    slot, reader, ho, token)  # fmt: skip


# ---------------------------------------------------------------- the automat's process


class Automat:
    """One run of tests/crash/child.py: its views and steps as they come."""

    def __init__(
        self, b: Bench, crash_after: int = 0, crash_in: str = "", inject: tuple[int, str] = (0, "")
    ) -> None:
        self.bench = b
        where = ["--crash-in", crash_in] if crash_in else []
        if inject[1]:
            where += ["--fault-at", str(inject[0]), "--fault", inject[1]]
        with open(b.folder / "automat.log", "a") as log:
            self.proc = forks().spawn(
                [str(b.site_file), str(b.journal_file), "--crash-after", str(crash_after),
                 *where], str(ROOT), automat_env(b), log,
            )  # fmt: skip
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.view: dict[str, Any] = {}  # the last view the harness read
        self.latest: dict[str, Any] = {}  # the last view the automat sent
        self.steps: list[list[str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if "state" in msg:
                    self.latest = msg
                if msg.get("fault") == "devices_vanish":
                    threading.Thread(target=vanish, args=(self,), daemon=True).start()
                self.lines.put(msg)
        self.lines.put(None)

    def send(self, command: str) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.write(command + "\n")
                self.proc.stdin.flush()

    def until(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> bool:
        """Read until a view satisfies `pred` (True) or the process has died (False)."""
        if self.view and pred(self.view):
            return True
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"automat stuck in {self.view}")
            try:
                msg = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if msg is None:
                self.proc.wait(10)
                return False
            if "step" in msg:
                self.steps.append(msg["kinds"])
            elif "state" in msg:
                self.view = msg
                if pred(msg):
                    return True

    def quit(self) -> None:
        self.send("quit")
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        while (msg := self.lines.get()) is not None:  # the last steps
            if "step" in msg:
                self.steps.append(msg["kinds"])

    @property
    def killed(self) -> bool:
        """It died: killed by a signal, or ended itself on a failure (status 70)."""
        return self.proc.poll() is not None and self.proc.returncode != 0


def vanish(a: Automat) -> None:
    """The ccTalk adapter unplugged and the card terminal off the network, until the automat
    shows the acceptors' faults (or 10 s); then both back, at the same path and address."""
    b = a.bench
    b.bus.unplug()
    for other in b.bus.companions:  # an eSSP note validator's own adapter
        other.unplug()
    b.terminal.unplug()
    deadline = time.monotonic() + 10
    try:
        while not {"coin", "notes"} <= set(a.latest.get("faults", ())):
            if time.monotonic() > deadline or a.proc.poll() is not None:
                break
            threading.Event().wait(0.05)  # the automat's next view: look again shortly
    finally:
        b.bus.plug()
        for other in b.bus.companions:
            other.plug()
        b.terminal.plug()


_forks: list[ForkServer] = []
_forks_lock = threading.Lock()


def forks() -> ForkServer:
    """The fork server the automats come from (tests/crash/forkserver.py), started once."""
    with _forks_lock:
        if not _forks:
            _forks.append(ForkServer())
        return _forks[0]


def automat_env(b: Bench) -> dict[str, str]:
    """The automat's environment: its head-office token where there is a head office."""
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if b.token:
        env[TOKEN_ENV] = b.token
    return env


def state_is(*states: str) -> Callable[[dict[str, Any]], bool]:
    return lambda v: v.get("state") in states


# ---------------------------------------------------------------- a customer


def wait_reader(b: Bench, inserted: bool, timeout: float = 30.0) -> None:
    """Until pcscd reports the key in (or out). 30 s: pcscd polls vpcd, and on a loaded
    machine (two matrix cells, the suite beside them) it once took over 10 s to see a removal
    (the cell failed as "pcscd did not see the key out", nothing to do with the automat)."""
    from drivers.chipkey.reader import card_present

    deadline = time.monotonic() + timeout
    while card_present(b.reader) != inserted:
        if time.monotonic() > deadline:
            raise TimeoutError("pcscd did not see the key " + ("in" if inserted else "out"))
        threading.Event().wait(0.05)  # pcscd polls vpcd: look again shortly


def key_out_or_found(b: Bench, a: Automat, timeout: float = 30.0) -> bool:
    """After the automat said the key is missing: True once pcscd reports it out (it was torn
    out), False once the automat has it back without the customer (it never left: a bounce).
    Before, the harness waited for the key to be out alone, and a bounce failed the cell as
    "pcscd did not see the key out" while the automat had found the key and finished."""
    from drivers.chipkey.reader import card_present

    deadline = time.monotonic() + timeout
    while card_present(b.reader):
        if a.latest.get("state") != "key_missing":  # what the automat sent last
            b.bounces += 1
            return False
        if time.monotonic() > deadline:
            raise TimeoutError("pcscd did not see the key out, and the automat lost it")
        threading.Event().wait(0.05)  # pcscd polls vpcd: look again shortly
    return True


def reinsert(b: Bench) -> None:
    if b.slot.inserted:
        b.slot.remove()
        wait_reader(b, False)
    b.slot.insert()


def top_up(b: Bench, a: Automat, flow: str, fault: str) -> bool:
    """The customer's visit with `fault` on the way: True if it ended on the done screen with
    its receipt settled, False if the automat died."""
    target = FLOWS[flow]
    if not a.until(lambda v: "card" in v.get("methods", []) and "cash" in v["methods"], 30):
        return False
    if fault == "printer_out":
        b.printer.paper = "out"
    if fault.startswith("key_torn@"):  # the n-th command to the key from its insertion
        b.card.tear_after(int(fault.split("@")[1]))
    b.at_insert = b.card.commands
    reinsert(b)
    if not a.until(state_is("choosing_amount", "key_refused"), 30):
        return False
    if a.view["state"] != "choosing_amount":
        raise AssertionError(f"key refused: {a.view}")
    b.read_commands = b.card.commands - b.at_insert
    if not choose_amount(b, a, target):
        return False
    if flow == "card":
        if fault == "card_silent":
            b.terminal.inject("silence")
        elif fault == "card_drop":
            b.terminal.next("drop_after_approval")
        a.send("method card")
        if not a.until(lambda v: v["state"] != "choosing_method" or v["refused"]):
            return False
        if fault == "card_silent":  # the terminal never answers: the customer pays cash
            if not a.until(state_is("choosing_method", "done"), 60):
                return False
            if a.view["state"] == "choosing_method":
                a.send("method cash")
                if not a.until(state_is("cash")) or not pay_notes(b, a, target, (2000, 1000)):
                    return False
    else:
        a.send("method cash")
        if not a.until(state_is("cash")):
            return False
        if not pay_cash(b, a, target, fault):
            return False
    if not until_done(b, a):
        return False
    # the receipt: printed (or not) once the terminal's text is in, for a card payment
    return a.until(lambda v: v.get("receipt") != "printing" or v["state"] != "done", 40)


def choose_amount(b: Bench, a: Automat, target: int) -> bool:
    """The amount. If the reader lost the key and found it again meanwhile (pcscd saw it out
    and in: a contact bounce on a real reader; here, under load, once in several hundred
    cells), the automat ended that session (nothing was paid) and reads the key afresh: the
    customer chooses again. Counted in `b.bounces` and shown in the matrix."""
    for _ in range(3):
        a.send(f"amount {target}")
        if not a.until(state_is("choosing_method", "idle", "reading")):
            return False
        if a.view["state"] == "choosing_method":
            return True
        b.bounces += 1
        if not a.until(state_is("choosing_amount")):
            return False
    raise AssertionError("the reader lost the key three times in a row")


def until_done(b: Bench, a: Automat) -> bool:
    """Wait for the done screen; a key that left the reader (torn) is put back in."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not a.until(state_is("done", "key_missing"), 60):
            return False
        if a.view["state"] == "done":
            return True
        # The torn key left the reader: the customer puts it back. Unless the automat lost a
        # key that never left (pcscd saw it out and in again: a contact bounce, which a loaded
        # machine makes now and then): it finds the key again by itself and goes on.
        if not key_out_or_found(b, a):  # found again: read on from the view it went to
            if not a.until(lambda v: v["state"] != "key_missing", 30):
                return False
            continue
        b.slot.remove()
        b.slot.insert()
        b.put_back += 1
        if not a.until(lambda v: v["state"] != "key_missing", 30):
            return False
    raise TimeoutError("the top-up did not end")


def pay_notes(b: Bench, a: Automat, target: int, notes: tuple[int, ...]) -> bool:
    for value in notes:
        paid = a.view["paid"]
        deadline = time.monotonic() + 20
        while not b.notes.insert(bill_id(Money(value, "EUR"))):  # given back: try again
            if a.proc.poll() is not None:  # the automat died: the note is given back
                return False
            if time.monotonic() > deadline:
                raise TimeoutError(f"the validator never took the {value} note: {a.view}")
            threading.Event().wait(0.1)  # the customer takes the note and feeds it again
        if not a.until(lambda v, p=paid + value: v["paid"] >= p or v["state"] != "cash", 20):
            return False
        if a.view["state"] != "cash":
            return True
    return True


def insert_coin(b: Bench, a: Automat, value: int = 200) -> bool:
    """One coin; retried while the acceptor refuses it (e.g. inhibited after its reset)."""
    deadline = time.monotonic() + 20
    while not b.coins.insert(coin_id(Money(value, "EUR"))):
        if a.proc.poll() is not None:  # the automat died (with the acceptor inhibited)
            return False
        if time.monotonic() > deadline:
            raise TimeoutError("the coin acceptor never took the coin")
        threading.Event().wait(0.1)  # the refused coin drops back: the customer tries again
    b.coins_in += value
    paid = a.view["paid"]
    return a.until(lambda v: v["paid"] > paid or v["state"] != "cash", 20)


def pay_cash(b: Bench, a: Automat, target: int, fault: str) -> bool:
    if fault == "counterfeit":
        b.notes.insert(bill_id(Money(1000, "EUR")), counterfeit=True)  # refused, given back
        return pay_notes(b, a, target, (1000, 1000))
    if fault == "note_jam":
        if not pay_notes(b, a, target, (1000,)):
            return False
        b.notes.jam_next_stack = True
        b.notes.insert(bill_id(Money(1000, "EUR")))
        if not a.until(lambda v: "notes" in v["faults"] and v["escrow"] is None, 20):
            return False
        a.send("finish")  # the note is stuck: the customer ends with what was credited
        return True
    if fault == "coin_burst":  # seven coins between two polls: two events lost
        b.coins.burst(coin_id(Money(200, "EUR")), 7)
        b.coins_in += 7 * 200
        if not a.until(lambda v: "coin" in v["faults"] or v["state"] != "cash", 20):
            return False
        return pay_notes(b, a, target, (1000,)) and finish_if_cash(a)
    if fault == "coin_reset":  # the acceptor powers off and on mid-payment
        for _ in range(2):
            if not insert_coin(b, a):
                return False
        b.coins.power_cycle()
        for _ in range(3):
            if not insert_coin(b, a):
                return False
        return pay_notes(b, a, target, (1000,))
    return pay_notes(b, a, target, (1000, 1000))


def finish_if_cash(a: Automat) -> bool:
    if a.view["state"] == "cash":
        a.send("finish")
    return True


def come_back(b: Bench, a: Automat) -> None:
    """After the restart: the customer, who took the key when the screen went dark, puts it
    back in; what is owed gets written."""
    if not a.until(lambda v: "card" in v.get("methods", []) and "cash" in v["methods"], 30):
        raise AssertionError("the automat died again")
    b.slot.insert()
    if not a.until(state_is("choosing_amount", "done", "key_refused"), 40):
        raise AssertionError("the automat died again")
    a.send("cancel")


# ---------------------------------------------------------------- the invariants


@dataclass
class Books:
    received: int = 0  # what the devices hold: notes stacked, card payments kept
    credited: int = 0  # credit added to the key
    pending: int = 0  # pending credits still open in the journal
    debt: int = 0
    fees: int = 0
    unattributed: int = 0
    claims: int = 0  # credit no payment backs any more (card payments given back after it)
    office: int = 0  # credits head office handed over (its admin's, not paid here)
    lost: int = 0  # coins whose events the acceptor dropped, journaled as lost (2.00 each here)
    problems: list[str] = field(default_factory=list)


def check(b: Bench) -> Books:
    books = Books()
    books.received = (
        stacked_value(b)
        + b.coins_in
        + sum(p.amount for p in b.terminal.payments if p.kept and not p.reversed)
    )
    key = b.key()
    books.credited = key.credit - START_CREDIT
    txids = list(key.txids)
    if len(set(txids)) != len(txids):
        books.problems.append(f"a transaction on the key twice: {txids}")
    j = Journal(b.journal_file, "DEMO-01")
    try:
        entries = j.entries()
        written = {e.txid for e in entries if e.kind in (Kind.KEY_WRITTEN, Kind.PENDING_WRITTEN)}
        for e in entries:
            if e.kind == Kind.PENDING_CREDIT and e.amount is not None:
                done = any(x.kind == Kind.PENDING_WRITTEN and x.txid == e.txid for x in entries)
                if not done:
                    books.pending += e.amount.minor
                    if e.txid in txids:
                        books.problems.append(f"{e.txid} pending and on the key")
            if e.kind == Kind.CASH_UNATTRIBUTED and e.amount is not None:
                books.unattributed += e.amount.minor
            if e.kind == Kind.PENDING_CREDIT and e.data.get("reason") == "head_office":
                books.office += e.amount.minor if e.amount is not None else 0
            if (claim := claim_of(e)) is not None:
                books.claims += claim.minor
            if e.kind == Kind.FAULT and (m := LOST.search(str(e.data.get("text", "")))):
                books.lost += int(m.group(1)) * 200
        for e in entries:
            if e.kind == Kind.TX_CLOSED and e.data.get("outcome") in ("completed", "pending"):
                books.debt += int(e.data.get("debt", 0))
                books.fees += int(e.data.get("fee", 0))
        for txid in txids:
            if txid not in written:
                books.problems.append(f"{txid} on the key, not in the journal as written")
        j.verify()
        receipts_match(b, entries, books)
    except Exception as err:  # a broken chain or an unreadable journal is a failed cell
        books.problems.append(f"journal: {err}")
    finally:
        j.close()
    right = (books.credited + books.pending + books.debt + books.fees + books.unattributed
             + books.lost - books.claims - books.office)  # fmt: skip
    if books.received != right:
        books.problems.append(
            f"received {books.received} != credited {books.credited} + pending {books.pending}"
            f" + debt {books.debt} + fees {books.fees} + unattributed {books.unattributed}"
            f" + lost {books.lost} - claims {books.claims} - from head office {books.office}"
        )
    if b.ho is not None:
        books.problems += head_office_agrees(b, txids)
    return books


def head_office_agrees(b: Bench, on_key: list[str]) -> list[str]:
    """After one sync by the production command: head office holds every journal entry once,
    and its credit book agrees with the kiosk's journal and the key."""
    assert b.ho is not None
    res = subprocess.run(
        [sys.executable, "-m", "kiosk.cli", "sync", "now", "--site", str(b.site_file),
         "--db", str(b.journal_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=automat_env(b),
    )  # fmt: skip
    if res.returncode != 0:
        return [f"kiosk sync now: {res.stderr.strip() or res.stdout.strip()}"]
    problems = []
    j = Journal(b.journal_file, "DEMO-01")
    try:
        mine = {e.seq: e.hash for e in j.entries()}
        open_here = {txid for txid, _key in j.open_credits()}
    finally:
        j.close()
    engine = open_db(b.ho.db)
    try:
        with engine.connect() as conn:
            ours = ho_entries.c.kiosk_id == "DEMO-01"
            held = conn.execute(select(ho_entries.c.seq, ho_entries.c.hash).where(ours)).all()
            book = conn.execute(select(ho_credits).where(ho_credits.c.key == SERIAL)).all()
    finally:
        engine.dispose()
    theirs = {r.seq: r.hash for r in held}
    if len(held) != len(theirs) or theirs != mine:
        missing = sorted(set(mine) - set(theirs))[:5]
        extra = sorted(set(theirs) - set(mine))[:5]
        differ = [s for s in set(mine) & set(theirs) if mine[s] != theirs[s]][:5]
        problems.append(f"head office entries: {len(held)} of {len(mine)}; missing {missing}, "
                        f"not in the journal {extra}, other hash {differ}")  # fmt: skip
    for c in book:  # written there = on the key; open and ours there = open here
        if (c.written_by is not None) != (c.credit_id in on_key):
            problems.append(f"head office: {c.credit_id} written by {c.written_by}, "
                            f"{'' if c.credit_id in on_key else 'not '}on the key")  # fmt: skip
        if c.written_by is None and (c.holder == "DEMO-01") != (c.credit_id in open_here):
            problems.append(f"head office: {c.credit_id} open, held by {c.holder}; "
                            f"{'' if c.credit_id in open_here else 'not '}open here")  # fmt: skip
    open_there = {c.credit_id for c in book if c.written_by is None}
    for txid in open_here - open_there:
        problems.append(f"{txid} open in the journal, not open at head office")
    return problems


def stacked_value(b: Bench) -> int:
    """The notes the validator put in its box, in minor units."""
    total = 0
    for typ in b.notes.stacked:
        total += note_value(b, typ)
    return total


def note_value(b: Bench, typ: int) -> int:
    ident = b.notes.ids[typ - 1]  # e.g. "EU0010A": country, value, issue
    return int(ident[2:6]) * 100


def receipts_match(b: Bench, entries: list[Any], books: Books) -> None:
    printed = [e.txid for e in entries if e.kind == Kind.RECEIPT and e.data.get("printed")]
    jobs = b.printer.jobs
    for txid in printed:
        job = next((j for j in jobs if any(txid in line for line in j.lines)), None)
        if job is None:
            books.problems.append(f"receipt of {txid} journaled as printed, not on paper")
            continue
        closed = [e for e in entries if e.txid == txid and e.kind == Kind.TX_CLOSED][-1]
        if "credit" not in closed.data:  # a reversed card payment has no credit line
            continue
        credit = Money(int(closed.data["credit"]), "EUR").amount_text().replace(".", ",")
        if not any(credit in line for line in job.lines):
            books.problems.append(f"receipt of {txid} does not show the credit {credit}")


# ---------------------------------------------------------------- the matrix


@dataclass
class Cell:
    flow: str
    step: int
    kinds: list[str]
    fault: str
    outcome: str = ""
    books: Books | None = None
    seconds: float = 0.0
    steps: list[list[str]] = field(default_factory=list)
    kill: str = ""  # killed in the sync instead of after a step: "upload" or "claim"
    inject: str = ""  # a fault brought in after the step instead of a kill (INJECTED)
    bounces: int = 0  # the reader lost the key and found it again before a payment

    @property
    def where(self) -> str:
        """The step column: the journaled step killed after, or where in the sync."""
        return self.kill or str(self.step)

    @property
    def ok(self) -> bool:
        return self.books is not None and not self.books.problems


def reference_steps(flow: str, fault: str, work: Path) -> tuple[Cell, Bench]:
    """A run without a kill: its steps (journal commits with a transaction entry), and the
    bench as it ended (for the key's command count)."""
    cell = Cell(flow, 0, [], fault)
    kept: list[Any] = []
    run_cell(cell, work, kept)
    if not cell.ok:
        raise AssertionError(
            f"the {flow} run with {fault} fails without a kill: "
            f"{cell.outcome} {cell.books.problems if cell.books else ''}"
        )
    return cell, kept[0]


def run_cell(cell: Cell, work: Path, keep: list[Any] | None = None) -> None:
    started = time.monotonic()
    with bench(work / f"{cell.flow}-{cell.fault}-{cell.where:0>2}", cell.fault) as b:
        if cell.inject:
            a = Automat(b, inject=(cell.step, cell.inject))
        else:
            a = Automat(b, crash_after=cell.step, crash_in=cell.kill)
        try:
            finished = top_up(b, a, cell.flow, cell.fault)
            if finished and cell.kill:  # the sync's next round carries the transaction: it
                finished = a.until(lambda v: False, 20)  # dies then (TimeoutError if it lives)
            if finished:
                a.send("cancel")
                a.quit()
            cell.steps = a.steps
            if cell.step == 0 and not cell.kill:
                cell.outcome = "completed" if finished else "died?"
                if cell.fault.startswith("key_torn@"):
                    cell.outcome = (f"torn, put back {b.put_back}x, completed" if b.put_back
                                    else "died? (the key was never torn)")  # fmt: skip
            elif cell.inject and not a.killed:
                cell.outcome = "served on" if finished else "died?"
            elif not a.killed:
                cell.outcome = "not killed (step not reached)"
            else:
                if b.slot.inserted:  # the customer takes the key while the automat is dark
                    b.slot.remove()
                    wait_reader(b, False)
                b.printer.paper = "ok"
                (b.journal_file.parent / "filler").unlink(missing_ok=True)  # space again
                a2 = Automat(b)
                try:
                    come_back(b, a2)
                finally:
                    a2.quit()
                cell.outcome = (
                    "failed safe, recovered" if cell.inject else "killed, recovered"
                ) + (" after done" if finished else "")
        except (AssertionError, TimeoutError, TransportError) as err:
            cell.outcome = f"harness: {err}"
            with contextlib.suppress(Exception):
                a.proc.kill()
        cell.bounces = b.bounces
        cell.books = check(b)
        if cell.outcome.startswith("harness") or cell.outcome.startswith("died"):
            cell.books.problems.append(cell.outcome)
        if keep is not None:
            keep.append(b)
    cell.seconds = time.monotonic() - started


def print_matrix(cells: list[Cell]) -> None:
    print(f"{'flow':<5} {'step':>6} {'killed after':<42} {'fault':<11} {'outcome':<28} "
          f"{'received':>8} {'key+':>6} {'pend':>6} {'claim':>6}  check")  # fmt: skip
    for c in cells:
        k = c.books or Books()
        print(
            f"{c.flow:<5} {c.where:>6} {'+'.join(c.kinds)[:42]:<42} {c.fault:<11} "
            f"{c.outcome[:28]:<28} {k.received:>8} {k.credited:>6} {k.pending:>6} {k.claims:>6}  "
            + ("ok" if c.ok else "FAIL: " + "; ".join(k.problems))
        )
    bounced = [f"{c.flow}:{c.fault}:{c.where}" for c in cells if c.bounces]
    if bounced:
        print(
            f"the reader lost the key and found it again before a payment (the automat began "
            f"that visit afresh, the customer chose again) in: {', '.join(bounced)}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", default="cash,card")
    ap.add_argument("--faults", help="only these faults (comma-separated), e.g. note_jam")
    ap.add_argument("--notes", choices=("cctalk", "essp"), default="cctalk",
                    help="the note validator's protocol")  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, journals)")
    ap.add_argument("--exhaustive", action="store_true",
                    help="kill at every step under every fault (as the test suite does); "
                    "without it: every step without a fault, the first two and the last under "
                    "each fault")  # fmt: skip
    ap.add_argument("--injected", choices=("sample", "all"), default="sample",
                    help="faults brought in after a step (engine error, disk full, journal "
                    "locked, clock jumps): after the first payment step of each flow, or after "
                    "every step")  # fmt: skip
    ap.add_argument("--jobs", type=int, default=len(SLOTS), choices=range(1, len(SLOTS) + 1),
                    help="cells side by side (one vpcd reader slot each)")  # fmt: skip
    ap.add_argument(
        "--cell",
        metavar="FLOW:FAULT:STEP",
        help="run one cell only, e.g. cash:coin_reset:5 (to look into a failure)",
    )
    args = ap.parse_args(argv)
    NOTES["protocol"] = args.notes
    if not any(r.startswith("Virtual PCD") for r in readers()):
        print("crash matrix: no vpcd reader in pcscd (run the README's test command)")
        return 2
    work = Path(tempfile.mkdtemp(prefix="crash-matrix-"))
    cells: list[Cell] = []
    started = time.monotonic()
    try:
        if args.cell:
            flow, fault, step = args.cell.split(":")
            kill = step if step in ("upload", "claim") else ""
            inject = fault if fault in INJECTED else ""
            cell = Cell(flow, 0 if kill else int(step), ["(one cell)"], fault, kill=kill,
                        inject=inject)  # fmt: skip
            run_cell(cell, work)
            cells.append(cell)
            print(f"steps of that run: {' | '.join('+'.join(s) for s in cell.steps)}")
        else:
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                cells += run_matrix(pool, args, work)
        print_matrix(cells)
    finally:
        for server in _forks:
            server.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folder kept: {work}")
    failed = [c for c in cells if not c.ok]
    print(
        f"{len(cells)} cells, {len(failed)} failed, {time.monotonic() - started:.0f} s "
        f"(notes over {args.notes})"
    )
    return 1 if failed else 0


def run_matrix(pool: ThreadPoolExecutor, args: argparse.Namespace, work: Path) -> list[Cell]:
    """Every cell, `args.jobs` at a time: the clean runs first (they name the steps), then a
    cell per step (and fault), and the key torn at each write command."""
    only = set(args.faults.split(",")) if args.faults else None
    pairs = [(flow, fault) for flow in args.flows.split(",") for fault in FAULTS[flow]
             if only is None or fault in only]  # fmt: skip
    refs = {pair: pool.submit(reference_steps, *pair, work) for pair in pairs}
    cells: list[Cell] = []
    runs: list[Future[None]] = []

    def later(cell: Cell) -> None:
        cells.append(cell)
        runs.append(pool.submit(run_cell, cell, work))

    for flow, fault in pairs:
        first, ended = refs[(flow, fault)].result()
        steps = first.steps
        print(f"{flow} with {fault}: {len(steps)} journaled steps: "
              + " | ".join("+".join(s) for s in steps), flush=True)  # fmt: skip
        cells.append(first)
        for n, kinds in enumerate(steps, start=1):
            if fault == "none" or args.exhaustive or n in (1, 2, len(steps)):
                later(Cell(flow, n, kinds, fault))
        for where in HEAD_OFFICE.get(fault, ()):  # killed inside the sync
            later(Cell(flow, 0, [f"head office answered the {where}"], fault, kill=where))
        if fault == "none":  # faults brought in after a step (its steps are these)
            for cls in INJECTED:
                if cls == "disk_full" and os.geteuid() != 0:
                    print("disk_full: left out (mounting a small file system needs root)")
                    continue
                for n, kinds in enumerate(steps, start=1):
                    if args.injected == "all" or n in INJECTED_SAMPLE[flow]:
                        later(Cell(flow, n, kinds, cls, inject=cls))
        if flow == "cash" and fault == "none":  # the key pulled at each write command
            used = ended.card.commands - ended.at_insert
            for k in range(ended.read_commands + 1, used + 1):
                later(Cell(flow, 0, [f"key torn at command {k}"], f"key_torn@{k}"))
    for run in runs:
        run.result()
    return cells


def readers() -> list[str]:
    try:
        return list_readers()
    except TransportError:
        return []


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
