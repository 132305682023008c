"""Head-office admin: `python -m sync.admin --db URL serve|register|key|debt|count`."""

from __future__ import annotations

import argparse
import secrets
import sys

from sqlalchemy import delete, insert

from sync.server import (
    KEY_STATUSES,
    bump_version,
    count_entries,
    create_app,
    kiosks,
    open_db,
    ref_debts,
    ref_keys,
    token_digest,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sync.admin", description="head-office admin")
    p.add_argument("--db", default="sqlite:///headoffice.sqlite", help="SQLAlchemy URL")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the head-office server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765)
    r = sub.add_parser("register", help="register a kiosk; prints its token once")
    r.add_argument("kiosk_id")
    k = sub.add_parser("key", help="activate or block a key")
    k.add_argument("serial")
    k.add_argument("--status", choices=KEY_STATUSES, required=True)
    k.add_argument("--account", default=None)
    k.add_argument("--reason", default="")
    d = sub.add_parser("debt", help="set the open debt of a contract account (minor units)")
    d.add_argument("account")
    d.add_argument("amount", type=int)
    d.add_argument("--currency", default="EUR")
    c = sub.add_parser("count", help="how many entries a kiosk has delivered")
    c.add_argument("kiosk_id")
    sub.add_parser("openapi", help="print the wire protocol as OpenAPI JSON")
    args = p.parse_args(argv)

    if args.cmd == "openapi":
        import json

        print(json.dumps(create_app("sqlite://").openapi(), indent=2, sort_keys=True))
        return 0

    if args.cmd == "serve":
        import uvicorn

        uvicorn.run(create_app(args.db), host=args.host, port=args.port, log_level="warning")
        return 0
    engine = open_db(args.db)
    with engine.begin() as conn:
        if args.cmd == "register":
            token = secrets.token_urlsafe(24)
            conn.execute(delete(kiosks).where(kiosks.c.kiosk_id == args.kiosk_id))
            conn.execute(
                insert(kiosks).values(kiosk_id=args.kiosk_id, token_sha256=token_digest(token))
            )
            print(token)
        elif args.cmd == "key":
            conn.execute(delete(ref_keys).where(ref_keys.c.serial == args.serial))
            conn.execute(
                insert(ref_keys).values(
                    serial=args.serial,
                    status=args.status,
                    reason=args.reason,
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
    if args.cmd == "count":
        print(count_entries(engine, args.kiosk_id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
