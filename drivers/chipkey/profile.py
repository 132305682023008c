"""Our application on the chip key (DESIGN section 3): files, keys, and what kiosk and meter do.

Files (all MAC'd): 0 identity (standard data), 1 credit (value file), 2 meter report (backup
data), 3 top-up log (cyclic records), and on keys of layout 2 (the identity's format version) 4
the write counter (a value file the kiosk credits by one in each write's commit: how many
credits were ever written, in one frame, without reading the log). Keys: 0 issuer (application
master), 1 read, 2 credit (the kiosk), 3 debit (the meter), each diversified per card UID from
a master key (AN10922), so a key set stolen from one kiosk's card cannot mint credit elsewhere
offline.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, replace

from drivers.chipkey.crypto import diversify_key
from drivers.chipkey.desfire import Card, Comm, Desfire, NotFound, access_rights
from drivers.errors import DeviceError

AID = 0xF05E01
SYSTEM_ID = b"PREPAID"
F_IDENTITY, F_CREDIT, F_METER, F_LOG, F_WRITES = 0, 1, 2, 3, 4
K_MASTER, K_READ, K_CREDIT, K_DEBIT = 0, 1, 2, 3
RECORD_SIZE, MAX_RECORDS = 64, 11
IDENTITY_SIZE, METER_SIZE = 64, 32
NEVER = 0xF

# File access: (read, write, read&write, change). The kiosk's credit key reads everything it
# shows and is the only one that can Credit; the meter's debit key can only GetValue, Debit and
# write its report; the read key sees identity and log (for staff tools).
RIGHTS = {
    # the identity (serial, account, role) is read under the kiosk's credit key and written
    # only with the application's master key: a kiosk's keys cannot turn a key into another
    F_IDENTITY: access_rights(K_CREDIT, K_MASTER, K_MASTER, K_MASTER),
    F_CREDIT: access_rights(K_DEBIT, NEVER, K_CREDIT, K_MASTER),
    F_METER: access_rights(K_CREDIT, K_DEBIT, NEVER, K_MASTER),
    F_LOG: access_rights(K_READ, NEVER, K_CREDIT, K_MASTER),
    # only the kiosk counts its writes up (Credit needs read&write); staff tools may read it
    F_WRITES: access_rights(K_READ, NEVER, K_CREDIT, K_MASTER),
}
#: the identity's format versions: 1 (the first keys: no write counter), 2 (with it)
LAYOUTS = (1, 2)

COMMODITIES = {1: "electricity", 2: "gas"}
ROLES = {1: "customer", 2: "technician"}


class WrongCard(DeviceError):
    """A card without our application (a bank card, another utility's key, a blank card)."""


class CreditLimit(DeviceError):
    """The key cannot hold that much credit (the value file's upper limit)."""


class WrongRole(DeviceError):
    """A key whose role does not open this function (a customer key at the technician door)."""


@dataclass(frozen=True)
class Identity:
    utility: str
    contract_account: str
    meter_number: str
    commodity: str
    serial: str
    role: str
    currency: str
    version: int = 2  # the layout: new keys get the write counter

    _FMT = "<B8s12s16sB12sB3s"

    def pack(self) -> bytes:
        raw = struct.pack(
            self._FMT,
            self.version,
            self.utility.encode(),
            self.contract_account.encode(),
            self.meter_number.encode(),
            _code(COMMODITIES, self.commodity),
            self.serial.encode(),
            _code(ROLES, self.role),
            self.currency.encode(),
        )
        return raw.ljust(IDENTITY_SIZE, b"\x00")

    @classmethod
    def unpack(cls, raw: bytes) -> Identity:
        v, util, acct, meter, com, serial, role, cur = struct.unpack_from(cls._FMT, raw)
        if v not in LAYOUTS:
            raise WrongCard(f"identity format {v} is not known")
        return cls(
            _s(util),
            _s(acct),
            _s(meter),
            COMMODITIES.get(com, "unknown"),
            _s(serial),
            ROLES.get(role, "unknown"),
            _s(cur),
            v,
        )


@dataclass(frozen=True)
class TopUp:
    txid: str
    amount: int
    at: int  # unix seconds
    #: the write's number on this key: 1, 2, 3, ... for ever (0: the personalisation record,
    #: or a record written before keys counted their writes)
    no: int = 0

    def pack(self) -> bytes:
        tx = self.txid.encode()
        if len(tx) > 48:
            raise ValueError(f"transaction id longer than 48 bytes: {self.txid}")
        return (tx.ljust(48, b"\x00") + struct.pack("<iII", self.amount, self.at, self.no)).ljust(
            RECORD_SIZE, b"\x00"
        )

    @classmethod
    def unpack(cls, raw: bytes) -> TopUp:
        amount, at, no = struct.unpack_from("<iII", raw, 48)
        return cls(_s(raw[:48]), amount, at, no)


@dataclass(frozen=True)
class MeterReport:
    reading: int = 0  # Wh
    at: int = 0
    emergency_in_use: bool = False
    debt: int = 0  # minor units recorded by the meter (emergency credit used)
    status: int = 0

    def pack(self) -> bytes:
        return struct.pack(
            "<qIBiB", self.reading, self.at, self.emergency_in_use, self.debt, self.status
        ).ljust(METER_SIZE, b"\x00")

    @classmethod
    def unpack(cls, raw: bytes) -> MeterReport:
        reading, at, em, debt, status = struct.unpack_from("<qIBiB", raw)
        return cls(reading, at, bool(em), debt, status)


@dataclass(frozen=True)
class Summary:
    """What the kiosk reads at insertion: the log only when asked for (`ChipKey.read_log`)."""

    uid: bytes
    identity: Identity
    credit: int
    meter: MeterReport
    #: how many credits were ever written to this key (the newest write's number)
    written: int
    #: the top-up log, oldest first; None: not read (what the summary needs is `written`)
    log: tuple[TopUp, ...] | None = None

    @property
    def txids(self) -> tuple[str, ...]:
        return tuple(t.txid for t in self.log or () if t.txid)

    @property
    def log_from(self) -> int:
        """The oldest write's number the log still shows: every write numbered above it is in
        the log (0: the log still reaches back to the key's first write). Without the log read,
        one above the newest write: then nothing is known to be in it."""
        if self.log is None:
            return self.written + 1
        return min((t.no for t in self.log), default=0)


def require_role(summary: Summary, role: str) -> Summary:
    """The summary, if the key's identity carries `role`; WrongRole otherwise."""
    if summary.identity.role != role:
        raise WrongRole(
            f"a {summary.identity.role} key cannot be used where a {role} key is required"
        )
    return summary


@dataclass(frozen=True)
class KeySet:
    """Master keys (from the secrets file); the card's own keys are diversified per UID."""

    master: bytes
    read: bytes
    credit: bytes
    debit: bytes

    def card_key(self, no: int, uid: bytes) -> bytes:
        base = (self.master, self.read, self.credit, self.debit)[no]
        return diversify_key(base, uid, AID.to_bytes(3, "little"), SYSTEM_ID)

    def picc_key(self, uid: bytes) -> bytes:
        """The card's own master key (the PICC's, application 0), diversified from the master
        key: without it no one can format the card or create applications on it."""
        return diversify_key(self.master, uid, bytes(3), SYSTEM_ID)


def _s(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("ascii", errors="replace")


def _code(table: dict[int, str], name: str) -> int:
    for k, v in table.items():
        if v == name:
            return k
    raise ValueError(f"unknown value {name!r}")


def _newest(log: list[TopUp]) -> int:
    """The newest write's number in a log (0: none)."""
    return max((t.no for t in log), default=0)


@dataclass
class _Seen:
    """What a card session read of the key, valid until the session ends (nothing changes on
    the card within it but by us): its credit, its write count, and its log once read."""

    credit: int
    written: int
    log: list[TopUp] | None = None


class ChipKey:
    """Our application's operations on one connected card."""

    def __init__(self, card: Card, keys: KeySet) -> None:
        self.df = Desfire(card)
        self.keys = keys
        self._uid: bytes | None = None
        self._layout: int | None = None  # the identity's format version, once read
        #: the key the card's session is authenticated with now (select and authenticate are
        #: not repeated within it), and what was read in it. A card session ends with any error
        #: (a pulled key, a failed command): both go then.
        self._opened: int | None = None
        self._seen: _Seen | None = None

    @property
    def uid(self) -> bytes:
        if self._uid is None:
            self._uid = self.df.get_version().uid
        return self._uid

    def _open(self, key_no: int) -> None:
        if self._opened == key_no:
            return  # authenticated with it in this card session already
        self._opened, self._seen = None, None
        try:
            self.df.select_application(AID)
        except NotFound as err:
            raise WrongCard("not a prepaid key: the application is missing") from err
        self.df.authenticate(key_no, self.keys.card_key(key_no, self.uid))
        self._opened = key_no

    def _lost(self) -> None:
        """The card session ended (an error, a pulled key): select and authenticate again."""
        self._opened, self._seen = None, None

    def _identity(self) -> Identity:
        identity = Identity.unpack(self.df.read_data(F_IDENTITY, 0, IDENTITY_SIZE))
        self._layout = identity.version
        return identity

    def _counted(self) -> bool:
        """Whether the key keeps a write counter (layout 2); the identity is read if unknown."""
        if self._layout is None:
            self._identity()
        return (self._layout or 1) >= 2

    def _written(self) -> int:
        """The key's write count: its counter, or on a key without one the newest record's."""
        if self._counted():
            return self.df.get_value(F_WRITES)
        newest = self.df.read_records(F_LOG, RECORD_SIZE, newest=1)
        return TopUp.unpack(newest[-1]).no if newest else 0

    def _read_log(self) -> list[TopUp]:
        return [TopUp.unpack(r) for r in self.df.read_records(F_LOG, RECORD_SIZE)]

    def read_summary(self) -> Summary:
        """Identity, credit, meter report and how many credits were written, under the kiosk's
        credit key: on a key of layout 2, select, authenticate and five reads in eight APDUs.
        The log is not read: `read_log` reads it when a credit owed from earlier needs it."""
        try:
            self._open(K_CREDIT)
            identity = self._identity()
            credit = self.df.get_value(F_CREDIT)
            meter = MeterReport.unpack(self.df.read_data(F_METER, 0, METER_SIZE))
            written = self._written()
        except BaseException:
            self._lost()
            raise
        self._seen = _Seen(credit, written)  # a write in this session needs not read them again
        return Summary(self.uid, identity, credit, meter, written)

    def read_log(self) -> tuple[TopUp, ...]:
        """The top-up log, oldest first (in the summary's card session if it lasts)."""
        try:
            self._open(K_CREDIT)
            log = self._read_log()
            if self._seen is None:
                self._seen = _Seen(self.df.get_value(F_CREDIT), _newest(log))
        except BaseException:
            self._lost()
            raise
        self._seen.log = log
        return tuple(log)

    def read_all(self) -> Summary:
        """The summary with the log (staff tools, where nobody waits)."""
        summary = self.read_summary()
        return replace(summary, log=self.read_log())

    def credit(
        self, txid: str, amount: int, upper: int, now: int | None = None, *, new: bool = False
    ) -> int:
        """Authenticate, Credit, WriteRecord, CommitTransaction, read back; the new credit.

        Idempotent per transaction id: if the log holds `txid` nothing is written. The log is
        read for that unless `new` says the transaction was never sent to any key (its first
        write: it cannot be in any log), which needs only the key's write count. In the card
        session of a summary, what it read is used (nothing can change on the card within the
        session but by us); the read-back is the credit and the newest record, which prove the
        write.
        """
        if amount <= 0:
            raise ValueError("a credit must be positive")
        try:
            return self._credit(txid, amount, upper, now, new)
        except BaseException:
            self._lost()
            raise

    def _credit(self, txid: str, amount: int, upper: int, now: int | None, new: bool) -> int:
        self._open(K_CREDIT)
        seen = self._seen
        if seen is None or (seen.log is None and not new):
            if new:
                seen = _Seen(self.df.get_value(F_CREDIT), self._written())
            else:
                log = self._read_log()
                seen = _Seen(self.df.get_value(F_CREDIT), _newest(log), log)
            self._seen = seen
        if seen.log is not None and any(t.txid == txid for t in seen.log):
            return seen.credit
        if seen.credit + amount > upper:
            raise CreditLimit(
                f"the key holds {seen.credit}; {amount} more would pass its limit {upper}"
            )
        counted = self._counted()
        no = seen.written + 1
        record = TopUp(txid, amount, int(now or time.time()), no)
        self._seen = None  # (what it read before the write is old from here)
        self.df.credit(F_CREDIT, amount)
        if counted:
            self.df.credit(F_WRITES, 1)
        self.df.write_record(F_LOG, 0, record.pack())
        self.df.commit()
        after = self.df.get_value(F_CREDIT)
        last = TopUp.unpack(self.df.read_records(F_LOG, RECORD_SIZE, newest=1)[-1])
        if last.txid != txid or last.no != no or after != seen.credit + amount:
            raise DeviceError(f"read-back after the write does not match ({after}, {last.txid})")
        log = None if seen.log is None else [*seen.log, last][-(MAX_RECORDS - 1) :]
        self._seen = _Seen(after, no, log)
        return after

    def debit(self, amount: int, report: MeterReport) -> int:
        """What a meter does: take credit over and record its report; the remaining credit."""
        try:
            self._open(K_DEBIT)
            value = self.df.get_value(F_CREDIT)
            take = min(amount, value)
            if take:
                self.df.debit(F_CREDIT, take)
            self.df.write_data(F_METER, 0, report.pack())
            self.df.commit()
        finally:
            self._seen = None  # the credit changed (or may have)
        return value - take

    def upgrade(self) -> bool:
        """Give a key of layout 1 the write counter of layout 2, at the utility office (it takes
        the application's master key). The counter starts at the key's write count, the newest
        record's; the identity says layout 2 last, so an upgrade cut short leaves a key of
        layout 1 that is upgraded again from the start (a counter it left behind is brought up
        to the count first). False: the key had its counter already."""
        self._lost()
        try:
            self._open(K_CREDIT)
            identity = self._identity()
            if identity.version >= 2:
                return False
            written = self._written()
            try:
                counter: int | None = self.df.get_value(F_WRITES)
            except NotFound:
                counter = None  # (the error ended the card session)
                self._lost()
            if counter is not None and counter < written:  # left by an upgrade cut short
                self.df.credit(F_WRITES, written - counter)
                self.df.commit()
            self._lost()
            self.df.select_application(AID)
            self.df.authenticate(K_MASTER, self.keys.card_key(K_MASTER, self.uid))
            if counter is None:
                self.df.create_value_file(
                    F_WRITES, Comm.MAC, RIGHTS[F_WRITES], 0, 2**31 - 1, written
                )
            self.df.write_data(F_IDENTITY, 0, replace(identity, version=2).pack())
        finally:
            self._lost()
        self._layout = 2
        return True

    def personalise(
        self, identity: Identity, upper: int, picc_key: bytes = bytes(16), initial: int = 0
    ) -> None:
        """Create the application, files and diversified keys on a blank card."""
        self._lost()  # (it selects and authenticates on its own)
        self._layout = identity.version
        df = self.df
        df.select_application(0)
        df.authenticate(0, picc_key)
        df.create_application(AID, key_settings=0x0B, n_keys=4)
        df.select_application(AID)
        df.authenticate(K_MASTER, bytes(16))
        df.create_std_data_file(F_IDENTITY, Comm.MAC, RIGHTS[F_IDENTITY], IDENTITY_SIZE)
        df.create_value_file(F_CREDIT, Comm.MAC, RIGHTS[F_CREDIT], 0, upper, initial)
        df.create_std_data_file(F_METER, Comm.MAC, RIGHTS[F_METER], METER_SIZE, backup=True)
        df.create_cyclic_record_file(F_LOG, Comm.MAC, RIGHTS[F_LOG], RECORD_SIZE, MAX_RECORDS)
        if identity.version >= 2:
            df.create_value_file(F_WRITES, Comm.MAC, RIGHTS[F_WRITES], 0, 2**31 - 1, 0)
        df.write_data(F_IDENTITY, 0, identity.pack())  # the meter report starts all zeros
        for no in (K_READ, K_CREDIT, K_DEBIT):
            df.change_key(no, self.keys.card_key(no, self.uid), bytes(16))
        df.change_key(K_MASTER, self.keys.card_key(K_MASTER, self.uid))
        # The log is never empty (reading an empty record file is an error that ends the
        # session): start it with a personalisation record.
        self._open(K_CREDIT)
        self.df.write_record(F_LOG, 0, TopUp("", 0, int(time.time())).pack())
        self.df.commit()
        # last, the card's own master key: from its factory value to the utility's, diversified
        df.select_application(0)
        df.authenticate(0, picc_key)
        df.change_key(0, self.keys.picc_key(self.uid))
        self._lost()
