"""The automat as its own process, for the crash matrix.

The devices are the ones its site file names: the harness's simulators on their real
transports (a pty for the ccTalk bus and the printer, TCP for the card terminal, pcscd with
vpcd for the key). Customer intents come on stdin, one per line (`amount 2000`, `method cash`,
`finish`, `cancel`, `quit`); every published view goes to stdout as a JSON line, and so does
every journal commit that carries a transaction entry (`{"step": n, "kinds": [...]}`): these
commits are the steps the matrix kills at.

`--crash-after N` kills the process with SIGKILL right after the N-th such commit is durable,
before any device hears of it: the worst moment for the engine, and the one a power cut picks.
`--crash-in upload` kills it when head office has just stored an upload that carries a
transaction's entries, before the kiosk learns so; `--crash-in claim` when head office has just
handed it a key's credits, before the kiosk journals them (the worst moments for the sync).

`--fault-at N --fault KIND` brings a fault in right after the N-th step instead: `engine_error`
(the next engine step raises), `disk_full` (the journal's file system is filled: the next write
fails), `journal_locked` (another process holds the journal's write lock for 10 s),
`clock_back` / `clock_forward` (the wall clock steps back 2 hours / forward 2 days). An engine
that stopped on a failure ends the process with status 70, as `kiosk run` does.

    python -m tests.crash.child SITE.toml JOURNAL.sqlite [--crash-after N] [--crash-in WHERE]
        [--fault-at N --fault KIND]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from kiosk.app.bootstrap import automat
from kiosk.app.runner import Kiosk
from kiosk.domain.clock import utc_now
from kiosk.domain.engine import View
from kiosk.domain.events import AmountChosen, Cancel, Finish, Method, MethodChosen
from kiosk.domain.money import Money
from kiosk.domain.site import load_site
from kiosk.ledger.journal import Journal
from sync.wire.client import Ack, SyncClient

_out = threading.Lock()


def say(obj: dict[str, Any]) -> None:
    with _out:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def view_line(v: View, refusal: Any) -> dict[str, Any]:
    return {
        "state": str(v.state),
        "outcome": str(v.outcome) if v.outcome else None,
        "txid": v.txid,
        "paid": v.paid.minor,
        "escrow": v.escrow.minor if v.escrow is not None else None,
        "methods": [str(m) for m in v.methods],
        "faults": sorted(str(d) for d in v.faults),
        "key": v.key.serial if v.key else None,
        "credit": v.key.credit.minor if v.key else None,
        "receipt": v.receipt,
        "refused": str(refusal) if refusal else None,
    }


#: the wall clock's offset (the clock faults move it)
_offset = [timedelta(0)]


def clock() -> datetime:
    return utc_now() + _offset[0]


def count_steps(crash_after: int, fault_at: int = 0, fault: str = "") -> None:
    """Report each commit that carries a transaction entry; die after the chosen one, or bring
    the chosen fault in after it."""
    append = Journal.append
    steps = 0

    def counted(self: Journal, records: Any, now: Any) -> Any:
        nonlocal steps
        stored = append(self, records, now)
        if any(e.txid for e in stored):
            steps += 1
            say({"step": steps, "kinds": [str(e.kind) for e in stored]})
            if steps == crash_after:
                die()
            if steps == fault_at:
                bring_in(fault, self)
        return stored

    Journal.append = counted  # type: ignore[method-assign]


def bring_in(fault: str, journal: Journal) -> None:
    """The fault, now (on the engine thread, right after a step's commit)."""
    say({"fault": fault})
    if fault == "engine_error":
        process = Kiosk.process

        def broken(self: Kiosk, event: Any) -> None:
            Kiosk.process = process  # type: ignore[method-assign]
            raise RuntimeError("injected: a defect in the engine")

        Kiosk.process = broken  # type: ignore[method-assign]
    elif fault == "disk_full":
        with open(journal.path.parent / "filler", "wb") as f:  # noqa: SIM115
            try:
                while True:
                    f.write(bytes(65536))
                    f.flush()
                    os.fsync(f.fileno())
            except OSError:
                pass  # full
    elif fault == "journal_locked":
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(journal.path)], stdout=subprocess.PIPE, text=True
        )
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
    elif fault == "clock_back":
        _offset[0] -= timedelta(hours=2)
    elif fault == "clock_forward":
        _offset[0] += timedelta(days=2)
    elif fault == "devices_vanish":
        pass  # the devices are the harness's: hearing the fault, it takes them away and back
    else:
        raise ValueError(f"unknown fault {fault!r}")


#: another writer: holds the journal's write lock for 10 s
LOCKER = """
import sqlite3, sys, threading
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
threading.Event().wait(10)
db.execute("ROLLBACK")
"""


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def crash_in(where: str) -> None:
    """Die right after head office answered an upload of a transaction's entries, or a claim
    that handed over credits: it holds what the kiosk has not recorded."""
    if where == "upload":
        upload = SyncClient.upload_ack

        def uploaded(self: SyncClient, batch: list[dict[str, Any]]) -> Ack:
            ack = upload(self, batch)
            if any(row.get("txid") for row in batch):
                say({"killed_in": "upload", "acked": ack.seq})
                die()
            return ack

        SyncClient.upload_ack = uploaded  # type: ignore[method-assign]
    elif where == "claim":
        claim = SyncClient.claim_answer  # what the kiosk's claim calls

        def claimed(self: SyncClient, key: str, *args: Any, **kw: Any) -> dict[str, Any]:
            answer = claim(self, key, *args, **kw)
            if answer["credits"]:
                say({"killed_in": "claim", "credits": len(answer["credits"])})
                die()
            return answer

        SyncClient.claim_answer = claimed  # type: ignore[method-assign]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("site")
    ap.add_argument("journal")
    ap.add_argument("--crash-after", type=int, default=0)
    ap.add_argument("--crash-in", choices=("upload", "claim"))
    ap.add_argument("--fault-at", type=int, default=0)
    ap.add_argument("--fault", default="")
    args = ap.parse_args()
    # force: a child of the fork server inherits the server's logging, whatever it set up
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        force=True)  # fmt: skip
    count_steps(args.crash_after, args.fault_at, args.fault)
    if args.crash_in:
        crash_in(args.crash_in)
    site = load_site(args.site)
    with automat(site, Path(args.journal), clock, sys.stderr) as running:
        kiosk = running.kiosk
        kiosk.listeners.append(lambda v, e: say(view_line(v, e)))
        stop = threading.Event()
        engine = threading.Thread(target=kiosk.run, args=(stop, 0.05), daemon=True)
        engine.start()
        threading.Thread(target=exit_when_failed, args=(engine, kiosk, stop), daemon=True).start()
        say({"started": True, **view_line(kiosk.view(), None)})
        for line in sys.stdin:
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "amount":
                kiosk.submit(AmountChosen(Money(int(arg), site.currency) if arg else None))
            elif cmd == "method":
                kiosk.submit(MethodChosen(Method(arg)))
            elif cmd == "finish":
                kiosk.submit(Finish())
            elif cmd == "cancel":
                kiosk.submit(Cancel())
            elif cmd == "quit":
                break
        stop.set()
        engine.join(5)
        card = kiosk.devices.card
        if card is not None and hasattr(card, "wait_idle"):
            card.wait_idle(5)
    return 0


def exit_when_failed(engine: threading.Thread, kiosk: Kiosk, stop: threading.Event) -> None:
    """An engine that stopped on a failure ends the process with a failure status, as
    `kiosk run` does (systemd then starts it again)."""
    engine.join()
    if kiosk.failure is not None and not stop.is_set():
        say({"failed": kiosk.failure})
        os._exit(70)


if __name__ == "__main__":
    sys.exit(main())
