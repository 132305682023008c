"""A virtual DESFire EV1 card (the subset the chip key uses), with the same crypto as the host.

In-process it answers `transmit(apdu)`; through `VpcdCard` it plugs into the real PC/SC stack as
a card in vsmartcard's vpcd reader. Its state (applications, keys, files) can live in a JSON file
so a key survives restarts. Value, backup and record changes are staged until
CommitTransaction; AbortTransaction, an error, another SelectApplication or a power loss drops
them. `tear_after(n)` drops the power right after the n-th next command, before its answer
leaves the card, like a key pulled out mid-write.

Frames as an EV1 takes them: a command frame carries at most 54 data bytes (more is refused
with 91 7E, length error); a longer write comes as its first frame and then AF frames, each
answered 91 AF until the command is whole. Answers longer than 59 bytes go out in frames the
host asks for with AF. In an authenticated session only an answer of status 00 carries a CMAC:
"nothing to commit" (91 0C) is the bare status word.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.chipkey.crypto import (
    cbc_decrypt,
    cbc_encrypt,
    crc32_desfire,
    rotate_left,
    session_key,
)
from drivers.chipkey.desfire import Comm, Ins, Session, Status
from drivers.errors import TransportError

log = logging.getLogger(__name__)

ATR = bytes.fromhex("3B8180018080")  # a contactless DESFire EV1 as PC/SC readers report it
#: The card's own limits, from its frame size (64 bytes, FSCI 5 in the ATS), not from the
#: driver: a command frame's data (Lc) after the block's PCB, CID and CRC and the wrapping's six
#: bytes, and an answer frame's data (as Chameleon Mini's DESFire emulation sends).
FRAME_IN = 54
FRAME = 59  # payload bytes per answer frame; longer answers continue with 91 AF
FREE, NEVER = 0xE, 0xF


class CardRemoved(TransportError):
    """The card lost power (pulled from the reader) before it answered."""


class _Error(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


@dataclass
class VFile:
    kind: str  # std, backup, value, cyclic
    comm: int
    rights: int
    size: int = 0
    data: bytes = b""
    lower: int = 0
    upper: int = 0
    value: int = 0
    record_size: int = 0
    max_records: int = 0
    records: list[bytes] = field(default_factory=list)

    def key_for(self, op: str) -> tuple[int, ...]:
        r, w, rw, _c = (
            self.rights >> 12 & 0xF,
            self.rights >> 8 & 0xF,
            self.rights >> 4 & 0xF,
            self.rights & 0xF,
        )
        return {"read": (r, rw), "write": (w, rw), "credit": (rw,)}[op]


@dataclass
class VApp:
    keys: list[bytes]
    key_settings: int
    files: dict[int, VFile] = field(default_factory=dict)
    key_versions: list[int] = field(default_factory=list)


class VirtualCard:
    """The card. `uid` is 7 bytes; a blank card has no applications."""

    def __init__(self, uid: bytes, path: Path | None = None, picc_key: bytes = bytes(16)) -> None:
        if len(uid) != 7:
            raise ValueError("a DESFire UID is 7 bytes")
        self.uid = uid
        self.path = path
        self.apps: dict[int, VApp] = {0: VApp([picc_key], 0x0F)}
        self.powered = True
        self._tear: int | None = None
        self.commands = 0
        self._reset_volatile()
        if path is not None and path.exists():
            self._load()

    # ------------------------------------------------------------------ power and tearing

    def _reset_volatile(self) -> None:
        self.aid = 0
        self.session: Session | None = None
        self.auth_key: int | None = None
        self._staged: dict[int, VFile] = {}
        self._frames: list[bytes] = []  # the rest of an answer, one frame per 91 AF
        #: a command whose data comes in more frames: its INS, the data so far, the whole length
        self._incoming: tuple[int, bytes, int] | None = None
        self._auth: tuple[int, bytes, bytes] | None = None  # key no, RndB, E(RndB)

    def power_off(self) -> None:
        self.powered = False
        self._reset_volatile()

    def power_on(self) -> None:
        self.powered = True
        self._reset_volatile()

    def tear_after(self, n: int) -> None:
        """Drop the power right after the n-th next command (before its answer)."""
        self._tear = n

    # ------------------------------------------------------------------ persistence

    def _save(self) -> None:
        if self.path is None:
            return

        def enc(b: bytes) -> str:
            return base64.b64encode(b).decode()

        state = {
            "uid": self.uid.hex(),
            "apps": {
                str(aid): {
                    "keys": [enc(k) for k in app.keys],
                    "key_settings": app.key_settings,
                    "key_versions": app.key_versions,
                    "files": {
                        str(no): {
                            **f.__dict__,
                            "data": enc(f.data),
                            "records": [enc(r) for r in f.records],
                        }
                        for no, f in app.files.items()
                    },
                }
                for aid, app in self.apps.items()
            },
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.path)  # a torn write of the file itself never half-applies

    def _load(self) -> None:
        assert self.path is not None
        state = json.loads(self.path.read_text())
        self.uid = bytes.fromhex(state["uid"])
        self.apps = {}
        for aid, a in state["apps"].items():
            files = {}
            for no, f in a["files"].items():
                f = dict(f)
                f["data"] = base64.b64decode(f["data"])
                f["records"] = [base64.b64decode(r) for r in f["records"]]
                files[int(no)] = VFile(**f)
            self.apps[int(aid)] = VApp(
                [base64.b64decode(k) for k in a["keys"]],
                a["key_settings"],
                files,
                a.get("key_versions", []),
            )

    # ------------------------------------------------------------------ APDU level

    def transmit(self, apdu: bytes) -> bytes:
        if not self.powered:
            raise CardRemoved("no card in the field")
        if len(apdu) < 5 or apdu[0] != 0x90 or apdu[2:4] != b"\x00\x00":
            return b"\x6e\x00"  # class not supported: not a DESFire native wrapped command
        if len(apdu) == 5:  # case 2: CLA INS P1 P2 Le
            data = b""
        elif len(apdu) in (5 + apdu[4], 6 + apdu[4]) and apdu[4]:  # case 3 or 4
            data = apdu[5 : 5 + apdu[4]]
        else:
            return b"\x67\x00"  # wrong length: Lc does not match the APDU
        ins = apdu[1]
        self.commands += 1
        try:
            if len(data) > FRAME_IN:
                raise _Error(Status.LENGTH_ERROR)  # longer than the card's frame
            status, out = self._execute(ins, data)
        except _Error as err:
            status, out = err.status, b""
            self.session, self.auth_key = None, None
            self._staged.clear()
            self._frames, self._incoming, self._auth = [], None, None
        if self._tear is not None:
            self._tear -= 1
            if self._tear <= 0:
                self._tear = None
                self.power_off()
                raise CardRemoved("power lost before the answer")
        return out + bytes((0x91, status))

    def _chunk(self, out: bytes) -> tuple[int, bytes]:
        frames = [out[i : i + FRAME] for i in range(0, len(out), FRAME)] or [b""]
        self._frames = frames[1:]
        return (Status.ADDITIONAL_FRAME if self._frames else Status.OK), frames[0]

    def _execute(self, ins: int, data: bytes) -> tuple[int, bytes]:
        if ins == Ins.ADDITIONAL_FRAME and self._auth is not None:
            return self._auth_second(data)
        if ins == Ins.ADDITIONAL_FRAME and self._frames:
            if data:
                raise _Error(Status.LENGTH_ERROR)
            frame = self._frames.pop(0)
            return (Status.ADDITIONAL_FRAME if self._frames else Status.OK), frame
        if ins == Ins.ADDITIONAL_FRAME and self._incoming is not None:
            ins, data, whole = self._incoming[0], self._incoming[1] + data, self._incoming[2]
            self._incoming = None
            if len(data) > whole:
                raise _Error(Status.LENGTH_ERROR)
        else:
            whole = self._whole_length(ins, data)
        self._frames = []
        self._auth = None
        self._incoming = None
        if len(data) < whole:  # more frames to come
            self._incoming = (ins, data, whole)
            return Status.ADDITIONAL_FRAME, b""
        handler = _HANDLERS.get(ins)
        if handler is None:
            raise _Error(Status.ILLEGAL_COMMAND)
        status, out = handler(self, ins, data)
        return int(status), bytes(out)

    def _whole_length(self, ins: int, data: bytes) -> int:
        """How many data bytes a command carries in all its frames: a write's header says how
        much it writes, its file's communication setting how that goes over the air."""
        if ins not in (Ins.WRITE_DATA, Ins.WRITE_RECORD) or len(data) < 7:
            return len(data)
        f = self._app().files.get(data[0])
        if f is None:
            return len(data)  # the handler answers: file not found
        n = int.from_bytes(data[4:7], "little")
        if FREE in f.key_for("write") or self.session is None or f.comm == Comm.PLAIN:
            return 7 + n
        if f.comm == Comm.MAC:
            return 7 + n + 8
        return 7 + n + 4 + (-(n + 4) % 16)

    # ------------------------------------------------------------------ secure messaging

    def _app(self) -> VApp:
        return self.apps[self.aid]

    def _file(self, no: int) -> VFile:
        app = self._app()
        if no not in app.files:
            raise _Error(Status.FILE_NOT_FOUND)
        return self._staged.get(no) or app.files[no]

    def _stage(self, no: int) -> VFile:
        if no not in self._staged:
            src = self._app().files[no]
            self._staged[no] = VFile(**{**src.__dict__, "records": list(src.records)})
        return self._staged[no]

    def _check(self, f: VFile, op: str) -> bool:
        """Access for `op`; returns True if the access is free (plain comm)."""
        keys = f.key_for(op)
        if FREE in keys:
            return True
        if self.auth_key is None or self.auth_key not in keys:
            raise _Error(Status.PERMISSION_DENIED)
        return False

    def _in_plain(self, header: bytes) -> None:
        if self.session is not None:
            self.session.cmac(header)

    def _in_body(self, header: bytes, body: bytes, comm: int, length: int, free: bool) -> bytes:
        """Check a command's data per the file's comm setting; return the plain data."""
        s = self.session
        if free or s is None or comm == Comm.PLAIN:
            if s is not None:
                s.cmac(header + body)
            return body
        if comm == Comm.MAC:
            if len(body) != length + 8 or s.cmac(header + body[:length])[:8] != body[length:]:
                raise _Error(Status.INTEGRITY_ERROR)
            return body[:length]
        plain = s.decrypt(body) if body and len(body) % 16 == 0 else b""
        data, crc = plain[:length], plain[length : length + 4]
        if (
            len(plain) < length + 4
            or crc != crc32_desfire(header + data)
            or any(plain[length + 4 :])
        ):
            raise _Error(Status.INTEGRITY_ERROR)
        return data

    def _out(
        self, data: bytes = b"", comm: int = Comm.MAC, free: bool = False
    ) -> tuple[int, bytes]:
        s = self.session
        if s is None or free:
            return self._chunk(data)
        if comm == Comm.ENC and data:
            plain = data + crc32_desfire(data + b"\x00")
            plain += bytes(-len(plain) % 16)
            return self._chunk(s.encrypt(plain))
        return self._chunk(data + s.cmac(data + b"\x00")[:8])

    # ------------------------------------------------------------------ commands

    def _get_version(self, ins: int, data: bytes) -> tuple[int, bytes]:
        hw = bytes.fromhex("04010101001805")  # NXP, DESFire, EV1, 4 kB
        sw = bytes.fromhex("04010101001805")
        rest = self.uid + bytes.fromhex("BA54C5A0502012")  # UID, batch number, production week/year
        self._frames = [sw, rest]
        return Status.ADDITIONAL_FRAME, hw

    def _select(self, ins: int, data: bytes) -> tuple[int, bytes]:
        aid = int.from_bytes(data[:3], "little")
        self.session, self.auth_key = None, None
        self._staged.clear()
        if aid not in self.apps:
            raise _Error(Status.APPLICATION_NOT_FOUND)
        self.aid = aid
        return Status.OK, b""

    def _authenticate(self, ins: int, data: bytes) -> tuple[int, bytes]:
        self.session, self.auth_key = None, None
        key_no = data[0] if data else 0xFF
        keys = self._app().keys
        if key_no >= len(keys):
            raise _Error(Status.NO_SUCH_KEY)
        rnd_b = os.urandom(16)
        ek = cbc_encrypt(keys[key_no], rnd_b)
        self._auth = (key_no, rnd_b, ek)
        return Status.ADDITIONAL_FRAME, ek

    def _auth_second(self, data: bytes) -> tuple[int, bytes]:
        assert self._auth is not None
        key_no, rnd_b, ek = self._auth
        self._auth = None
        key = self._app().keys[key_no]
        if len(data) != 32:
            raise _Error(Status.LENGTH_ERROR)
        plain = cbc_decrypt(key, data, ek)
        rnd_a, rot_b = plain[:16], plain[16:]
        if rot_b != rotate_left(rnd_b):
            raise _Error(Status.AUTHENTICATION_ERROR)
        self.session = Session(session_key(rnd_a, rnd_b))
        self.auth_key = key_no
        return Status.OK, cbc_encrypt(key, rotate_left(rnd_a), data[-16:])

    def _need_master(self) -> None:
        if self.auth_key != 0:
            raise _Error(Status.PERMISSION_DENIED)

    def _format(self, ins: int, data: bytes) -> tuple[int, bytes]:
        if self.aid != 0:
            raise _Error(Status.PERMISSION_DENIED)
        self._in_plain(bytes((ins,)) + data)
        self._need_master()
        self.apps = {0: self.apps[0]}
        self._save()
        return self._out()

    def _create_app(self, ins: int, data: bytes) -> tuple[int, bytes]:
        self._in_plain(bytes((ins,)) + data)
        if self.aid != 0:
            raise _Error(Status.PERMISSION_DENIED)
        self._need_master()
        aid = int.from_bytes(data[:3], "little")
        if aid in self.apps:
            raise _Error(Status.DUPLICATE_ERROR)
        n = data[4] & 0x0F
        self.apps[aid] = VApp([bytes(16)] * n, data[3], {}, [0] * n)
        self._save()
        return self._out()

    def _create_file(self, ins: int, data: bytes) -> tuple[int, bytes]:
        self._in_plain(bytes((ins,)) + data)
        if self.aid == 0:
            raise _Error(Status.PERMISSION_DENIED)
        self._need_master()
        no, comm, rights = data[0], data[1], struct.unpack("<H", data[2:4])[0]
        if no in self._app().files:
            raise _Error(Status.DUPLICATE_ERROR)
        if ins in (Ins.CREATE_STD_DATA_FILE, Ins.CREATE_BACKUP_DATA_FILE):
            size = int.from_bytes(data[4:7], "little")
            kind = "std" if ins == Ins.CREATE_STD_DATA_FILE else "backup"
            f = VFile(kind, comm, rights, size=size, data=bytes(size))
        elif ins == Ins.CREATE_VALUE_FILE:
            lower, upper, value = struct.unpack("<iii", data[4:16])
            if not lower <= value <= upper:
                raise _Error(Status.BOUNDARY_ERROR)
            f = VFile("value", comm, rights, lower=lower, upper=upper, value=value)
        else:
            f = VFile(
                "cyclic",
                comm,
                rights,
                record_size=int.from_bytes(data[4:7], "little"),
                max_records=int.from_bytes(data[7:10], "little"),
            )
        self._app().files[no] = f
        self._save()
        return self._out()

    def _read_data(self, ins: int, data: bytes) -> tuple[int, bytes]:
        no = data[0]
        f = self._file(no)
        free = self._check(f, "read")
        self._in_plain(bytes((ins,)) + data)
        off, n = int.from_bytes(data[1:4], "little"), int.from_bytes(data[4:7], "little")
        n = n or f.size - off
        if off + n > f.size:
            raise _Error(Status.BOUNDARY_ERROR)
        return self._out(f.data[off : off + n], f.comm, free)

    def _write_data(self, ins: int, data: bytes) -> tuple[int, bytes]:
        no = data[0]
        f = self._file(no)
        free = self._check(f, "write")
        off, n = int.from_bytes(data[1:4], "little"), int.from_bytes(data[4:7], "little")
        body = self._in_body(bytes((ins,)) + data[:7], data[7:], f.comm, n, free)
        if off + n > f.size:
            raise _Error(Status.BOUNDARY_ERROR)
        target = self._stage(no) if f.kind == "backup" else self._app().files[no]
        target.data = target.data[:off] + body + target.data[off + n :]
        if f.kind == "std":
            self._save()
        return self._out(free=free)

    def _get_value(self, ins: int, data: bytes) -> tuple[int, bytes]:
        no = data[0]
        f = self._file(no)
        if f.kind != "value":
            raise _Error(Status.PARAMETER_ERROR)
        free = self._check(f, "read")
        self._in_plain(bytes((ins,)) + data)
        return self._out(struct.pack("<i", self._app().files[no].value), f.comm, free)

    def _value_op(self, ins: int, data: bytes) -> tuple[int, bytes]:
        no = data[0]
        f = self._file(no)
        if f.kind != "value":
            raise _Error(Status.PARAMETER_ERROR)
        free = self._check(f, "credit" if ins == Ins.CREDIT else "read")
        amount = struct.unpack("<i", self._in_body(bytes((ins, no)), data[1:], f.comm, 4, free))[0]
        if amount < 0:
            raise _Error(Status.PARAMETER_ERROR)
        staged = self._stage(no)
        new = staged.value + (amount if ins == Ins.CREDIT else -amount)
        if not staged.lower <= new <= staged.upper:
            raise _Error(Status.BOUNDARY_ERROR)
        staged.value = new
        return self._out(free=free)

    def _write_record(self, ins: int, data: bytes) -> tuple[int, bytes]:
        no = data[0]
        f = self._file(no)
        if f.kind != "cyclic":
            raise _Error(Status.PARAMETER_ERROR)
        free = self._check(f, "write")
        off, n = int.from_bytes(data[1:4], "little"), int.from_bytes(data[4:7], "little")
        body = self._in_body(bytes((ins,)) + data[:7], data[7:], f.comm, n, free)
        if off + n > f.record_size:
            raise _Error(Status.BOUNDARY_ERROR)
        staged = self._stage(no)
        record = bytes(off) + body + bytes(f.record_size - off - n)
        staged.records = (staged.records + [record])[-(f.max_records - 1) :]
        return self._out(free=free)

    def _read_records(self, ins: int, data: bytes) -> tuple[int, bytes]:
        no = data[0]
        f = self._app().files.get(no)
        if f is None:
            raise _Error(Status.FILE_NOT_FOUND)
        if f.kind != "cyclic":
            raise _Error(Status.PARAMETER_ERROR)
        free = self._check(f, "read")
        self._in_plain(bytes((ins,)) + data)
        # offset: how many of the newest records to pass over; count: how many (0: all older)
        offset, count = int.from_bytes(data[1:4], "little"), int.from_bytes(data[4:7], "little")
        end = len(f.records) - offset
        if not f.records or end <= 0 or count > end:
            raise _Error(Status.BOUNDARY_ERROR)
        return self._out(b"".join(f.records[end - count if count else 0 : end]), f.comm, free)

    def _commit(self, ins: int, data: bytes) -> tuple[int, bytes]:
        self._in_plain(bytes((ins,)))
        if not self._staged:
            return Status.NO_CHANGES, b""  # the bare status word: no CMAC, the session goes on
        for no, f in self._staged.items():
            self._app().files[no] = f
        self._staged = {}
        self._save()
        return self._out()

    def _abort(self, ins: int, data: bytes) -> tuple[int, bytes]:
        self._in_plain(bytes((ins,)))
        self._staged.clear()
        return self._out()

    def _change_key(self, ins: int, data: bytes) -> tuple[int, bytes]:
        s = self.session
        if s is None or self.auth_key != 0 and data[0] != self.auth_key:
            raise _Error(Status.PERMISSION_DENIED)
        key_no = data[0]
        app = self._app()
        if key_no >= len(app.keys):
            raise _Error(Status.NO_SUCH_KEY)
        header = bytes((ins, key_no))
        plain = s.decrypt(data[1:]) if len(data[1:]) in (32,) else b""
        if len(plain) != 32:
            raise _Error(Status.LENGTH_ERROR)
        own = key_no == self.auth_key
        if own:
            body, crc = plain[:17], plain[17:21]
            if crc != crc32_desfire(header + body) or any(plain[21:]):
                raise _Error(Status.INTEGRITY_ERROR)
            new_key = body[:16]
        else:
            body, crc, crc_new = plain[:17], plain[17:21], plain[21:25]
            new_key = bytes(a ^ b for a, b in zip(body[:16], app.keys[key_no], strict=True))
            if (
                crc != crc32_desfire(header + body)
                or crc_new != crc32_desfire(new_key)
                or any(plain[25:])
            ):
                raise _Error(Status.INTEGRITY_ERROR)
        app.keys[key_no] = new_key
        self._save()
        if own:
            self.session, self.auth_key = None, None
            return Status.OK, b""
        return self._out()


_HANDLERS: dict[int, Any] = {
    Ins.GET_VERSION: VirtualCard._get_version,
    Ins.SELECT_APPLICATION: VirtualCard._select,
    Ins.AUTHENTICATE_AES: VirtualCard._authenticate,
    Ins.FORMAT_PICC: VirtualCard._format,
    Ins.CREATE_APPLICATION: VirtualCard._create_app,
    Ins.CREATE_STD_DATA_FILE: VirtualCard._create_file,
    Ins.CREATE_BACKUP_DATA_FILE: VirtualCard._create_file,
    Ins.CREATE_VALUE_FILE: VirtualCard._create_file,
    Ins.CREATE_CYCLIC_RECORD_FILE: VirtualCard._create_file,
    Ins.READ_DATA: VirtualCard._read_data,
    Ins.WRITE_DATA: VirtualCard._write_data,
    Ins.GET_VALUE: VirtualCard._get_value,
    Ins.CREDIT: VirtualCard._value_op,
    Ins.DEBIT: VirtualCard._value_op,
    Ins.WRITE_RECORD: VirtualCard._write_record,
    Ins.READ_RECORDS: VirtualCard._read_records,
    Ins.COMMIT_TRANSACTION: VirtualCard._commit,
    Ins.ABORT_TRANSACTION: VirtualCard._abort,
    Ins.CHANGE_KEY: VirtualCard._change_key,
}


class _SlotConnection:
    def __init__(self, card: VirtualCard) -> None:
        self.card = card

    def transmit(self, apdu: bytes) -> bytes:
        return self.card.transmit(apdu)

    def close(self) -> None:
        """Nothing to release in-process."""


class VirtualSlot:
    """A reader slot in-process: what a PC/SC reader is for a real card, for tests and demos."""

    def __init__(self) -> None:
        self.card: VirtualCard | None = None

    def insert(self, card: VirtualCard) -> None:
        card.power_on()
        self.card = card

    def remove(self) -> None:
        if self.card is not None:
            self.card.power_off()
        self.card = None

    def connect(self, _reader: str) -> _SlotConnection:
        if self.card is None or not self.card.powered:
            raise CardRemoved("no card in the slot")
        return _SlotConnection(self.card)
