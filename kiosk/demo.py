"""`kiosk demo`: a scripted customer through complete top-ups on in-process fake devices."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TextIO

from kiosk.clock import ManualClock, utc_now
from kiosk.config import Site
from kiosk.engine import View
from kiosk.errors import UserFacingError
from kiosk.events import AmountChosen, Cancel, Event, KeyStatus, Method, MethodChosen, Role, Tick
from kiosk.fakes import (
    FakeCardTerminal,
    FakeCoinAcceptor,
    FakeKey,
    FakeKeyReader,
    FakeNoteValidator,
    FakePrinter,
)
from kiosk.journal import Journal
from kiosk.ports import Devices
from kiosk.report import print_transactions
from kiosk.service import Kiosk

#: Demo keys: serial, contract account, status at head office, reason, open debt (minor units).
DEMO_KEYS = (
    ("K-1001", "4711001", KeyStatus.ACTIVE, "", 700),
    ("K-1002", "4711002", KeyStatus.BLOCKED, "lost", 0),
    ("K-1003", "4711003", KeyStatus.ACTIVE, "", 0),
)


def seed_reference_data(journal: Journal, site: Site) -> None:
    """Head office's answer for the demo keys, as sync would store it."""
    for serial, account, status, reason, debt in DEMO_KEYS:
        journal.set_key(serial, status, account, reason)
        journal.set_debt(account, site.money(debt))


class _Script:
    """Drives the kiosk like a customer and narrates what the screen shows."""

    def __init__(self, kiosk: Kiosk, devices: Devices, clock: ManualClock, out: TextIO) -> None:
        self.kiosk, self.dev, self.clock, self.out = kiosk, devices, clock, out
        self.refusal: UserFacingError | None = None
        kiosk.listeners.append(self._on_view)

    def _on_view(self, _view: View, refusal: UserFacingError | None) -> None:
        if refusal is not None:
            self.refusal = refusal

    def say(self, text: str) -> None:
        self.out.write(f"  {text}\n")

    def screen(self) -> None:
        v = self.kiosk.view()
        parts = [f"screen: {v.state}"]
        if v.key is not None and v.state in ("choosing_amount", "key_refused"):
            parts.append(f"credit on key {v.key.credit}")
            if v.account is not None and v.account.debt:
                parts.append(f"open debt {v.account.debt}")
        if v.state == "cash":
            parts.append(f"paid {v.paid}")
        if v.refusal:
            parts.append(f"refused: {v.refusal}")
        if v.notice:
            parts.append(f"notice: {v.notice}")
        if v.outcome:
            parts.append(f"outcome: {v.outcome}")
        if v.split is not None and v.state == "done":
            s = v.split
            parts.append(f"paid {s.paid} = fee {s.fee} + debt {s.debt} + credit {s.credit}")
        if self.refusal is not None:
            parts.append(f"refused: {self.refusal.message_key}")
            self.refusal = None
        self.say(" | ".join(parts))

    def do(self, what: str, action: Callable[[], object] | Event) -> None:
        self.say(f"> {what}")
        if isinstance(action, Event):
            self.kiosk.submit(action)
        else:
            action()
        self.kiosk.drain()
        self.screen()

    def wait(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.do(f"{seconds} s pass", Tick(self.clock()))


def run_demo(site: Site, journal_file: Path, out: TextIO, start: datetime | None = None) -> int:
    """Run the scripted customers; print what happened and the resulting journal."""
    journal = Journal(journal_file, site.kiosk_id)
    seed_reference_data(journal, site)
    first_seq = journal.last_seq() + 1
    clock = ManualClock(start or utc_now())
    dev = Devices(
        reader=FakeKeyReader(),
        coin=FakeCoinAcceptor(site.coins),
        notes=FakeNoteValidator(site.notes),
        card=FakeCardTerminal() if site.card_enabled else None,
        printer=FakePrinter(),
    )
    kiosk = Kiosk(site, journal, dev, clock)
    s = _Script(kiosk, dev, clock, out)
    reader, coin, notes = dev.reader, dev.coin, dev.notes
    assert isinstance(reader, FakeKeyReader) and isinstance(coin, FakeCoinAcceptor)
    assert isinstance(notes, FakeNoteValidator)
    cur = site.currency
    m = site.money
    out.write(
        f"Demo at {site.name} ({site.kiosk_id}), {cur}, card payment "
        f"{'on' if site.card_enabled else 'off'}\n"
    )
    if s.kiosk.view().state == "closed":
        out.write("  the site is closed now: nothing is accepted\n")
    keys = {k[0]: FakeKey(k[0], k[1], credit=350, currency=cur) for k in DEMO_KEYS}

    out.write("\n1. Cash top-up of 20.00 with an open debt (a note too big is returned)\n")
    s.do("insert key K-1001", lambda: reader.insert(keys["K-1001"]))
    s.do("choose 20.00", AmountChosen(m(2000)))
    if site.card_enabled:
        s.do("choose cash", MethodChosen(Method.CASH))
    for value in (5000, 1000, 500):
        s.do(f"insert note {m(value)}", partial(notes.insert, m(value)))
    for value in (200, 200, 100):
        s.do(f"insert coin {m(value)}", partial(coin.insert, m(value)))
    s.do("remove key", reader.remove)

    if site.card_enabled:
        out.write("\n2. Card top-up of 30.00\n")
        s.do("insert key K-1003", lambda: reader.insert(keys["K-1003"]))
        s.do("choose 30.00", AmountChosen(m(3000)))
        s.do("choose card (approved at the terminal)", MethodChosen(Method.CARD))
        s.do("remove key", reader.remove)
    else:
        out.write("\n2. Card payment is not offered at this site\n")

    out.write("\n3. A blocked key is refused and nothing is accepted\n")
    s.do("insert key K-1002", lambda: reader.insert(keys["K-1002"]))
    s.do("insert coin 2.00 (inhibited: falls to the return cup)", lambda: coin.insert(m(200)))
    s.do("remove key", reader.remove)

    out.write(
        "\n4. Key pulled mid-payment and not brought back: the money becomes a pending credit\n"
    )
    s.do("insert key K-1003", lambda: reader.insert(keys["K-1003"]))
    s.do("pay what you insert", AmountChosen(None))
    s.do(f"insert note {m(1000)}", lambda: notes.insert(m(1000)))
    s.do("remove key and walk away", reader.remove)
    s.wait(site.timeouts.key_missing + 1)
    s.wait(site.timeouts.message + 1)
    s.do("next day: insert key K-1003 again", lambda: reader.insert(keys["K-1003"]))
    s.do("cancel (nothing more to pay)", Cancel())
    s.do("remove key", reader.remove)

    out.write("\nKeys now: ")
    out.write(
        ", ".join(f"{k.serial} {m(k.credit)}" for k in keys.values() if k.role == Role.CUSTOMER)
    )
    out.write("\n\nJournal of this run:\n")
    print_transactions(journal, site, out, since_seq=first_seq)
    count = journal.verify()
    out.write(f"\njournal verify: ok, {count} entries chained ({journal_file})\n")
    journal.close()
    return 0
