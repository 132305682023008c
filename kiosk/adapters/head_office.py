"""The kiosk side of head-office sync: upload the journal in bounded batches, advancing the
watermark only on acknowledgement; store downloaded reference data for offline use."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kiosk.app.ports import SyncStatus
from kiosk.domain.events import KeyStatus, Kind, Record
from kiosk.domain.money import Money
from kiosk.ledger.journal import ANCHOR, WATERMARK, Journal
from sync.wire.client import Permanent, Retryable, SyncClient, SyncError, backoff

log = logging.getLogger(__name__)

REF_ETAG = "sync_reference_etag"
#: the reference version held here: the next download brings only what changed after it
REF_VERSION = "sync_reference_version"
LAST_SUCCESS = "sync_last_success"
LAST_ERROR = "sync_last_error"
SETTINGS = "sync_settings"  # the site settings head office sent last, as JSON (read by Kiosk)
#: a key waits for head office at most this long (connect, read) when claiming its credits
CLAIM_TIMEOUT = (1.0, 2.0)
#: and for the whole answer: one that trickles in holds the customer no longer than this
CLAIM_DEADLINE = 3.0


class Syncer:
    """One kiosk's sync state. `currency` is the site's: credits in another are not taken;
    `on_settings` receives the site settings head office sends (limits and fee)."""

    def __init__(
        self,
        journal: Journal,
        client: SyncClient,
        *,
        batch: int = 500,
        currency: str = "EUR",
        max_credit: int = 100_000,
        on_settings: Callable[[dict[str, int]], object] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.journal = journal
        self.client = client
        self.batch = batch
        self.currency = currency
        #: the most a credit from head office may be (the key's own limit, minor units)
        self.max_credit = max_credit
        self.on_settings = on_settings
        self.clock = clock or (lambda: datetime.now(UTC))
        self._claimer: SyncClient | None = None
        self._wants_log: set[str] = set()
        acked = int(journal.get_meta(WATERMARK) or 0)
        self.status = SyncStatus(acked=acked, backlog=journal.last_seq() - acked)
        last = journal.get_meta(LAST_SUCCESS)
        self.status.last_success = datetime.fromisoformat(last) if last else None
        self.status.last_error = journal.get_meta(LAST_ERROR) or None

    def upload_round(self, now: datetime) -> int:
        """Upload until nothing is left or an error stops it; returns entries acknowledged."""
        start = self.status.acked
        while True:
            rows = self.journal.raw_entries(after=self.status.acked, limit=self.batch)
            if not rows:
                # nothing to send: is what head office holds still what it acknowledged? (a
                # head office restored from an older copy holds less: send that again)
                if self.status.acked and self._rewind():
                    continue
                break
            try:
                ack = self.client.upload_ack(rows)  # raises SyncError; watermark untouched then
            except Permanent as err:
                if err.status != 409 or not self._rewind():
                    raise
                continue  # head office lost what it had (restored): send it again
            acked = ack.seq
            if acked < self.status.acked:
                raise SyncError(f"head office acknowledged {acked}, below our watermark")
            if acked > rows[-1]["seq"]:  # it cannot hold what was never sent: never skip it
                raise SyncError(f"head office acknowledged {acked}, above the last entry "
                                f"sent ({rows[-1]['seq']}): watermark kept")  # fmt: skip
            ours = next((r["hash"] for r in rows if r["seq"] == acked), None)
            if ack.hash is not None and ours is not None and ack.hash != ours:
                raise SyncError(f"head office holds another entry {acked} than this journal "
                                "(a fork): watermark kept")  # fmt: skip
            # the hash head office holds anchors the chain (kiosk journal verify)
            anchor = {ANCHOR: f"{acked} {ack.hash}"} if ack.hash and ours else {}
            self.journal.set_meta(WATERMARK, str(acked), **anchor)
            self.status.acked = acked
            if acked < rows[-1]["seq"]:
                break  # it kept fewer than we sent: ask again next round
        self.status.backlog = self.journal.last_seq() - self.status.acked
        self.status.last_success = now
        return self.status.acked - start

    def _rewind(self) -> bool:
        """Head office refused the next batch as not following what it holds: if it holds
        less than it acknowledged (restored from an older backup) and what it holds is ours,
        the watermark goes back to it and the rest is sent again. True if it went back."""
        held = self.client.upload_ack([])  # an empty batch: what head office holds now
        if held.seq >= self.status.acked:
            return False  # a fork or a gap that a resend does not mend
        base, base_hash = self.journal.base()
        if held.seq < base:
            log.error("head office holds entries up to %d only, and this journal's live part "
                      "begins after %d: the archive must be sent by staff", held.seq, base)
            return False
        ours = base_hash if held.seq == base else next(
            (r["hash"] for r in self.journal.raw_entries(after=held.seq - 1, limit=1)), None)
        if held.hash is not None and held.seq and ours != held.hash:
            return False  # another entry than ours: a fork
        log.warning("head office holds entries up to %d, below the %d it acknowledged "
                    "(restored from a backup?): sending them again", held.seq, self.status.acked)
        anchor = {ANCHOR: f"{held.seq} {held.hash}"} if held.hash and held.seq else {}
        self.journal.set_meta(WATERMARK, str(held.seq), **anchor)
        self.status.acked = held.seq
        return True

    def pull_reference(self) -> bool:
        """Download key status, debts, this kiosk's credits and site settings if they changed;
        True if anything was stored."""
        held = self.journal.get_meta(REF_VERSION)
        since = int(held) if held and held.isdigit() else None
        etag, data = self.client.reference(self.journal.get_meta(REF_ETAG), since)
        if data is None:
            return False
        debts = []
        for d in data["debts"]:
            if type(d["amount"]) is not int or d["amount"] < 0:  # no debt is below zero
                log.warning("debt from head office not taken: %r", d)
                continue
            debts.append((d["contract_account"], Money(d["amount"], d["currency"])))
        self.journal.set_reference(
            [(k["serial"], KeyStatus(k["status"]), k["contract_account"], k.get("reason") or "")
             for k in data["keys"]],
            debts,
        )  # fmt: skip
        credits = self._usable(data.get("credits", []))
        self._take_credits(credits)
        self._release_credits({c["credit_id"] for c in credits})
        settings = dict(data.get("settings", {}))
        self.journal.set_meta(SETTINGS, json.dumps(settings, sort_keys=True))
        if self.on_settings is not None:
            self.on_settings(settings)
        if etag:
            self.journal.set_meta(REF_ETAG, etag)
        if isinstance(data.get("version"), int):
            self.journal.set_meta(REF_VERSION, str(data["version"]))
        self.status.reference_version = etag
        return True

    def _usable(self, sent: list[Any]) -> list[dict[str, Any]]:
        """The credits head office sent that a key can take (`_wrong_credit`); the others
        are logged and left."""
        usable = []
        for c in sent:
            wrong = self._wrong_credit(c)
            if wrong:
                log.warning("credit from head office not taken: %s: %r", wrong, c)
            else:
                usable.append(c)
        return usable

    def _take_credits(self, held: list[dict[str, Any]]) -> int:
        """Journal the usable credits head office says this kiosk holds and that are new here
        (once, whether the reference data or a key's claim brings them first)."""
        records = []
        for c in held:
            bound = c.get("bound")
            records.append(
                Record(
                    Kind.PENDING_CREDIT,
                    c["credit_id"],
                    c["key"],
                    Money(c["amount"], c["currency"]),
                    {"reason": "head_office", "origin": c.get("origin"),
                     **({"key_written": bound} if type(bound) is int else {})},
                )
            )  # fmt: skip
        return len(self.journal.add_credits(records, self.clock()))

    def _wrong_credit(self, c: Any) -> str | None:
        """What is wrong with a credit head office sent (None: nothing). A key takes only a
        positive credit in the site's currency, within its limit, under an id its top-up log
        can hold; anything else is left (and logged), never written and never raised."""
        if not isinstance(c, dict):
            return "not an object"
        cid, key, amount, cur = (c.get(k) for k in ("credit_id", "key", "amount", "currency"))
        if not isinstance(cid, str) or not 0 < len(cid.encode()) <= 48:
            return "no usable credit id"
        if not isinstance(key, str) or not key:
            return "no key"
        if cur != self.currency:
            return f"in {cur}, not {self.currency}"
        if type(amount) is not int or not 0 < amount <= self.max_credit:
            return f"amount {amount!r} is not between 0 and {self.max_credit}"
        bound = c.get("bound")
        if bound is not None and (type(bound) is not int or bound < 0):
            return f"bound {bound!r} is not a write number"
        return None

    def _release_credits(self, held: set[str]) -> None:
        """A credit of ours that head office has (it was uploaded) but no longer lists as ours
        went to another kiosk, or was written there: it is not ours to write any more."""
        gone = [
            Record(Kind.PENDING_RELEASED, txid, key, None, {"reason": "claimed_elsewhere"})
            for txid, key in self.journal.open_credits(upto_seq=self.status.acked)
            if txid not in held
        ]
        self.journal.append(gone, self.clock())

    def claim(self, key: str, written: int | None = None,
              shown: list[tuple[int, str]] | None = None) -> dict[str, int | None]:  # fmt: skip
        """When a key is inserted and head office is reachable: take over its open credits
        fleet-wide under a lease, so that this kiosk writes them (once); they are journaled
        here if new. Returns the ids granted, each with head office's bound (the key's write
        number below which it cannot be on the key); offline (or on any sync error) nothing
        changes and the kiosk writes only what it holds. `wants_log` says afterwards whether
        head office asked to see the key's log (then claim again with it `shown`)."""
        self._wants_log.discard(key)
        if self.status.last_error is not None and self.status.rounds:
            return {}  # known to be offline: do not keep the customer waiting
        if self._claimer is None or self._claimer.base != self.client.base:
            self._claimer = self.client.fork()  # claims come from the engine's thread
        try:
            whole = self._claimer.claim_answer(key, timeout=CLAIM_TIMEOUT, written=written,
                                               deadline=CLAIM_DEADLINE, log=shown)  # fmt: skip
            if whole.get("check") and shown is None:
                self._wants_log.add(key)
            granted = self._usable(whole["credits"])
            self._take_credits(granted)
            return {c["credit_id"]: c.get("bound") for c in granted}
        except SyncError as err:
            log.info("credits of %s not claimed: %s", key, err)
            self._claimer = None  # a claim given up may still hold its session: a new one
            return {}
        except (ValueError, KeyError, TypeError, AttributeError):  # what head office sent
            log.exception("credits of %s: head office's answer not taken", key)
            return {}

    def wants_log(self, key: str) -> bool:
        """Did head office, at this key's last claim, ask to see its log (closes made at other
        kiosks that the key has not shown yet)?"""
        return key in self._wants_log

    def _tell(self) -> None:
        """Head office's fleet page shows what each kiosk still holds back, and since when."""
        tell = getattr(self.client, "tell", None)
        if tell is None:
            return
        waiting = self.journal.raw_entries(after=self.status.acked, limit=1)
        tell(self.journal.last_seq() - self.status.acked,
             str(waiting[0]["ts"]) if waiting else None)  # fmt: skip

    def round(self, now: datetime) -> SyncStatus:
        """One full round (upload, then reference); errors are recorded, never raised. The
        outcome is kept in the journal database for `kiosk sync status` and diagnostics."""
        st = self.status
        st.started += 1
        st.retry_after = None
        try:
            self._tell()
            self.upload_round(now)
            self._tell()
            self.pull_reference()
            st.last_error = None
        except SyncError as err:
            log.warning("sync: %s", err)
            st.last_error = str(err)
            st.retry_after = err.retry_after if isinstance(err, Retryable) else None
            st.backlog = self.journal.last_seq() - st.acked
        except (ValueError, KeyError, TypeError, AttributeError) as err:  # what it sent
            log.exception("sync: head office's answer not taken")
            st.last_error = f"head office's answer not taken: {type(err).__name__}: {err}"
            st.backlog = self.journal.last_seq() - st.acked
        if st.last_success is not None:
            self.journal.set_meta(LAST_SUCCESS, st.last_success.isoformat())
        self.journal.set_meta(LAST_ERROR, st.last_error or "")
        st.rounds += 1
        return st


class SyncLoop:
    """Background rounds every `interval` seconds (or at once on `sync_now`); after an error,
    jittered exponential backoff with a ceiling, or the server's Retry-After."""

    def __init__(
        self,
        syncer: Syncer,
        clock: Callable[[], datetime],
        *,
        interval: float = 60.0,
        ceiling: float = 300.0,
        rng: random.Random | None = None,
        after_round: Callable[[datetime], object] | None = None,
    ) -> None:
        self.syncer = syncer
        self.clock = clock
        #: called on the sync thread after each round that ended without an error (the
        #: journal's housekeeping: it moves only what head office acknowledged)
        self.after_round = after_round
        self.interval = interval
        self.ceiling = ceiling
        self.rng = rng or random.Random()
        self.failures = 0
        self._stop = threading.Event()
        self._now = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        """Its thread is alive (rounds go on)."""
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._now.set()
        self._thread.join(timeout=10)

    def sync_now(self) -> None:
        self._now.set()

    def next_delay(self, retry_after: float | None) -> float:
        if self.syncer.status.last_error is None:
            self.failures = 0
            return self.interval
        self.failures += 1
        return backoff(self.failures - 1, retry_after, self.rng, ceiling=self.ceiling)

    def _run(self) -> None:
        while not self._stop.is_set():
            status = self.syncer.round(self.clock())
            if self.after_round is not None and status.last_error is None:
                self.after_round(self.clock())
            self._now.wait(self.next_delay(status.retry_after))
            self._now.clear()

    def round_now(self, timeout: float = 30.0) -> SyncStatus:
        """Ask for a round and wait until one that began after the asking has ended (a
        round under way when asked may have read head office before the change awaited)."""
        target = self.syncer.status.started + 1
        self.sync_now()
        deadline = time.monotonic() + timeout
        while self.syncer.status.rounds < target:
            if time.monotonic() > deadline:
                raise TimeoutError("no sync round ended in time")
            self._stop.wait(0.02)  # the sync thread is talking to head office
        return self.syncer.status


class HeadOfficeLink:
    """The kiosk's head-office port: the sync client, its rounds in the background every
    `interval` seconds, credit claims when a key is inserted, settings back to the kiosk."""

    def __init__(self, syncer: Syncer, loop: SyncLoop) -> None:
        self.syncer = syncer
        self.loop = loop
        self.where = syncer.client.base

    def attach(self, on_settings: Callable[[dict[str, int]], object]) -> None:
        self.syncer.on_settings = on_settings

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()

    @property
    def status(self) -> SyncStatus:
        return self.syncer.status

    def claim(self, key: str, written: int | None = None,
              shown: list[tuple[int, str]] | None = None) -> dict[str, int | None]:  # fmt: skip
        return self.syncer.claim(key, written, shown)

    def wants_log(self, key: str) -> bool:
        return self.syncer.wants_log(key)

    def round_now(self, timeout: float = 30.0) -> SyncStatus:
        try:
            return self.loop.round_now(timeout)
        except TimeoutError:
            return self.syncer.status

    def health(self) -> float:
        """Seconds for one round trip to head office's health check (SyncError if none)."""
        return self.syncer.client.fork().health()
