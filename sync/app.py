"""Head office's composition root: the wire protocol's routes and the staff console on one app,
over one database."""

from __future__ import annotations

import os

from fastapi import FastAPI

from sync.api import routes
from sync.api.doorman import Doorman
from sync.book.releases import RELEASES_ENV, folder
from sync.console import pages
from sync.store.tables import open_db

#: how long a claim lets one kiosk write a key's credits before another may claim them
LEASE_SECONDS = routes.LEASE_SECONDS


def create_app(db_url: str, *, docs: bool = False, lease_seconds: int = LEASE_SECONDS,
               releases: str | None = None) -> FastAPI:  # fmt: skip
    """The head-office app. `docs`: serve /docs and /openapi.json (off unless asked for:
    the protocol is published in sync/wire/openapi.json). `releases`: the release folder
    (default: `sync.book.releases.folder`)."""
    engine = open_db(db_url)
    app = FastAPI(title="Prepaid kiosk head office", version="1",
                  docs_url="/docs" if docs else None, redoc_url=None,
                  openapi_url="/openapi.json" if docs else None)  # fmt: skip
    app.state.engine = engine
    routes.mount(app, engine, lease_seconds=lease_seconds,
                 release_folder=folder(db_url, releases))  # fmt: skip
    pages.mount(app, engine, Doorman(what="logins"))  # counted apart from the tokens
    return app


#: what `app_from_env` builds from: `sync.admin serve --workers N` sets them for its workers
DB_ENV, DOCS_ENV, LEASE_ENV = "HEAD_OFFICE_DB", "HEAD_OFFICE_DOCS", "HEAD_OFFICE_LEASE_SECONDS"


def app_from_env() -> FastAPI:
    """The app of one of several server processes (uvicorn's factory). Head office keeps no
    state of its own in a process: the database is the whole of it, except the failed-token
    counts, which each process keeps for the clients it serves."""
    lease = int(os.environ.get(LEASE_ENV) or LEASE_SECONDS)
    return create_app(os.environ[DB_ENV], docs=bool(os.environ.get(DOCS_ENV)), lease_seconds=lease,
                      releases=os.environ.get(RELEASES_ENV))  # fmt: skip
