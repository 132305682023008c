"""A world that holds the true money, and an automat in it that can die at any point.

The real `Kiosk`, `Journal` and start-up reconciliation run on device models that know the
truth: the coins and notes in the box (numbered like a ccTalk event buffer, so that a restart
is owed what the journal missed), the payments the card terminal kept, and the credit and
top-up log on every key. The automat dies (`Crash`, as SIGKILL would) at an armed point: before
or after any journal commit, before or after any device command. Then the terminal gives back
a payment it was not told to keep, a note in escrow goes back to the customer, the events in
the kiosk's queue are gone, and a new `Kiosk` starts on the same journal file with the devices
as they are.

`World.problems()` checks what the crash and fault matrix checks, at any quiet moment:

  money the devices hold = credit added to keys + open pending credits + debt recovered + fees
                           + unattributed cash + money of open transactions - claims

and that no key holds a transaction twice, no account gave up more debt than it owed (plus
claims), and the journal verifies. The money fuzzer (tests/fuzz_money.py) and the regression
tests of the defects it found (tests/test_money_defects.py) use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kiosk.app.ports import Devices, KeyNotRead, KeyPresented
from kiosk.app.runner import Kiosk
from kiosk.domain.events import (
    AcceptorCounter,
    CardApproved,
    CardFailed,
    CardFailure,
    CardReceipt,
    CardReversed,
    CardReversedAfterCredit,
    CardStatus,
    CoinAccepted,
    Device,
    Event,
    KeyDetected,
    KeyInfo,
    KeyRemoved,
    KeyStatus,
    KeyWriteFailed,
    KeyWritten,
    Kind,
    NoteEscrowed,
    NoteReturned,
    NoteStacked,
    Record,
    Tick,
)
from kiosk.domain.money import Money
from kiosk.domain.site import Site
from kiosk.ledger.journal import Entry, Journal, claim_of
from kiosk.ledger.reconcile import settled
from kiosk.sim.fakes import FakePrinter

#: how many transaction ids a key's log shows (the chip key's cyclic record file)
KEY_LOG = 10


class Crash(BaseException):
    """The automat dies here (a BaseException: no handler in the kiosk may catch it)."""


class Points:
    """The places the automat can die: counted, and one armed at a time."""

    def __init__(self) -> None:
        self.armed: int | None = None  # die at the n-th point from now
        self.at: str | None = None  # or at the first point whose name starts so
        self.passed = 0
        self.where: str | None = None  # where it died last

    def __call__(self, where: str) -> None:
        self.passed += 1
        if self.at is not None and where.startswith(self.at):
            self.at, self.where = None, where
            raise Crash(where)
        if self.armed is None:
            return
        self.armed -= 1
        if self.armed <= 0:
            self.armed, self.where = None, where
            raise Crash(where)


class CrashingJournal(Journal):
    """The real journal, with a point before and after each commit."""

    points: Points

    def append(self, records: Any, now: datetime) -> list[Entry]:
        if not records:
            return []
        what = "+".join(str(r.kind) for r in records)
        self.points(f"before commit {what}")
        out = super().append(records, now)
        self.points(f"after commit {what}")
        return out


Emit = Callable[[Event], None]


def _dropped(_ev: Event) -> None:
    """Events sent while no automat runs are lost (the devices keep what they hold)."""


# ---------------------------------------------------------------- cash


class Acceptor:
    """A cash device: numbered events in a buffer (as ccTalk keeps them), money in its box."""

    device: Device

    def __init__(self, points: Points, values: tuple[Money, ...]) -> None:
        self.points = points
        self.values = values
        self.limit: Money | None = None
        self.counter = 0
        self.events: list[tuple[int, Money]] = []  # (counter, value) of money taken
        self.emit: Emit = _dropped

    @property
    def total(self) -> int:
        return sum(v.minor for _c, v in self.events)

    def attach(self, emit: Emit) -> None:
        self.emit = emit

    def enable(self, max_value: Money) -> None:
        self.points(f"before enable {self.device}")
        self.limit = max_value
        self.points(f"after enable {self.device}")

    def disable(self) -> None:
        self.points(f"before disable {self.device}")
        self.limit = None
        self.points(f"after disable {self.device}")

    def alive(self) -> None:
        """The world's devices die with the automat (a kill or a power cut)."""

    def online(self, resume: int | None) -> None:
        """At the automat's start: what the device holds beyond the journal's counter is owed,
        then (with nothing owed) its counter."""
        owed = [(c, v) for c, v in self.events if resume is not None and c > resume]
        if owed:
            for c, v in owed:
                self.emit(self._money(v, c))
        else:
            self.emit(AcceptorCounter(self.device, self.counter))

    def _take(self, value: Money) -> None:
        self.counter += 1
        self.events.append((self.counter, value))
        self.emit(self._money(value, self.counter))

    def _money(self, value: Money, counter: int) -> Event:
        raise NotImplementedError

    def crash(self) -> None:
        self.limit = None  # a device that loses its host inhibits itself


class Coins(Acceptor):
    device = Device.COIN

    def insert(self, value: Money, *, late: bool = False) -> bool:
        """A coin; `late`: it passed the gate just before an inhibit (taken all the same)."""
        if not late and (self.limit is None or value > self.limit):
            return False
        self._take(value)
        return True

    def _money(self, value: Money, counter: int) -> Event:
        return CoinAccepted(value, self.values.index(value) + 1, counter)


class Notes(Acceptor):
    device = Device.NOTES

    def __init__(self, points: Points, values: tuple[Money, ...]) -> None:
        super().__init__(points, values)
        self.escrow: Money | None = None
        self.returned: list[Money] = []

    def insert(self, value: Money) -> bool:
        if self.limit is None or self.escrow is not None:
            return False
        self.escrow = value
        self.emit(NoteEscrowed(value, self.values.index(value) + 1))
        return True

    def stack(self) -> None:
        self.points("before stack")
        if self.escrow is None:
            raise RuntimeError("no note in escrow")
        note, self.escrow = self.escrow, None
        self._take(note)
        self.points("after stack")

    def return_note(self) -> None:
        self.points("before return")
        if self.escrow is None:
            raise RuntimeError("no note in escrow")
        note, self.escrow = self.escrow, None
        self.returned.append(note)
        self.emit(NoteReturned(note, self.values.index(note) + 1))
        self.points("after return")

    def _money(self, value: Money, counter: int) -> Event:
        return NoteStacked(value, self.values.index(value) + 1, counter)

    def crash(self) -> None:
        super().crash()
        if self.escrow is not None:  # the validator's escrow timeout: back to the customer
            self.returned.append(self.escrow)
            self.escrow = None


# ---------------------------------------------------------------- card


@dataclass
class Payment:
    txid: str
    amount: Money
    receipt_no: int
    state: str = "open"  # open (waiting for the kiosk's answer), kept, back
    lose_after_ok: bool = False  # the line drops after the kiosk's OK: the terminal reverses


class Terminal:
    """A card terminal: `script` holds the next outcomes (approve, decline, lose_after_ok)."""

    def __init__(self, points: Points) -> None:
        self.points = points
        self.script: list[str] = []
        self.payments: list[Payment] = []
        self.reachable = True  # at the next start: does it answer "repeat receipt"?
        self.receipt_first = False  # report the receipt before the outcome (as ports once did)
        self.emit: Emit = _dropped

    @property
    def kept(self) -> int:
        return sum(p.amount.minor for p in self.payments if p.state in ("kept", "open"))

    def attach(self, emit: Emit) -> None:
        self.emit = emit

    def authorise(self, txid: str, amount: Money) -> None:
        self.points("before authorise")
        outcome = self.script.pop(0) if self.script else "approve"
        self.emit(CardStatus("Karte bitte"))
        if outcome == "decline":
            self.emit(CardFailed(CardFailure.DECLINED, "abgelehnt"))
        else:
            p = Payment(txid, amount, len(self.payments) + 1, lose_after_ok=outcome != "approve")
            self.payments.append(p)
            self.emit(CardApproved(amount, {"receipt_no": p.receipt_no}))
        self.points("after authorise")

    def abort(self) -> None:
        self.points("abort")

    def _open(self, txid: str) -> Payment:
        (p,) = [p for p in self.payments if p.txid == txid and p.state == "open"]
        return p

    def _end(self, p: Payment, outcome: Event) -> None:
        receipt = CardReceipt(p.txid, {"customer": [f"Beleg {p.receipt_no}"]}, p.state == "kept")
        for ev in (receipt, outcome) if self.receipt_first else (outcome, receipt):
            self.emit(ev)

    def complete(self, txid: str) -> None:
        self.points("before complete")
        p = self._open(txid)
        if p.lose_after_ok:
            p.state = "back"
            self._end(p, CardReversedAfterCredit(txid, p.amount, "connection lost"))
        else:
            p.state = "kept"
            self.emit(CardReceipt(txid, {"customer": [f"Beleg {p.receipt_no}"]}, True))
        self.points("after complete")

    def reverse(self, txid: str) -> None:
        self.points("before reverse")
        p = self._open(txid)
        p.state = "back"
        self._end(p, CardReversed(True))
        self.points("after reverse")

    def payment_kept(self, approved: Entry) -> bool | None:
        """Repeat receipt: the terminal's last payment, if it is the one asked about."""
        if not self.reachable or not self.payments:
            return None
        last = self.payments[-1]
        if approved.data.get("receipt_no") != last.receipt_no:
            return None
        return last.state == "kept"

    def crash(self) -> None:
        for p in self.payments:
            if p.state == "open":  # no answer came: the terminal gives the money back
                p.state = "back"


# ---------------------------------------------------------------- keys


@dataclass
class Key:
    serial: str
    account: str
    credit: int = 0
    start: int = 0
    log: list[str] = field(default_factory=list)  # every top-up (the card shows the last ten)
    limit: int = 50_000

    def info(self, *, complete: bool = False) -> KeyInfo:
        """As the real port reads it: at insertion without the log (the write count only),
        with it when the automat asks (`Slot.read_log`)."""
        from kiosk.domain.events import Commodity, Role

        if not complete:
            return KeyInfo(self.serial, self.account, "1ESY1160000001", Commodity.ELECTRICITY,
                           Role.CUSTOMER, Money(self.credit, "EUR"), (), written=len(self.log),
                           log_from=len(self.log) + 1, log_complete=False)  # fmt: skip
        return KeyInfo(self.serial, self.account, "1ESY1160000001", Commodity.ELECTRICITY,
                       Role.CUSTOMER, Money(self.credit, "EUR"),
                       tuple(self.log[-KEY_LOG:]), written=len(self.log),
                       log_from=max(0, len(self.log) - KEY_LOG + 1))  # fmt: skip


class Slot:
    """The key reader. `tear`: the next write is torn "before" or "after" its commit."""

    def __init__(self, points: Points) -> None:
        self.points = points
        self.key: Key | None = None
        self.tear: str | None = None
        self.emit: Emit = _dropped
        self.logs_read = 0

    def attach(self, emit: Emit) -> None:
        self.emit = emit

    def insert(self, key: Key) -> None:
        self.key = key
        self.present()

    def present(self) -> None:
        assert self.key is not None
        self.emit(KeyDetected())
        self.emit(KeyPresented(self.key.info()))

    def remove(self) -> None:
        self.key = None
        self.emit(KeyRemoved())

    def read_log(self, timeout: float = 10.0) -> KeyInfo:
        if self.key is None:
            raise KeyNotRead("no key in the reader")
        self.logs_read += 1
        return self.key.info(complete=True)

    def write_credit(self, txid: str, amount: Money, *, new: bool = False) -> None:
        self.points("before write")
        self._write(txid, amount, new)
        self.points("after write")

    def _write(self, txid: str, amount: Money, new: bool) -> None:
        key, tear = self.key, self.tear
        self.tear = None
        if amount.minor <= 0:  # as the real port: refused before anything is sent
            self.emit(KeyWriteFailed(txid, "no credit to write", uncertain=False))
            return
        if key is None:
            self.emit(KeyWriteFailed(txid, "no key", uncertain=False))
            return
        # as the real key: its log makes a repeat a no-op, unless the write says the
        # transaction is new (then the log is not looked at: a repeat would credit twice)
        if not new and txid in key.log[-KEY_LOG:]:
            self.emit(KeyWritten(txid, Money(key.credit, "EUR")))
            return
        if key.credit + amount.minor > key.limit:
            self.emit(KeyWriteFailed(txid, "credit limit", uncertain=False))
            return
        if tear == "before":
            self.remove_torn(txid)
            return
        key.credit += amount.minor
        key.log.append(txid)
        if tear == "after":
            self.remove_torn(txid)
            return
        self.emit(KeyWritten(txid, Money(key.credit, "EUR")))

    def remove_torn(self, txid: str) -> None:
        self.key = None
        self.emit(KeyWriteFailed(txid, "key pulled during the write", uncertain=True))
        self.emit(KeyRemoved())


# ---------------------------------------------------------------- the world


class World:
    """The devices, the keys, a clock and the automat, which can die and start again."""

    def __init__(self, folder: Path, site: Site, debt: int = 0, credits: tuple[int, ...] = (0,)):
        self.folder = folder
        self.site = site
        self.now = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
        self.points = Points()
        self.coins = Coins(self.points, site.coins)
        self.notes = Notes(self.points, site.notes)
        self.terminal = Terminal(self.points)
        self.slot = Slot(self.points)
        self.printer = FakePrinter()
        self.keys = [
            Key(f"K{n}", f"47110{n}", credit, credit) for n, credit in enumerate(credits, start=1)
        ]
        self.debt = debt  # each key's contract account owes this at the start
        self.crashes = 0
        self.starts = 0
        j = Journal(folder / "journal.sqlite", site.kiosk_id)
        for k in self.keys:
            j.set_key(k.serial, KeyStatus.ACTIVE, k.account)
            if debt:
                j.set_debt(k.account, Money(debt, site.currency))
        j.close()
        self.kiosk: Kiosk
        self.journal: CrashingJournal
        self.start()

    def clock(self) -> datetime:
        return self.now

    def devices(self) -> Devices:
        return Devices(reader=self.slot, coin=self.coins, notes=self.notes, card=self.terminal,
                       printer=self.printer)  # type: ignore[arg-type]  # fmt: skip

    def start(self) -> None:
        """Start the automat (again, after a crash during the last start too)."""
        while True:
            self.starts += 1
            try:
                self.journal = CrashingJournal(self.folder / "journal.sqlite", self.site.kiosk_id)
                self.journal.points = self.points
                self.kiosk = Kiosk(self.site, self.journal, self.devices(), self.clock,
                                   pin_hash="unused")  # fmt: skip
                resume = self.journal.acceptor_counters()
                self.coins.online(resume.get("coin"))
                self.notes.online(resume.get("notes"))
                if self.slot.key is not None:  # the reader sees the key that is in it
                    self.slot.present()
                self.kiosk.drain()
                return
            except Crash:
                self.died()

    def died(self) -> None:
        self.crashes += 1
        for port in (self.slot, self.coins, self.notes, self.terminal):
            port.attach(_dropped)
        self.coins.crash()
        self.notes.crash()
        self.terminal.crash()
        self.journal.close()

    def do(self, action: Callable[[], object]) -> bool:
        """A step of the world, then the automat works off its queue; False if it died (and
        was started again)."""
        try:
            action()
            self.kiosk.drain()
            return True
        except Crash:
            self.died()
            self.start()
            return False

    def submit(self, event: Event) -> bool:
        return self.do(lambda: self.kiosk.submit(event))

    def wait(self, seconds: float) -> bool:
        self.now += timedelta(seconds=seconds)
        return self.submit(Tick(self.now))

    def power_cut(self) -> None:
        self.died()
        self.start()

    # ---------------------------------------------------------------- the books

    def problems(self) -> list[str]:
        """What is wrong with the money, the keys or the journal now (nothing, we hope)."""
        out: list[str] = []
        entries = self.journal.entries()
        by_tx: dict[str | None, list[Entry]] = {}
        for e in entries:
            by_tx.setdefault(e.txid, []).append(e)
        account = {t: str(es[0].data.get("contract_account")) for t, es in by_tx.items()
                   if es[0].kind == Kind.TX_OPENED}  # fmt: skip
        # card payments: what the terminal kept, and what the journal still believes paid where
        # the terminal's word is not in it yet (it could not answer at a start)
        received = self.coins.total + self.notes.total + self.terminal.kept
        back = {p.receipt_no: p.amount.minor for p in self.terminal.payments if p.state == "back"}
        received += sum(back[e.data["receipt_no"]] for e in entries
                        if e.kind == Kind.CARD_APPROVED and e.data.get("receipt_no") in back
                        and not settled(by_tx[e.txid]))  # fmt: skip
        credited = sum(k.credit - k.start for k in self.keys)
        on_keys = {t for k in self.keys for t in k.log}
        out += [f"a transaction twice on {k.serial}: {k.log}"
                for k in self.keys if len(set(k.log)) != len(k.log)]  # fmt: skip
        pending = deferred = 0
        for e in entries:
            if (
                e.kind != Kind.PENDING_CREDIT
                or e.amount is None
                or any(
                    x.kind in (Kind.PENDING_WRITTEN, Kind.PENDING_RELEASED) for x in by_tx[e.txid]
                )
            ):
                continue
            if e.txid in on_keys:  # a torn write that landed: the key holds it, and whatever
                # part of it no payment backs any more is claimed when the key is seen again
                deferred += int(e.data.get("on_key", e.amount.minor)) - e.amount.minor
            else:
                pending += e.amount.minor
        unattributed = sum(e.amount.minor for e in entries
                           if e.kind == Kind.CASH_UNATTRIBUTED and e.amount)  # fmt: skip
        claims: dict[str, int] = {}
        for e in entries:
            if (claim := claim_of(e)) is not None:
                a = account.get(e.txid, "?")
                claims[a] = claims.get(a, 0) + claim.minor
        fees, recovered = 0, dict.fromkeys(claims, 0)
        in_flight = 0
        for txid, mine in by_tx.items():
            if txid not in account:
                continue
            ends = [e for e in mine if e.kind == Kind.TX_CLOSED]
            if ends and ends[-1].data.get("outcome") in ("completed", "pending"):
                fees += int(ends[-1].data.get("fee", 0))
                a = account[txid]
                recovered[a] = recovered.get(a, 0) + int(ends[-1].data.get("debt", 0))
            elif not ends:  # open: what it took and has not yet handed out
                paid = sum(e.amount.minor for e in mine if e.amount
                           and e.kind in (Kind.CASH_IN, Kind.CARD_APPROVED))  # fmt: skip
                paid -= sum(e.amount.minor for e in mine
                            if e.amount and e.kind == Kind.CARD_REVERSED)  # fmt: skip
                splits = [e.amount.minor for e in mine if e.kind == Kind.SPLIT and e.amount]
                if txid in on_keys and splits:  # its credit is on the key already (torn write)
                    paid -= splits[-1]
                in_flight += paid
        debt, claimed = sum(recovered.values()), sum(claims.values())
        right = credited + pending + debt + fees + unattributed + in_flight - claimed - deferred
        if received != right:
            out.append(
                f"devices hold {received} != credited {credited} + pending {pending} + debt "
                f"{debt} + fees {fees} + unattributed {unattributed} + open {in_flight} "
                f"- claims {claimed} - claims when the key is seen {deferred}"
            )
        out += [f"debt of {a} recovered {got}, owed {self.debt} + claims {claims.get(a, 0)}"
                for a, got in recovered.items() if got > self.debt + claims.get(a, 0)]  # fmt: skip
        try:
            self.journal.verify()
        except Exception as err:  # a broken chain is a finding, not a crash of the checker
            out.append(f"journal: {err}")
        return out

    def records(self, kind: Kind) -> list[Entry]:
        return self.journal.entries_of_kind(kind)

    def state(self) -> str:
        return str(self.kiosk.view().state)


__all__ = ["Crash", "World", "Key", "Record"]
