"""The running automat's log: to journald under systemd, with structured fields a technician
or head office can filter on (`journalctl -u kiosk EVENT=cash_in`, `DEVICE=notes`,
`TXID=...`); to a rotated file otherwise. Levels come from the site file (`[logs]`), one for
all and one per logger.

Fields: EVENT (what happened: the journal's entry kind, a fault, housekeeping), DEVICE, TXID,
AMOUNT (minor units) and CURRENCY, beside journald's own MESSAGE, PRIORITY, CODE_*. Nothing
else of a record goes out: no format arguments as fields, no free "extra" bag, and every
message passes through the card-number mask first (a card number that reached a log line by
mistake is masked as on a receipt). Key material never reaches a logger at all.

The native journald protocol is logging-journald's (a maintained, dependency-free handler);
this module only chooses the fields.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path
from typing import Any

from drivers.zvt.fields import mask_card_numbers
from kiosk.domain.site import LogsSection

#: the structured fields a record may carry (`extra=`), and their journald names
FIELDS = {"event": "EVENT", "device": "DEVICE", "txid": "TXID", "amount_minor": "AMOUNT",
          "currency": "CURRENCY"}  # fmt: skip
JOURNALD_SOCKET = Path("/run/systemd/journal/socket")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}  # fmt: skip


class Masked(logging.Filter):
    """Formats the message once, with card numbers masked, and keeps that (the arguments
    are dropped: no handler sees them unmasked)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask_card_numbers(record.getMessage())
        record.args = None
        return True


def _journald_handler(socket_path: Path) -> logging.Handler:
    from logging_journald import JournaldLogHandler

    class Handler(JournaldLogHandler):  # type: ignore[misc]
        #: after a send that failed, lines go to stderr for this long before journald is
        #: tried again (a stalled journald costs one timeout, not one per line)
        PAUSE = 10.0
        _paused_until = 0.0

        def emit(self, record: logging.LogRecord) -> None:
            if time.monotonic() < self._paused_until:
                self._fallback(record)
            else:
                super().emit(record)

        def _fallback(self, record: logging.LogRecord) -> None:
            self._paused_until = time.monotonic() + self.PAUSE
            sys.stderr.write(f"kiosk (journald not taking it): {self.format(record)}\n")

        def _format_record(self, record: logging.LogRecord) -> list[tuple[str, Any]]:
            out = [(k, v) for k, v in super()._format_record(record)
                   if k not in ("extra", "arguments", "message_raw", "message_id")]  # fmt: skip
            for attr, name in FIELDS.items():
                value = getattr(record, attr, None)
                if value is not None:
                    out.append((name, value))
            return out

    handler = Handler(identifier="kiosk", socket_path=socket_path)
    # A journald that stopped reading must not stop the automat: a send waits 0.2 s at most,
    # then the line goes to stderr (the handler's fallback) and the automat goes on.
    handler.transport.socket.settimeout(0.2)
    return handler


class LogFile(logging.handlers.RotatingFileHandler):
    """The rotated log file; a line it cannot write (the disk filled) goes to stderr, one line,
    not a traceback."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        sys.stderr.write(f"kiosk (log file not writable): {record.getMessage()}\n")


class FieldsFormatter(logging.Formatter):
    """A file's line: time, level, logger, message, and the structured fields as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{name.lower()}={getattr(record, attr)}" for attr, name in FIELDS.items()
                  if getattr(record, attr, None) is not None]  # fmt: skip
        return f"{line} [{' '.join(fields)}]" if fields else line


def under_systemd(env: dict[str, str] | None = None, socket_path: Path = JOURNALD_SOCKET) -> bool:
    """systemd started this process with its output in the journal, and journald listens."""
    env = dict(os.environ) if env is None else env
    return bool(env.get("JOURNAL_STREAM")) and socket_path.exists()


def setup_logging(
    logs: LogsSection,
    data_dir: Path,
    *,
    socket_path: Path = JOURNALD_SOCKET,
    env: dict[str, str] | None = None,
) -> str:
    """Send the process's log where the site says; returns where it goes (for the start-up
    line)."""
    target = logs.target
    if target == "auto":
        target = "journald" if under_systemd(env, socket_path) else "file"
    if target == "journald" and not socket_path.exists():
        target = "file"  # asked for, but no journald here: a file rather than nothing
    handler: logging.Handler
    if target == "journald":
        handler = _journald_handler(socket_path)
        where = f"journald ({socket_path})"
    else:
        path = Path(logs.file) if logs.file else data_dir / "logs" / "kiosk.log"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = LogFile(path, maxBytes=logs.file_max_mb * 1_000_000,
                              backupCount=logs.file_backups, encoding="utf-8")  # fmt: skip
            handler.setFormatter(FieldsFormatter())
            where = f"{path} (rotated at {logs.file_max_mb} MB, {logs.file_backups} kept)"
        except OSError as err:  # a full disk, a read-only one: the log goes to stderr alone
            handler = logging.NullHandler()
            where = f"stderr only (the log file {path} cannot be written: {err})"
    handlers = [handler]
    if target == "file":  # a technician at a terminal still sees what goes wrong
        console = logging.StreamHandler()
        console.setLevel(logging.WARNING)
        console.setFormatter(FieldsFormatter())
        handlers.append(console)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for h in handlers:
        h.addFilter(Masked())
        root.addHandler(h)
    root.setLevel(LEVELS[logs.level])
    for name, level in logs.levels.items():
        logging.getLogger(name).setLevel(LEVELS[level])
    return where
