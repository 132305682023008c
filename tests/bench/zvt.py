"""Software overhead of one ZVT authorisation round against the terminal simulator.

An approved authorisation with receipts (06 01 ... 04 FF x3, 04 0F, issue-of-goods answer,
06 D3 x2, 06 0F), over the serial framing on a pty and over TCP on loopback. The simulator
adds no scripted delays here and the pty does not pace bytes, so the measured time is the
software of both sides; the 9600-baud 8N2 wire time those bytes would take on a real line is
printed beside it (overhead = measured; on a real line: wire time + overhead).

    .venv/bin/python tests/bench/zvt.py [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import time

from drivers.zvt.apdu import Answer
from drivers.zvt.client import Verdict, ZvtClient
from drivers.zvt.sim import TerminalSim
from drivers.zvt.transport import SerialLink, open_link

BYTE_TIME_8N2 = 11 / 9600


def run(mode: str, rounds: int) -> None:
    with TerminalSim(mode) as sim:
        client = ZvtClient(open_link(sim.port))
        assert client.register().ok
        times = []
        link = client.link
        wire_bytes = 0
        for _ in range(rounds):
            before = sum(link.bytes.values()) if isinstance(link, SerialLink) else 0
            t0 = time.perf_counter()
            r = client.authorise(2000, decide=lambda _i: Answer.OK)
            times.append(time.perf_counter() - t0)
            assert r.outcome == Verdict.APPROVED, r.text
            if isinstance(link, SerialLink):
                wire_bytes = sum(link.bytes.values()) - before
        client.link.close()
    med = statistics.median(times)
    p90 = sorted(times)[int(0.9 * len(times))]
    line = f"  {mode:<6} median {med * 1000:7.2f} ms  p90 {p90 * 1000:7.2f} ms"
    if wire_bytes:
        wire = wire_bytes * BYTE_TIME_8N2
        line += (
            f"   {wire_bytes} bytes on the line = {wire * 1000:.0f} ms at 9600 8N2;"
            f" overhead is {med / wire * 100:.1f} % of that"
        )
    print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50)
    args = ap.parse_args()
    print(f"approved authorisation with receipts, {args.rounds} rounds, simulator delays 0")
    run("serial", args.rounds)
    run("tcp", args.rounds)


if __name__ == "__main__":
    main()
