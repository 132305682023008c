"""Installer tools for the acceptors (ccTalk coins and notes, eSSP note validators): probe
identity and channels; watch events as JSON."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from drivers.cctalk.codec import RouteCode
from drivers.cctalk.devices import (
    AcceptorIncident,
    BillEscrowed,
    BillReturned,
    BillStacked,
    CoinAcceptor,
    CoinCredited,
    DeviceReset,
    EventsLost,
    NoteValidator,
    UnknownCredit,
    _Acceptor,
)
from drivers.cctalk.transport import Bus
from drivers.essp.device import Link
from drivers.essp.device import NoteValidator as EsspValidator
from drivers.zvt.apdu import Answer
from drivers.zvt.client import Result, ZvtClient
from drivers.zvt.transport import open_link
from kiosk.domain.money import CURRENCY_EXPONENT, Money
from kiosk.domain.site import DENOMINATIONS

Acceptor = _Acceptor | EsspValidator


def open_device(
    kind: str, port: str, currency: str, address: int | None, crc16: bool,
    protocol: str = "cctalk", encryption: bool = False,
) -> tuple[Acceptor, Callable[[], None]]:  # fmt: skip
    """The driver on `port` (a real port: the command line starts a simulator for `sim`);
    returns it and a closer."""
    legal = DENOMINATIONS[currency]
    if protocol == "essp":
        if kind != "notes":
            raise ValueError("eSSP is spoken by note validators only")
        link = Link.open(port)
        return EsspValidator(link, currency, legal["notes"], encrypt=encryption), link.close
    bus = Bus.open(port, crc16_mode=crc16)
    dev: _Acceptor
    if kind == "coin":
        dev = CoinAcceptor(bus, currency, legal["coins"], address)
    else:
        dev = NoteValidator(bus, currency, legal["notes"], address)

    def close() -> None:
        bus.close()

    return dev, close


def probe(dev: Acceptor) -> dict[str, Any]:
    """Identity, channel table and self-check of an acceptor."""
    dev.initialise()
    code, text = dev.self_check()
    assert dev.identity is not None
    return {
        "device": dev.name,
        "address": dev.link.address if isinstance(dev, EsspValidator) else dev.address,
        "protocol": "essp" if isinstance(dev, EsspValidator) else "cctalk",
        "identity": dev.identity.as_dict(),
        "self_check": {"code": code, "text": text},
        "channels": _channels(dev),
        "currency": dev.currency,
    }


def _channels(dev: Acceptor) -> list[dict[str, Any]]:
    if isinstance(dev, EsspValidator):
        assert dev.setup is not None
        return [{"channel": i + 1, "id": f"{dev.setup.country} {v // 100}" if v else "", "value": v,
                 "usable": bool(v) and v in dev.accepted}
                for i, v in enumerate(dev.setup.values)]  # fmt: skip
    return [
        {"channel": c.number, "id": c.id_text, "value": c.value, "usable": c.usable}
        for c in sorted(dev.channels.values(), key=lambda c: c.number)
    ]


def _most(dev: Acceptor) -> int | None:
    """The value of its biggest channel: enabling up to it enables them all."""
    values = [c["value"] for c in _channels(dev) if c["usable"]]
    return max(values) if values else None


def print_probe(info: dict[str, Any], out: TextIO, as_json: bool) -> None:
    if as_json:
        out.write(json.dumps(info) + "\n")
        return
    ident = info["identity"]
    out.write(
        f"{info['device']} ({info.get('protocol', 'cctalk')}) at address {info['address']}: "
        f"{ident['category']}, "
        f"{ident['manufacturer']} {ident['product_code']}, serial {ident['serial_number']}, "
        f"software {ident['software_revision']}\n"
    )
    out.write(f"self-check: {info['self_check']['text']} ({info['self_check']['code']})\n")
    for c in info["channels"]:
        value = str(Money(c["value"], info["currency"])) if c["usable"] else "not used"
        out.write(f"  channel {c['channel']:>2}  {c['id']:<8} {value}\n")


def event_record(ev: object) -> dict[str, Any]:
    """The JSON line `kiosk devices watch` prints for a driver event."""
    match ev:
        case CoinCredited():
            return {
                "event": "coin",
                "value": ev.value,
                "currency": ev.currency,
                "channel": ev.channel,
            }
        case BillEscrowed():
            return {
                "event": "note_escrow",
                "value": ev.value,
                "currency": ev.currency,
                "channel": ev.channel,
            }
        case BillStacked():
            return {
                "event": "note_stacked",
                "value": ev.value,
                "currency": ev.currency,
                "channel": ev.channel,
            }
        case BillReturned():
            return {
                "event": "note_returned",
                "value": ev.value,
                "currency": ev.currency,
                "channel": ev.channel,
            }
        case AcceptorIncident():
            return {"event": "error", "code": ev.code, "text": ev.text, "kind": ev.kind}
        case DeviceReset():
            return {"event": "reset", "text": "the device restarted"}
        case EventsLost():
            return {"event": "events_lost", "code": ev.lost, "text": f"{ev.lost} event(s) lost"}
        case UnknownCredit():
            return {"event": "error", "channel": ev.channel, "text": "credit on unknown channel"}
    raise TypeError(f"unknown driver event {ev!r}")


def watch(
    dev: Acceptor,
    out: TextIO,
    seconds: float,
    period: float = 0.1,
    stop: threading.Event | None = None,
) -> int:
    """Enable every channel, poll, print one JSON object per event, stack escrowed notes."""
    dev.initialise()
    dev.enable(_most(dev))
    out.write(json.dumps({"event": "ready", "device": dev.name}) + "\n")
    out.flush()
    count = 0
    stop = stop or threading.Event()
    deadline = time.monotonic() + seconds
    next_poll = time.monotonic()
    while time.monotonic() < deadline:
        for ev in dev.poll():
            out.write(json.dumps(event_record(ev)) + "\n")
            out.flush()
            count += 1
            if isinstance(ev, BillEscrowed) and isinstance(dev, NoteValidator | EsspValidator):
                dev.route(RouteCode.STACK)
        next_poll += period
        if stop.wait(max(0.0, next_poll - time.monotonic())):
            break
    dev.enable(None)
    return count


# ---------------------------------------------------------------- card terminal (ZVT)


def open_terminal(port: str) -> tuple[ZvtClient, Callable[[], None]]:
    """A ZVT client on `port`; and a closer."""
    client = ZvtClient(open_link(port))
    return client, client.link.close


def probe_terminal(client: ZvtClient) -> dict[str, Any]:
    """Status enquiry (05 01) and diagnosis (06 70)."""
    code, status_text, version = client.status_enquiry()
    diag = client.diagnosis()
    return {
        "device": "terminal",
        "status": {"code": code, "text": status_text},
        "software": version,
        "diagnosis": {"outcome": str(diag.outcome), "text": diag.text},
    }


def _amount(minor: int, currency: str | None) -> str:
    """An amount the terminal reported: as money when it named a currency we know."""
    if currency in CURRENCY_EXPONENT:
        return str(Money(minor, str(currency)))
    return f"{minor} minor units ({currency or 'no currency'})"


def _result(r: Result) -> dict[str, Any]:
    info = r.status
    return {
        "outcome": str(r.outcome),
        "text": r.text,
        "result_code": r.result_code,
        "amount": info.amount if info else None,
        "currency": info.currency if info else None,
        "receipt_no": info.receipt_number if info else None,
        "trace": info.trace_number if info else None,
        "card": info.card_name if info else None,
        "pan": info.pan if info else None,
        "receipts": r.receipts,
    }


def test_payment(client: ZvtClient, amount: int) -> dict[str, Any]:
    """A real payment of `amount` minor units, then its reversal by receipt number."""
    reg = client.register()
    if not reg.ok:
        return {"registration": _result(reg)}
    pay = client.authorise(amount, decide=lambda _info: Answer.OK)
    out: dict[str, Any] = {"payment": _result(pay)}
    if pay.ok and pay.status is not None and pay.status.receipt_number is not None:
        out["reversal"] = _result(client.reversal(pay.status.receipt_number))
    return out


def print_terminal(info: dict[str, Any], out: TextIO, as_json: bool) -> None:
    if as_json:
        out.write(json.dumps(info) + "\n")
        return
    for key, value in info.items():
        if isinstance(value, dict) and "outcome" in value:
            line = f"{key}: {value['outcome']} ({value['text']})"
            if value.get("amount") is not None:
                line += (
                    f", {_amount(value['amount'], value['currency'])}, "
                    f"receipt {value['receipt_no']},"
                    f" {value['card']} {value['pan']}"
                )
            out.write(line + "\n")
        elif isinstance(value, dict):
            out.write(f"{key}: " + ", ".join(f"{k} {v}" for k, v in value.items()) + "\n")
        else:
            out.write(f"{key}: {value}\n")


def probe_printer(where: str, test_page: bool, port: str | None = None) -> dict[str, Any]:
    """The printer's real-time status (online, paper), and a test page if asked for and
    possible. `where`: the port to open; `port`: as the installer named it."""
    from drivers.printer.device import PrinterUnavailable, ReceiptPrinter
    from kiosk.adapters.printer import test_page as page
    from kiosk.documents.receipt import escpos_job

    printer = ReceiptPrinter(where)
    try:
        status = printer.status()
        info: dict[str, Any] = {
            "device": "printer",
            "port": port or where,
            "transport": printer.identity.transport,
            "status": str(status),
            "printable": status.printable,
        }
        if test_page:
            try:
                printer.print_job(escpos_job(page()))
                info["test_page"] = "printed"
            except PrinterUnavailable as err:
                info["test_page"] = f"not printed: {err}"
        return info
    finally:
        printer.close()


def print_printer(info: dict[str, Any], out: TextIO, as_json: bool) -> None:
    if as_json:
        out.write(json.dumps(info) + "\n")
        return
    out.write(f"printer on {info['port']} ({info['transport']}): {info['status']}\n")
    if "test_page" in info:
        out.write(f"test page: {info['test_page']}\n")
