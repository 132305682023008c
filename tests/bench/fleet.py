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
        self.ready: list[list[dict[str, object]]] = []  # batches made before the clock runs

    def prepare(self, rounds: int) -> None:
        """Its next `rounds` top-ups, hashed now: the clients only send while the clock runs
        (hashing the chains on the two cores the server uses would be counted against it)."""
        self.ready += [self.top_up() for _ in range(rounds)]

    def next_batch(self) -> list[dict[str, object]]:
        return self.ready.pop(0) if self.ready else self.top_up()

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
    """The server as deployed (its log at info: one line per request), output dropped."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "sync.admin", "--db", db, "serve", "--port",
                             str(port), "--workers", str(workers), "--log-level", "info"],
                            cwd=ROOT, stdout=subprocess.DEVNULL)  # fmt: skip
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
    for k in fleet:
        k.prepare(int(seconds / interval) + 2)
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
                batch = k.next_batch()
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


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process and every process under it (the workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    kids: dict[int, list[int]] = {}
    own: dict[int, float] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        kids.setdefault(int(fields[1]), []).append(int(d.name))
        own[int(d.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += own.get(p, 0.0)
        todo += kids.get(p, [])
    return total


def costs(db: str, n: int, threads: int, keyed: bool, rounds: int) -> dict[str, float]:
    """The server's CPU per request of each kind, one kind at a time from `threads` clients
    (its process's CPU over the phase, divided by the requests): an upload of one top-up's
    five entries, a reference request for what changed, a claim. Then its saturation: every
    client sends prepared uploads back to back, and one process stores what it can."""
    fleet = [Kiosk(i, keyed) for i in range(n)]
    prepare(db, fleet)
    for k in fleet:
        k.prepare(rounds)
    proc, url = serve(db, 1)
    out: dict[str, float] = {}
    try:
        version = int(requests.get(f"{url}/v1/reference", timeout=60, headers={
            "Authorization": f"Bearer {fleet[0].token}"}).json()["version"])  # fmt: skip

        def phase(name: str, send: object, count: int) -> None:
            jobs: queue.Queue[int | None] = queue.Queue()
            for i in range(count):
                jobs.put(i)
            for _ in range(threads):
                jobs.put(None)
            failed = [0]

            def worker() -> None:
                s = requests.Session()
                while (i := jobs.get()) is not None:
                    k = fleet[i % n]
                    if not send(s, k):  # type: ignore[operator]
                        failed[0] += 1

            pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
            c0, t0 = cpu_seconds(proc.pid), time.perf_counter()
            for w in pool:
                w.start()
            for w in pool:
                w.join(600)
            took, cpu = time.perf_counter() - t0, cpu_seconds(proc.pid) - c0
            out[f"{name}_cpu_ms"] = cpu / count * 1000
            out[f"{name}_per_s"] = count / took
            out[f"{name}_failed"] = failed[0]

        def upload(s: requests.Session, k: Kiosk) -> bool:
            with k_lock(k):
                batch = k.next_batch()
                r = s.post(f"{url}/v1/entries", json={"kiosk_id": k.id, "entries": batch},
                           headers={"Authorization": f"Bearer {k.token}"}, timeout=60)
                return r.ok and r.json().get("acked") == batch[-1]["seq"]

        def reference(s: requests.Session, k: Kiosk) -> bool:
            r = s.get(f"{url}/v1/reference?since={version}", timeout=60,
                      headers={"Authorization": f"Bearer {k.token}"})  # fmt: skip
            return r.status_code == 200

        def claim(s: requests.Session, k: Kiosk) -> bool:
            key = f"K-{int(k.id[1:]) * 7 % KEYS:06d}"
            r = s.post(f"{url}/v1/credits/claim", json={"key": key}, timeout=60,
                       headers={"Authorization": f"Bearer {k.token}"})  # fmt: skip
            return r.ok

        half = rounds // 2
        phase("upload", upload, n * half)  # one kind at a time: its CPU alone
        phase("reference", reference, n * 2)
        phase("claim", claim, n)
        # saturation: the rest of the prepared uploads, back to back from every client
        phase("saturated", upload, n * (rounds - half))
        out["saturated_entries_per_s"] = out["saturated_per_s"] * 5
    finally:
        proc.terminate()
        proc.wait(15)
    return out


_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def k_lock(k: Kiosk) -> threading.Lock:
    """One upload of a kiosk at a time (its chain is in order)."""
    with _locks_guard:
        return _locks.setdefault(k.id, threading.Lock())


def report_costs(r: dict[str, float]) -> None:
    goal = "MISSED" if r["upload_cpu_ms"] > 5.0 else "met"
    print(f"  server CPU per request: upload (5 entries) {r['upload_cpu_ms']:.2f} ms "
          f"(goal at most 5 ms: {goal}), reference {r['reference_cpu_ms']:.2f} ms, "
          f"claim {r['claim_cpu_ms']:.2f} ms")
    rate = r["saturated_entries_per_s"]
    print(f"  saturation of one process: {r['saturated_per_s']:.0f} uploads/s = {rate:.0f} "
          f"entries/s, at {r['saturated_cpu_ms']:.2f} ms CPU per upload (one core at that cost: "
          f"{5000 / r['saturated_cpu_ms']:.0f} entries/s; goal 1000: "
          f"{'met' if 5000 / r['saturated_cpu_ms'] >= 1000 else 'MISSED'})")
    failed = sum(r[f"{k}_failed"] for k in ("upload", "reference", "claim", "saturated"))
    print(f"  failed requests: {failed:.0f}" + ("  MISSED" if failed else ""), flush=True)


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
    ap.add_argument("--rounds", type=int, default=20,
                    help="prepared uploads per kiosk for the cost and saturation phases")
    ap.add_argument("--costs-only", action="store_true",
                    help="only the CPU per request kind and the saturation")
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
        print("cost per request kind and saturation (one server process):", flush=True)
        report_costs(costs(cluster.new_database(), min(args.kiosks, 200), 16, not args.plain,
                           args.rounds))
        if args.costs_only:
            return
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
