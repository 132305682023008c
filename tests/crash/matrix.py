"""Crash and fault matrix: no money lost, no credit minted (DESIGN promises 1 and 2).

The automat runs as its own process (tests/crash/child.py) on the real drivers; the devices
are simulators in this process, on their real transports, so they outlive the automat: a
ccTalk bus with a coin acceptor and a note validator on a pty, a ZVT terminal on TCP, a
receipt printer on a pty, and the customer's key as a virtual DESFire card in pcscd's vpcd
reader (its state in a file). No head office: it is unreachable throughout.

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

    python -m tests.crash.matrix [--flows cash,card] [--faults ...] [--exhaustive]

Prints the matrix; exits 1 if any cell fails. Needs pcscd with vsmartcard's vpcd (the README's
test command installs them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.chipkey.profile import ChipKey, Identity
from drivers.chipkey.reader import list_readers
from drivers.chipkey.sim import VirtualCard
from drivers.chipkey.vpcd import VpcdCard
from drivers.errors import TransportError
from drivers.printer.sim import PrinterSim
from drivers.zvt.sim import TerminalSim
from kiosk.cctalk import start_simulator
from kiosk.chipkey import DEMO_KEYS
from kiosk.config import load_site
from kiosk.events import KeyStatus, Kind
from kiosk.journal import Journal
from kiosk.keytool import virtual_uid
from kiosk.money import Money
from kiosk.rig import bill_id

ROOT = Path(__file__).resolve().parents[2]
SERIAL, ACCOUNT = "K-2001", "2000471100"
START_CREDIT = 350
READER = "Virtual PCD 00 00"
FLOWS = {"cash": 2000, "card": 3000}  # what the customer tops up


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

    def key(self) -> Any:
        return ChipKey(VirtualCard(self.card.uid, self.card.path), DEMO_KEYS).read_summary()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.slot.remove()
        self.bus.stop()
        self.terminal.stop()
        self.printer.stop()


def site_text(bus: str, terminal: str, printer: str) -> str:
    text = (ROOT / "config" / "demo.toml").read_text("utf-8")
    head, _, _devices = text.partition("[devices.coin]")
    return head + (
        f'[devices.coin]\nport = "{bus}"\naddress = 2\n\n'
        f'[devices.notes]\nport = "{bus}"\naddress = 40\n\n'
        f'[devices.card]\nport = "{terminal}"\n\n'
        f'[devices.reader]\nreader = "{READER}"\n\n'
        f'[devices.printer]\nport = "{printer}"\nreceipt = "always"\n'
    )


@contextlib.contextmanager
def bench(folder: Path) -> Iterator[Bench]:
    folder.mkdir(parents=True, exist_ok=True)
    demo = load_site(ROOT / "config" / "demo.toml")
    bus, coins, notes = start_simulator(demo)
    terminal = TerminalSim("tcp")
    terminal.start()
    printer = PrinterSim()
    printer.start()
    site_file = folder / "site.toml"
    site_file.write_text(site_text(bus.path, terminal.port, printer.path), "utf-8")
    site = load_site(site_file)
    card = VirtualCard(virtual_uid(SERIAL), folder / "key.json")
    ChipKey(card, DEMO_KEYS).personalise(
        Identity(site.utility_id, ACCOUNT, "1ESY1160012345", "electricity", SERIAL, "customer",
                 site.currency),
        upper=site.key_credit_limit.minor, initial=START_CREDIT,
    )  # fmt: skip
    journal_file = folder / "journal.sqlite"
    j = Journal(journal_file, site.kiosk_id)
    j.set_key(SERIAL, KeyStatus.ACTIVE, ACCOUNT)  # what head office said before it went away
    j.close()
    b = Bench(folder, site_file, journal_file, bus, coins, notes, terminal, printer, card,
              VpcdCard(card))  # fmt: skip
    try:
        yield b
    finally:
        b.stop()


# ---------------------------------------------------------------- the automat's process


class Automat:
    """One run of tests/crash/child.py: its views and steps as they come."""

    def __init__(self, b: Bench, crash_after: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.crash.child", str(b.site_file), str(b.journal_file),
             "--crash-after", str(crash_after)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(b.folder / "automat.log", "a"), text=True,  # noqa: SIM115
        )  # fmt: skip
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.view: dict[str, Any] = {}
        self.steps: list[list[str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.put(json.loads(line))
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
        return self.proc.poll() is not None and self.proc.returncode < 0


def state_is(*states: str) -> Callable[[dict[str, Any]], bool]:
    return lambda v: v.get("state") in states


# ---------------------------------------------------------------- a customer


def wait_reader(b: Bench, inserted: bool, timeout: float = 10.0) -> None:
    from drivers.chipkey.reader import card_present

    deadline = time.monotonic() + timeout
    while card_present(READER) != inserted:
        if time.monotonic() > deadline:
            raise TimeoutError("pcscd did not see the key " + ("in" if inserted else "out"))
        threading.Event().wait(0.05)  # pcscd polls vpcd: look again shortly


def reinsert(b: Bench) -> None:
    if b.slot.inserted:
        b.slot.remove()
        wait_reader(b, False)
    b.slot.insert()


def top_up(b: Bench, a: Automat, flow: str, fault: str) -> bool:
    """The customer's visit: True if it ended on the done screen, False if the automat died."""
    target = FLOWS[flow]
    a.until(lambda v: "started" in v or "state" in v, 30)
    if not a.until(lambda v: "card" in v.get("methods", []) and "cash" in v["methods"], 30):
        return False
    reinsert(b)
    if not a.until(state_is("choosing_amount", "key_refused"), 30):
        return False
    if a.view["state"] != "choosing_amount":
        raise AssertionError(f"key refused: {a.view}")
    a.send(f"amount {target}")
    if not a.until(state_is("choosing_method")):
        return False
    a.send(f"method {flow}")
    if flow == "cash":
        if not a.until(state_is("cash")):
            return False
        for n, value in enumerate((1000, 1000), start=1):
            b.notes.insert(bill_id(Money(value, "EUR")))
            if not a.until(lambda v, n=n: v["paid"] >= 1000 * n or v["state"] != "cash"):
                return False
    if not a.until(state_is("done"), 40):
        return False
    # the receipt: printed (or not) once the terminal's text is in, for a card payment
    return a.until(lambda v: v.get("receipt") not in ("printing",) or v["state"] != "done", 40)


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
    claims: int = 0  # card payments the terminal gave back after the credit was written
    problems: list[str] = field(default_factory=list)


def check(b: Bench) -> Books:
    books = Books()
    books.received = stacked_value(b) + sum(
        p.amount for p in b.terminal.payments if p.kept and not p.reversed
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
            if e.kind == Kind.CARD_REVERSED and e.data.get("after_credit") and e.amount:
                books.claims += e.amount.minor
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
             - books.claims)  # fmt: skip
    if books.received != right:
        books.problems.append(
            f"received {books.received} != credited {books.credited} + pending {books.pending}"
            f" + debt {books.debt} + fees {books.fees} + unattributed {books.unattributed}"
            f" - claims {books.claims}"
        )
    return books


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
        credit = Money(int(closed.data.get("credit", 0)), "EUR").amount_text() if closed.data.get(
            "credit") is not None else None  # fmt: skip
        if credit and not any(credit.replace(".", ",") in line for line in job.lines):
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

    @property
    def ok(self) -> bool:
        return self.books is not None and not self.books.problems


def reference_steps(flow: str, work: Path) -> list[list[str]]:
    with bench(work / f"{flow}-reference") as b:
        a = Automat(b)
        try:
            if not top_up(b, a, flow, "none"):
                raise AssertionError("the reference run died")
            a.send("finish")
        finally:
            a.quit()
        books = check(b)
        if books.problems:
            raise AssertionError(f"the reference {flow} run fails its own check: {books.problems}")
        return a.steps


def run_cell(cell: Cell, work: Path) -> None:
    started = time.monotonic()
    with bench(work / f"{cell.flow}-{cell.step:02d}-{cell.fault}") as b:
        a = Automat(b, crash_after=cell.step)
        try:
            finished = top_up(b, a, cell.flow, cell.fault)
            if finished:
                a.send("finish")
                a.quit()
            if not a.killed:
                cell.outcome = "not killed (step not reached)"
            else:
                if b.slot.inserted:  # the customer takes the key while the automat is dark
                    b.slot.remove()
                    wait_reader(b, False)
                a2 = Automat(b)
                try:
                    come_back(b, a2)
                finally:
                    a2.quit()
                cell.outcome = "killed, recovered" + (" after done" if finished else "")
        except (AssertionError, TimeoutError, TransportError) as err:
            cell.outcome = f"harness: {err}"
            with contextlib.suppress(Exception):
                a.proc.kill()
        cell.books = check(b)
        if cell.outcome.startswith("harness"):
            cell.books.problems.append(cell.outcome)
    cell.seconds = time.monotonic() - started


def print_matrix(cells: list[Cell]) -> None:
    print(f"{'flow':<5} {'step':>4} {'killed after':<42} {'fault':<10} {'outcome':<28} "
          f"{'received':>8} {'key+':>6} {'pend':>6} {'claim':>6}  check")  # fmt: skip
    for c in cells:
        k = c.books or Books()
        print(
            f"{c.flow:<5} {c.step:>4} {'+'.join(c.kinds)[:42]:<42} {c.fault:<10} "
            f"{c.outcome[:28]:<28} {k.received:>8} {k.credited:>6} {k.pending:>6} {k.claims:>6}  "
            + ("ok" if c.ok else "FAIL: " + "; ".join(k.problems))
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", default="cash,card")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, journals)")
    args = ap.parse_args(argv)
    if not any(r.startswith("Virtual PCD") for r in readers()):
        print("crash matrix: no vpcd reader in pcscd (run the README's test command)")
        return 2
    work = Path(tempfile.mkdtemp(prefix="crash-matrix-"))
    cells: list[Cell] = []
    started = time.monotonic()
    try:
        for flow in args.flows.split(","):
            steps = reference_steps(flow, work)
            print(f"{flow}: {len(steps)} journaled steps: "
                  + " | ".join("+".join(s) for s in steps), flush=True)  # fmt: skip
            for n, kinds in enumerate(steps, start=1):
                cell = Cell(flow, n, kinds, "none")
                run_cell(cell, work)
                cells.append(cell)
        print_matrix(cells)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folder kept: {work}")
    failed = [c for c in cells if not c.ok]
    print(f"{len(cells)} cells, {len(failed)} failed, {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


def readers() -> list[str]:
    try:
        return list_readers()
    except TransportError:
        return []


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
