"""Head-office admin: `python -m sync.admin --db URL COMMAND` (serve, register, key, debt,
credit, setting, report, count, openapi)."""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
import time
from datetime import date
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine, create_engine, delete, insert, select, update

from sync import billing
from sync.app import DB_ENV, DOCS_ENV, LEASE_ENV, LEASE_SECONDS, create_app
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
from sync.wire.protocol import CHAIN_SECRET_BYTES, KEY_REASONS, SETTINGS, amount_text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sync.admin", description="head-office admin")
    p.add_argument("--db", default="sqlite:///headoffice.sqlite", help="SQLAlchemy URL")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the head-office server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--docs", action="store_true", help="serve /docs and /openapi.json")
    s.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes (stateless: they share only the database)",
    )
    s.add_argument("--lease-seconds", type=int, default=LEASE_SECONDS,
                   help="how long a key's claim gives one kiosk its credits to write "
                        f"(default {LEASE_SECONDS})")  # fmt: skip
    s.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM, with its chain)")
    s.add_argument("--tls-key", help="the certificate's private key (PEM)")
    r = sub.add_parser("register", help="register a kiosk; prints its token once")
    r.add_argument("kiosk_id")
    r.add_argument(
        "--chain-secret-file",
        metavar="PATH",
        help="write the kiosk's chain secret there, as the lines for its secrets file (a new "
        "file, readable by its owner only); the secret is made at the first registration and "
        "kept when a kiosk is registered again",
    )
    sf = sub.add_parser("staff", help="a person of the staff console (password from stdin)")
    sf.add_argument("action", choices=("add",))
    sf.add_argument("name")
    sf.add_argument("--role", choices=("operator", "auditor", "admin"), required=True)
    tk = sub.add_parser("token", help="a token for one of the utility's systems; printed once")
    tk.add_argument("name", help="e.g. billing")
    tk.add_argument("--role", choices=("billing",), required=True)
    k = sub.add_parser("key", help="activate or block a key")
    k.add_argument("serial")
    k.add_argument("--status", choices=KEY_STATUSES, required=True)
    k.add_argument("--account", default=None)
    k.add_argument(
        "--reason",
        default="",
        choices=KEY_REASONS,
        help="why, as a code the automat tells the customer in their language",
    )
    k.add_argument("--note", default="", help="for the staff only; never sent to an automat")
    d = sub.add_parser("debt", help="set the open debt of a contract account (minor units)")
    d.add_argument("account")
    d.add_argument("amount", type=int)
    d.add_argument("--currency", default="EUR")
    cr = sub.add_parser(
        "credit", help="add a pending credit for a key (minor units), written at its next insertion"
    )
    cr.add_argument("key")
    cr.add_argument("amount", type=int)
    cr.add_argument("--currency", default="EUR")
    cr.add_argument("--kiosk", default=None, help="only this kiosk writes it (also offline)")
    st = sub.add_parser("setting", help="change a site setting for the fleet or one kiosk")
    st.add_argument("name", choices=SETTINGS)
    st.add_argument("value", type=int, nargs="?", help="integer; leave out to remove")
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
    ex.add_argument("--until", type=date.fromisoformat, help="last day (default: --since)")
    ex.add_argument("--format", choices=("csv", "json"), default="csv")
    ex.add_argument(
        "--amounts",
        choices=("minor", "text"),
        default="minor",
        help="minor units (columns *_minor) or text with decimals (*_text)",
    )
    ex.add_argument("--tz", default="Europe/Berlin", help="time zone of the days")
    vf = sub.add_parser("verify", help="check every kiosk's stored hash chain (or one's)")
    vf.add_argument("kiosk_id", nargs="?")
    sub.add_parser("openapi", help="print the wire protocol as OpenAPI JSON")
    sub.add_parser("upgrade", help="bring the database to this release's schema (migrations)")
    args = p.parse_args(argv)
    try:
        return run(args)
    except OutdatedSchema as err:
        print(f"sync.admin: {err}: run  python -m sync.admin --db URL upgrade", file=sys.stderr)
        return 2


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
        import json

        print(json.dumps(create_app("sqlite://").openapi(), indent=2, sort_keys=True))
        return 0

    if args.cmd == "report":
        try:
            tz = ZoneInfo(args.tz)
        except (ZoneInfoNotFoundError, ValueError):
            print(f"sync.admin: unknown time zone {args.tz!r}", file=sys.stderr)
            return 2
        engine = open_db(args.db)
        try:
            print(report(engine, tz), end="")
        finally:
            engine.dispose()
        return 0

    if args.cmd in ("import", "export", "verify"):
        return billing_command(args)

    if args.cmd == "staff":
        import getpass

        from sync.console import people

        password = (getpass.getpass(f"password for {args.name}: ") if sys.stdin.isatty()
                    else sys.stdin.readline().rstrip("\n"))  # fmt: skip
        engine = open_db(args.db)
        try:
            people.add_staff(engine, args.name, args.role, password)
        except ValueError as err:
            print(f"sync.admin: {err}", file=sys.stderr)
            return 2
        finally:
            engine.dispose()
        print(f"{args.name}: {args.role}")
        return 0

    if args.cmd == "serve":
        import uvicorn

        if bool(args.tls_cert) != bool(args.tls_key):
            print("sync.admin: --tls-cert and --tls-key go together", file=sys.stderr)
            return 2
        if not args.tls_cert and args.host not in ("127.0.0.1", "::1", "localhost"):
            print("sync.admin: serving beyond this machine needs TLS: give --tls-cert and "
                  "--tls-key, or listen on 127.0.0.1 behind a TLS proxy (README)",
                  file=sys.stderr)  # fmt: skip
            return 2
        tls = {"ssl_certfile": args.tls_cert, "ssl_keyfile": args.tls_key}
        if args.workers < 1:
            print("sync.admin: --workers is 1 or more", file=sys.stderr)
            return 2
        if not 1 <= args.lease_seconds <= 86_400:
            print("sync.admin: --lease-seconds is 1 to 86400", file=sys.stderr)
            return 2
        if args.workers > 1:  # each worker process builds the app from the environment
            import os

            open_db(args.db).dispose()  # the schema checked (or made) once, before they start
            os.environ[DB_ENV] = args.db
            os.environ[DOCS_ENV] = "1" if args.docs else ""
            os.environ[LEASE_ENV] = str(args.lease_seconds)
            uvicorn.run("sync.app:app_from_env", factory=True, workers=args.workers,
                        host=args.host, port=args.port, log_level="warning",
                        timeout_graceful_shutdown=5, **tls)  # fmt: skip
            return 0
        app = create_app(args.db, docs=args.docs, lease_seconds=args.lease_seconds)
        # a stop waits at most 5 s for clients (a half-done TLS handshake held it for good)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                    timeout_graceful_shutdown=5, **tls)  # fmt: skip
        return 0
    engine = open_db(args.db)
    try:
        return change(engine, args)
    finally:
        engine.dispose()


def change(engine: Engine, args: argparse.Namespace) -> int:
    """The admin commands that change head office's data (and `count`)."""
    if args.cmd == "register":
        return register(engine, args.kiosk_id, args.chain_secret_file)
    with engine.begin() as conn:
        if args.cmd == "token":
            token = secrets.token_urlsafe(24)
            conn.execute(delete(api_tokens).where(api_tokens.c.name == args.name))
            conn.execute(insert(api_tokens).values(name=args.name, role=args.role,
                                                   token_sha256=token_digest(token)))  # fmt: skip
            print(token)
        elif args.cmd == "key":
            conn.execute(delete(ref_keys).where(ref_keys.c.serial == args.serial))
            conn.execute(
                insert(ref_keys).values(
                    serial=args.serial,
                    status=args.status,
                    reason=args.reason,
                    note=args.note,
                    contract_account=args.account,
                )
            )
            bump_version(conn)
        elif args.cmd == "debt":
            if args.amount < 0:
                print("sync.admin: a debt is not negative", file=sys.stderr)
                return 2
            conn.execute(delete(ref_debts).where(ref_debts.c.contract_account == args.account))
            conn.execute(
                insert(ref_debts).values(
                    contract_account=args.account, amount=args.amount, currency=args.currency
                )
            )
            bump_version(conn)
        elif args.cmd == "credit":
            if args.amount <= 0:
                print("sync.admin: a credit is more than zero", file=sys.stderr)
                return 2
            credit_id = f"HO-{secrets.token_hex(6).upper()}"
            conn.execute(
                insert(credits).values(
                    credit_id=credit_id,
                    key=args.key,
                    amount=args.amount,
                    currency=args.currency,
                    origin="office",
                    holder=args.kiosk,
                    pinned=args.kiosk is not None,  # given to one kiosk: no claim moves it
                )
            )
            bump_version(conn)
            print(credit_id)
        elif args.cmd == "setting":
            if args.value is not None and args.value < 0:
                print("sync.admin: a setting is not negative", file=sys.stderr)
                return 2
            conn.execute(
                delete(settings).where(settings.c.scope == args.kiosk, settings.c.name == args.name)
            )
            if args.value is not None:
                conn.execute(
                    insert(settings).values(scope=args.kiosk, name=args.name, value=args.value)
                )
            bump_version(conn)
        elif args.cmd == "restored":
            # A key unblocked or a debt cleared after the backup is back as it was; a kiosk
            # that took the newer value holds a version above these rows' and would not be
            # sent them again: every row is stamped with a new version.
            for table in (ref_keys, ref_debts):
                conn.execute(update(table).values(changed=None))
            version = bump_version(conn)
            print(f"reference version {version}: every kiosk takes all keys and debts again")
    if args.cmd == "count":
        print(count_entries(engine, args.kiosk_id))
    return 0


#: a kiosk id as the site schema takes it (kiosk/domain/site.py)
KIOSK_ID = re.compile(r"[A-Z0-9][A-Z0-9-]{1,30}")


def register(engine: Engine, kiosk_id: str, secret_file: str | None) -> int:
    """A new token for the kiosk (printed, the only output, once), and its chain secret: made
    at its first registration (or the first since head office kept them), kept after that
    (entries keyed with it verify with it for good); written to `secret_file` if given, as
    the `[journal]` lines of the kiosk's secrets file."""
    if not KIOSK_ID.fullmatch(kiosk_id):  # as a site file names it ("office" is head office's)
        print(f"sync.admin: kiosk id {kiosk_id!r} is not 2 to 31 capitals, digits and '-', "
              "starting with a capital or digit", file=sys.stderr)  # fmt: skip
        return 2
    fd = None
    if secret_file is not None:
        try:  # a new file of our own, before anything changes: an old one is never overwritten
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            fd = os.open(secret_file, flags, 0o600)
        except OSError as err:
            print(f"sync.admin: {secret_file}: {err.strerror}: nothing registered",
                  file=sys.stderr)  # fmt: skip
            return 2
    token = secrets.token_urlsafe(24)
    try:
        with engine.begin() as conn:
            row = conn.execute(
                select(kiosks.c.chain_secret).where(kiosks.c.kiosk_id == kiosk_id)
            ).first()
            chain = (row.chain_secret if row is not None and row.chain_secret
                     else secrets.token_hex(CHAIN_SECRET_BYTES))  # fmt: skip
            if row is None:
                conn.execute(insert(kiosks).values(kiosk_id=kiosk_id,
                                                   token_sha256=token_digest(token),
                                                   chain_secret=chain))  # fmt: skip
            else:
                conn.execute(update(kiosks).where(kiosks.c.kiosk_id == kiosk_id).values(
                    token_sha256=token_digest(token), chain_secret=chain))  # fmt: skip
            if fd is not None:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    fd = None
                    f.write(f"# kiosk {kiosk_id}: its journal's chain secret (head office "
                            f"holds it too)\n[journal]\nchain_secret = \"{chain}\"\n")
                    f.flush()
                    os.fsync(f.fileno())
    except BaseException:
        if secret_file is not None:
            if fd is not None:
                os.close(fd)
            os.unlink(secret_file)
        raise
    print(token)
    return 0


def billing_command(args: argparse.Namespace) -> int:
    engine = open_db(args.db)
    try:
        if args.cmd == "import":
            started = time.monotonic()
            try:
                taken = billing.import_file(engine, args.what, args.file)
            except billing.BadImport as err:
                audit.entry(engine, "sync.admin", "import_refused", str(err))
                print(f"sync.admin: nothing imported: {err}", file=sys.stderr)
                return 2
            said = f"{taken.rows} rows taken"
            if args.what == "credits":  # each row is taken once: a file again changes nothing
                said += f" ({taken.new} new, {taken.known} already there)"
            audit.entry(engine, "sync.admin", "import", f"{args.what}: {said} from {args.file}")
            print(f"{args.what}: {said} in {time.monotonic() - started:.1f} s")
            return 0
        if args.cmd == "export":
            if args.until is not None and args.until < args.since:
                print("sync.admin: --until is before --since", file=sys.stderr)
                return 2
            try:
                tz = ZoneInfo(args.tz)
            except (ZoneInfoNotFoundError, ValueError):
                print(f"sync.admin: unknown time zone {args.tz!r}", file=sys.stderr)
                return 2
            rows = billing.payments(engine, args.since, args.until, tz)
            billing.write_payments(rows, sys.stdout, fmt=args.format, amounts=args.amounts)
            return 0
        bad = 0
        for kiosk, n, verdict in billing.verify(engine, args.kiosk_id):
            print(f"{kiosk:<16} {n:>8} entries  {verdict}")
            bad += verdict != "ok"
        if args.kiosk_id and not count_entries(engine, args.kiosk_id):
            print(f"sync.admin: no entries of kiosk {args.kiosk_id}", file=sys.stderr)
            return 2
        return 1 if bad else 0
    finally:
        engine.dispose()


def report(engine: Engine, tz: ZoneInfo) -> str:
    """Money taken per kiosk, local day and method (coin, note, card), as a plain table."""
    lines = [f"{'kiosk':<16} {'day':<10} {'method':<6} {'amount':>8}"]
    for (kiosk, day, method, cur), minor in sorted(billing.money_taken(engine, tz).items()):
        kiosk = cell(kiosk)  # as in every CSV: no formula from a kiosk's id (sync/billing/sheet.py)
        lines.append(f"{kiosk:<16} {day:<10} {method:<6} {amount_text(minor, cur):>12}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
