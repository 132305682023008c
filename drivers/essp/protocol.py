"""eSSP command, reply and poll event codes (ITL GA138), and what each event means here."""

from __future__ import annotations

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
    FRAUD_ATTEMPT = 0xE6  # channel
    NOTE_CLEARED_FROM_FRONT = 0xE1  # channel: at reset, given back
    NOTE_CLEARED_INTO_CASHBOX = 0xE2  # channel: at reset, in the box
    CASHBOX_REMOVED = 0xE3
    CASHBOX_REPLACED = 0xE4
    CHANNEL_DISABLE = 0xB5
    INITIALISING = 0xB6


#: events followed by a channel byte (protocol version 6)
WITH_CHANNEL = frozenset({
    Event.READ, Event.CREDIT, Event.FRAUD_ATTEMPT, Event.NOTE_CLEARED_FROM_FRONT,
    Event.NOTE_CLEARED_INTO_CASHBOX,
})  # fmt: skip


def split_events(data: bytes) -> list[tuple[Event | int, int | None]]:
    """A poll answer's events (after the OK byte): (event, channel or None), oldest first.
    An unknown code ends the list (its length is not known): it is returned alone."""
    out: list[tuple[Event | int, int | None]] = []
    i = 0
    while i < len(data):
        code = data[i]
        try:
            ev = Event(code)
        except ValueError:
            out.append((code, None))
            return out
        if ev in WITH_CHANNEL:
            if i + 1 >= len(data):
                raise ValueError(f"event {ev.name} without its channel")
            out.append((ev, data[i + 1]))
            i += 2
        else:
            out.append((ev, None))
            i += 1
    return out
