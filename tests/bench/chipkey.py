"""Chip key over the real PC/SC stack: APDUs and milliseconds for a read summary and a top-up
write, median of 50, through pcscd, vsmartcard's vpcd reader and the virtual card; on a key of
layout 2 (with the write counter, as keys are personalised now) and of layout 1.

    .venv/bin/python tests/bench/chipkey.py [--rounds N]

Starts pcscd for the run if none is running (one per machine).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import threading
import time

from drivers.chipkey.profile import ChipKey, Identity
from drivers.chipkey.reader import PcscCard, card_present, list_readers
from drivers.chipkey.sim import VirtualCard
from drivers.chipkey.vpcd import VPCD_READER, VpcdCard
from drivers.errors import TransportError
from kiosk.adapters.key import DEMO_KEYS

READER = VPCD_READER


def vpcd_ready() -> bool:
    try:
        return READER in list_readers()
    except TransportError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--delay-ms", type=float, default=8.0,
                    help="per-APDU delay of a contactless reader, for the second run")  # fmt: skip
    args = ap.parse_args()
    pause = threading.Event()
    proc = None
    if not vpcd_ready():
        proc = subprocess.Popen(
            [shutil.which("pcscd") or "/usr/sbin/pcscd", "-f"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not vpcd_ready():
            if time.monotonic() > deadline:
                raise SystemExit("pcscd with the vpcd reader did not come up")
            pause.wait(0.05)
    try:
        for layout in (2, 1):
            card = VirtualCard(bytes.fromhex("04b0b0b0b0b0b0"))
            ChipKey(card, DEMO_KEYS).personalise(
                Identity("DEMO", "4711", "1ESY1", "electricity", "K-B", "customer", "EUR",
                         layout), upper=10**9,
            )  # fmt: skip
            for i in range(12):  # a key in use: its log full
                ChipKey(card, DEMO_KEYS).credit(f"EARLIER-{i}", 100, 10**9, new=True)
            slot = VpcdCard(card)
            slot.insert()
            deadline = time.monotonic() + 5
            while not card_present(READER):
                if time.monotonic() > deadline:
                    raise SystemExit("the virtual card did not appear in the reader")
                pause.wait(0.05)
            pc = PcscCard(READER)
            try:
                for delay in (0.0, args.delay_ms / 1000) if layout == 2 else (0.0,):
                    slot.apdu_delay = delay
                    n = args.rounds if not delay else max(5, args.rounds // 5)
                    rounds(pc, slot, n, delay, layout)
            finally:
                pc.close()
                slot.remove()
            deadline = time.monotonic() + 5
            while card_present(READER):
                if time.monotonic() > deadline:
                    raise SystemExit("the virtual card did not leave the reader")
                pause.wait(0.05)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)


def rounds(pc: PcscCard, slot: VpcdCard, n: int, delay: float, layout: int) -> None:
    """Insertion as the kiosk does it (the UID, the summary, a new transaction's write in the
    same session); the log, read when credits are owed to the key; and a write in a session of
    its own of a transaction that may be on the key (select, authenticate, the log first)."""
    reads, logs, writes, alone = [], [], [], []
    uid_apdus = read_apdus = log_apdus = write_apdus = alone_apdus = 0
    for i in range(n):
        key = ChipKey(pc, DEMO_KEYS)
        a0 = slot.apdus
        _ = key.uid
        uid_apdus = slot.apdus - a0
        a0, t0 = slot.apdus, time.perf_counter()
        key.read_summary()
        reads.append(time.perf_counter() - t0)
        read_apdus = slot.apdus - a0
        a0, t0 = slot.apdus, time.perf_counter()
        key.credit(f"BENCH-{delay}-{i}", 100, 10**9, new=True)
        writes.append(time.perf_counter() - t0)
        write_apdus = slot.apdus - a0
        key = ChipKey(pc, DEMO_KEYS)
        _ = key.uid
        key.read_summary()
        a0, t0 = slot.apdus, time.perf_counter()
        key.read_log()
        logs.append(time.perf_counter() - t0)
        log_apdus = slot.apdus - a0
        key = ChipKey(pc, DEMO_KEYS)
        _ = key.uid
        a0, t0 = slot.apdus, time.perf_counter()
        key.credit(f"BENCH-{delay}-{i}-alone", 100, 10**9)
        alone.append(time.perf_counter() - t0)
        alone_apdus = slot.apdus - a0

    def ms(values: list[float]) -> str:
        return f"median {statistics.median(values) * 1000:7.2f} ms"

    def over(apdus: int, most: int) -> str:
        return f" (goal <= {most}{'' if apdus <= most else ': MISSED'})"

    print(f"chip key of layout {layout} over pcscd + vpcd + virtual DESFire card, {n} rounds, "
          f"{delay * 1000:.0f} ms per APDU on top")  # fmt: skip
    print(f"  the UID (GetVersion):       {uid_apdus:2d} APDUs, once per insertion")
    summary_goal = over(read_apdus, 8) if layout == 2 else " (a key without the write counter)"
    print(f"  read summary:               {read_apdus:2d} APDUs, {ms(reads)}" + summary_goal)
    write_goal = over(write_apdus, 12)
    if delay:
        write_goal += f"; goal under 120 ms{'' if statistics.median(writes) < 0.12 else ': MISSED'}"
    print(f"  top-up write after it:      {write_apdus:2d} APDUs, {ms(writes)}" + write_goal)
    print(f"  the log, when owed credits: {log_apdus:2d} APDUs, {ms(logs)} "
          "(ten records, after the summary)")  # fmt: skip
    print(f"  a write on its own:         {alone_apdus:2d} APDUs, {ms(alone)} "
          "(select, authenticate, the log and credit read first)")  # fmt: skip


if __name__ == "__main__":
    main()
