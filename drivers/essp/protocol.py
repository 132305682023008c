"""eSSP command, reply and poll event codes (ITL GA138), and what each event means here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum


class Cmd(IntEnum):
    RESET = 0x01
    SET_INHIBITS = 0x02
    SETUP_REQUEST = 0x05
    HOST_PROTOCOL_VERSION = 0x06
    POLL = 0x07
    REJECT = 0x08
    DISABLE = 0x09
    ENABLE = 0x0A
    SERIAL_NUMBER = 0x0C
    SYNC = 0x11
    HOLD = 0x18
    SET_GENERATOR = 0x4A
    SET_MODULUS = 0x4B
    REQUEST_KEY_EXCHANGE = 0x4C
    POLL_WITH_ACK = 0x56
    EVENT_ACK = 0x57


class Reply(IntEnum):
    OK = 0xF0
    UNKNOWN_COMMAND = 0xF2
    WRONG_PARAMETERS = 0xF3
    PARAMETER_OUT_OF_RANGE = 0xF4
    CANNOT_PROCESS = 0xF5
    SOFTWARE_ERROR = 0xF6
    FAIL = 0xF8
    KEY_NOT_SET = 0xFA


REPLY_TEXTS = {
    Reply.UNKNOWN_COMMAND: "unknown command",
    Reply.WRONG_PARAMETERS: "wrong number of parameters",
    Reply.PARAMETER_OUT_OF_RANGE: "parameter out of range",
    Reply.CANNOT_PROCESS: "cannot process now",
    Reply.SOFTWARE_ERROR: "software error",
    Reply.FAIL: "fail",
    Reply.KEY_NOT_SET: "encryption key not set",
}


class Event(IntEnum):
    """Poll events: GA138 (SSP Protocol Manual GA138_2_2_2129A, the NV9USB event table and each
    event's page) and, for the payout and hopper events a note validator with a payout
    attached can send, kybarg/encrypted-smiley-secure-protocol src/status_desc.js."""

    SLAVE_RESET = 0xF1
    READ = 0xEF  # channel 0: reading; > 0: the note is held in escrow
    CREDIT = 0xEE  # channel: the note is past the point of no return
    REJECTING = 0xED
    REJECTED = 0xEC
    STACKING = 0xCC
    STACKED = 0xEB
    SAFE_JAM = 0xEA
    UNSAFE_JAM = 0xE9
    DISABLED = 0xE8
    STACKER_FULL = 0xE7
    FRAUD_ATTEMPT = 0xE6  # channel (a SMART Hopper / System: value)
    BAR_CODE_TICKET_VALIDATED = 0xE5
    CASHBOX_REPLACED = 0xE4
    CASHBOX_REMOVED = 0xE3
    NOTE_CLEARED_INTO_CASHBOX = 0xE2  # channel: at reset, in the box
    NOTE_CLEARED_FROM_FRONT = 0xE1  # channel: at reset, given back
    NOTE_PATH_OPEN = 0xE0
    COIN_CREDIT = 0xDF
    CASHBOX_PAID = 0xDE
    INCOMPLETE_FLOAT = 0xDD
    INCOMPLETE_PAYOUT = 0xDC
    NOTE_STORED_IN_PAYOUT = 0xDB
    DISPENSING = 0xDA
    TIME_OUT = 0xD9
    FLOATED = 0xD8
    FLOATING = 0xD7
    HALTED = 0xD6
    JAMMED = 0xD5
    DISPENSED = 0xD2
    BAR_CODE_TICKET_ACKNOWLEDGE = 0xD1
    DEVICE_FULL = 0xCF
    NOTE_HELD_IN_BEZEL = 0xCE
    NOTE_DISPENSED_AT_POWER_UP = 0xCD
    NOTE_PAID_INTO_STORE_AT_POWER_UP = 0xCB
    NOTE_PAID_INTO_STACKER_AT_POWER_UP = 0xCA
    NOTE_TRANSFERRED_TO_STACKER = 0xC9
    NOTE_FLOAT_ATTACHED = 0xC8
    NOTE_FLOAT_REMOVED = 0xC7
    PAYOUT_OUT_OF_SERVICE = 0xC6
    COIN_MECH_RETURN_PRESSED = 0xC5
    COIN_MECH_JAMMED = 0xC4
    EMPTIED = 0xC3
    EMPTYING = 0xC2
    COIN_MECH_ERROR = 0xB7
    INITIALISING = 0xB6
    CHANNEL_DISABLE = 0xB5
    SMART_EMPTIED = 0xB4
    SMART_EMPTYING = 0xB3
    ERROR_DURING_PAYOUT = 0xB1
    JAM_RECOVERY = 0xB0


#: events with one channel byte (GA138: Read, Note Credit, Fraud Attempt (a validator),
#: Note Cleared From Front / Into Cashbox)
WITH_CHANNEL = frozenset({
    Event.READ, Event.CREDIT, Event.FRAUD_ATTEMPT, Event.NOTE_CLEARED_FROM_FRONT,
    Event.NOTE_CLEARED_INTO_CASHBOX,
})  # fmt: skip
#: events with a value: 4 bytes below protocol 6; from 6 a count of countries, then per
#: country a 4-byte value and 3 ASCII letters (GA138 Fraud Attempt for a SMART Hopper;
#: kybarg src/utils.js and src/utils.parseData.test.js for the payout events)
WITH_VALUES = frozenset({
    Event.DISPENSING, Event.DISPENSED, Event.JAMMED, Event.HALTED, Event.FLOATING,
    Event.FLOATED, Event.TIME_OUT, Event.CASHBOX_PAID, Event.COIN_CREDIT, Event.SMART_EMPTYING,
    Event.SMART_EMPTIED,
})  # fmt: skip
#: value requested and value paid (4 + 4 bytes; from protocol 6 per country, 4 + 4 + 3)
WITH_TWO_VALUES = frozenset({Event.INCOMPLETE_PAYOUT, Event.INCOMPLETE_FLOAT})
#: one value and its country (7 bytes) from protocol 6 / 8, nothing before
ONE_VALUE_FROM = {
    Event.NOTE_TRANSFERRED_TO_STACKER: 6, Event.NOTE_DISPENSED_AT_POWER_UP: 6,
    Event.NOTE_HELD_IN_BEZEL: 8, Event.NOTE_PAID_INTO_STACKER_AT_POWER_UP: 8,
    Event.NOTE_PAID_INTO_STORE_AT_POWER_UP: 8,
}  # fmt: skip
#: SMART Hopper (3) and SMART System (9) report a fraud attempt with values, not a channel
VALUE_FRAUD_UNITS = frozenset({3, 9})
#: GA138 Read / Note Credit, protocol 9: a SMART Currency device gives 3 letters and a 4-byte
#: value (7 bytes) instead of the channel
WIDE_NOTE_EVENTS = frozenset({Event.READ, Event.CREDIT})


@dataclass(frozen=True)
class Polled:
    """One event of a poll answer: its code and data bytes. `known`: in the table above.
    An unknown code's length is not known: `resynced` says that the events after it were
    found again (the first place from which the rest of the answer reads as known events),
    else the rest of the answer is its `data`, unread."""

    code: int
    data: bytes = b""
    known: bool = True
    resynced: bool = True
    #: read after an unknown event, from where the rest of the answer read as known events:
    #: a guess, sound as bytes but not as money (an unknown event's own data can look like a
    #: CREDIT)
    guessed: bool = False

    @property
    def event(self) -> Event | None:
        return Event(self.code) if self.known else None

    @property
    def channel(self) -> int | None:
        return self.data[0] if self.known and len(self.data) == 1 else None


def data_length(
    code: int, data: bytes, at: int, protocol: int, unit_type: int = 0, wide: bool = False
) -> int | None:
    """How many data bytes follow the event `code` whose data starts at `at`; None for a
    code not in the table, or data that does not fit in the answer."""
    try:
        ev = Event(code)
    except ValueError:
        return None
    n: int | None = 0
    if ev in WIDE_NOTE_EVENTS and wide and protocol >= 9:
        n = 7
    elif ev == Event.FRAUD_ATTEMPT and unit_type in VALUE_FRAUD_UNITS:
        n = _values(data, at, 7) if protocol >= 6 else 4
    elif ev in WITH_CHANNEL:
        n = 1
    elif ev in WITH_VALUES:
        n = _values(data, at, 7) if protocol >= 6 else 4
    elif ev in WITH_TWO_VALUES:
        n = _values(data, at, 11) if protocol >= 6 else 8
    elif ev == Event.ERROR_DURING_PAYOUT:
        n = (None if (v := _values(data, at, 7)) is None else v + 1) if protocol >= 7 else 1
    elif ev in ONE_VALUE_FROM:
        n = 7 if protocol >= ONE_VALUE_FROM[ev] else 0
    if n is None or at + n > len(data):
        return None
    return n


def _values(data: bytes, at: int, each: int) -> int | None:
    return None if at >= len(data) else 1 + data[at] * each


def split_events(
    data: bytes, protocol: int = 6, *, unit_type: int = 0, channels: int | None = None,
    wide: bool = False,
) -> list[Polled]:  # fmt: skip
    """A poll answer's events (after the OK byte), oldest first, each with its data.

    GA138 ("Protocol Versions"): an event of unknown length makes the rest of the answer
    unreadable. A later CREDIT must never be lost with it, nor one invented: at an unknown
    code (or a known one whose data does not fit) the rest is read again from the first
    place after it from which every remaining byte reads as known events with sane data
    (channels within `channels`, country codes in letters); the unknown event is returned
    with the bytes skipped, for the journal. When no such place exists, it is returned with
    the whole rest (`resynced` False): the driver reports that as a fault, with the bytes."""
    out: list[Polled] = []
    i = 0
    while i < len(data):
        code = data[i]
        n = data_length(code, data, i + 1, protocol, unit_type, wide)
        if n is not None:
            out.append(Polled(code, data[i + 1 : i + 1 + n]))
            i += 1 + n
            continue
        for skip in range(len(data) - i - 1):  # some known event must follow
            rest = _strict(data, i + 1 + skip, protocol, unit_type, channels, wide)
            if rest is not None:
                guessed = [dataclasses.replace(ev, guessed=True) for ev in rest]
                return [*out, Polled(code, data[i + 1 : i + 1 + skip], known=False), *guessed]
        # the unknown code ends the answer: nothing after it lost (but a known event whose
        # data is cut off, a CREDIT without its channel, is money that may be missing)
        last = i + 1 == len(data) and code not in Event._value2member_map_
        return [*out, Polled(code, data[i + 1 :], known=False, resynced=last)]
    return out


def _strict(
    data: bytes, i: int, protocol: int, unit_type: int, channels: int | None, wide: bool
) -> list[Polled] | None:
    """The events from `i` to the end if every byte reads as a known event with sane data."""
    out: list[Polled] = []
    while i < len(data):
        code = data[i]
        n = data_length(code, data, i + 1, protocol, unit_type, wide)
        if n is None:
            return None
        ev = Polled(code, data[i + 1 : i + 1 + n])
        if not _sane(ev, channels):
            return None
        out.append(ev)
        i += 1 + n
    return out


def _sane(ev: Polled, channels: int | None) -> bool:
    if ev.channel is not None and channels is not None and ev.channel > channels:
        return False
    if len(ev.data) >= 8 or (len(ev.data) == 7 and ev.code not in WIDE_NOTE_EVENTS):
        # value blocks end in (or, for a single value, carry) 3 letters of a country code
        letters = ev.data[-3:] if len(ev.data) != 7 else ev.data[4:]
        return all(0x41 <= b <= 0x5A for b in letters)
    return True
