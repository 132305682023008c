"""Schema versions with Alembic, for head office's database and for the kiosk's journal.

Each database has its own migration history (a folder of Alembic revisions, run from code: no
alembic.ini). The first revision of each is the schema as released before migrations existed;
a database of that release has no version table, so it is recognised by its tables and stamped
with the first revision before the rest are applied.

    state(engine, history)        "empty", or the revision the database is at (None: unversioned)
    upgrade(engine, history)      bring it to the newest revision
    check(engine, history)        the newest revision, or OutdatedSchema saying what to run
"""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from sync.wire.errors import HeadOfficeError


class OutdatedSchema(HeadOfficeError):
    """The database is at an older revision than this release needs (or at none)."""


class History:
    """One database's migrations: the folder of revisions, the table that tells a database of
    the release before migrations, and the first revision (that release's schema)."""

    def __init__(self, folder: Path, marker_table: str, baseline: str) -> None:
        self.folder = folder
        self.marker_table = marker_table
        self.baseline = baseline

    def config(self, engine: Engine) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(self.folder))
        cfg.attributes["engine"] = engine
        return cfg

    @property
    def head(self) -> str:
        head = ScriptDirectory(str(self.folder)).get_current_head()
        assert head is not None, f"no revisions in {self.folder}"
        return head


def state(engine: Engine, history: History) -> str | None:
    """ "empty" (no tables), the revision a database is at, or None for a database of the
    release before migrations (its tables, no version)."""
    with engine.connect() as conn:
        revision = MigrationContext.configure(conn).get_current_revision()
        if revision is not None:
            return str(revision)
        return None if inspect(conn).has_table(history.marker_table) else "empty"


#: Alembic runs a command through a module-wide context: one command at a time in a process
#: (the crash matrix opens two journals at once on its threads)
_one_at_a_time = threading.Lock()


def upgrade(engine: Engine, history: History) -> tuple[str | None, str]:
    """Bring the database to the newest revision; (where it was, where it is now)."""
    with _one_at_a_time:
        was = state(engine, history)
        cfg = history.config(engine)
        if was is None:  # the release before migrations: its schema is the first revision
            command.stamp(cfg, history.baseline)
        command.upgrade(cfg, "head")
    return was, history.head


def check(engine: Engine, history: History, what: str) -> str:
    """The newest revision if the database is at it; OutdatedSchema otherwise."""
    now = state(engine, history)
    if now != history.head:
        at = "no revision (a release before schema versions)" if now is None else now
        raise OutdatedSchema(f"{what} is at {at}; this release needs {history.head}")
    return now
