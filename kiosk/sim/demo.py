"""`kiosk demo`: scripted customers through complete top-ups, cash over ccTalk simulators."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TextIO

from drivers.cctalk.sim import SimBillValidator, SimCoinAcceptor
from kiosk.adapters.head_office import HeadOfficeLink
from kiosk.app.runner import Kiosk
from kiosk.documents.report import print_transactions
from kiosk.domain.clock import ManualClock, utc_now
from kiosk.domain.engine import View
from kiosk.domain.errors import UserFacingError
from kiosk.domain.events import AmountChosen, Cancel, Event, Method, MethodChosen, Tick
from kiosk.domain.site import Site
from kiosk.sim.rig import DemoKeys, Rig, simulated_rig
from kiosk.sim.simulate import DEMO_KEYS, SimulatorControl, bill_id
from sync.admin import report
from sync.admin.local import LocalHeadOffice
from sync.store.tables import open_db


class _Script:
    """Drives the kiosk like a customer and narrates what the screen shows."""

    def __init__(
        self,
        kiosk: Kiosk,
        clock: ManualClock,
        out: TextIO,
        acceptors_settled: Callable[[View], bool] = lambda _v: True,
    ) -> None:
        self.kiosk, self.clock, self.out = kiosk, clock, out
        self.acceptors_settled = acceptors_settled
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

    def settle(self, until: Callable[[View], bool], what: str, timeout: float = 5.0) -> None:
        """Process the kiosk's events until `until` holds and the bus threads have carried out
        every command (they reach the devices asynchronously; a customer is never that fast,
        a script is)."""
        deadline = time.monotonic() + timeout
        self.kiosk.drain()
        while not (until(self.kiosk.view()) and self.acceptors_settled(self.kiosk.view())):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"demo: gave up waiting for {what}")
            try:
                ev = self.kiosk.events.get(timeout=min(left, 0.1))
            except queue.Empty:
                continue
            try:
                self.kiosk.process(ev)
            finally:
                self.kiosk.events.task_done()
        self.kiosk.drain()

    def do(
        self,
        what: str,
        action: Callable[[], object] | Event,
        until: Callable[[View], bool] = lambda _v: True,
    ) -> None:
        self.say(f"> {what}")
        if isinstance(action, Event):
            self.kiosk.submit(action)
        else:
            action()
        self.settle(until, what)
        self.screen()

    def wait(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.do(f"{seconds} s pass", Tick(self.clock()))


def _pay(site: Site, amount: int) -> list[tuple[int, bool]]:
    """A plausible way to pay `amount`: one note, then coins, largest first (value, is_note)."""
    plan: list[tuple[int, bool]] = []
    notes = [n.minor for n in site.notes if n.minor <= amount // 2]
    if notes:
        plan.append((max(notes), True))
    rest = amount - sum(v for v, _ in plan)
    for c in sorted((c.minor for c in site.coins), reverse=True):
        while rest >= c and len(plan) < 8:
            plan.append((c, False))
            rest -= c
    return plan


@contextmanager
def _heartbeat(kiosk: Kiosk) -> Iterator[None]:
    """The script is the engine's loop here, and it is alive while it runs: it tells the cash
    devices so every half second (their dead-man switch inhibits them after 1.5 s of silence,
    which a busy machine reached between two scenes)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(0.5):
            kiosk.alive()

    kiosk.alive()
    beater = threading.Thread(target=beat, name="demo-heartbeat", daemon=True)
    beater.start()
    try:
        yield
    finally:
        stop.set()
        beater.join(2)


def run_demo(site: Site, journal_file: Path, out: TextIO, start: datetime | None = None) -> int:
    """Run the scripted customers; print what happened and the resulting journal.

    Every device is its simulator on its real transport (see kiosk.sim.rig); the journal syncs in
    the background to head office (one started on this machine unless the site names one).
    """
    now = start or utc_now()
    opening = None if site.hours.is_open(now) else site.hours.next_opening(now)
    clock = ManualClock(opening or now)
    with simulated_rig(site, journal_file, out, clock) as rig, _heartbeat(rig.kiosk):
        s = _Script(rig.kiosk, clock, out, lambda _v: all(w.idle() for w in rig.cash.workers))
        s.settle(lambda _v: rig.devices_ready(), "the cash devices and the card terminal")
        if opening is not None:
            out.write(
                f"The site is closed now; the demo runs at its next opening, "
                f"{opening:%A %d.%m.%Y %H:%M} local time.\n"
            )
        _scenes(s, site, rig.control, rig.keys, rig.coin_sim, rig.note_sim, rig.bus.path)
        if rig.link is not None and rig.ho.local is not None:
            _head_office_scene(s, rig.link, rig.ho.local, rig.control, rig.keys)
        finish_report(rig, clock, out)
    return 0


def finish_report(rig: Rig, clock: Callable[[], datetime], out: TextIO) -> None:
    """The journal of this run, its verification, and what head office holds of it."""
    site, journal = rig.site, rig.journal
    out.write("\nJournal of this run:\n")
    print_transactions(journal, site, out, since_seq=rig.first_seq)
    count = journal.verify()
    out.write(f"\njournal verify: ok, {count} entries chained ({journal.path})\n")
    if rig.link is not None:
        rig.link.stop()
        status = rig.link.syncer.round(clock())
        out.write(
            f"head office holds {status.acked} of {journal.last_seq()} entries "
            f"(backlog {status.backlog})"
            + (f"; sync error: {status.last_error}" if status.last_error else "")
            + "\n"
        )
        if rig.ho.local is not None:
            out.write("\nHead office report (money per kiosk, day, method):\n")
            engine = open_db(rig.ho.local.db)
            out.write(report(engine, site.hours.tz))
            engine.dispose()


def _synced(s: _Script, link: HeadOfficeLink) -> None:
    """A sync round now, on the background loop, and what it reported."""
    error = link.round_now().last_error
    s.kiosk.drain()
    s.say(f"synced with head office{f' (error: {error})' if error else ''}")


def _head_office_scene(
    s: _Script,
    link: HeadOfficeLink,
    local: LocalHeadOffice,
    control: SimulatorControl,
    reader: DemoKeys,
) -> None:
    m = s.kiosk.site.money
    s.out.write("\n5. Head office steers: K-1003's contract ends, a goodwill credit for K-1001\n")
    local.admin(
        "key", "K-1003", "--status", "blocked", "--account", "4711003", "--reason", "contract_ended"
    )
    credit = local.admin("credit", "K-1001", "5.00", "--currency", s.kiosk.site.currency)
    s.say(f"head office: K-1003 blocked (contract ended); credit {credit} of {m(500)} for K-1001")
    _synced(s, link)
    refused = lambda v: v.state == "key_refused"  # noqa: E731
    s.do("insert key K-1003", partial(control.send, "insert K-1003"), refused)
    s.do("remove key", partial(control.send, "remove"), lambda v: v.state == "idle")
    s.do(
        "insert key K-1001 (the kiosk claims its credit at head office and writes it)",
        partial(control.send, "insert K-1001"),
        lambda v: v.state == "choosing_amount",
    )
    s.do("cancel", Cancel())
    s.do("remove key", partial(control.send, "remove"), lambda v: v.state == "idle")
    s.out.write(f"\nKeys now: K-1001 {m(reader.credit('K-1001'))}\n")


def _scenes(
    s: _Script,
    site: Site,
    control: SimulatorControl,
    reader: DemoKeys,
    coin_sim: SimCoinAcceptor,
    note_sim: SimBillValidator,
    port: str,
) -> None:
    m, cur = site.money, site.currency
    out = s.out
    essp = site.devices.notes is not None and site.devices.notes.protocol == "essp"
    cash = "coins over ccTalk, notes over eSSP" if essp else "coins and notes over ccTalk"
    out.write(
        f"Demo at {site.name} ({site.kiosk_id}), {cur}, card payment "
        f"{'on (ZVT)' if site.card_enabled else 'off'}; {cash} on {port}\n"
    )
    on_summary = ("choosing_amount", "key_refused")

    def at(*states: str) -> Callable[[View], bool]:
        return lambda v: v.state in states

    def paid_is(minor: int) -> Callable[[View], bool]:
        return lambda v: v.paid.minor == minor or v.state == "done"

    def coin(value: int, paid_after: int) -> None:
        s.do(
            f"insert coin {m(value)}",
            partial(control.send, f"coin {m(value).amount_text()}"),
            paid_is(paid_after),
        )

    def note(value: int, paid_after: int) -> None:
        s.do(
            f"insert note {m(value)}",
            partial(control.send, f"note {m(value).amount_text()}"),
            paid_is(paid_after),
        )

    def enabled(v: View) -> bool:
        return coin_sim.master and note_sim.master

    out.write("\n1. Cash top-up of 20.00 with an open debt (a note too big is refused)\n")
    s.do("insert key K-1001", partial(control.send, "insert K-1001"), at(*on_summary))
    big = max(n.minor for n in site.notes)  # a note worth more than the 20.00 chosen
    big_type = note_sim.ids.index(bill_id(m(big))) + 1

    def ready_for_20(v: View) -> bool:
        return v.state == "cash" and enabled(v) and not note_sim.enabled(big_type)

    if site.card_enabled:
        s.do("choose 20.00", AmountChosen(m(2000)))
        s.do("choose cash", MethodChosen(Method.CASH), ready_for_20)
    else:
        s.do("choose 20.00 (cash is the only way to pay here)", AmountChosen(m(2000)), ready_for_20)
    s.do(
        f"insert note {m(big)} (inhibited: more than the amount, handed back)",
        partial(control.send, f"note {m(big).amount_text()}"),
    )
    paid = 0
    for value, is_note in _pay(site, 2000):
        paid += value
        (note if is_note else coin)(value, paid)
    s.do("remove key", partial(control.send, "remove"), at("idle"))

    if site.card_enabled:
        out.write("\n2. Card top-up of 30.00\n")
        s.do("insert key K-1003", partial(control.send, "insert K-1003"), at(*on_summary))
        s.do("choose 30.00", AmountChosen(m(3000)))
        s.do(
            "choose card (approved at the terminal)",
            MethodChosen(Method.CARD),
            lambda v: v.state == "done",
        )
        s.do("remove key", partial(control.send, "remove"), at("idle"))
    else:
        out.write("\n2. Card payment is not offered at this site\n")

    out.write("\n3. A blocked key is refused and nothing is accepted\n")
    s.do("insert key K-1002", partial(control.send, "insert K-1002"), at(*on_summary))
    s.do(
        "insert coin 2.00 (acceptors off: falls to the return cup)",
        partial(control.send, f"coin {m(200).amount_text()}"),
    )
    s.do("remove key", partial(control.send, "remove"), at("idle"))

    out.write(
        "\n4. Key pulled mid-payment and not brought back: the money becomes a pending credit\n"
    )
    s.do("insert key K-1003", partial(control.send, "insert K-1003"), at(*on_summary))
    s.do("pay what you insert", AmountChosen(None), enabled)
    note(1000, 1000)
    s.do("remove key and walk away", partial(control.send, "remove"), at("key_missing"))
    s.wait(site.timeouts.key_missing + 1)
    s.wait(site.timeouts.message + 1)
    s.do(
        "next day: insert key K-1003 again",
        partial(control.send, "insert K-1003"),
        at("choosing_amount"),
    )
    s.do("cancel (nothing more to pay)", Cancel())
    s.do("remove key", partial(control.send, "remove"), at("idle"))

    out.write("\nKeys now: ")
    out.write(", ".join(f"{serial} {m(reader.credit(serial))}" for serial, *_ in DEMO_KEYS))
    out.write("\n")
