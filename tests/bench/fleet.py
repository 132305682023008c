"""A fleet of simulated kiosks against head office on PostgreSQL: one server process, then
several.

Each kiosk has its own token and its own hash chain, keyed with its own chain secret as
registered kiosks' are (`--plain`: plain SHA-256, as kiosks without one). Every `--interval`
seconds (time compressed: a real kiosk syncs every minute) it uploads the entries of one top-up
(five), asks for the reference data with its ETag and the version it holds (a change list, not
the whole key list: the night's import of 20,000 keys travels once, after that a kiosk gets what
changed), and every tenth round claims a key's credits. The kiosks' rounds are spread evenly
over the interval and run on a pool of client threads, each with its own keep-alive connection.

Prints, per configuration: entries stored per second, p50 and p99 latency of an upload and of
a reference request, claims per second; and the throughput ratio of N processes to one (on this
machine's 2 cores the processes share the CPU with PostgreSQL and the clients: the ratio shows
the server is stateless and scales out, not what a bigger machine would give). Goals: p99 upload
under 1 s and every offered entry stored; "MISSED" beside a figure over its goal.

    .venv/bin/python tests/bench/fleet.py [--kiosks N] [--workers N] [--seconds S] [--interval S]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import requests
from sqlalchemy import insert

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from sync import billing  # noqa: E402
from sync.wire.protocol import GENESIS, entry_hash  # noqa: E402
from sync.store.tables import kiosks, open_db, token_digest  # noqa: E402
from tests.pgcluster import PgCluster  # noqa: E402

KEYS = 20_000


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] if s else float("nan")


class Kiosk:
    def __init__(self, n: int, keyed: bool = True) -> None:
        self.id = f"K{n:04d}"
        self.token = f"token-{n:04d}-{os.urandom(6).hex()}"
        #: its chain secret (head office holds it too): each entry's hash is keyed with it
        self.secret = os.urandom(32) if keyed else None
        self.seq, self.prev = 0, GENESIS
        self.etag: str | None = None
        self.version: int | None = None
        self.rounds = 0
        self.busy = False  # a round of it is queued or running: the next one waits its turn

    def top_up(self) -> list[dict[str, object]]:
        """One top-up's five entries, chained."""
        ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        tx = f"{self.id}-{self.seq + 1}"
        key = f"K-{int(self.id[1:]) * 7 % KEYS:06d}"
        split = {"paid": 2000, "fee": 0, "fee_net": 0, "fee_vat": 0, "debt": 0, "credit": 2000}
        rows = [("tx_opened", None, {"method": "cash", "contract_account": "4000000"}),
                ("cash_in", 2000, {"medium": "note", "channel": 3}),
                ("split", 2000, split), ("key_written", 2000, {"credit_after": 5000}),
                ("tx_closed", None, {"outcome": "completed", **split})]  # fmt: skip
        out = []
        for kind, amount, data in rows:
            self.seq += 1
            body = json.dumps(data, sort_keys=True, separators=(",", ":"))
            cur = "EUR" if amount is not None else None
            h = entry_hash(self.prev, self.seq, ts, kind, tx, key, amount, cur, body,
                           self.secret)
            out.append({"seq": self.seq, "ts": ts, "kind": kind, "txid": tx, "key": key,
                        "amount": amount, "currency": cur, "data": body,
                        "prev_hash": self.prev, "hash": h})  # fmt: skip
            self.prev = h
        return out


def prepare(db: str, fleet: list[Kiosk]) -> None:
    engine = open_db(db)
    try:
        with engine.begin() as conn:
            conn.execute(insert(kiosks), [
                {"kiosk_id": k.id, "token_sha256": token_digest(k.token),
                 "chain_secret": k.secret.hex() if k.secret else None} for k in fleet])  # fmt: skip
        rows = "".join(f"K-{i:06d},active,,{4_000_000 + i}\n" for i in range(KEYS))
        billing.import_file(
            engine,
            "keys",
            "keys.csv",
            io.StringIO("serial,status,reason,contract_account\n" + rows),
        )
    finally:
        engine.dispose()


def serve(db: str, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "sync.admin", "--db", db, "serve", "--port",
                             str(port), "--workers", str(workers)], cwd=ROOT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(url + "/v1/health", timeout=0.5).ok:
                return proc, url
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("head office did not start")
        threading.Event().wait(0.1)  # the server processes are starting: ask again shortly


def run(db: str, workers: int, n: int, seconds: float, interval: float,
        threads: int, keyed: bool = True) -> dict[str, float]:  # fmt: skip
    fleet = [Kiosk(i, keyed) for i in range(n)]
    prepare(db, fleet)
    proc, url = serve(db, workers)
    due: queue.Queue[Kiosk | None] = queue.Queue()
    lock = threading.Lock()
    up: list[float] = []
    ref: list[float] = []
    claims: list[float] = []
    stored = [0]
    offered = [0]
    failures = [0]
    skipped = [0]

    def client() -> None:
        s = requests.Session()
        while (k := due.get()) is not None:
            auth = {"Authorization": f"Bearer {k.token}"}
            try:
                batch = k.top_up()
                t0 = time.perf_counter()
                r = s.post(f"{url}/v1/entries", json={"kiosk_id": k.id, "entries": batch},
                           headers=auth, timeout=30)  # fmt: skip
                t1 = time.perf_counter()
                acked = r.json().get("acked", 0) if r.ok else 0
                h = dict(auth)
                if k.etag:
                    h["If-None-Match"] = k.etag
                path = "/v1/reference" + (f"?since={k.version}" if k.version else "")
                rr = s.get(url + path, headers=h, timeout=30)
                t2 = time.perf_counter()
                if rr.status_code == 200:
                    k.etag, k.version = rr.headers.get("ETag"), rr.json()["version"]
                c = None
                k.rounds += 1
                if (k.rounds + int(k.id[1:])) % 10 == 0:  # a tenth of the rounds, spread
                    t3 = time.perf_counter()
                    rc = s.post(f"{url}/v1/credits/claim", json={"key": batch[0]["key"]},
                                headers=auth, timeout=30)  # fmt: skip
                    c = time.perf_counter() - t3 if rc.ok else None
                with lock:
                    offered[0] += len(batch)
                    if r.ok and acked == batch[-1]["seq"]:
                        stored[0] += len(batch)
                    else:
                        failures[0] += 1
                    up.append(t1 - t0)
                    if rr.status_code in (200, 304):
                        ref.append(t2 - t1)
                    if c is not None:
                        claims.append(c)
            except (requests.RequestException, ValueError):
                with lock:
                    failures[0] += 1
            finally:
                k.busy = False

    pool = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    # Every kiosk has the key list already (yesterday's download): it asks for changes since
    # the version it holds. One whole-list download is timed for comparison.
    t0 = time.perf_counter()
    whole = requests.get(f"{url}/v1/reference", timeout=60,
                         headers={"Authorization": f"Bearer {fleet[0].token}"})  # fmt: skip
    whole.raise_for_status()
    print(
        f"  the whole reference ({KEYS} keys, {len(whole.content) / 1e6:.1f} MB): "
        f"{(time.perf_counter() - t0) * 1000:.0f} ms",
        flush=True,
    )
    for k in fleet:
        k.version = int(whole.json()["version"])
    start = time.perf_counter()
    step = interval / n
    i = 0
    while (now := time.perf_counter() - start) < seconds:
        target = i * step
        if target > now:
            threading.Event().wait(target - now)  # the next kiosk's turn in the interval
        k = fleet[i % n]
        i += 1
        if k.busy:  # its last round is not done: head office is behind, the kiosk waits
            skipped[0] += 1
            continue
        k.busy = True
        due.put(k)
    for _ in pool:
        due.put(None)
    for t in pool:
        t.join(60)
    took = time.perf_counter() - start
    proc.terminate()
    proc.wait(15)
    return {"stored_per_s": stored[0] / took, "offered": offered[0], "stored": stored[0],
            "failures": failures[0], "up50": statistics.median(up), "up99": pct(up, 99),
            "ref50": statistics.median(ref), "ref99": pct(ref, 99),
            "claims_per_s": len(claims) / took, "claim50": statistics.median(claims or [0]),
            "skipped": skipped[0]}  # fmt: skip


def report(name: str, r: dict[str, float]) -> None:
    late = "MISSED" if r["up99"] > 1.0 else "met"
    lost = "MISSED" if r["stored"] < r["offered"] else "met"
    print(
        f"{name}: {r['stored_per_s']:.0f} entries stored/s ({r['stored']:.0f} of "
        f"{r['offered']:.0f} offered: {lost}; {r['failures']:.0f} failed rounds, "
        f"{r['skipped']:.0f} rounds late: their kiosk's last one was not done)"
    )
    print(
        f"  upload p50 {r['up50'] * 1000:.0f} ms  p99 {r['up99'] * 1000:.0f} ms "
        f"(goal under 1000 ms: {late})"
    )
    print(f"  reference p50 {r['ref50'] * 1000:.0f} ms  p99 {r['ref99'] * 1000:.0f} ms")
    print(f"  claims {r['claims_per_s']:.1f}/s  p50 {r['claim50'] * 1000:.0f} ms", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kiosks", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=4, help="server processes to compare with 1")
    ap.add_argument("--seconds", type=float, default=30.0, help="steady state per run")
    ap.add_argument("--interval", type=float, default=10.0, help="each kiosk's sync interval")
    ap.add_argument("--threads", type=int, default=64, help="client threads")
    ap.add_argument("--plain", action="store_true",
                    help="kiosks without a chain secret (plain SHA-256 chains)")
    args = ap.parse_args()
    cluster = PgCluster(durable=True).start()
    try:
        print(
            f"{args.kiosks} kiosks, a round each every {args.interval:.0f} s "
            f"(5 entries, reference, a claim every 10th), {args.seconds:.0f} s per run, "
            f"{'plain' if args.plain else 'keyed'} chains, "
            f"PostgreSQL (fsync on)",
            flush=True,
        )
        one = run(cluster.new_database(), 1, args.kiosks, args.seconds, args.interval,
                  args.threads, not args.plain)  # fmt: skip
        report("1 server process", one)
        many = run(cluster.new_database(), args.workers, args.kiosks, args.seconds,
                   args.interval, args.threads, not args.plain)  # fmt: skip
        report(f"{args.workers} server processes", many)
        print(
            f"scaling: {many['stored_per_s'] / one['stored_per_s']:.2f} x the entries stored/s "
            f"of one process, p99 upload {many['up99'] / one['up99']:.2f} x"
        )
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
