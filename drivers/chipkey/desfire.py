"""MIFARE DESFire EV1 native commands, ISO 7816-4 wrapped, with EV1 AES secure messaging.

Every command goes through `Desfire.command()`: ``90 INS 00 00 [Lc data] 00`` out,
``data 91 SW2`` back; status words become typed errors from a table. After an AES
authentication the IV is zeroed once and then chained through every command and response:
plain commands are CMAC'd (not sent), responses carry 8 bytes of CMAC, MAC'd writes append
8 bytes of CMAC, enciphered data is AES-CBC(data || CRC32 || zero padding).
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from drivers.chipkey.crypto import (
    aes_cmac,
    cbc_decrypt,
    cbc_encrypt,
    crc32_desfire,
    rotate_left,
    session_key,
)
from drivers.errors import DeviceError, FrameError

log = logging.getLogger(__name__)


class Ins(IntEnum):
    AUTHENTICATE_AES = 0xAA
    ADDITIONAL_FRAME = 0xAF
    SELECT_APPLICATION = 0x5A
    GET_VERSION = 0x60
    CREATE_APPLICATION = 0xCA
    CREATE_STD_DATA_FILE = 0xCD
    CREATE_BACKUP_DATA_FILE = 0xCB
    CREATE_VALUE_FILE = 0xCC
    CREATE_CYCLIC_RECORD_FILE = 0xC1
    READ_DATA = 0xBD
    WRITE_DATA = 0x3D
    GET_VALUE = 0x6C
    CREDIT = 0x0C
    DEBIT = 0xDC
    WRITE_RECORD = 0x3B
    READ_RECORDS = 0xBB
    COMMIT_TRANSACTION = 0xC7
    ABORT_TRANSACTION = 0xA7
    CHANGE_KEY = 0xC4
    FORMAT_PICC = 0xFC


class Comm(IntEnum):
    """File communication settings."""

    PLAIN = 0x00
    MAC = 0x01
    ENC = 0x03


class Status(IntEnum):
    OK = 0x00
    NO_CHANGES = 0x0C
    OUT_OF_MEMORY = 0x0E
    ILLEGAL_COMMAND = 0x1C
    INTEGRITY_ERROR = 0x1E
    NO_SUCH_KEY = 0x40
    LENGTH_ERROR = 0x7E
    PERMISSION_DENIED = 0x9D
    PARAMETER_ERROR = 0x9E
    APPLICATION_NOT_FOUND = 0xA0
    AUTHENTICATION_ERROR = 0xAE
    ADDITIONAL_FRAME = 0xAF
    BOUNDARY_ERROR = 0xBE
    COMMAND_ABORTED = 0xCA
    DUPLICATE_ERROR = 0xDE
    FILE_NOT_FOUND = 0xF0


STATUS_TEXT = {
    Status.NO_CHANGES: "no changes to commit",
    Status.OUT_OF_MEMORY: "out of EEPROM memory",
    Status.ILLEGAL_COMMAND: "command not supported",
    Status.INTEGRITY_ERROR: "integrity error (CRC or MAC)",
    Status.NO_SUCH_KEY: "no such key",
    Status.LENGTH_ERROR: "length error",
    Status.PERMISSION_DENIED: "permission denied",
    Status.PARAMETER_ERROR: "parameter error",
    Status.APPLICATION_NOT_FOUND: "application not found",
    Status.AUTHENTICATION_ERROR: "authentication error",
    Status.BOUNDARY_ERROR: "boundary error (value outside the limits)",
    Status.COMMAND_ABORTED: "command aborted",
    Status.DUPLICATE_ERROR: "already exists",
    Status.FILE_NOT_FOUND: "file not found",
}


class DesfireError(DeviceError):
    """The card answered with an error status (91 xx)."""

    def __init__(self, status: int, command: int) -> None:
        self.status = status
        self.command = command
        text = STATUS_TEXT.get(status, f"status {status:02X}")  # type: ignore[call-overload]
        super().__init__(f"DESFire {command:02X}: {text} (91 {status:02X})")


class AuthenticationError(DesfireError):
    pass


class PermissionDenied(DesfireError):
    pass


class BoundaryError(DesfireError):
    pass


class IntegrityError(DesfireError):
    pass


class NotFound(DesfireError):
    pass


ERROR_TYPES: dict[int, type[DesfireError]] = {
    Status.AUTHENTICATION_ERROR: AuthenticationError,
    Status.PERMISSION_DENIED: PermissionDenied,
    Status.BOUNDARY_ERROR: BoundaryError,
    Status.INTEGRITY_ERROR: IntegrityError,
    Status.APPLICATION_NOT_FOUND: NotFound,
    Status.FILE_NOT_FOUND: NotFound,
}


class ResponseMacError(DeviceError):
    """The card's answer did not carry the MAC our session expects (tampered or replayed)."""


#: Data bytes in one command frame (the Lc of one wrapped APDU). The card's frame is 64 bytes
#: (FSCI 5 in its ATS); less the block's PCB, CID and CRC (4 bytes) and the wrapping's CLA INS
#: P1 P2 Lc Le (6) that leaves 54. A longer command goes on in AF frames, and the card answers
#: 91 AF with no data to each but the last; one frame too long is refused with 91 7E. (proxmark3:
#: client/src/mifare/desfirecore.h, DESFIRE_TX_FRAME_MAX_LEN 54; libfreefare:
#: libfreefare/mifare_desfire.c, write_data() sends in FRAME_PAYLOAD_SIZE pieces.)
MAX_COMMAND_DATA = 54
#: Data bytes in one answer frame of the card; a longer answer goes on after 91 AF (Chameleon
#: Mini's DESFire emulation: DESFIRE_MAX_PAYLOAD_SIZE 59).
MAX_ANSWER_DATA = 59
#: more answer frames than any answer of ours can take (the whole 8 kB of an EV1 in 59-byte
#: frames): a card that goes on asking is refused, not followed for ever
MAX_ANSWER_FRAMES = 8192 // MAX_ANSWER_DATA + 1


class Card(Protocol):
    """Anything that carries an APDU to a card: pyscard, or the virtual card in-process."""

    def transmit(self, apdu: bytes) -> bytes: ...


def wrap(ins: int, data: bytes = b"") -> bytes:
    """ISO 7816-4 wrapping of one native command frame."""
    if len(data) > MAX_COMMAND_DATA:
        raise FrameError(
            f"DESFire frame of {len(data)} data bytes: {MAX_COMMAND_DATA} at most (chain the rest)"
        )
    return bytes((0x90, ins, 0, 0)) + (bytes((len(data),)) + data if data else b"") + b"\x00"


def access_rights(read: int, write: int, read_write: int, change: int) -> bytes:
    """Access rights, 2 bytes little-endian: R<<12 | W<<8 | RW<<4 | Change (E free, F never)."""
    return struct.pack("<H", read << 12 | write << 8 | read_write << 4 | change)


class Session:
    """EV1 AES secure-messaging state shared by host and card: session key and chained IV."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.iv = bytes(16)

    def cmac(self, data: bytes) -> bytes:
        self.iv = aes_cmac(self.key, data, self.iv)
        return self.iv

    def encrypt(self, data: bytes) -> bytes:
        ct = cbc_encrypt(self.key, data, self.iv)
        self.iv = ct[-16:]
        return ct

    def decrypt(self, ct: bytes) -> bytes:
        pt = cbc_decrypt(self.key, ct, self.iv)
        self.iv = ct[-16:]
        return pt

    def encipher(self, header: bytes, data: bytes) -> bytes:
        """data || CRC32(header || data), zero-padded, AES-CBC with the running IV."""
        plain = data + crc32_desfire(header + data)
        plain += bytes(-len(plain) % 16)
        return self.encrypt(plain)

    def decipher(self, ct: bytes, length: int, status: int = 0) -> bytes:
        """Inverse for a response: check CRC32(data || status) and the zero padding."""
        if not ct or len(ct) % 16:
            raise ResponseMacError("enciphered data is not whole blocks")
        plain = self.decrypt(ct)
        data, crc = plain[:length], plain[length : length + 4]
        if crc != crc32_desfire(data + bytes((status,))) or any(plain[length + 4 :]):
            raise ResponseMacError("enciphered data does not check (CRC or padding)")
        return data


@dataclass(frozen=True)
class Version:
    hardware: bytes
    software: bytes
    uid: bytes
    batch: bytes


class Desfire:
    """A DESFire EV1 card reached through `card.transmit`."""

    def __init__(self, card: Card) -> None:
        self.card = card
        self.session: Session | None = None
        self.key_no: int | None = None
        self.apdus = 0
        #: where RndA comes from (a replayed trace gives the recorded one)
        self.random: Callable[[int], bytes] = os.urandom

    # ------------------------------------------------------------------ the one way out

    def command(self, ins: int, data: bytes = b"") -> tuple[int, bytes]:
        """Send one frame; return (status, response data). Raises on error statuses."""
        apdu = wrap(ins, data)
        self.apdus += 1
        reply = self.card.transmit(apdu)
        if len(reply) < 2 or reply[-2] != 0x91:
            self.session = None
            raise FrameError(f"not a DESFire answer: {reply.hex(' ')}")
        status = reply[-1]
        if status not in (Status.OK, Status.ADDITIONAL_FRAME, Status.NO_CHANGES):
            self.session = None  # the card dropped its authentication too
            raise ERROR_TYPES.get(status, DesfireError)(status, ins)
        return status, reply[:-2]

    def send(self, ins: int, data: bytes = b"") -> tuple[int, bytes]:
        """One command in as many frames as its length needs: the first under `ins`, the rest
        under AF, each answered 91 AF with no data but the last. Returns the last answer."""
        status, reply = self.command(ins, data[:MAX_COMMAND_DATA])
        rest = data[MAX_COMMAND_DATA:]
        while rest:
            if status != Status.ADDITIONAL_FRAME or reply:
                self.session = None
                raise FrameError(
                    f"DESFire {ins:02X}: the card did not ask for the rest of the command "
                    f"({len(rest)} bytes left, answered {reply.hex()} 91 {status:02X})"
                )
            status, reply = self.command(Ins.ADDITIONAL_FRAME, rest[:MAX_COMMAND_DATA])
            rest = rest[MAX_COMMAND_DATA:]
        return status, reply

    def _exchange(
        self,
        ins: int,
        head: bytes = b"",
        body: bytes = b"",
        comm: Comm = Comm.PLAIN,
        reply_len: int | None = None,
        reply_comm: Comm | None = None,
        enciphered: bytes | None = None,
        reply_mac: bool = True,
    ) -> bytes:
        """One command under the session: command MAC/encryption out, response checks in."""
        s = self.session
        header = bytes((ins,)) + head
        if s is None:
            payload = head + body
        elif enciphered is not None:
            payload = head + enciphered
        elif comm == Comm.ENC:
            payload = head + s.encipher(header, body)
        elif comm == Comm.MAC:
            payload = head + body + s.cmac(header + body)[:8]
        else:
            s.cmac(header + body)
            payload = head + body
        out = b""
        status, data = self.send(ins, payload)
        frames = 1
        while status == Status.ADDITIONAL_FRAME:
            if frames >= MAX_ANSWER_FRAMES:
                self.session = None
                raise FrameError(f"DESFire {ins:02X}: more than {MAX_ANSWER_FRAMES} answer frames")
            out += data
            status, data = self.command(Ins.ADDITIONAL_FRAME)
            frames += 1
        out += data
        if s is None or not reply_mac:
            return out
        rc = comm if reply_comm is None else reply_comm
        if rc == Comm.ENC and reply_len:
            return s.decipher(out, reply_len, status)
        if len(out) < 8:
            self.session = None
            raise ResponseMacError(f"answer to {ins:02X} has no MAC")
        body_in, mac = out[:-8], out[-8:]
        if s.cmac(body_in + bytes((status,)))[:8] != mac:
            self.session = None
            raise ResponseMacError(f"answer to {ins:02X} failed its MAC check")
        return body_in

    # ------------------------------------------------------------------ commands

    def get_version(self) -> Version:
        status, hw = self.command(Ins.GET_VERSION)
        if status != Status.ADDITIONAL_FRAME:
            raise FrameError("GetVersion: expected three frames")
        _, sw = self.command(Ins.ADDITIONAL_FRAME)
        _, rest = self.command(Ins.ADDITIONAL_FRAME)
        if len(hw) != 7 or len(sw) != 7 or len(rest) < 14:
            raise FrameError("GetVersion: short answer")
        return Version(hw, sw, rest[:7], rest[7:12])

    def select_application(self, aid: int) -> None:
        self.session = None
        self.command(Ins.SELECT_APPLICATION, aid.to_bytes(3, "little"))

    def authenticate(self, key_no: int, key: bytes) -> None:
        """EV1 AES three-pass mutual authentication (AA / AF)."""
        self.session = None
        status, ek_rnd_b = self.command(Ins.AUTHENTICATE_AES, bytes((key_no,)))
        if status != Status.ADDITIONAL_FRAME or len(ek_rnd_b) != 16:
            raise FrameError("authentication: bad first answer")
        rnd_b = cbc_decrypt(key, ek_rnd_b)
        rnd_a = self.random(16)
        token = cbc_encrypt(key, rnd_a + rotate_left(rnd_b), ek_rnd_b)
        _, ek_rnd_a = self.command(Ins.ADDITIONAL_FRAME, token)
        if len(ek_rnd_a) != 16 or cbc_decrypt(key, ek_rnd_a, token[-16:]) != rotate_left(rnd_a):
            raise AuthenticationError(Status.AUTHENTICATION_ERROR, Ins.AUTHENTICATE_AES)
        self.session = Session(session_key(rnd_a, rnd_b))
        self.key_no = key_no

    def format_picc(self) -> None:
        self._exchange(Ins.FORMAT_PICC)

    def create_application(self, aid: int, key_settings: int = 0x0B, n_keys: int = 4) -> None:
        self._exchange(
            Ins.CREATE_APPLICATION, aid.to_bytes(3, "little") + bytes((key_settings, 0x80 | n_keys))
        )

    def create_std_data_file(
        self, no: int, comm: Comm, rights: bytes, size: int, *, backup: bool = False
    ) -> None:
        ins = Ins.CREATE_BACKUP_DATA_FILE if backup else Ins.CREATE_STD_DATA_FILE
        self._exchange(ins, bytes((no, comm)) + rights + size.to_bytes(3, "little"))

    def create_value_file(
        self,
        no: int,
        comm: Comm,
        rights: bytes,
        lower: int,
        upper: int,
        value: int,
        limited_credit: bool = False,
    ) -> None:
        self._exchange(
            Ins.CREATE_VALUE_FILE,
            bytes((no, comm))
            + rights
            + struct.pack("<iii", lower, upper, value)
            + bytes((int(limited_credit),)),
        )

    def create_cyclic_record_file(
        self, no: int, comm: Comm, rights: bytes, record_size: int, max_records: int
    ) -> None:
        self._exchange(
            Ins.CREATE_CYCLIC_RECORD_FILE,
            bytes((no, comm))
            + rights
            + record_size.to_bytes(3, "little")
            + max_records.to_bytes(3, "little"),
        )

    def read_data(self, no: int, offset: int, length: int, comm: Comm = Comm.MAC) -> bytes:
        data = self._exchange(
            Ins.READ_DATA,
            bytes((no,)) + offset.to_bytes(3, "little") + length.to_bytes(3, "little"),
            reply_len=length,
            reply_comm=comm,
        )
        return data

    def write_data(self, no: int, offset: int, data: bytes, comm: Comm = Comm.MAC) -> None:
        self._exchange(
            Ins.WRITE_DATA,
            bytes((no,)) + offset.to_bytes(3, "little") + len(data).to_bytes(3, "little"),
            data,
            comm,
            reply_comm=Comm.MAC,
        )

    def get_value(self, no: int, comm: Comm = Comm.MAC) -> int:
        data = self._exchange(Ins.GET_VALUE, bytes((no,)), reply_len=4, reply_comm=comm)
        if len(data) != 4:
            raise FrameError("GetValue: not 4 bytes")
        return int(struct.unpack("<i", data)[0])

    def credit(self, no: int, amount: int, comm: Comm = Comm.MAC) -> None:
        self._exchange(
            Ins.CREDIT, bytes((no,)), struct.pack("<i", amount), comm, reply_comm=Comm.MAC
        )

    def debit(self, no: int, amount: int, comm: Comm = Comm.MAC) -> None:
        self._exchange(
            Ins.DEBIT, bytes((no,)), struct.pack("<i", amount), comm, reply_comm=Comm.MAC
        )

    def write_record(self, no: int, offset: int, data: bytes, comm: Comm = Comm.MAC) -> None:
        self._exchange(
            Ins.WRITE_RECORD,
            bytes((no,)) + offset.to_bytes(3, "little") + len(data).to_bytes(3, "little"),
            data,
            comm,
            reply_comm=Comm.MAC,
        )

    def read_records(
        self, no: int, record_size: int, comm: Comm = Comm.MAC, *, newest: int = 0
    ) -> list[bytes]:
        """The records of a record file, oldest first: all of them, or only the `newest` n
        (an empty file gives [])."""
        head = bytes((no,)) + bytes(3) + newest.to_bytes(3, "little")
        try:
            data = self._exchange(Ins.READ_RECORDS, head, reply_comm=comm)
        except BoundaryError:
            return []
        return [data[i : i + record_size] for i in range(0, len(data), record_size)]

    def commit(self) -> bool:
        """CommitTransaction; False if there was nothing to commit.

        In an authenticated session the card MACs an answer of status 00 only: "nothing to
        commit" (91 0C) comes as the bare status word, and the session goes on (libfreefare,
        mifare_desfire_crypto.c: a status-only answer is returned before any CMAC check;
        proxmark3 desfirecore.c takes 91 0C as a success). A 91 00 without its MAC is still
        refused: that would be a write confirmed by nobody."""
        s = self.session
        if s is not None:
            s.cmac(bytes((Ins.COMMIT_TRANSACTION,)))
        status, data = self.command(Ins.COMMIT_TRANSACTION)
        if status == Status.NO_CHANGES:
            if data:
                self.session = None
                raise ResponseMacError(f"a status-only answer with data: {data.hex()} 91 0C")
            return False
        if s is not None and (len(data) != 8 or s.cmac(bytes((status,)))[:8] != data):
            self.session = None
            raise ResponseMacError("answer to commit failed its MAC check")
        return True

    def abort(self) -> None:
        self._exchange(Ins.ABORT_TRANSACTION)

    def change_key(
        self, key_no: int, new_key: bytes, old_key: bytes | None = None, version: int = 0
    ) -> None:
        """ChangeKey (C4), enciphered; a different key than the one authenticated with needs
        the old key XOR'd in and a CRC32 of the new key."""
        if self.session is None or self.key_no is None:
            raise DeviceError("ChangeKey needs an authenticated session")
        own = key_no == self.key_no
        header = bytes((Ins.CHANGE_KEY, key_no))
        if own:
            body = new_key + bytes((version,))
            plain = body + crc32_desfire(header + body)
        else:
            if old_key is None:
                raise ValueError("changing another key needs its old value")
            body = bytes(a ^ b for a, b in zip(new_key, old_key, strict=True)) + bytes((version,))
            plain = body + crc32_desfire(header + body) + crc32_desfire(new_key)
        plain += bytes(-len(plain) % 16)
        cryptogram = self.session.encrypt(plain)
        self._exchange(Ins.CHANGE_KEY, bytes((key_no,)), enciphered=cryptogram, reply_mac=not own)
        if own:
            self.session = None  # changing our own key ends the session
