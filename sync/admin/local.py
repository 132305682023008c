"""A head office on this machine: the reference server as its own process on 127.0.0.1.

The kiosk's demo starts one when no head office is configured, so that the whole system
(kiosk, sync, head office) runs on one machine; tests and benchmarks start theirs the same way.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

import requests
from sqlalchemy import create_engine, select

from sync.store import schema
from sync.store.tables import HISTORY, kiosks, open_db


class LocalHeadOffice:
    """`with LocalHeadOffice(db_url) as ho:` serves `ho.url` until the block ends."""

    def __init__(self, db_url: str, *, startup_timeout: float = 20.0) -> None:
        self.db = db_url
        self.startup_timeout = startup_timeout
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def upgrade(self) -> None:
        """This machine's own head office follows the release (a fleet's head office is
        upgraded by hand: `sync.admin --db URL upgrade`)."""
        engine = create_engine(self.db)
        try:
            schema.upgrade(engine, HISTORY)
        finally:
            engine.dispose()

    def register(self, kiosk_id: str) -> str:
        """Add a kiosk (or give one that exists a new token); its token."""
        from sync.admin import kiosks as fleet

        self.upgrade()
        engine = open_db(self.db)
        try:
            with engine.connect() as conn:
                known = conn.execute(select(kiosks.c.kiosk_id)
                                     .where(kiosks.c.kiosk_id == kiosk_id)).first()  # fmt: skip
            act = fleet.rotate if known else fleet.add
            return act(engine, kiosk_id, None, "local head office")
        finally:
            engine.dispose()

    def admin(self, *args: str) -> str:
        """Run one admin command (`python -m sync.admin`) against this head office."""
        res = subprocess.run(
            [sys.executable, "-m", "sync.admin", "--db", self.db, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if res.returncode != 0:
            raise RuntimeError(f"sync.admin {' '.join(args)}: {res.stderr.strip()}")
        return res.stdout.strip()

    def start(self) -> LocalHeadOffice:
        self.upgrade()
        open_db(self.db).dispose()  # tables exist before the first request
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sync.admin",
                "--db",
                self.db,
                "serve",
                "--port",
                str(self.port),
            ],
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                if requests.get(self.url + "/v1/health", timeout=0.5).ok:
                    return self
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"the local head office did not start: {err.strip()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the local head office did not answer on {self.url}")
            threading.Event().wait(0.05)  # the server process is starting: ask again shortly

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def __enter__(self) -> LocalHeadOffice:
        return self.start()

    def __exit__(
        self,
        _t: type[BaseException] | None,
        _e: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.stop()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"
