"""Head-office admin: `python -m sync.admin --db URL COMMAND` (serve, kiosk, staff, token, key,
debt, credit, setting, report, restored, count, import, export, verify, release, rollout,
openapi, upgrade).

Amounts are typed and shown as people write them, decimal text in the currency ("12.50"; "50"
is fifty euros); minor units only in the machine files' columns that say so. Every command
that changes something, and every export, is written to the audit (via "cli", with the
operating-system user who ran it)."""

from __future__ import annotations

import argparse
import getpass
import json
import secrets
import sys
import time
from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine, create_engine, delete, insert, select, update

from sync import billing
from sync.admin import kiosks as fleet
from sync.admin import staff as people
from sync.admin.kiosks import Refused
from sync.app import LEASE_SECONDS, create_app
from sync.billing.sheet import cell
from sync.store import audit, schema
from sync.store.schema import OutdatedSchema
from sync.store.tables import (
    HISTORY,
    KEY_STATUSES,
    api_tokens,
    bump_version,
    count_entries,
    credits,
    kiosks,
    open_db,
    ref_debts,
    ref_keys,
    settings,
    token_digest,
)
from sync.wire.protocol import KEY_REASONS, SETTINGS, amount_text, decimals, minor_units
from sync.wire.release import version

#: the settings that are amounts (typed and shown in decimals); the others are counts
MONEY_SETTINGS = ("min_topup", "max_topup", "key_credit_limit", "fee_net")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sync.admin", description="head-office admin")
    p.add_argument("--version", action="version", version=f"sync.admin {version()}")
    p.add_argument("--db", default="sqlite:///headoffice.sqlite", help="SQLAlchemy URL")
    p.add_argument("--releases", default=None, metavar="DIR",
                   help="the release folder (default: $HEADOFFICE_RELEASES, else `releases` "
                        "beside an SQLite database, else /var/lib/prepaid-headoffice/releases)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the head-office server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--docs", action="store_true", help="serve /docs and /openapi.json")
    s.add_argument("--workers", type=int, default=1,
                   help="server processes (stateless: they share only the database)")  # fmt: skip
    s.add_argument("--lease-seconds", type=int, default=LEASE_SECONDS,
                   help="how long a key's claim gives one kiosk its credits to write "
                        f"(default {LEASE_SECONDS})")  # fmt: skip
    s.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM, with its chain)")
    s.add_argument("--tls-key", help="the certificate's private key (PEM)")
    s.add_argument("--log-level", default="info",
                   choices=("debug", "info", "warning", "error"),
                   help="what the log says (stdout; journald under systemd): info has one line "
                        "per request")  # fmt: skip
    ki = sub.add_parser("kiosk", help="the fleet's kiosks: list, add, rotate, revoke")
    kis = ki.add_subparsers(dest="action", required=True)
    kis.add_parser("list", help="each kiosk: state, last contact, version, token age")
    for name, text in (("add", "a new kiosk; prints its token once (an existing id is refused)"),
                       ("rotate", "a new token for a kiosk (the old one is refused from now "
                                  "on); prints it once")):  # fmt: skip
        a = kis.add_parser(name, help=text)
        a.add_argument("kiosk_id")
        a.add_argument("--chain-secret-file", metavar="PATH",
                       help="write the kiosk's chain secret there, as the lines for its secrets "
                            "file (a new file, readable by its owner only)")  # fmt: skip
    kis.add_parser("revoke", help="cut a kiosk off: its token is refused from now on"
                   ).add_argument("kiosk_id")  # fmt: skip
    sf = sub.add_parser("staff", help="the console's people (passwords from stdin)")
    sfs = sf.add_subparsers(dest="action", required=True)
    sfs.add_parser("list", help="each person: role, language, state, password age")
    a = sfs.add_parser("add", help="a new person (an existing name is refused)")
    a.add_argument("name")
    a.add_argument("--role", choices=people.ROLES, required=True)
    a.add_argument("--lang", choices=people.LANGS, default="de", help="the console's language")
    a = sfs.add_parser("set-role", help="change a person's role")
    a.add_argument("name")
    a.add_argument("role", choices=people.ROLES)
    for name, text in (("reset-password", "a new password (from stdin); their sessions end"),
                       ("disable", "lock a person out at once; their sessions end"),
                       ("enable", "let a disabled person log in again"),
                       ("remove", "offboard a person; the audit keeps their name")):  # fmt: skip
        sfs.add_parser(name, help=text).add_argument("name")
    tk = sub.add_parser("token", help="a token for one of the utility's systems; printed once")
    tk.add_argument("name", help="e.g. billing")
    tk.add_argument("--role", choices=("billing",), required=True)
    k = sub.add_parser("key", help="activate or block a key")
    k.add_argument("serial")
    k.add_argument("--status", choices=KEY_STATUSES, required=True)
    k.add_argument("--account", default=None)
    k.add_argument("--reason", default="", choices=KEY_REASONS,
                   help="why, as a code the automat tells the customer in their language")
    k.add_argument("--note", default="", help="for the staff only; never sent to an automat")
    d = sub.add_parser("debt", help="set the open debt of a contract account (e.g. 12.50)")
    d.add_argument("account")
    d.add_argument("amount", help="decimal text in the currency: 12.50, 50 (fifty), 0")
    d.add_argument("--currency", default="EUR")
    cr = sub.add_parser("credit", help="add a pending credit for a key (e.g. 5.00), written at "
                        "its next insertion")  # fmt: skip
    cr.add_argument("key")
    cr.add_argument("amount", help="decimal text in the currency: 5.00, 20 (twenty)")
    cr.add_argument("--currency", default="EUR")
    cr.add_argument("--kiosk", default=None, help="only this kiosk writes it (also offline)")
    st = sub.add_parser("setting", help="change a site setting for the fleet or one kiosk")
    st.add_argument("name", choices=SETTINGS)
    st.add_argument("value", nargs="?",
                    help="amounts as decimal text (300.00); fee_vat_bp in basis points "
                         "(1900 = 19 %%); leave out to remove")  # fmt: skip
    st.add_argument("--currency", default="EUR", help="of an amount setting")
    st.add_argument("--kiosk", default="*", help="one kiosk id (default: the whole fleet)")
    rp = sub.add_parser("report", help="money taken per kiosk, local day and payment method")
    rp.add_argument("--tz", default="Europe/Berlin", help="time zone of the days")
    sub.add_parser("restored", help="after a restore from a backup: every kiosk takes the "
                   "whole reference data again at its next round")  # fmt: skip
    c = sub.add_parser("count", help="how many entries a kiosk has delivered")
    c.add_argument("kiosk_id")
    im = sub.add_parser("import", help="take a billing file whole (keys, debts or credits)")
    im.add_argument("what", choices=("keys", "debts", "credits"))
    im.add_argument("file", help="CSV with the header row (README: billing files)")
    ex = sub.add_parser("export", help="every payment of some days, for the billing system")
    ex.add_argument("what", choices=("payments",))
    ex.add_argument("--since", required=True, type=date.fromisoformat, help="first day")
    ex.add_argument("--until", type=date.fromisoformat, help="last day (default: today)")
    ex.add_argument("--format", choices=("csv", "json"), default="csv")
    ex.add_argument("--amounts", choices=("minor", "text"), default="minor",
                    help="minor units (columns *_minor) or text with decimals (*_text)")
    ex.add_argument("--tz", default="Europe/Berlin", help="time zone of the days")
    vf = sub.add_parser("verify", help="check every kiosk's stored hash chain (or one's)")
    vf.add_argument("kiosk_id", nargs="?")
    nt = sub.add_parser("notify", help="tell people of alarms by e-mail and webhook "
                        "(README: alarms)")  # fmt: skip
    nt.add_argument("--config", required=True, help="the notices' TOML file")
    nt.add_argument("--every", type=float, default=60.0,
                    help="seconds between rounds (0: one round, then exit)")  # fmt: skip
    nt.add_argument("--name", default="head office", help="how the messages name head office")
    nt.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    rl = sub.add_parser("release", help="the utility's release key: make it, sign a release, "
                        "check a signature")  # fmt: skip
    rls = rl.add_subparsers(dest="action", required=True)
    a = rls.add_parser("keygen", help="a new release key pair: the private key into a new file "
                       "(keep it off the servers), the public key printed for the automats")
    a.add_argument("--private", required=True, help="the private key's file (made new, 0600)")
    a = rls.add_parser("sign", help="a detached signature of a release file (FILE.sig)")
    a.add_argument("file")
    a.add_argument("--version", required=True, help="the release's version, as it reports it")
    a.add_argument("--key", required=True, help="the private key's file")
    a = rls.add_parser("verify", help="check a release file against its signature")
    a.add_argument("file")
    a.add_argument("--signature", required=True)
    a.add_argument("--public-key", required=True, help="base64, as `keygen` printed it")
    a = rls.add_parser("trust", help="the utility's release public key head office verifies "
                       "releases with")  # fmt: skip
    a.add_argument("public_key", help="base64, as `keygen` printed it")
    a = rls.add_parser("add", help="verify a release file and store it for the rollouts")
    a.add_argument("file")
    a.add_argument("--signature", required=True, help="its signature file (FILE.sig)")
    ro = sub.add_parser("rollout", help="roll a stored release out (canaries first), or "
                        "`rollout status`")  # fmt: skip
    ro.add_argument("version", help="a stored release's version, or `status`")
    ro.add_argument("--canary", default="", help="kiosk ids, comma-separated: they get it at once")
    ro.add_argument("--then-after", default="24h",
                    help="every other kiosk after this (30m, 24h, 2d), unless a canary rolled "
                         "it back or refused it")  # fmt: skip
    sub.add_parser("openapi", help="print the wire protocol as OpenAPI JSON")
    sub.add_parser("upgrade", help="bring the database to this release's schema (migrations)")
    args = p.parse_args(argv)
    try:
        return run(args)
    except OutdatedSchema as err:
        print(f"sync.admin: {err}: run  python -m sync.admin --db URL upgrade", file=sys.stderr)
        return 2
    except Refused as err:
        return fleet.refuse(err)


def operator() -> str:
    """Who ran the command, for the audit: the operating-system user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        import os

        return f"uid {os.getuid()}"


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise Refused(f"unknown time zone {name!r}") from None


def run(args: argparse.Namespace) -> int:
    if args.cmd == "upgrade":
        engine = create_engine(args.db)
        try:
            was, now = schema.upgrade(engine, HISTORY)
        finally:
            engine.dispose()
        before = "no revision (the release before schema versions)" if was is None else was
        print(f"head office's database: {before} -> {now}")
        return 0
    if args.cmd == "openapi":
        print(json.dumps(create_app("sqlite://").openapi(), indent=2, sort_keys=True))
        return 0
    if args.cmd == "serve":
        from sync.admin.serve import serve

        return serve(args)
    if args.cmd == "notify":
        return notify_command(args)
    if args.cmd == "release" and args.action not in ("trust", "add"):
        return release_command(args)
    tz = zone(args.tz) if args.cmd in ("report", "export") else None
    engine = open_db(args.db)
    try:
        if args.cmd == "report":
            print(report(engine, tz), end="")  # type: ignore[arg-type]
            return 0
        if args.cmd in ("import", "export", "verify"):
            return billing_command(engine, args, tz)
        if args.cmd == "kiosk":
            return kiosk_command(engine, args)
        if args.cmd == "staff":
            return staff_command(engine, args)
        if args.cmd in ("release", "rollout"):
            return rollout_command(engine, args)
        return change(engine, args)
    finally:
        engine.dispose()


def release_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sync.wire import signing

    try:
        if args.action == "keygen":
            try:
                print(signing.make_key(Path(args.private)))
            except OSError as err:
                raise Refused(f"{args.private}: {err.strerror}: no key made") from None
        elif args.action == "sign":
            sig = signing.sign(Path(args.file), args.version, Path(args.key))
            out = Path(args.file + ".sig")
            out.write_text(sig.text(), "utf-8")
            print(f"{out}: {sig.file} {sig.version}, {sig.size} bytes, sha256 {sig.sha256}")
        else:
            sig = signing.parse(Path(args.signature).read_text("utf-8"))
            signing.verify(Path(args.file), sig, signing.load_public_key(args.public_key))
            print(f"{args.file}: release {sig.version}, signature good")
    except signing.BadRelease as err:
        raise Refused(str(err)) from None
    except OSError as err:
        raise Refused(f"{err.filename}: {err.strerror}") from None
    return 0


def rollout_command(engine: Engine, args: argparse.Namespace) -> int:
    from pathlib import Path

    from sync.admin import releases as rel
    from sync.book.releases import folder, status

    if args.cmd == "release" and args.action == "trust":
        print(f"release public key trusted: {rel.trust(engine, args.public_key, operator())}")
    elif args.cmd == "release":
        print(rel.add(engine, folder(args.db, args.releases), Path(args.file),
                      Path(args.signature), operator()))  # fmt: skip
    elif args.version == "status":
        print(status(engine), end="")
    else:
        print(rel.rollout(engine, args.version, args.canary, args.then_after, operator()))
    return 0


def notify_command(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading
    from pathlib import Path

    from sync.admin import notify

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stdout,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        config = notify.load(Path(args.config))
    except notify.ConfigError as err:
        raise Refused(str(err)) from None
    engine = open_db(args.db)
    try:
        notifier = notify.Notifier(engine, config, args.name)
        if args.every <= 0:
            notifier.round()
            return 0
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        notifier.run(args.every, stop)
        return 0
    finally:
        engine.dispose()


def kiosk_command(engine: Engine, args: argparse.Namespace) -> int:
    if args.action == "list":
        print(fleet.listing(engine), end="")
    elif args.action == "add":
        print(fleet.add(engine, args.kiosk_id, args.chain_secret_file, operator()))
    elif args.action == "rotate":
        print(fleet.rotate(engine, args.kiosk_id, args.chain_secret_file, operator()))
    else:
        fleet.revoke(engine, args.kiosk_id, operator())
        print(f"kiosk {args.kiosk_id}: revoked (its token is refused from now on)")
    return 0


def password(name: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"password for {name}: ")
    return sys.stdin.readline().rstrip("\n")


def staff_command(engine: Engine, args: argparse.Namespace) -> int:
    who, name = operator(), getattr(args, "name", "")
    if args.action == "list":
        print(people.listing(engine), end="")
        return 0
    if args.action == "add":
        people.add(engine, name, args.role, args.lang, password(name), who)
        print(f"{name}: {args.role} ({args.lang})")
        return 0
    if args.action == "set-role":
        people.set_role(engine, name, args.role, who)
        print(f"{name}: {args.role}")
        return 0
    ended = {"reset-password": lambda: people.reset_password(engine, name, password(name), who),
             "disable": lambda: people.disable(engine, name, who),
             "enable": lambda: people.enable(engine, name, who),
             "remove": lambda: people.remove(engine, name, who)}[args.action]()  # fmt: skip
    print(f"{name}: {args.action.replace('-', ' ')} done" + (f"; {ended} sessions ended"
          if ended else ""))  # fmt: skip
    return 0


def amount(text: str, currency: str) -> int:
    try:
        return minor_units(text, currency)
    except ValueError as err:
        raise Refused(f"{err}: nothing changed") from None


def _setting_value(args: argparse.Namespace) -> int | None:
    if args.value is None:
        return None
    if args.name in MONEY_SETTINGS:
        return amount(args.value, args.currency)
    if not args.value.isascii() or not args.value.isdigit():
        raise Refused(f"{args.name} is a whole number (1900 = 19 %), not {args.value!r}: "
                      "nothing changed")  # fmt: skip
    return int(args.value)


def change(engine: Engine, args: argparse.Namespace) -> int:
    """The admin commands that change head office's data (and `count`), each audited."""
    who = operator()
    if args.cmd == "count":
        print(count_entries(engine, args.kiosk_id))
        return 0
    with engine.begin() as conn:
        if args.cmd == "token":
            token = secrets.token_urlsafe(24)
            was = conn.execute(select(api_tokens).where(api_tokens.c.name == args.name)).first()
            conn.execute(delete(api_tokens).where(api_tokens.c.name == args.name))
            conn.execute(insert(api_tokens).values(name=args.name, role=args.role,
                                                   token_sha256=token_digest(token)))  # fmt: skip
            audit.write(conn, who, "token", f"{args.name}: a new {args.role} token",
                        target=f"token {args.name}", before=audit.row(was, "name", "role"),
                        after={"name": args.name, "role": args.role})  # fmt: skip
            print(token)
        elif args.cmd == "key":
            fields = ("serial", "status", "reason", "note", "contract_account")
            was = conn.execute(select(ref_keys).where(ref_keys.c.serial == args.serial)).first()
            now = dict(zip(fields, (args.serial, args.status, args.reason, args.note,
                                    args.account), strict=True))  # fmt: skip
            conn.execute(delete(ref_keys).where(ref_keys.c.serial == args.serial))
            conn.execute(insert(ref_keys).values(**now))
            bump_version(conn)
            audit.write(conn, who, "key", f"{args.serial}: {args.status}",
                        target=f"key {args.serial}", before=audit.row(was, *fields),
                        after=now)  # fmt: skip
        elif args.cmd == "debt":
            minor = amount(args.amount, args.currency)
            fields = ("contract_account", "amount", "currency")
            was = conn.execute(select(ref_debts).where(
                ref_debts.c.contract_account == args.account)).first()  # fmt: skip
            conn.execute(delete(ref_debts).where(ref_debts.c.contract_account == args.account))
            conn.execute(insert(ref_debts).values(contract_account=args.account, amount=minor,
                                                  currency=args.currency))  # fmt: skip
            bump_version(conn)
            audit.write(conn, who, "debt", f"{args.account}: {amount_text(minor, args.currency)}",
                        target=f"account {args.account}", before=audit.row(was, *fields),
                        after={"contract_account": args.account, "amount": minor,
                               "currency": args.currency})  # fmt: skip
            print(f"{args.account}: debt {amount_text(minor, args.currency)}")
        elif args.cmd == "credit":
            minor = amount(args.amount, args.currency)
            if minor <= 0:
                raise Refused("a credit is more than zero: nothing changed")
            if args.kiosk is not None and conn.execute(select(kiosks.c.kiosk_id).where(
                    kiosks.c.kiosk_id == args.kiosk)).first() is None:  # fmt: skip
                raise Refused(f"no kiosk {args.kiosk} is registered: nothing changed")
            if conn.execute(select(ref_keys.c.serial).where(
                    ref_keys.c.serial == args.key)).first() is None:  # fmt: skip
                raise Refused(f"no key {args.key} is known (import or `key` it first): "
                              "nothing changed")  # fmt: skip
            credit_id = f"HO-{secrets.token_hex(6).upper()}"
            row = {"credit_id": credit_id, "key": args.key, "amount": minor,
                   "currency": args.currency, "origin": "office", "holder": args.kiosk,
                   "pinned": args.kiosk is not None}  # given to one kiosk: no claim moves it
            conn.execute(insert(credits).values(**row))
            bump_version(conn)
            audit.write(conn, who, "credit", f"{credit_id}: {amount_text(minor, args.currency)} "
                        f"for key {args.key}", target=f"credit {credit_id}", after=row)  # fmt: skip
            print(credit_id)
        elif args.cmd == "setting":
            value = _setting_value(args)
            was = conn.execute(select(settings.c.value).where(
                settings.c.scope == args.kiosk, settings.c.name == args.name)).scalar()  # fmt: skip
            conn.execute(
                delete(settings).where(settings.c.scope == args.kiosk, settings.c.name == args.name)
            )
            if value is not None:
                conn.execute(insert(settings).values(scope=args.kiosk, name=args.name, value=value))
            bump_version(conn)
            scope = "the fleet" if args.kiosk == "*" else f"kiosk {args.kiosk}"
            audit.write(conn, who, "setting", f"{args.name} for {scope}",
                        target=f"setting {args.name} {args.kiosk}",
                        before=None if was is None else {"value": was},
                        after=None if value is None else {"value": value})  # fmt: skip
            shown = ("removed" if value is None else decimals(value, args.currency)
                     if args.name in MONEY_SETTINGS else str(value))  # fmt: skip
            print(f"{args.name} for {scope}: {shown}")
        elif args.cmd == "restored":
            # A key unblocked or a debt cleared after the backup is back as it was; a kiosk
            # that took the newer value holds a version above these rows' and would not be
            # sent them again: every row is stamped with a new version.
            for table in (ref_keys, ref_debts):
                conn.execute(update(table).values(changed=None))
            version_no = bump_version(conn)
            audit.write(conn, who, "restored", f"reference version {version_no}: all again",
                        target="reference")  # fmt: skip
            print(f"reference version {version_no}: every kiosk takes all keys and debts again")
    return 0


def billing_command(engine: Engine, args: argparse.Namespace, tz: ZoneInfo | None) -> int:
    who = operator()
    if args.cmd == "import":
        started = time.monotonic()
        try:
            taken = billing.import_file(engine, args.what, args.file)
        except billing.BadImport as err:
            audit.entry(engine, who, "import_refused", str(err), target=f"import {args.what}")
            print(f"sync.admin: nothing imported: {err}", file=sys.stderr)
            return 2
        said = f"{taken.rows} rows taken"
        if args.what == "credits":  # each row is taken once: a file again changes nothing
            said += f" ({taken.new} new, {taken.known} already there)"
        audit.entry(engine, who, "import", f"{args.what}: {said} from {args.file}",
                    target=f"import {args.what}")  # fmt: skip
        print(f"{args.what}: {said} in {time.monotonic() - started:.1f} s")
        return 0
    if args.cmd == "export":
        assert tz is not None
        until = args.until or datetime.now(tz).date()  # --since runs to today
        if until < args.since:
            print("sync.admin: --until is before --since", file=sys.stderr)
            return 2
        rows = billing.payments(engine, args.since, until, tz)
        billing.write_payments(rows, sys.stdout, fmt=args.format, amounts=args.amounts)
        audit.entry(engine, who, "export", f"payments {args.since}..{until}: {len(rows)} rows "
                    f"({args.format}, {args.tz})", target="export payments")  # fmt: skip
        return 0
    bad = 0
    for kiosk, n, verdict in billing.verify(engine, args.kiosk_id):
        print(f"{kiosk:<16} {n:>8} entries  {verdict}")
        bad += verdict != "ok"
    if args.kiosk_id and not count_entries(engine, args.kiosk_id):
        print(f"sync.admin: no entries of kiosk {args.kiosk_id}", file=sys.stderr)
        return 2
    return 1 if bad else 0


def report(engine: Engine, tz: ZoneInfo) -> str:
    """Money taken per kiosk, local day and method (coin, note, card), as a plain table."""
    lines = [f"{'kiosk':<16} {'day':<10} {'method':<6} {'amount':>8}"]
    for (kiosk, day, method, cur), minor in sorted(billing.money_taken(engine, tz).items()):
        kiosk = cell(kiosk)  # as in every CSV: no formula from a kiosk's id (sync/billing/sheet.py)
        lines.append(f"{kiosk:<16} {day:<10} {method:<6} {amount_text(minor, cur):>12}")
    return "\n".join(lines) + "\n"


