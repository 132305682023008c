"""`sync.admin serve`: the head-office server under uvicorn, with its log on stdout (journald
under systemd): a startup line (version, database without its password, where it listens), one
access line per request (method, path, status; never a token: they travel in headers only),
and every error with its traceback."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from sqlalchemy.engine import make_url

from sync.app import DB_ENV, DOCS_ENV, LEASE_ENV, create_app
from sync.book.releases import RELEASES_ENV
from sync.store.tables import open_db
from sync.wire.release import version

log = logging.getLogger("sync.serve")

#: one format for our lines and uvicorn's: systemd's journal adds the time itself
FORMAT = "%(levelname)s %(name)s: %(message)s"


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, and ours, at `level` to stdout (uvicorn's own dictConfig shape)."""
    handler = {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stdout"}
    lvl = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": FORMAT}},
        "handlers": {"out": handler},
        "loggers": {
            "uvicorn": {"handlers": ["out"], "level": lvl, "propagate": False},
            "uvicorn.error": {"handlers": ["out"], "level": lvl, "propagate": False},
            # one line per request at info: the client's address, method, path, status
            "uvicorn.access": {"handlers": ["out"], "level": lvl, "propagate": False},
            "sync": {"handlers": ["out"], "level": lvl, "propagate": False},
        },
    }


def shown(url: str) -> str:
    """The database's URL without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 (a URL SQLAlchemy cannot read says nothing of a password)
        return "(a URL that is not one)"


def serve(args: argparse.Namespace) -> int:
    import logging.config

    import uvicorn

    def no(text: str) -> int:
        print(f"sync.admin: {text}", file=sys.stderr)
        return 2

    if bool(args.tls_cert) != bool(args.tls_key):
        return no("--tls-cert and --tls-key go together")
    if not args.tls_cert and args.host not in ("127.0.0.1", "::1", "localhost"):
        return no("serving beyond this machine needs TLS: give --tls-cert and --tls-key, or "
                  "listen on 127.0.0.1 behind a TLS proxy (README)")  # fmt: skip
    if args.workers < 1:
        return no("--workers is 1 or more")
    if not 1 <= args.lease_seconds <= 86_400:
        return no("--lease-seconds is 1 to 86400")
    config = log_config(args.log_level)
    logging.config.dictConfig(config)
    scheme = "https" if args.tls_cert else "http"
    log.info("head office %s starting: database %s, listening on %s://%s:%d, %d worker(s)",
             version(), shown(args.db), scheme, args.host, args.port, args.workers)
    tls = {"ssl_certfile": args.tls_cert, "ssl_keyfile": args.tls_key}
    common: dict[str, Any] = {"host": args.host, "port": args.port, "log_config": config,
                              "log_level": args.log_level, "access_log": True,
                              "timeout_graceful_shutdown": 5, **tls}  # fmt: skip
    if args.workers > 1:  # each worker process builds the app from the environment
        open_db(args.db).dispose()  # the schema checked (or made) once, before they start
        os.environ[DB_ENV] = args.db
        os.environ[DOCS_ENV] = "1" if args.docs else ""
        os.environ[LEASE_ENV] = str(args.lease_seconds)
        if args.releases:
            os.environ[RELEASES_ENV] = args.releases
        uvicorn.run("sync.app:app_from_env", factory=True, workers=args.workers, **common)
        return 0
    app = create_app(args.db, docs=args.docs, lease_seconds=args.lease_seconds,
                     releases=args.releases)  # fmt: skip
    # a stop waits at most 5 s for clients (a half-done TLS handshake held it for good)
    uvicorn.run(app, **common)
    log.info("head office stopped")
    return 0
