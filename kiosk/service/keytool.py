"""`kiosk key ...` for the utility office and installers, and `kiosk devices probe reader`.

A key is either a virtual key (a file under the data directory's keys/, used in-process) or a
card in a PC/SC reader (`--reader PATTERN`). Master keys come from the site's secrets file
([chipkey] master/read/credit/debit as hex); without one, the demo keys, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from drivers.chipkey.desfire import Card
from drivers.chipkey.profile import ChipKey, Identity, KeySet, MeterReport, Summary
from drivers.chipkey.reader import PcscCard, card_present, list_readers, pick_reader
from drivers.chipkey.sim import VirtualCard
from drivers.errors import TransportError
from kiosk.adapters.key import DEMO_KEYS
from kiosk.domain.errors import ConfigError
from kiosk.domain.money import Money
from kiosk.domain.site import Site

log = logging.getLogger(__name__)

DEMO_PRICE_PER_KWH = 35  # minor units, for the demo meter only


def load_keys(site: Site, warn: Callable[[str], None]) -> KeySet:
    path = site.secrets.file
    if path is None:
        warn("no secrets file configured: using the DEMO master keys (never for real keys)")
        return DEMO_KEYS
    try:
        data = tomllib.loads(Path(path).read_text("utf-8"))["chipkey"]
        return KeySet(*(bytes.fromhex(data[k]) for k in ("master", "read", "credit", "debit")))
    except (OSError, KeyError, ValueError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(
            path, [f"chipkey: master, read, credit and debit keys (hex): {err}"]
        ) from None


def virtual_path(data_dir: Path, serial: str) -> Path:
    return data_dir / "keys" / f"{serial}.json"


def virtual_uid(serial: str) -> bytes:
    """A stable 7-byte UID for a virtual key (NXP-style, first byte 04)."""
    return b"\x04" + hashlib.sha256(serial.encode()).digest()[:6]


@contextmanager
def open_card(
    data_dir: Path, serial: str | None, reader: str | None, create: bool = False
) -> Iterator[Card]:
    if reader is not None:
        card = PcscCard(pick_reader(reader))
        try:
            yield card
        finally:
            card.close()
        return
    if serial is None:
        raise ValueError("name a virtual key with --serial, or a reader with --reader")
    path = virtual_path(data_dir, serial)
    if not create and not path.exists():
        raise FileNotFoundError(f"no virtual key {serial} ({path})")
    path.parent.mkdir(parents=True, exist_ok=True)
    yield VirtualCard(virtual_uid(serial), path)


def summary_dict(s: Summary, currency_exp: int = 2) -> dict[str, Any]:
    i = s.identity
    return {
        "uid": s.uid.hex(),
        "serial": i.serial,
        "utility": i.utility,
        "contract_account": i.contract_account,
        "meter_number": i.meter_number,
        "commodity": i.commodity,
        "role": i.role,
        "currency": i.currency,
        "credit": s.credit,
        "meter": {
            "reading_wh": s.meter.reading,
            "at": s.meter.at,
            "emergency_in_use": s.meter.emergency_in_use,
            "debt": s.meter.debt,
        },
        "layout": i.version,
        "written": s.written,
        "top_ups": [
            {"txid": t.txid, "amount": t.amount, "at": t.at} for t in s.log or () if t.txid
        ],
    }


def print_summary(d: dict[str, Any], out: TextIO, as_json: bool) -> None:
    if as_json:
        out.write(json.dumps(d) + "\n")
        return
    cur = d["currency"]
    out.write(f"key {d['serial']} ({d['role']}), UID {d['uid']}, {d['utility']}\n")
    out.write(
        f"contract account {d['contract_account']}, meter {d['meter_number']} ({d['commodity']})\n"
    )
    out.write(f"credit on key: {Money(d['credit'], cur)}\n")
    out.write(f"layout {d['layout']}, {d['written']} credits written to it\n")
    m = d["meter"]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(m["at"])) if m["at"] else "never"
    out.write(
        f"meter report: {m['reading_wh'] / 1000:.1f} kWh at {when}"
        + (
            f", emergency credit in use, debt {Money(m['debt'], cur)}"
            if m["emergency_in_use"]
            else ""
        )
        + "\n"
    )
    for t in d["top_ups"]:
        out.write(f"  top-up {Money(t['amount'], cur)}  {t['txid']}\n")


def personalise(
    card: Card, keys: KeySet, identity: Identity, upper: int, initial: int
) -> dict[str, Any]:
    key = ChipKey(card, keys)
    key.personalise(identity, upper=upper, initial=initial)
    return summary_dict(key.read_all())


def upgrade(card: Card, keys: KeySet) -> dict[str, Any]:
    """A key of layout 1 given the write counter (the office's master key); its summary after,
    with `upgraded`: False if it had the counter already (nothing was changed)."""
    key = ChipKey(card, keys)
    done = key.upgrade()
    return {**summary_dict(key.read_all()), "upgraded": done}


def consume(card: Card, keys: KeySet, amount: int) -> dict[str, Any]:
    """A simple prepayment meter: take `amount` of credit, record a reading; when the credit
    runs out, the rest is emergency credit, recorded as debt in the meter report."""
    key = ChipKey(card, keys)
    before = key.read_summary()
    used_wh = amount * 1000 // DEMO_PRICE_PER_KWH
    short = max(0, amount - before.credit)
    report = MeterReport(
        reading=before.meter.reading + used_wh,
        at=int(time.time()),
        emergency_in_use=short > 0 or before.meter.emergency_in_use,
        debt=before.meter.debt + short,
    )
    left = ChipKey(card, keys).debit(amount, report)
    return {
        "credit": left,
        "taken": min(amount, before.credit),
        "emergency_debt": report.debt,
        "reading_wh": report.reading,
    }


def probe_readers(as_json: bool, out: TextIO) -> None:
    rows = []
    for name in list_readers():
        atr = None
        try:
            card = PcscCard(name)
            atr = card.atr.hex()
            card.close()
        except TransportError as err:  # an empty reader is a normal answer here
            log.debug("%s: %s", name, err)
        rows.append({"reader": name, "atr": atr})
    if as_json:
        out.write(json.dumps({"readers": rows}) + "\n")
        return
    for r in rows:
        out.write(f"{r['reader']}: {'card ATR ' + r['atr'] if r['atr'] else 'no card'}\n")


def record_key(trace: Any, keys: KeySet, reader: str | None = None) -> Summary:
    """The key in the reader read as a kiosk reads it at insertion (GetVersion, the summary),
    its APDUs into `trace`: the first reader with a card, or the one matching `reader`."""
    name = pick_reader(reader) if reader else next(
        (r for r in list_readers() if card_present(r)), None)  # fmt: skip
    if name is None:
        raise TransportError("no reader has a key in it")
    card = PcscCard(name)
    card.trace = trace
    trace.note(f"reader {name}, ATR {card.atr.hex(' ')}")
    try:
        return ChipKey(card, keys).read_summary()
    finally:
        card.close()
