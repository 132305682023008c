"""Records the journal could not take, kept on disk until it can.

When a journal write fails (a full disk, a broken database), the engine step's records, money
among them, must not be lost with the process. They go into this small file beside the journal:
made at full size when the journal opens (so that a full disk cannot refuse it later), written
in place and fsync'd, one JSON line per batch. The next start journals them first, once: each
batch carries an id that the journaled entries repeat, so a crash between journaling and
clearing the file does not journal them twice.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from kiosk.domain.events import Kind, Record
from kiosk.domain.money import Money

log = logging.getLogger(__name__)

#: the file's fixed size: far more than the records of the one step that failed
SIZE = 64 * 1024
#: in a kept record's data: the batch it came in
BATCH = "kept_batch"


class KeptRecords:
    """The side file at `path`, made (zeros, full size, fsync'd) if it does not exist."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists() or path.stat().st_size < SIZE:
            tmp = path.with_name(path.name + ".new")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, SIZE)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            fsync_dir(path.parent)

    def keep(self, records: list[Record]) -> str:
        """Write a batch durably into the file's free space; its id. OSError if it does not
        fit or cannot be written."""
        batch = uuid.uuid4().hex
        line = json.dumps({"batch": batch, "records": [_dump(r) for r in records]},
                          separators=(",", ":"), ensure_ascii=False)  # fmt: skip
        raw = (line + "\n").encode()
        fd = os.open(self.path, os.O_RDWR)
        try:
            used = len(_content(os.pread(fd, SIZE, 0)))
            if used + len(raw) > SIZE:
                raise OSError(f"{self.path}: no room for {len(raw)} bytes")
            os.pwrite(fd, raw, used)
            os.fsync(fd)
        finally:
            os.close(fd)
        return batch

    def batches(self) -> list[tuple[str, list[Record]]]:
        """The kept batches, oldest first (a line a power cut tore is left out, logged)."""
        out = []
        for line in _content(self.path.read_bytes()).decode("utf-8", "replace").splitlines():
            try:
                doc = json.loads(line)
                out.append((str(doc["batch"]), [_load(r) for r in doc["records"]]))
            except (ValueError, KeyError, TypeError) as err:
                log.error("kept records: an unreadable line left out (%s): %.200s", err, line)
        return out

    def clear(self) -> None:
        """Back to zeros, in place (no new space is needed)."""
        fd = os.open(self.path, os.O_RDWR)
        try:
            os.pwrite(fd, bytes(SIZE), 0)
            os.fsync(fd)
        finally:
            os.close(fd)


def _content(raw: bytes) -> bytes:
    """What was written: up to the first zero byte."""
    end = raw.find(b"\0")
    return raw if end < 0 else raw[:end]


def _dump(r: Record) -> dict[str, Any]:
    return {
        "kind": str(r.kind),
        "txid": r.txid,
        "key": r.key,
        "amount": r.amount.minor if r.amount is not None else None,
        "currency": r.amount.currency if r.amount is not None else None,
        "data": r.data,
    }


def _load(d: dict[str, Any]) -> Record:
    amount = Money(int(d["amount"]), str(d["currency"])) if d["amount"] is not None else None
    return Record(Kind(d["kind"]), d["txid"], d["key"], amount, dict(d["data"]))


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable (the directory's own entry)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
