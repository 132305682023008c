"""The fleet fuzzer: several kiosks and one real head-office process, over time.

Customers whose keys move between kiosks top up (and walk away before the write, or pull the
key during it), the meter spends what is on the keys, kiosks go offline for long spells and
come back, restart (the start-up reconciliation runs), head office imports office credits
(some files twice, as a retried night job would), is restored from an older copy of its
database, and a hostile kiosk with a valid token of its own claims keys it never saw and says
it wrote other customers' credits (at write numbers it makes up, or that exist). The real
`Kiosk`, `Journal`, `Syncer` and sync client run on fake devices; head office is
`sync.admin serve` on SQLite.

After every step:
  - no key holds a transaction twice, and each key's credit is what its writes put on it less
    what the meter took (nothing minted);
  - every cent a customer paid and every office credit is on the key or owed: open in head
    office's book or in a kiosk's journal that has not told head office yet (nothing lost).
At the end of a sequence every kiosk comes online and syncs, every key visits a kiosk until
nothing more is written, and then head office's book and every kiosk's journal agree: a
credit on a key is closed at head office, a credit not on a key is open there (owed exactly
once), and no kiosk holds open what head office closed.

    python -m tests.fuzz_fleet [--sequences N] [--steps N] [--seed S]

prints the counts (sequences, steps, offline spells, restores, credits granted, written,
released); exits 1 on a finding, printing the seed and the steps of the sequence that shows
it. The test suite runs a fixed seed (tests/test_fuzz_fleet.py).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from kiosk.adapters.head_office import Syncer
from kiosk.app.ports import Devices
from kiosk.app.runner import Kiosk
from kiosk.domain.clock import ManualClock
from kiosk.domain.events import AmountChosen, KeyStatus, Kind, Method, MethodChosen, Record, Tick
from kiosk.domain.money import Money
from kiosk.ledger.journal import Journal
from kiosk.sim.fakes import (
    FakeCoinAcceptor,
    FakeKey,
    FakeKeyReader,
    FakeNoteValidator,
    FakePrinter,
)
from sync.wire.client import SyncClient, SyncError
from sync.wire.protocol import GENESIS, entry_hash
from sync.store.tables import credits as credits_table
from sync.store.tables import open_db

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
KEYS = ("FK-1", "FK-2", "FK-3")
#: head office's lease on a claimed credit (seconds): short, so that the end of a sequence
#: can wait for every lease to run out (a hostile kiosk's claims hold credits that long)
LEASE = 1


def E(minor: int) -> Money:
    return Money(minor, "EUR")


@dataclass
class Stats:
    sequences: int = 0
    steps: int = 0
    offline_spells: int = 0
    restores: int = 0
    granted: int = 0
    written: int = 0
    released: int = 0
    attacks: int = 0

    def line(self) -> str:
        return (f"{self.sequences} sequences, {self.steps} steps, {self.offline_spells} "
                f"offline spells, {self.restores} restores, {self.granted} credits granted, "
                f"{self.written} written, {self.released} released, "
                f"{self.attacks} hostile attempts")  # fmt: skip


class Finding(AssertionError):
    """The fleet lost or minted money, or its books disagree."""


# ---------------------------------------------------------------- head office


class Office:
    """`sync.admin serve` on an SQLite file, restartable (to restore it from a copy)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "headoffice.sqlite"
        self.db = f"sqlite:///{self.path}"
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._engine: Any = None
        self.start()

    @property
    def engine(self) -> Any:
        """Our own connection to head office's database (for the checks), made once."""
        if self._engine is None:
            self._engine = open_db(self.db)
        return self._engine

    def admin(self, *args: str) -> str:
        import contextlib
        import io

        from sync.admin import main as admin_main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = admin_main(["--db", self.db, *args])
        if code != 0:
            raise RuntimeError(f"sync.admin {' '.join(args)}: {err.getvalue()}")
        return out.getvalue().strip()

    def start(self) -> None:
        from tests.conftest import serve_head_office

        self.admin("count", "nobody")  # the database at this release's schema, before serving
        self.url, self.proc = serve_head_office(self.db, "--lease-seconds", str(LEASE),
                                                quiet=True)  # fmt: skip

    def stop(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(20)
            self.proc = None

    def backup(self, to: Path) -> None:
        import sqlite3

        with sqlite3.connect(self.path) as src, sqlite3.connect(to) as dst:
            src.backup(dst)

    def restore(self, copy: Path) -> None:
        self.stop()
        for suffix in ("-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)
        shutil.copy(copy, self.path)
        self.start()

    def leases_ended(self, holder: str, keys: list[str], timeout: float = 30.0) -> None:
        """Wait until no lease of `holder` on an open credit runs any more."""
        deadline = time.monotonic() + timeout
        def held() -> bool:
            now = int(time.time())
            return any(r.holder == holder and r.written_by is None and r.lease_until is not None
                       and r.lease_until >= now for r in self.book(keys).values())  # fmt: skip

        while held():
            if time.monotonic() > deadline:
                raise RuntimeError("leases still run")
            threading.Event().wait(0.1)  # head office's clock runs them out

    def alarms(self) -> list[str]:
        from sync.store.tables import alarms

        with self.engine.connect() as conn:
            return list(conn.execute(select(alarms.c.text)).scalars())

    def alarmed(self, credit_id: str) -> bool:
        """Has head office raised an alarm that names this credit?"""
        from sync.store.tables import alarms

        with self.engine.connect() as conn:
            return any(credit_id in t for t in conn.execute(select(alarms.c.text)).scalars())

    def book(self, keys: list[str]) -> dict[str, Any]:
        """Head office's credits of these keys, by id."""
        q = select(credits_table).where(credits_table.c.key.in_(keys))
        with self.engine.connect() as conn:
            return {r.credit_id: r for r in conn.execute(q)}


# ---------------------------------------------------------------- kiosks


class Link:
    """A kiosk's head-office port: the real sync client, or nothing while offline."""

    def __init__(self, syncer: Syncer) -> None:
        self.syncer, self.online = syncer, True

    def attach(self, on_settings: Any) -> None:
        self.syncer.on_settings = on_settings

    def claim(self, key: str, written: int | None = None,
              log: list[tuple[int, str]] | None = None) -> dict[str, int | None]:  # fmt: skip
        return self.syncer.claim(key, written, log) if self.online else {}

    def wants_log(self, key: str) -> bool:
        return self.online and self.syncer.wants_log(key)


class Station:
    """One honest kiosk: its journal, fake devices, a clock, and a link to head office."""

    def __init__(self, world: World, kiosk: str) -> None:
        from tests.conftest import make_site

        self.w, self.id = world, kiosk
        self.token = world.office.admin("kiosk", "add", kiosk)
        self.site = make_site("demo", site={"kiosk_id": kiosk})
        self.path = world.folder / f"journal-{kiosk}.sqlite"
        self.reader = FakeKeyReader()
        self.notes = FakeNoteValidator(self.site.notes)
        self.coins = FakeCoinAcceptor(self.site.coins)
        self.printer = FakePrinter()
        self.online = True
        self.journal: Journal | None = None
        self.boot()

    def boot(self) -> None:
        """Start (again): a new Kiosk on the same journal file; reconciliation runs."""
        if self.journal is not None:
            self.journal.close()
        self.journal = Journal(self.path, self.id)
        client = SyncClient(self.w.office.url, self.token, self.id, timeout=(2.0, 20.0))
        self.syncer = Syncer(self.journal, client, currency="EUR", max_credit=50_000)
        self.link = Link(self.syncer)
        self.link.online = self.online
        devices = Devices(reader=self.reader, coin=self.coins, notes=self.notes,
                          printer=self.printer)  # fmt: skip
        self.kiosk = Kiosk(self.site, self.journal, devices, self.w.clock,
                           head_office=self.link)  # type: ignore[arg-type]  # fmt: skip
        self.kiosk.drain()

    def set_online(self, online: bool) -> None:
        self.online = self.link.online = online

    def reconnect(self) -> None:
        """Head office restarted on another port: the same token, a new client."""
        self.syncer.client = SyncClient(self.w.office.url, self.token, self.id,
                                        timeout=(2.0, 20.0))  # fmt: skip
        self.syncer._claimer = None

    def sync(self) -> bool:
        if not self.online:
            return False
        before = self._released()
        status = self.syncer.round(self.w.clock())
        self.w.stats.released += self._released() - before
        if status.last_error is not None:
            raise Finding(f"{self.id}: sync failed: {status.last_error}")
        return True

    def _released(self) -> int:
        assert self.journal is not None
        return len(self.journal.entries_of_kind(Kind.PENDING_RELEASED))

    def drain(self) -> None:
        self.kiosk.drain()

    def tick(self, seconds: float) -> None:
        self.w.clock.advance(seconds)
        self.kiosk.submit(Tick(self.w.clock()))
        self.drain()


# ---------------------------------------------------------------- the world


@dataclass
class Customer:
    key: FakeKey
    consumed: int = 0  # what the meter took off the key
    start: int = 0


@dataclass
class World:
    folder: Path
    office: Office
    rng: random.Random
    stats: Stats
    clock: ManualClock = field(default_factory=lambda: ManualClock(T0))
    stations: list[Station] = field(default_factory=list)
    customers: list[Customer] = field(default_factory=list)
    #: credit id -> (key, amount): what a customer paid for (cash) or the office owes
    owed: dict[str, tuple[str, int]] = field(default_factory=dict)
    backups: list[Path] = field(default_factory=list)
    imports: list[Path] = field(default_factory=list)  # the credits files taken
    attacked: set[str] = field(default_factory=set)  # keys the hostile kiosk went for
    hostile_token: str = ""
    hostile_seq: int = 0
    hostile_prev: str = GENESIS
    hostile_sent: list[dict[str, Any]] = field(default_factory=list)  # its whole journal
    log: list[str] = field(default_factory=list)
    prefix: str = ""

    # ------------------------------------------------------------ what is true

    def paid_credits(self) -> None:
        """Learn the credits customers paid for from the kiosks' own journals (the cash the
        fake devices stacked is journaled before the engine goes on)."""
        for s in self.stations:
            assert s.journal is not None
            for e in s.journal.entries_of_kind(Kind.SPLIT):
                if e.amount and e.amount.minor > 0 and e.txid:
                    self.owed[e.txid] = (e.key or "", e.amount.minor)

    def check(self) -> None:
        """Nothing minted, nothing lost, after a step."""
        self.paid_credits()
        book = self.office.book(self.serials)
        for c in self.customers:
            k = c.key
            seen: set[str] = set()
            for t in k.log:
                if t in seen:
                    raise Finding(f"key {k.serial} holds {t} twice")
                seen.add(t)
            on_key = sum(self.owed[t][1] for t in k.log if t in self.owed)
            foreign = [t for t in k.log if t not in self.owed and not t.startswith("OLD-")]
            if foreign:
                raise Finding(f"key {k.serial} holds credits nobody paid for: {foreign}")
            if k.credit != c.start + on_key - c.consumed:
                raise Finding(f"key {k.serial}: credit {k.credit}, its writes say "
                              f"{c.start + on_key - c.consumed}")  # fmt: skip
        for txid, (serial, _amount) in self.owed.items():
            key = next(c.key for c in self.customers if c.key.serial == serial)
            if txid in key.log:
                continue
            row = book.get(txid)
            held = row is not None and (row.written_by is None or self.contested(row, key))
            local = any(txid in {p.txid for p in s.journal.pending_credits(serial)}  # type: ignore[union-attr]
                        for s in self.stations)  # fmt: skip
            if not held and not local:
                raise Finding(f"credit {txid} ({serial}) is neither on the key nor owed: lost")

    @staticmethod
    def contested(row: Any, key: FakeKey) -> bool:
        """A credit a kiosk that did not take its money reported written, though the key does
        not hold it: still owed if the facts will undo that close: the key has fewer writes
        than the number reported (the next claim says so), or another transaction at it (its
        writer's report will say so)."""
        if row.written_by == row.origin or row.write_no is None:
            return False
        n = row.write_no
        return n > len(key.log) or key.log[n - 1] != row.credit_id

    def settle(self) -> None:
        """The end of a sequence: everyone online, synced, every key to a kiosk until nothing
        more is written; then head office and the kiosks agree."""
        for s in self.stations:
            s.set_online(True)
        self.office.leases_ended(self.prefix + "EVIL", self.serials)
        for _ in range(2):
            for s in self.stations:
                s.sync()
        for _ in range(3):
            for c in self.customers:
                s = self.rng.choice(self.stations)
                self.visit(s, c)
            for s in self.stations:
                s.sync()
        for s in self.stations:
            s.sync()
        self.check()
        book = self.office.book(self.serials)
        for txid, (serial, _amount) in self.owed.items():
            key = next(c.key for c in self.customers if c.key.serial == serial)
            row = book.get(txid)
            if txid in key.log:
                if row is not None and row.written_by is None and not (
                        serial in self.attacked and self.office.alarmed(txid)):
                    # (a hostile kiosk reported its own transaction at the write number a
                    # kiosk that did not take the money wrote it as: head office does not take
                    # that close against it, and tells the operator)
                    raise Finding(f"credit {txid} is on key {serial} but open at head office: "
                                  f"{row}; log {key.log}; alarms {self.office.alarms()}")
            else:
                if row is None or row.written_by is not None:
                    raise Finding(f"credit {txid} is not on key {serial} and head office "
                                  f"{'has no credit' if row is None else 'has it closed'}: "
                                  f"{row}; log {key.log}; "
                                  f"alarms {self.office.alarms()[-8:]}")  # fmt: skip
        for s in self.stations:
            assert s.journal is not None
            for serial in (c.key.serial for c in self.customers):
                for p in s.journal.pending_credits(serial):
                    row = book.get(p.txid)
                    if p.amount.minor > 0 and (row is None or row.written_by is not None):
                        raise Finding(f"{s.id} holds {p.txid} open, head office does not")
            s.journal.verify()

    # ------------------------------------------------------------ steps

    @property
    def serials(self) -> list[str]:
        return [c.key.serial for c in self.customers]

    def say(self, text: str) -> None:
        self.log.append(text)

    def visit(self, s: Station, c: Customer) -> None:
        """The key in and out (what is owed to it is written where it may be)."""
        s.reader.insert(c.key)
        s.drain()
        s.reader.remove()
        s.drain()
        s.tick(1)

    def top_up(self, s: Station, c: Customer, notes: list[int], how: str) -> None:
        target = sum(notes) + (1000 if how == "walk_away" else 0)
        room = s.site.key_credit_limit.minor - c.key.credit
        if target > min(room, s.site.max_topup.minor):
            self.meter(c, c.key.credit)  # the meter takes it all: room again
        s.reader.insert(c.key)
        s.drain()
        if how == "tear_before" or how == "tear_after":
            s.reader.fail_next = f"{how}_commit"  # tear_before_commit, tear_after_commit
        s.kiosk.submit(AmountChosen(E(target)))
        s.kiosk.submit(MethodChosen(Method.CASH))
        s.drain()
        for n in notes:
            s.notes.insert(E(n))
            s.drain()
        if s.reader.key is not None:
            s.reader.remove()
            s.drain()
        s.tick(s.site.timeouts.key_missing + 1)  # gone: what was paid is owed
        s.tick(s.site.timeouts.message + 1)
        s.reader.fail_next = None

    def meter(self, c: Customer, minor: int) -> None:
        take = min(minor, c.key.credit)
        c.key.credit -= take
        c.consumed += take

    def office_credit(self, c: Customer, twice: bool) -> None:
        """The office owes the customer: a credits file imported (twice: a retried job)."""
        ref = f"{self.prefix}R{len(self.owed)}-{self.rng.randrange(10**6)}"
        amount = self.rng.choice([500, 1500])
        f = self.folder / f"{ref}.csv"
        f.write_text(f"key,amount,currency,kiosk,ref\n{c.key.serial},{amount / 100:.2f},EUR,,"
                     f"{ref}\n", "utf-8")  # fmt: skip
        self.imports.append(f)
        for _ in range(2 if twice else 1):
            self.office.admin("import", "credits", str(f))
        book = self.office.book(self.serials)
        made = [r for r in book.values() if r.key == c.key.serial and r.credit_id not in self.owed
                and r.origin == "office"]  # fmt: skip
        if len(made) != 1:
            raise Finding(f"the credits file {ref} made {len(made)} credits")
        self.owed[made[0].credit_id] = (c.key.serial, amount)

    def restore(self) -> None:
        """Head office's disk failed: restored from the newest backup, older than now."""
        if not self.backups:
            return
        self.office.restore(self.backups[-1])
        self.stats.restores += 1
        for s in self.stations:
            s.reconnect()
        for f in self.imports:  # the night's jobs run again: what was taken stays taken once
            self.office.admin("import", "credits", str(f))

    # ------------------------------------------------------------ the hostile kiosk

    def hostile(self) -> None:
        """A kiosk with a valid token and no key at all tries to take or move credits."""
        self.stats.attacks += 1
        client = SyncClient(self.office.url, self.hostile_token, self.prefix + "EVIL",
                            timeout=(2.0, 20.0))  # fmt: skip
        c = self.rng.choice(self.customers)
        serial = c.key.serial
        self.attacked.add(serial)
        what = self.rng.choice(["claim_close", "close_existing", "squat", "preempt"])
        records: list[Record] = []
        try:
            granted = client.claim(serial, written=self.rng.choice([None, 0, len(c.key.log)]))
        except SyncError:
            granted = []
        victims = [g["credit_id"] for g in granted] or [t for t, (k, _) in self.owed.items()
                                                        if k == serial]  # fmt: skip
        if what in ("claim_close", "close_existing") and victims:
            no = len(c.key.log) + (1 if what == "claim_close" else 0)
            for v in victims:
                records.append(Record(Kind.PENDING_WRITTEN, v, serial, E(self.owed.get(
                    v, (serial, 100))[1]), {"write_no": max(1, no)}))  # fmt: skip
        elif what == "squat":
            other = self.rng.choice(self.stations)
            txid = f"{other.id}-{self.clock():%y%m%d}-{other.journal.last_seq() + 1}"  # type: ignore[union-attr]
            records += [Record(Kind.TX_OPENED, txid, serial, None, {"method": "cash"}),
                        Record(Kind.CASH_IN, txid, serial, E(10), {"medium": "coin"}),
                        Record(Kind.PENDING_CREDIT, txid, serial, E(10),
                               {"reason": "x"})]  # fmt: skip
        else:  # its own payments at the key's next write numbers
            for n in range(1, 3):
                txid = f"{self.prefix}EVIL-{self.clock():%y%m%d}-{self.hostile_seq + n}"
                records += [Record(Kind.TX_OPENED, txid, serial, None, {"method": "cash"}),
                            Record(Kind.CASH_IN, txid, serial, E(10), {"medium": "coin"}),
                            Record(Kind.KEY_WRITTEN, txid, serial, E(10),
                                   {"credit_after": 10,
                                    "write_no": len(c.key.log) + n})]  # fmt: skip
        self.say(f"hostile {what} on {serial}: {[(r.kind, r.txid) for r in records]}")
        if records:
            self.hostile_sent += self._hostile_rows(records)
            try:  # from what head office holds of it (a restore may have lost some)
                held = client.upload_ack([]).seq
                client.upload(self.hostile_sent[held:])
            except SyncError as err:
                raise Finding(f"head office refused the hostile kiosk's batch: {err}") from err

    def _hostile_rows(self, records: list[Record]) -> list[dict[str, Any]]:
        rows = []
        ts = self.clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for r in records:
            self.hostile_seq += 1
            amount = r.amount.minor if r.amount else None
            currency = r.amount.currency if r.amount else None
            data = json.dumps(r.data, separators=(",", ":"), ensure_ascii=False)
            h = entry_hash(self.hostile_prev, self.hostile_seq, ts, str(r.kind), r.txid, r.key,
                           amount, currency, data)  # fmt: skip
            rows.append({"seq": self.hostile_seq, "ts": ts, "kind": str(r.kind), "txid": r.txid,
                         "key": r.key, "amount": amount, "currency": currency, "data": data,
                         "prev_hash": self.hostile_prev, "hash": h})  # fmt: skip
            self.hostile_prev = h
        return rows


def sequence(office: Office, folder: Path, n: int, steps: int, rng: random.Random,
             stats: Stats, fixed: str | None = None) -> list[str]:  # fmt: skip
    """One sequence: three honest kiosks, one hostile, three customers, `steps` steps. Returns
    its log (raises Finding with it)."""
    prefix = f"S{n}"
    w = World(folder, office, rng, stats, prefix=prefix)
    w.stations = [Station(w, f"{prefix}-{c}") for c in "ABC"]
    w.hostile_token = office.admin("kiosk", "add", prefix + "-EVIL")
    w.customers = []
    for serial in KEYS:
        history = rng.choice([0, 3, 12])
        key = FakeKey(f"{prefix}{serial}", f"CA-{serial}", credit=1000,
                      log=[f"OLD-{i}" for i in range(history)])  # fmt: skip
        w.customers.append(Customer(key, start=1000))
        office.admin("key", key.serial, "--status", "active", "--account", key.contract_account)
    for s in w.stations:
        for c in w.customers:
            s.journal.set_key(c.key.serial, KeyStatus.ACTIVE, c.key.contract_account)  # type: ignore[union-attr]
    # a hostile kiosk's prefix must match what the protocol checks: it registered as such
    w.prefix = prefix + "-"
    plan = fixed_plan(fixed) if fixed else None
    for i in range(steps):
        if plan and i < len(plan):
            what, at, who = plan[i]
            s, c = w.stations[at], w.customers[who]
        else:
            what, s, c = pick(rng), rng.choice(w.stations), rng.choice(w.customers)
        w.say(f"{i}: {what} {s.id} {c.key.serial}")
        try:
            run_step(w, what, s, c)
            w.check()
        except Finding as err:
            raise Finding(f"{err}\n  " + "\n  ".join(w.log)) from None
        stats.steps += 1
    try:
        w.settle()
    except Finding as err:
        raise Finding(f"{err}\n  " + "\n  ".join(w.log)) from None
    granted = sum(len(s.journal.entries_of_kind(Kind.PENDING_CREDIT)) for s in w.stations)  # type: ignore[union-attr]
    stats.granted += granted
    stats.written += sum(len(s.journal.entries_of_kind(Kind.PENDING_WRITTEN)) for s in w.stations)  # type: ignore[union-attr]
    for s in w.stations:
        s.journal.close()  # type: ignore[union-attr]
    return w.log


STEPS = {
    "top_up": 30, "walk_away": 10, "tear_before": 5, "tear_after": 5, "visit": 15, "sync": 15,
    "offline": 6, "online": 6, "restart": 4, "meter": 6, "office_credit": 4, "import_twice": 2,
    "backup": 3, "restore": 2, "hostile": 8, "time": 4,
}  # fmt: skip


def pick(rng: random.Random) -> str:
    return rng.choices(list(STEPS), weights=list(STEPS.values()))[0]


def fixed_plan(name: str) -> list[tuple[str, int, int]]:
    """Named sequences every run makes first: (step, kiosk, customer) each."""
    return {
        # kiosk 0 holds a credit owed to customer 0 and uploads it; offline, it writes it
        # and ten more top-ups follow there; at kiosk 1 head office still sees it open
        "offline_spell": [("walk_away", 0, 0), ("sync", 0, 0), ("offline", 0, 0),
                          ("visit", 0, 0), *[("top_up", 0, 0)] * 10, ("visit", 1, 0),
                          ("online", 0, 0), ("sync", 0, 0), ("sync", 1, 0)],
    }[name]


def run_step(w: World, what: str, s: Station, c: Customer) -> None:
    rng = w.rng
    if what in ("top_up", "walk_away", "tear_before", "tear_after"):
        notes = rng.choices([500, 1000, 2000], k=rng.randint(1, 2))
        w.top_up(s, c, notes, "done" if what == "top_up" else what)
    elif what == "visit":
        w.visit(s, c)
    elif what == "sync":
        s.sync()
    elif what == "offline":
        if s.online:
            w.stats.offline_spells += 1
        s.set_online(False)
    elif what == "online":
        s.set_online(True)
    elif what == "restart":
        s.boot()
    elif what == "meter":
        w.meter(c, rng.choice([300, 1000, 5000]))
    elif what in ("office_credit", "import_twice"):
        w.office_credit(c, twice=what == "import_twice")
    elif what == "backup":
        copy = w.folder / f"backup-{len(w.backups)}.sqlite"
        w.office.backup(copy)
        w.backups.append(copy)
    elif what == "restore":
        w.restore()
    elif what == "hostile":
        w.hostile()
    elif what == "time":
        w.clock.advance(rng.choice([600, 3600, 86400]))  # leases end, days change


def run(sequences: int, steps: int, seed: int, fixed: tuple[str, ...] = ("offline_spell",),
        out: Any = None) -> Stats:  # fmt: skip
    """Run the fixed sequences and `sequences` random ones against one head-office process;
    raises Finding (with the seed and the steps) on the first finding."""
    stats = Stats()
    rng = random.Random(seed)
    folder = Path(tempfile.mkdtemp(prefix="fuzz-fleet-"))
    office = Office(folder)
    try:
        for n, name in enumerate([*fixed, *[None] * sequences]):
            stats.sequences += 1
            sub = folder / f"s{n}"
            sub.mkdir()
            try:
                sequence(office, sub, n, steps if name is None else len(fixed_plan(name)),
                         rng, stats, name)  # fmt: skip
            except Finding as err:
                raise Finding(f"seed {seed}, sequence {n}: {err}") from None
            if out is not None and n % 50 == 49:
                print(f"  {stats.line()}", file=out, flush=True)
    finally:
        office.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sequences", type=int, default=2000)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    import logging

    logging.disable(logging.WARNING)  # the kiosks' own warnings are what the steps provoke
    start = time.monotonic()
    try:
        stats = run(args.sequences, args.steps, seed, out=sys.stdout)
    except Finding as err:
        print(f"FINDING: {err}")
        return 1
    print(f"fleet fuzz, seed {seed}: {stats.line()}; no finding ({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
