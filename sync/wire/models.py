"""The wire protocol's requests as head office reads them (pydantic models: shape and
meaning of an upload, a claim), and the times it takes."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from sync.wire.protocol import EXPONENT, SIGNS, PayloadError, payload

MAX_BATCH = 5000
#: an upload's body as sent and once unpacked (413 beyond): a full batch is about 2 MB of JSON
MAX_BODY = 4 * 1024 * 1024
MAX_UNPACKED = 16 * 1024 * 1024
MAX_DATA = 16 * 1024  # one entry's `data`
#: the most one entry moves (minor units): far above any top-up, far below overflow anywhere
MAX_AMOUNT = 100_000_000
CURRENCIES = tuple(EXPONENT)
#: how long a claim lets one kiosk write a key's credits before another may claim them
LEASE_SECONDS = 600
#: the kinds a kiosk journals, and the sign their amount takes (sync/wire/protocol.py)
KINDS: dict[str, str | None] = {str(kind): sign for kind, sign in SIGNS.items()}
#: the journal's time format (UTC)
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
#: an entry's time is refused before this, or further than AHEAD past head office's clock (a
#: kiosk's clock gone wrong; 9999-12-31 would break every page, report and export)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
AHEAD = timedelta(hours=24)



class EntryIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    seq: int = Field(ge=1)
    ts: str = Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
    kind: str = Field(min_length=1, max_length=32)
    txid: str | None = Field(default=None, max_length=64)
    key: str | None = Field(default=None, max_length=64)
    amount: int | None = Field(default=None, ge=-MAX_AMOUNT, le=MAX_AMOUNT)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    data: str = Field(max_length=MAX_DATA)
    prev_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")

    def meaning(self) -> str | None:
        """What is wrong with this entry beyond its shape (None: nothing): a kind no kiosk
        journals, an amount signed as its kind does not allow, a currency no kiosk takes, a
        time that is not one, `data` that is not a JSON object."""
        sign = KINDS.get(self.kind, "?")
        if sign == "?":
            return f"unknown kind {self.kind!r}"
        if self.amount is None:
            if sign in ("+", "0+") and self.kind not in ("split", "pending_released"):
                return f"a {self.kind} entry carries an amount"
        elif sign is None:
            return f"a {self.kind} entry carries no amount"
        elif self.amount < 0 or (sign == "+" and self.amount == 0):
            return f"amount {self.amount} is not allowed for {self.kind}"
        if self.amount is not None and self.currency not in CURRENCIES:
            return f"currency {self.currency!r} is not one of {', '.join(CURRENCIES)}"
        if self.amount is None and self.currency is not None:
            return "a currency without an amount"
        try:
            utc(self.ts)
        except ValueError:
            return f"time {self.ts!r} is not a real time"
        try:
            data = json.loads(self.data)
        except ValueError:
            return "data is not JSON"
        if not isinstance(data, dict):
            return "data is not a JSON object"
        try:
            payload(self.kind, data)  # read as written by any kiosk version: extra fields kept
        except PayloadError as err:
            return str(err)
        return None


def utc(ts: str) -> datetime:
    """A journal time (its shape checked: `TS_FORMAT`) as a UTC datetime; ValueError if it is
    no real time (2026-02-30). The C parser: strptime cost more than all else in an upload."""
    return datetime.fromisoformat(ts.removesuffix("Z")).replace(tzinfo=UTC)


def journal_time(text: str) -> bool:
    """Whether `text` is a real UTC time in the journal's format, within the times head
    office takes (what a kiosk says of its backlog is stored only then)."""
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text):
        return False
    try:
        return time_wrong(text, datetime.now(UTC)) is None
    except ValueError:  # 2026-02-30, 25:00
        return False


def time_wrong(ts: str, now: datetime) -> str | None:
    """Why a journal time (of a well-formed entry) is not one head office takes: before
    2000-01-01 or more than 24 h ahead of its clock `now` (None: it takes it)."""
    when = utc(ts)
    if when < EARLIEST:
        return f"time {ts} is before 2000-01-01"
    if when > now + AHEAD:
        return f"time {ts} is more than 24 h ahead of head office's clock"
    return None


class LogRecord(BaseModel):
    """One record of a key's top-up log as a kiosk read it."""

    model_config = ConfigDict(extra="forbid", strict=True)
    no: int = Field(ge=1, le=2**31 - 1)  # the key's write number
    txid: str = Field(min_length=1, max_length=64)


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    key: str = Field(min_length=1, max_length=64)
    #: the key's write count as the kiosk read it at insertion: the bound of an office credit
    #: granted for the first time, and the check of the writes reported on the key
    written: int | None = Field(default=None, ge=0, le=2**31 - 1)
    #: the key's log as read at this kiosk, (write number, transaction id) each, when head
    #: office asked for it (`check` in the answer): closes made elsewhere are checked on it
    log: list[LogRecord] | None = Field(default=None, max_length=64)


class Batch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kiosk_id: str = Field(min_length=1, max_length=64)
    entries: list[EntryIn] = Field(max_length=MAX_BATCH)

