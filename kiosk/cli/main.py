"""The `kiosk` command."""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from kiosk.app.paths import data_dir, journal_path
from kiosk.domain.errors import ChainBroken, ConfigError, JournalError, KioskError
from kiosk.domain.site import Site, load_chain_secret, load_site
from kiosk.ledger.journal import Journal


def _open_journal(args: argparse.Namespace) -> tuple[Journal, Site]:
    site = load_site(args.site)
    path = Path(args.db) if args.db else journal_path(data_dir(args.data_dir), site.kiosk_id)
    if not path.exists():
        raise JournalError(f"no journal at {path}")
    return Journal(path, site.kiosk_id, chain_secret=load_chain_secret(site)), site


def cmd_config_check(args: argparse.Namespace) -> int:
    failed = 0
    for f in args.files:
        try:
            site = load_site(f)
        except ConfigError as err:
            failed += 1
            print(err, file=sys.stderr)
            continue
        methods = " and ".join(
            m for m, on in (("cash", site.cash_enabled), ("card", site.card_enabled)) if on
        )
        print(
            f"{f}: ok ({site.id}, {site.kiosk_id}, {site.currency}, {methods}, "
            f"{site.min_topup}..{site.max_topup})"
        )
    return 1 if failed else 0


def cmd_journal_show(args: argparse.Namespace) -> int:
    from kiosk.documents.report import print_entries, print_transactions

    journal, site = _open_journal(args)
    if args.entries:
        print_entries(journal, site, sys.stdout, args.limit)
    else:
        print_transactions(journal, site, sys.stdout)
    return 0


def cmd_journal_verify(args: argparse.Namespace) -> int:
    from kiosk.ledger.archive import archive_dir, verify_all

    journal, _site = _open_journal(args)
    try:
        if args.live:
            n = journal.verify()
            print(f"journal verify: ok, {n} live entries chained ({journal.path})")
            return 0
        v = verify_all(journal)
    except ChainBroken as err:
        print(f"journal verify: FAILED at {err} ({journal.path})", file=sys.stderr)
        return 1
    anchored = (f"; head office's hash of entry {v.anchor[0]} found at its place" if v.anchor
                else "; no hash from head office to anchor it yet")  # fmt: skip
    print(f"journal verify: ok, {v.archived + v.live} entries chained from entry {v.first}: "
          f"{v.archived} in {v.segments} archive segments ({archive_dir(journal)}), {v.live} "
          f"live ({journal.path}){anchored}")  # fmt: skip
    return 0


def cmd_journal_housekeep(args: argparse.Namespace) -> int:
    from kiosk.domain.clock import utc_now
    from kiosk.ledger.archive import housekeep, policy_of

    journal, site = _open_journal(args)
    r = housekeep(journal, utc_now(), policy_of(**site.journal.model_dump()), vacuum=True)
    print(f"journal housekeeping: {r.archived} entries archived in {len(r.segments)} segments"
          f"{f', {r.finished} of an interrupted run' if r.finished else ''}, "
          f"{len(r.deleted)} segments deleted after their retention; journal "
          f"{r.bytes_before} -> {r.bytes_after} bytes")  # fmt: skip
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    import os

    from kiosk.adapters.head_office import LAST_ERROR, LAST_SUCCESS, REF_ETAG, WATERMARK, Syncer
    from kiosk.domain.clock import utc_now
    from sync.wire.client import SyncClient

    journal, site = _open_journal(args)
    if args.sync_command == "status":
        acked = int(journal.get_meta(WATERMARK) or 0)
        last = journal.last_seq()
        print(
            f"journal {last} entries; head office has {acked}; backlog {last - acked}; "
            f"reference version {journal.get_meta(REF_ETAG) or 'none'}"
        )
        success = journal.get_meta(LAST_SUCCESS)
        when = (
            datetime.fromisoformat(success).astimezone(site.hours.tz).strftime("%Y-%m-%d %H:%M:%S")
            if success
            else "never"
        )
        print(f"last success: {when}; last error: {journal.get_meta(LAST_ERROR) or 'none'}")
        return 0
    url = args.url or site.head_office.url
    if not url:
        print("kiosk: no head office configured ([head_office] url, or --url)", file=sys.stderr)
        return 2
    token = os.environ.get(site.secrets.token_env)
    if not token:
        print(
            f"kiosk: the head-office token is not set (environment variable "
            f"{site.secrets.token_env})",
            file=sys.stderr,
        )
        return 2
    client = SyncClient(url, token, site.kiosk_id, verify=site.head_office.ca_file or True)
    status = Syncer(journal, client).round(utc_now())
    print(
        f"head office has {status.acked} entries; backlog {status.backlog}; "
        f"reference version {status.reference_version or 'unchanged'}"
    )
    if status.last_error:
        print(f"kiosk: sync failed: {status.last_error}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from kiosk.sim.demo import run_demo

    site = load_site(args.site)
    path = journal_path(data_dir(args.data_dir), site.kiosk_id)
    return run_demo(site, path, sys.stdout)


def _read_pin(prompt: str) -> str:
    import getpass

    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline().strip()  # installers' scripts pipe it in


def cmd_diag(args: argparse.Namespace) -> int:
    from kiosk.domain.clock import utc_now
    from kiosk.service.diag import (
        ExportRefused,
        PinGuard,
        PinRefused,
        audit,
        cash_box,
        config_lines,
        empty_cash_box,
        export_journal,
        hash_pin,
        last_transactions,
        load_pin_hash,
    )

    if args.diag_command == "pin-hash":
        pin = _read_pin("new technician PIN: ")
        if sys.stdin.isatty() and _read_pin("again: ") != pin:
            print("kiosk: the two PINs differ", file=sys.stderr)
            return 2
        try:
            print(f'[technician]\npin_hash = "{hash_pin(pin)}"')
        except ValueError as err:
            print(f"kiosk: {err}", file=sys.stderr)
            return 2
        return 0
    if args.diag_command in ("devices", "selftest", "eod", "reprint"):
        return _diag_with_devices(args)
    journal, site = _open_journal(args)
    guard = PinGuard(
        journal, load_pin_hash(site, lambda t: print(f"warning: {t}", file=sys.stderr))
    )
    try:
        guard.enter(_read_pin("technician PIN: "), args.who, utc_now())
    except PinRefused as err:
        until = f" (until {err.until.astimezone(site.hours.tz):%H:%M:%S})" if err.until else ""
        print(f"kiosk: {err}{until}", file=sys.stderr)
        return 1
    now = utc_now()
    if args.diag_command == "cashbox":
        box = cash_box(journal, site.currency)
        audit(journal, now, "cashbox_viewed", args.who, total=box.total.minor)
        since = box.since.astimezone(site.hours.tz).strftime("%d.%m.%Y %H:%M") if box.since else "-"
        print(f"cash box of {site.kiosk_id}, since the last emptying ({since}):")
        print("\n".join(box.lines()))
    elif args.diag_command == "empty":
        if not args.confirm:
            print(
                "kiosk: emptying restarts the counters: add --confirm once the box is out",
                file=sys.stderr,
            )
            return 2
        print("\n".join(empty_cash_box(journal, site, args.who, now)))
    elif args.diag_command == "export":
        try:
            jpath, cpath = export_journal(journal, Path(args.folder), args.who, now)
        except ExportRefused as err:
            print(f"kiosk: nothing exported: {err}", file=sys.stderr)
            return 2
        print(f"journal verified and written: {jpath} and {cpath}")
    elif args.diag_command == "config":
        audit(journal, now, "config_viewed", args.who)
        print("\n".join(config_lines(site)))
    elif args.diag_command == "transactions":
        audit(journal, now, "transactions_viewed", args.who)
        for e in last_transactions(journal):
            print(
                f"{e.ts.astimezone(site.hours.tz):%Y-%m-%d %H:%M} {e.txid} {e.data.get('outcome')}"
            )
    return 0


def _diag_with_devices(args: argparse.Namespace) -> int:
    """The device functions of diagnostics from the console: the devices are opened as the
    site file names them (every one its simulator when all ports are "sim"); the automat's
    own program must not be running, it would hold the ports."""
    from contextlib import ExitStack

    from kiosk.app.bootstrap import automat
    from kiosk.documents.receipt import NoSuchTransaction, to_text, transaction_receipt
    from kiosk.domain.clock import utc_now
    from kiosk.service.diag import (
        STOP_THE_AUTOMAT,
        Diagnostics,
        PinGuard,
        PinRefused,
        check_lines,
        load_pin_hash,
        ports_held,
        report_lines,
    )
    from kiosk.sim.simulate import every_port_simulated

    site = load_site(args.site)
    path = Path(args.db) if args.db else journal_path(data_dir(args.data_dir), site.kiosk_id)
    # The PIN first, and a reprint's transaction: a wrong PIN or an unknown transaction is
    # refused before any device is opened (nothing moves, nothing is waited for).
    journal = Journal(path, site.kiosk_id, chain_secret=load_chain_secret(site))
    try:
        guard = PinGuard(
            journal, load_pin_hash(site, lambda t: print(f"warning: {t}", file=sys.stderr))
        )
        try:
            guard.enter(_read_pin("technician PIN: "), args.who, utc_now())
        except PinRefused as err:
            print(f"kiosk: {err}", file=sys.stderr)
            return 1
        if args.diag_command == "reprint":
            try:
                transaction_receipt(journal, site, args.txid)
            except NoSuchTransaction as err:
                print(f"kiosk: {err.args[0]}", file=sys.stderr)
                return 2
    finally:
        journal.close()
    with ExitStack() as stack:
        if every_port_simulated(site):
            from kiosk.sim.rig import simulated_rig

            rig = stack.enter_context(simulated_rig(site, path, sys.stderr, utc_now))
            kiosk = rig.kiosk
            pause = threading.Event()  # never set: a pause between looks
            deadline = time.monotonic() + 20
            while not rig.devices_ready() and time.monotonic() < deadline:
                pause.wait(0.05)  # the simulated devices come up on their own threads
        else:
            held = ports_held(site)
            if held:
                print("kiosk: the automat (or another program) holds the devices' ports:\n  "
                      + "\n  ".join(held) + f"\nstop it first: {STOP_THE_AUTOMAT}",
                      file=sys.stderr)  # fmt: skip
                return 2
            running = stack.enter_context(automat(site, path, utc_now, sys.stderr))
            kiosk = running.kiosk
            pause = threading.Event()  # never set: a pause between looks
            deadline = time.monotonic() + 20
            while running.devices_missing() and time.monotonic() < deadline:
                pause.wait(0.05)  # the devices come up on their own threads: give them time
        d = Diagnostics(kiosk, args.who)
        if args.diag_command == "devices":
            print("\n".join(report_lines(d.overview())))
        elif args.diag_command == "reprint":
            try:
                printed = d.reprint(args.txid)
            except NoSuchTransaction as err:
                print(f"kiosk: {err.args[0]}", file=sys.stderr)
                return 2
            print(f"receipt {args.txid}: " + ("printed" if printed else "NOT printed (printer?)"))
            if printed:
                print(
                    to_text(transaction_receipt(kiosk.journal, site, args.txid, copy=True)), end=""
                )
            return 0 if printed else 1
        elif args.diag_command == "selftest":
            results = d.self_tests()
            print("\n".join(check_lines(results)))
            return 0 if all(t.ok for t in results) else 1
        else:
            try:
                result, printed = d.end_of_day()
            except KioskError as err:
                print(f"kiosk: {err}", file=sys.stderr)
                return 2
            print("\n".join(result.summary()))
            print("\n".join(result.lines))
            return 0 if result.ok else 1
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from kiosk.app.systemd import take_supervision
    from kiosk.cli.run import RunOptions, default_headless, run

    supervision = take_supervision()  # before any process is started that could inherit it
    from kiosk.sim.simulate import every_port_simulated

    site = load_site(args.site)
    if args.screen or args.rotation is not None:
        try:
            site = with_screen(site, args.screen, args.rotation)
        except ValueError as err:
            print(f"kiosk: {err}", file=sys.stderr)
            return 2
    base = data_dir(args.data_dir)
    every_port_sim = every_port_simulated(site)
    opts = RunOptions(
        simulate=args.simulate or every_port_sim,
        headless=args.headless or default_headless(),
        shots=Path(args.screenshots) if args.screenshots else base / "screenshots",
        panel=args.panel,
        control=Path(args.control) if args.control else None,
        supervision=supervision,
    )
    if opts.headless and not opts.simulate:
        print(
            "kiosk: without a display the run is a scripted customer on simulated devices; "
            "add --simulate",
            file=sys.stderr,
        )
        return 2
    from kiosk.app.logs import setup_logging

    print(f"log: {setup_logging(site.logs, base)}")
    return run(site, journal_path(base, site.kiosk_id), opts, sys.stdout)


def cmd_launch(args: argparse.Namespace) -> int:
    from kiosk.cli.launch import launch

    return launch(data_dir(args.data_dir), list(args.run_args))


def with_screen(site: Site, screen: str | None, rotation: int | None) -> Site:
    """The site with its [ui] screen size ("WxH") and rotation given on the command line."""
    import dataclasses
    import re

    update: dict[str, int] = {}
    if screen:
        m = re.fullmatch(r"(\d{3,4})x(\d{3,4})", screen)
        if not m:
            raise ValueError(f"--screen {screen!r}: width x height in pixels, e.g. 1280x1024")
        update = {"width": int(m[1]), "height": int(m[2])}
    if rotation is not None:
        update["rotation"] = rotation
    ui = type(site.ui).model_validate({**site.ui.model_dump(), **update})
    return dataclasses.replace(site, ui=ui)


def cmd_install(args: argparse.Namespace) -> int:
    from kiosk.service.install import InstallRefused, check_inputs, install

    site_file = Path(args.site)
    load_site(site_file)  # a site that does not load is not installed
    root = Path(args.root)
    if root.resolve() == Path("/") and os.geteuid() != 0:
        print("kiosk: installing on this machine needs root (or give --root DIR)", file=sys.stderr)
        return 2
    program = Path(args.program).resolve()
    try:
        check_inputs(site_file, program)
        install(root, site_file, program, program / "config" / "systemd", sys.stdout)
    except InstallRefused as err:
        print(f"kiosk: not installed: {err}", file=sys.stderr)
        return 2
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from kiosk.sim.simulate import run_simulate

    base = data_dir(args.data_dir)
    control = Path(args.control) if args.control else base / "simulate.sock"
    return run_simulate(
        Path(args.site), Path(args.write_site), base, control, sys.stdout,
        head_office=args.head_office,
    )  # fmt: skip


def cmd_terminal(args: argparse.Namespace) -> int:
    from decimal import Decimal, InvalidOperation

    from drivers.errors import DriverError
    from kiosk.service.bringup import open_terminal, print_terminal, probe_terminal, test_payment
    from kiosk.sim.simulate import resolve_port

    amount = 0
    if args.devices_command == "pay":
        try:
            amount = int(Decimal(args.amount).scaleb(2))
            if amount <= 0 or Decimal(args.amount).scaleb(2) != amount:
                raise InvalidOperation
        except InvalidOperation:
            print(f"kiosk: not an amount: {args.amount!r} (e.g. 1.00)", file=sys.stderr)
            return 2
    port, stop_sim = resolve_port("card", args.port)
    try:
        client, close = open_terminal(port)
    except DriverError as err:
        stop_sim()
        print(f"kiosk: {err}", file=sys.stderr)
        return 2
    try:
        if args.devices_command == "probe":
            info = probe_terminal(client)
        else:
            info = test_payment(client, amount)
    except DriverError as err:
        print(f"kiosk: terminal on {args.port}: {err}", file=sys.stderr)
        return 1
    finally:
        close()
        stop_sim()
    print_terminal(info, sys.stdout, args.json)
    outcomes = [v.get("outcome") for v in info.values() if isinstance(v, dict) and "outcome" in v]
    return 0 if all(o == "approved" for o in outcomes) else 1


def cmd_key(args: argparse.Namespace) -> int:
    from drivers.chipkey.profile import ChipKey, Identity
    from drivers.errors import DriverError
    from kiosk.domain.money import Money
    from kiosk.service.keytool import (
        consume,
        load_keys,
        open_card,
        personalise,
        print_summary,
        summary_dict,
        upgrade,
    )

    site = load_site(args.site)
    keys = load_keys(site, lambda msg: print(f"kiosk: warning: {msg}", file=sys.stderr))
    base = data_dir(args.data_dir)
    try:
        if args.key_command == "personalise":
            initial = Money.parse(args.initial, site.currency).minor
            ident = Identity(
                site.utility_id,
                args.account,
                args.meter,
                args.commodity,
                args.serial,
                args.role,
                site.currency,
            )
            with open_card(base, args.serial, args.reader, create=True) as card:
                info = personalise(card, keys, ident, site.key_credit_limit.minor, initial)
            print_summary(info, sys.stdout, args.json)
            if not args.json:
                print("Activation is head office's decision: the key is refused until then.")
        elif args.key_command == "show":
            with open_card(base, args.serial, args.reader) as card:
                print_summary(summary_dict(ChipKey(card, keys).read_all()), sys.stdout, args.json)
        elif args.key_command == "upgrade":
            with open_card(base, args.serial, args.reader) as card:
                info = upgrade(card, keys)
            print_summary(info, sys.stdout, args.json)
            if not args.json:
                print("Upgraded: the key now counts its writes." if info["upgraded"]
                      else "Nothing to do: the key counts its writes already.")  # fmt: skip
        else:
            amount = Money.parse(args.consume, site.currency).minor
            with open_card(base, args.serial, args.reader) as card:
                result = consume(card, keys, amount)
            if args.json:
                print(json.dumps(result))
            else:
                print(
                    f"meter took {site.money(result['taken'])}; credit left "
                    f"{site.money(result['credit'])}; emergency-credit debt "
                    f"{site.money(result['emergency_debt'])}; "
                    f"reading {result['reading_wh'] / 1000:.1f} kWh"
                )
    except (DriverError, FileNotFoundError, ValueError) as err:
        print(f"kiosk: {err}", file=sys.stderr)
        return 1
    return 0


def _open_acceptor(args: argparse.Namespace) -> tuple[Any, Any, Any] | int:
    """The coin acceptor or note validator the bring-up command names (its simulator for
    `--port sim`): (device, its closer, the simulator's stopper), or the exit status after
    saying what is wrong."""
    from drivers.errors import DriverError
    from kiosk.service.bringup import open_device
    from kiosk.sim.simulate import resolve_port

    if args.protocol == "essp" and args.kind != "notes":
        print("kiosk: --protocol essp is for note validators (notes)", file=sys.stderr)
        return 2
    port, stop_sim = resolve_port(args.kind, args.port, currency=args.currency, crc16=args.crc16,
                                  protocol=args.protocol)  # fmt: skip
    try:
        dev, close = open_device(args.kind, port, args.currency, args.address, args.crc16,
                                 args.protocol, args.encryption)  # fmt: skip
    except DriverError as err:
        stop_sim()
        print(f"kiosk: {err}", file=sys.stderr)
        return 2
    return dev, close, stop_sim


def cmd_record(args: argparse.Namespace) -> int:
    """`kiosk devices record`: the device's traffic into a trace file while it is watched
    (acceptors) or read (the chip key in the reader)."""
    from drivers.errors import DriverError
    from drivers.trace import Trace
    from kiosk.service.bringup import watch

    out = Path(args.out)
    if out.exists() and not args.append:
        print(f"kiosk: {out} exists (--append to add to it)", file=sys.stderr)
        return 2
    if args.kind == "reader":
        from kiosk.service.keytool import load_keys, record_key

        keys = load_keys(load_site(args.site),
                         lambda msg: print(f"kiosk: warning: {msg}", file=sys.stderr))  # fmt: skip
        try:
            with Trace.to_file(out, "reader", "pcsc", args.reader or "") as trace:
                summary = record_key(trace, keys, args.reader)
        except (OSError, DriverError) as err:
            print(f"kiosk: reader: {err}", file=sys.stderr)
            return 1
        print(f"the key {summary.uid.hex()} read; its traffic is in {out}")
        return 0
    if not args.port:
        print("kiosk: --port is required for coin, notes, terminal and printer", file=sys.stderr)
        return 2
    if args.kind == "terminal":
        return _record_terminal(args, out)
    if args.kind == "printer":
        return _record_printer(args, out)
    opened = _open_acceptor(args)
    if isinstance(opened, int):
        return opened
    dev, close, stop_sim = opened
    try:
        with Trace.to_file(out, args.kind, args.protocol, args.port) as trace:
            if args.protocol == "essp":
                dev.link.trace = trace  # type: ignore[union-attr]
            else:
                dev.bus.trace = trace  # type: ignore[union-attr]
            print(f"recording {args.kind} on {args.port} into {out} for {args.seconds:g} s",
                  file=sys.stderr)  # fmt: skip
            watch(dev, sys.stdout, args.seconds)
    except (OSError, DriverError) as err:
        print(f"kiosk: {args.kind} on {args.port}: {err}", file=sys.stderr)
        return 1
    finally:
        close()
        stop_sim()
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """`kiosk devices replay TRACE`: a recorded trace to our drivers; the events they make of
    it, one JSON object per line; exit 1 when the driver sent what was not recorded or left
    out what was."""
    from drivers.errors import DriverError
    from drivers.replay import jsonable, replay
    from kiosk.domain.site import DENOMINATIONS
    from kiosk.service.keytool import load_keys

    site = load_site(args.site)
    keys = load_keys(site, lambda msg: print(f"kiosk: warning: {msg}", file=sys.stderr))
    currency = args.currency or site.currency
    try:
        result = replay(Path(args.trace), accepted=DENOMINATIONS[currency], keys=keys,
                        kind=args.kind, currency=currency)  # fmt: skip
    except (OSError, DriverError) as err:
        print(f"kiosk: replay: {err}", file=sys.stderr)
        return 2
    for ev in result.events:
        print(json.dumps(jsonable(ev), default=str))
    for m in result.mismatches:
        print(f"kiosk: replay: the driver {m}", file=sys.stderr)
    if result.skipped:
        print(f"kiosk: replay: the driver left out {result.skipped} recorded command(s)",
              file=sys.stderr)  # fmt: skip
    if not result.complete:
        print("kiosk: replay: the trace was not used up", file=sys.stderr)
    return 0 if result.complete and not result.mismatches and not result.skipped else 1


def _record_printer(args: argparse.Namespace, out: Path) -> int:
    """The printer's status (and with --test-page a page) into a trace."""
    from drivers.errors import DriverError
    from drivers.printer.device import ReceiptPrinter
    from drivers.trace import Trace
    from kiosk.adapters.printer import test_page
    from kiosk.documents.receipt import escpos_job
    from kiosk.sim.simulate import resolve_port

    where, stop_sim = resolve_port("printer", args.port)
    try:
        with Trace.to_file(out, "printer", "escpos", args.port) as trace:
            printer = ReceiptPrinter(where)
            printer.trace = trace
            try:
                status = printer.status()
                if args.test_page and status.printable:
                    printer.print_job(escpos_job(test_page()))
            finally:
                printer.close()
    except (OSError, ValueError, DriverError) as err:
        print(f"kiosk: printer on {args.port}: {err}", file=sys.stderr)
        return 1
    finally:
        stop_sim()
    print(f"printer on {args.port}: {status}; its traffic is in {out}")
    return 0


def _record_terminal(args: argparse.Namespace, out: Path) -> int:
    """The terminal's registration and status enquiry (and with --amount a real payment and
    its reversal) into a trace, its APDUs masked."""
    from drivers.errors import DriverError
    from drivers.trace import Trace
    from drivers.zvt.client import ZvtClient
    from drivers.zvt.transport import TracingLink, mask_zvt, open_link
    from kiosk.domain.money import Money
    from kiosk.service.bringup import test_payment
    from kiosk.sim.simulate import resolve_port

    amount = Money.parse(args.amount, args.currency).minor if args.amount else None
    port, stop_sim = resolve_port("card", args.port)
    try:
        with Trace.to_file(out, "terminal", "zvt", args.port, mask=mask_zvt) as trace:
            client = ZvtClient(TracingLink(open_link(port), trace), currency=args.currency)
            try:
                code, text, version = client.status_enquiry()
                info: dict[str, object] = {"status": text, "code": code, "version": version}
                if amount is not None:
                    info.update(test_payment(client, amount))
            finally:
                client.link.close()
    except (OSError, DriverError) as err:
        print(f"kiosk: terminal on {args.port}: {err}", file=sys.stderr)
        return 1
    finally:
        stop_sim()
    print(json.dumps(info, default=str))
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from drivers.errors import DriverError
    from kiosk.service.bringup import print_probe, probe, watch
    from kiosk.sim.simulate import resolve_port

    if args.kind == "terminal":
        return cmd_terminal(args)
    if args.kind != "reader" and not args.port:
        print("kiosk: --port is required for coin, notes, terminal and printer", file=sys.stderr)
        return 2
    if args.kind == "printer":
        from kiosk.service.bringup import print_printer, probe_printer

        where, stop_sim = resolve_port("printer", args.port)
        try:
            info = probe_printer(where, args.test_page, args.port)
        except (ValueError, DriverError) as err:
            print(f"kiosk: printer on {args.port}: {err}", file=sys.stderr)
            return 2
        finally:
            stop_sim()
        print_printer(info, sys.stdout, args.json)
        return 0 if info["printable"] else 1
    if args.kind == "reader":
        from kiosk.service.keytool import probe_readers

        try:
            probe_readers(args.json, sys.stdout)
        except DriverError as err:
            print(f"kiosk: {err}", file=sys.stderr)
            return 1
        return 0

    opened = _open_acceptor(args)
    if isinstance(opened, int):
        return opened
    dev, close, stop_sim = opened
    try:
        if args.devices_command == "probe":
            print_probe(probe(dev), sys.stdout, args.json)
        else:
            watch(dev, sys.stdout, args.seconds)
    except DriverError as err:
        print(f"kiosk: {args.kind} on {args.port}: {err}", file=sys.stderr)
        return 1
    finally:
        close()
        stop_sim()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kiosk", description="Prepaid energy top-up automat")
    from sync.wire.release import version

    p.add_argument("--version", action="version", version=f"kiosk {version()}")
    p.add_argument("--data-dir", help="state directory (default: $KIOSK_DATA_DIR or per-user)")
    p.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    sub = p.add_subparsers(dest="command", required=True)

    runp = sub.add_parser(
        "run",
        help="the kiosk with its touch screen (simulated devices for the demo site); without a "
        "display: a scripted customer, a screenshot of every screen, the journal",
    )
    runp.add_argument("--site", help="site file (default: the embedded demo site)")
    runp.add_argument("--simulate", action="store_true", help="every device its simulator")
    runp.add_argument("--headless", action="store_true", help="as if there were no display")
    runp.add_argument("--screenshots", help="folder for the headless run's screenshots")
    runp.add_argument("--screen", help="the screen's size in pixels, WxH (instead of [ui])")
    runp.add_argument("--rotation", type=int, choices=[0, 90, 180, 270],
                      help="the panel turned by this many degrees (instead of [ui])")  # fmt: skip
    runp.add_argument("--panel", action="store_true", help="developer: the simulator panel")
    runp.add_argument(
        "--control",
        help="with --panel on a site written by `kiosk simulate`: its control socket",
    )
    runp.set_defaults(func=cmd_run)
    lau = sub.add_parser(
        "launch",
        help="what the unit runs: `kiosk run ARGS` of the release state.json chooses, "
        "switched to a new one and rolled back by itself (README: releases)",
    )
    lau.add_argument(
        "run_args",
        nargs="*",
        metavar="RUN_ARGS",
        help="the arguments of `kiosk run` (everything after `launch`)",
    )
    lau.set_defaults(func=cmd_launch)

    simp = sub.add_parser(
        "simulate",
        help="the site's simulated devices as their own process, on their real ports",
        description="Starts the simulator of every device the site names sim (ccTalk bus and "
        "printer on ptys, ZVT terminal on TCP, keys into pcscd's vpcd reader), writes the site "
        "with their real ports (and the keys' secrets file beside it) and runs until SIGTERM. "
        "Control: insert SERIAL | remove | coin 2.00 | note 20.00 | terminal ANSWER | status, "
        "one per line on the control socket.",
    )
    simp.add_argument("--site", required=True, help="the site file with sim ports")
    simp.add_argument("--write-site", required=True, help="where to write it with real ports")
    simp.add_argument("--control", help="the control socket (default: DATA_DIR/simulate.sock)")
    simp.add_argument("--head-office", help="the head office URL to write into the site")
    simp.set_defaults(func=cmd_simulate)
    inst = sub.add_parser(
        "install",
        help="make this Debian 12 machine boot straight into the automat (units, screen, udev)",
    )
    inst.add_argument("--site", required=True, help="the site file to install")
    inst.add_argument("--root", default="/", help="install under this folder instead of /")
    inst.add_argument("--program", default=str(Path(__file__).resolve().parents[2]),
                      help="where the program is (.venv, config/); default: this one")  # fmt: skip
    inst.set_defaults(func=cmd_install)
    demo = sub.add_parser("demo", help="scripted customers on fake devices; prints the journal")
    demo.add_argument("--site", help="site file (default: the embedded demo site)")
    demo.set_defaults(func=cmd_demo)

    config = sub.add_parser("config", help="site configuration").add_subparsers(
        dest="config_command", required=True
    )
    check = config.add_parser("check", help="validate site files and print what is wrong")
    check.add_argument("files", nargs="+")
    check.set_defaults(func=cmd_config_check)

    journal = sub.add_parser("journal", help="the local money journal").add_subparsers(
        dest="journal_command", required=True
    )
    for name, func, text in (
        ("show", cmd_journal_show, "list transactions"),
        (
            "verify",
            cmd_journal_verify,
            "check the hash chain, archive segments and live "
            "journal as one; exit 1 naming the first bad entry",
        ),
        (
            "housekeep",
            cmd_journal_housekeep,
            "move entries head office holds and that are old "
            "enough into archive segments now (the automat does so daily by itself)",
        ),
    ):
        sp = journal.add_parser(name, help=text)
        sp.add_argument("--site", help="site file (default: the embedded demo site)")
        sp.add_argument("--db", help="journal database file (default: in the data directory)")
        if name == "show":
            sp.add_argument("--entries", action="store_true", help="every entry, not transactions")
            sp.add_argument("--limit", type=int, help="only the newest N entries")
        if name == "verify":
            sp.add_argument("--live", action="store_true", help="the live journal only")
        sp.set_defaults(func=func)
    devices = sub.add_parser("devices", help="bring-up tools for installers").add_subparsers(
        dest="devices_command", required=True
    )
    for name, text in (
        ("probe", "identity and self-check of an acceptor, or the terminal's status"),
        ("watch", "enable all channels and print one JSON object per event"),
        ("pay", "a real test payment on the card terminal, then its reversal"),
    ):
        dp = devices.add_parser(name, help=text)
        kinds = {
            "probe": ["coin", "notes", "terminal", "reader", "printer"],
            "watch": ["coin", "notes"],
            "pay": ["terminal"],
        }
        if name == "pay":  # only the terminal pays: the word is optional
            dp.add_argument("kind", choices=kinds[name], nargs="?", default="terminal")
        else:
            dp.add_argument("kind", choices=kinds[name])
        if name == "pay":
            dp.add_argument("--amount", required=True, help="amount such as 1.00")
        dp.add_argument("--port", help='serial path, pyserial URL, or "sim" (not for reader)')
        dp.add_argument("--address", type=int, help="ccTalk address (default 2 coin, 40 notes)")
        dp.add_argument("--crc16", action="store_true", help="CRC16 instead of the simple checksum")
        dp.add_argument(
            "--protocol",
            choices=["cctalk", "essp"],
            default="cctalk",
            help="notes: ccTalk or eSSP (ITL NV9, NV10, NV200)",
        )
        dp.add_argument("--encryption", action="store_true", help="eSSP: encrypt (key exchange)")
        dp.add_argument("--currency", default="EUR", choices=["EUR", "CHF"])
        dp.add_argument("--json", action="store_true", help="JSON output")
        if name == "probe":
            dp.add_argument("--test-page", action="store_true", help="printer: print a test page")
        if name == "watch":
            dp.add_argument("--seconds", type=float, default=30.0, help="how long to watch")
        dp.set_defaults(func=cmd_devices)
    rec = devices.add_parser(
        "record", help="record a device's traffic into a trace file (drivers/trace.py)"
    )
    rec.add_argument("kind", choices=["coin", "notes", "terminal", "reader", "printer"])
    rec.add_argument("--test-page", action="store_true", help="printer: also print a test page")
    rec.add_argument("--amount", help="terminal: also a real payment of this amount, reversed")
    rec.add_argument("--out", required=True, help="the trace file to write")
    rec.add_argument("--append", action="store_true", help="add to an existing trace file")
    rec.add_argument("--port", help='serial path, URL, or "sim" (not for the reader)')
    rec.add_argument("--reader", help="reader: a pattern of its name (default: one with a key)")
    rec.add_argument("--site", help="reader: the site file whose secrets hold the keys")
    rec.add_argument("--address", type=int, help="ccTalk address (default 2 coin, 40 notes)")
    rec.add_argument("--crc16", action="store_true", help="CRC16 instead of the simple checksum")
    rec.add_argument("--protocol", choices=["cctalk", "essp"], default="cctalk",
                     help="notes: ccTalk or eSSP (ITL NV9, NV10, NV200)")  # fmt: skip
    rec.add_argument("--encryption", action="store_true",
                     help="eSSP: encrypt (a trace of an encrypted session replays up to its "
                          "key exchange only)")  # fmt: skip
    rec.add_argument("--currency", default="EUR", choices=["EUR", "CHF"])
    rec.add_argument("--seconds", type=float, default=60.0, help="coin, notes: how long")
    rec.set_defaults(func=cmd_record)
    rep = devices.add_parser(
        "replay", help="a recorded trace to the drivers: the events they make of it"
    )
    rep.add_argument("trace", help="the trace file (kiosk devices record)")
    rep.add_argument("--site", help="the site whose secrets hold the chip keys (a key trace)")
    rep.add_argument("--kind", choices=["coin", "notes"], help="default: the trace's device")
    rep.add_argument("--currency", choices=["EUR", "CHF"], help="default: the site's")
    rep.set_defaults(func=cmd_replay)
    sync = sub.add_parser("sync", help="head-office sync").add_subparsers(
        dest="sync_command", required=True
    )
    for name, text in (
        ("now", "upload the backlog and fetch reference data, once"),
        ("status", "what head office has acknowledged, and the backlog"),
    ):
        sp = sync.add_parser(name, help=text)
        sp.add_argument("--site", help="site file (default: the embedded demo site)")
        sp.add_argument("--db", help="journal database file (default: in the data directory)")
        if name == "now":
            sp.add_argument("--url", help="head-office URL (default: the site's [head_office] url)")
        sp.set_defaults(func=cmd_sync)

    diag = sub.add_parser(
        "diag", help="technician diagnostics on the machine itself (PIN-protected)"
    ).add_subparsers(dest="diag_command", required=True)
    for name, text in (
        ("pin-hash", "the line for the secrets file from a new technician PIN"),
        ("cashbox", "the cash box content by denomination"),
        ("empty", "empty the cash box: report, journal entry, counters restart"),
        ("export", "the journal as CSV and JSON into a folder (a USB stick), verified"),
        ("transactions", "the last transactions and their state"),
        ("devices", "each device: connected, identity, counters, last error"),
        ("selftest", "every device's self-test (printer: a test page), head office"),
        ("eod", "card terminal end-of-day (Kassenschnitt), its parsed result"),
        ("reprint", "a transaction's receipt again (marked as a copy)"),
        ("config", "the site configuration, secrets redacted"),
    ):
        dp = diag.add_parser(name, help=text)
        if name != "pin-hash":
            dp.add_argument("--site", help="site file (default: the embedded demo site)")
            dp.add_argument("--db", help="journal database file (default: in the data directory)")
            dp.add_argument("--who", default="console", help="who is at the machine (audit)")
        if name == "export":
            dp.add_argument("folder")
        if name == "reprint":
            dp.add_argument("txid", help="the transaction id (on the screen, the receipt, or "
                            "kiosk diag transactions)")  # fmt: skip
        if name == "empty":
            dp.add_argument("--confirm", action="store_true", help="the box is open: do it")
        dp.set_defaults(func=cmd_diag)

    key = sub.add_parser("key", help="chip keys: personalise, show, meter, upgrade").add_subparsers(
        dest="key_command", required=True
    )
    for name, text in (
        ("personalise", "create our application on a blank card, or a new virtual key"),
        ("show", "identity, credit, meter report and last top-ups of a key"),
        ("meter", "a simple prepayment meter: take credit over, record a reading"),
        ("upgrade", "give a key of layout 1 the write counter (the office's master key)"),
    ):
        kp = key.add_parser(name, help=text)
        kp.add_argument("--site", help="site file (currency, limit, secrets; default demo)")
        kp.add_argument("--serial", help="the key's serial (a virtual key's name)")
        kp.add_argument("--reader", help="a PC/SC reader-name pattern instead of a virtual key")
        kp.add_argument("--json", action="store_true")
        if name == "personalise":
            kp.add_argument("--account", required=True, help="contract account")
            kp.add_argument("--meter", required=True, help="meter number")
            kp.add_argument("--commodity", choices=["electricity", "gas"], default="electricity")
            kp.add_argument("--role", choices=["customer", "technician"], default="customer")
            kp.add_argument("--initial", default="0.00", help="initial credit, e.g. 5.00")
        if name == "meter":
            kp.add_argument("--consume", required=True, help="amount the meter uses, e.g. 3.50")
        kp.set_defaults(func=cmd_key)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run_args: list[str] = []
    if "launch" in argv:  # everything after it is `kiosk run`'s, options too
        at = argv.index("launch")
        argv, run_args = argv[: at + 1], argv[at + 1 :]
    args = build_parser().parse_args(argv)
    if args.command == "launch":
        args.run_args = run_args
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # a crash in native code (SDL, the GL driver) leaves every thread's stack in the log, and
    # `kill -USR1` on a hung automat prints them without stopping it (drivers/README.md)
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        return int(args.func(args))
    except (ConfigError, JournalError) as err:
        print(f"kiosk: {err}", file=sys.stderr)
        return 2
    except (OSError, SQLAlchemyError) as err:  # the data directory's disk, most often
        base = data_dir(args.data_dir)
        try:
            free = f"{shutil.disk_usage(base).free} bytes free"
        except OSError:
            free = "not readable"
        text = str(getattr(err, "orig", None) or err).splitlines()[0]
        print(f"kiosk: {text} (data directory {base}: {free})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
