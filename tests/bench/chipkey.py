"""Chip key over the real PC/SC stack: APDUs and milliseconds for a read summary and a top-up
write, median of 50, through pcscd, vsmartcard's vpcd reader and the virtual card.

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
from drivers.chipkey.vpcd import VpcdCard
from drivers.errors import TransportError
from kiosk.adapters.key import DEMO_KEYS

READER = "Virtual PCD 00 00"


def vpcd_ready() -> bool:
    try:
        return READER in list_readers()
    except TransportError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50)
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
    card = VirtualCard(bytes.fromhex("04b0b0b0b0b0b0"))
    ChipKey(card, DEMO_KEYS).personalise(
        Identity("DEMO", "4711", "1ESY1", "electricity", "K-B", "customer", "EUR"), upper=10**9
    )
    slot = VpcdCard(card)
    slot.insert()
    deadline = time.monotonic() + 5
    while not card_present(READER):
        if time.monotonic() > deadline:
            raise SystemExit("the virtual card did not appear in the reader")
        pause.wait(0.05)
    pc = PcscCard(READER)
    reads, writes = [], []
    read_apdus = write_apdus = 0
    try:
        for i in range(args.rounds):
            key = ChipKey(pc, DEMO_KEYS)
            _ = key.uid
            a0 = slot.apdus
            t0 = time.perf_counter()
            key.read_summary()
            reads.append(time.perf_counter() - t0)
            read_apdus = slot.apdus - a0
            a0 = slot.apdus
            t0 = time.perf_counter()
            key.credit(f"BENCH-{i}", 100, 10**9)
            writes.append(time.perf_counter() - t0)
            write_apdus = slot.apdus - a0
    finally:
        pc.close()
        slot.remove()
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    print(f"chip key over pcscd + vpcd + virtual DESFire card, {args.rounds} rounds")
    print(
        f"  read summary:  {read_apdus:2d} APDUs, median {statistics.median(reads) * 1000:6.2f} ms"
    )
    print(
        f"  top-up write:  {write_apdus:2d} APDUs, "
        f"median {statistics.median(writes) * 1000:6.2f} ms"
        " (authenticate, Credit, WriteRecord, CommitTransaction, read-back)"
    )


if __name__ == "__main__":
    main()
