"""A throwaway PostgreSQL cluster for the head-office tests and benchmark.

Debian's server binaries (package postgresql, installed by `dev.sh`) run from a temporary data
folder on a free port of 127.0.0.1 with trust authentication; nothing of the machine's own
PostgreSQL set-up is touched. PostgreSQL refuses to run as root, so under root the server runs
as the `postgres` user the package created.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql


class NoPostgres(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


def _bindir() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3])
    )
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).parent
    raise NoPostgres(
        "PostgreSQL server binaries not found: install the Debian package postgresql "
        "(./dev.sh test does so when run as root)"
    )


class PgCluster:
    def __init__(self, *, durable: bool = False) -> None:
        """`durable`: keep fsync on (for benchmarks); tests trade it for speed."""
        self.durable = durable
        self.bindir = _bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="kiosk-pg-"))
        self.data = self.dir / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._user: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._user = ["runuser", "-u", "postgres", "--"]
        self._databases = 0

    def _run(self, *args: str) -> None:
        res = subprocess.run(
            [*self._user, *args], capture_output=True, text=True, timeout=120, cwd=self.dir
        )
        if res.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {res.stderr or res.stdout}")

    def start(self) -> PgCluster:
        self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.data), "-U", "kiosk", "-A", "trust", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir}"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.dir / "server.log"), "-w", "-t", "60", "start",
        )  # fmt: skip
        return self

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://kiosk@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """A fresh empty database; its SQLAlchemy URL."""
        self._databases += 1
        name = f"headoffice_{self._databases}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="kiosk", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)
