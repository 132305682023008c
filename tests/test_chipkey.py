"""The chip key in-process: profile, security refusals, and tearing at every command."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from drivers.chipkey.desfire import (
    AuthenticationError,
    Comm,
    Desfire,
    DesfireError,
    IntegrityError,
    PermissionDenied,
    ResponseMacError,
    access_rights,
)
from drivers.chipkey.profile import (
    AID,
    F_CREDIT,
    F_LOG,
    F_WRITES,
    K_CREDIT,
    K_DEBIT,
    ChipKey,
    CreditLimit,
    Identity,
    KeySet,
    MeterReport,
    Summary,
    WrongCard,
    WrongRole,
    require_role,
)
from drivers.chipkey.sim import CardRemoved, VirtualCard
from drivers.errors import FrameError

KEYS = KeySet(bytes(range(16)), bytes(range(1, 17)), bytes(range(2, 18)), bytes(range(3, 19)))
UID = bytes.fromhex("04a1b2c3d4e5f6")
IDENT = Identity("SWEJP", "4711001", "1ESY1160000001", "electricity", "K-1001", "customer", "EUR")
LIMIT = 50_000
TX = "DEMO-01-20261121-105316-2703"


def new_key(initial: int = 500, uid: bytes = UID) -> VirtualCard:
    card = VirtualCard(uid)
    ChipKey(card, KEYS).personalise(IDENT, upper=LIMIT, initial=initial)
    return card


def value_of(card: VirtualCard) -> int:
    return card.apps[0xF05E01].files[F_CREDIT].value


class Tamper:
    """A man in the middle between host and card: flips a byte of chosen APDUs or answers."""

    def __init__(
        self,
        card: VirtualCard,
        *,
        command: int | None = None,
        answer: int | None = None,
        nth: int = 1,
    ) -> None:
        self.card, self.command, self.answer, self.nth = card, command, answer, nth
        self.seen: list[bytes] = []
        self.replies: list[bytes] = []
        self.armed = False

    def transmit(self, apdu: bytes) -> bytes:
        self.seen.append(apdu)
        if self.command is not None and apdu[1] == self.command:
            self.nth -= 1
            if self.nth == 0:
                apdu = apdu[:-3] + bytes((apdu[-3] ^ 0x01,)) + apdu[-2:]  # last MAC byte
        reply = self.card.transmit(apdu)
        self.replies.append(reply)
        if self.answer is not None and apdu[1] == self.answer:
            self.armed = True  # the answer may come after the command's further frames (AF)
        if self.armed and len(reply) > 2:
            reply = bytes((reply[0] ^ 0x01,)) + reply[1:]
            self.answer, self.armed = None, False
        return reply


def test_personalised_key_reads_back() -> None:
    card = new_key()
    s = ChipKey(card, KEYS).read_summary()
    assert s.identity == IDENT and s.credit == 500 and s.uid == UID
    assert s.meter == MeterReport() and s.txids == ()


def test_credit_is_written_once_per_transaction() -> None:
    card = new_key()
    key = ChipKey(card, KEYS)
    assert key.credit(TX, 1500, LIMIT) == 2000
    assert key.credit(TX, 1500, LIMIT) == 2000  # the log already has it
    assert ChipKey(card, KEYS).read_all().txids == (TX,)


def test_the_meter_debits_with_its_own_key_and_cannot_credit() -> None:
    card = new_key(initial=1000)
    assert ChipKey(card, KEYS).debit(300, MeterReport(reading=42_000, at=1)) == 700
    df = Desfire(card)
    df.select_application(0xF05E01)
    df.authenticate(K_DEBIT, KEYS.card_key(K_DEBIT, UID))
    with pytest.raises(PermissionDenied):
        df.credit(F_CREDIT, 100)
    assert value_of(card) == 700 and ChipKey(card, KEYS).read_summary().meter.reading == 42_000


def test_credit_beyond_the_upper_limit_is_refused() -> None:
    card = new_key(initial=49_000)
    with pytest.raises(CreditLimit):
        ChipKey(card, KEYS).credit(TX, 2000, LIMIT)
    assert value_of(card) == 49_000
    # and the card enforces it too, whatever the host thinks the limit is
    with pytest.raises(DesfireError, match="boundary"):
        ChipKey(card, KEYS).credit(TX, 2000, 10**9)
    assert value_of(card) == 49_000


@pytest.mark.parametrize(
    "keys",
    [
        KeySet(bytes(16), bytes(16), bytes(range(9, 25)), bytes(16)),  # another utility's keys
        None,  # the right master key, but not diversified for this card
    ],
)
def test_wrong_or_undiversified_keys_are_refused(keys: KeySet | None) -> None:
    card = new_key()
    df = Desfire(card)
    df.select_application(0xF05E01)
    key = KEYS.credit if keys is None else keys.card_key(K_CREDIT, UID)
    with pytest.raises(AuthenticationError):
        df.authenticate(K_CREDIT, key)
    with pytest.raises(PermissionDenied):  # and without authentication nothing can be credited
        df.credit(F_CREDIT, 100)
    assert value_of(card) == 500


def test_a_key_of_another_card_does_not_open_this_one() -> None:
    card = new_key()
    other = KEYS.card_key(K_CREDIT, bytes.fromhex("04000000000001"))
    df = Desfire(card)
    df.select_application(0xF05E01)
    with pytest.raises(AuthenticationError):
        df.authenticate(K_CREDIT, other)


def test_tampered_mac_on_the_credit_command_is_refused() -> None:
    card = new_key()
    with pytest.raises(IntegrityError):
        ChipKey(Tamper(card, command=0x0C), KEYS).credit(TX, 1500, LIMIT)  # type: ignore[arg-type]
    assert value_of(card) == 500
    assert ChipKey(card, KEYS).read_all().txids == ()


@pytest.mark.parametrize("ins", [0x6C, 0xBB, 0xBD])
def test_tampered_answers_to_a_read_are_refused(ins: int) -> None:
    card = new_key()
    with pytest.raises(ResponseMacError):
        ChipKey(Tamper(card, answer=ins), KEYS).read_all()  # type: ignore[arg-type]


@pytest.mark.parametrize("ins", [0x6C, 0xBB, 0x0C, 0x3B])
def test_tampered_answers_during_a_write_are_refused_and_nothing_changes(ins: int) -> None:
    card = new_key()
    with pytest.raises(ResponseMacError):
        ChipKey(Tamper(card, answer=ins), KEYS).credit(TX, 1500, LIMIT)  # type: ignore[arg-type]
    assert value_of(card) == 500  # no commit followed: the staged credit was dropped


def test_a_tampered_commit_answer_is_caught_and_the_retry_does_not_double() -> None:
    card = new_key()
    with pytest.raises(ResponseMacError):
        ChipKey(Tamper(card, answer=0xC7), KEYS).credit(TX, 1500, LIMIT)  # type: ignore[arg-type]
    assert value_of(card) == 2000  # the commit did happen; the host could not trust the answer
    assert ChipKey(card, KEYS).credit(TX, 1500, LIMIT) == 2000


def test_a_replayed_credit_command_is_refused() -> None:
    card = new_key()
    tap = Tamper(card)
    ChipKey(tap, KEYS).credit(TX, 1500, LIMIT)  # type: ignore[arg-type]
    credit_apdu = next(a for a in tap.seen if a[1] == 0x0C)
    df = Desfire(card)
    df.select_application(0xF05E01)
    df.authenticate(K_CREDIT, KEYS.card_key(K_CREDIT, UID))
    reply = card.transmit(credit_apdu)  # the same bytes in a new session
    assert reply == b"\x91\x1e"  # integrity error
    card.transmit(bytes.fromhex("90c7000000"))
    assert value_of(card) == 2000


def test_cards_without_our_application_are_refused() -> None:
    blank = VirtualCard(bytes.fromhex("04999999999999"))
    with pytest.raises(WrongCard):
        ChipKey(blank, KEYS).read_summary()
    other = VirtualCard(bytes.fromhex("04888888888888"))
    df = Desfire(other)
    df.authenticate(0, bytes(16))
    df.create_application(0x123456)
    with pytest.raises(WrongCard):
        ChipKey(other, KEYS).credit(TX, 100, LIMIT)
    assert 0xF05E01 not in other.apps


def test_a_technician_key_says_so() -> None:
    card = VirtualCard(bytes.fromhex("04777777777777"))
    tech = Identity("SWEJP", "", "", "electricity", "T-0001", "technician", "EUR")
    ChipKey(card, KEYS).personalise(tech, upper=0)
    assert ChipKey(card, KEYS).read_summary().identity.role == "technician"


def _write_sequence_length() -> int:
    card = new_key()
    key = ChipKey(card, KEYS)
    _ = key.uid
    before = card.commands
    key.credit(TX, 1500, LIMIT)
    return card.commands - before


@pytest.mark.parametrize("n", range(1, _write_sequence_length() + 1))
def test_power_lost_after_each_command_of_the_write_credits_exactly_once(n: int) -> None:
    card = new_key()
    key = ChipKey(card, KEYS)
    _ = key.uid
    card.tear_after(n)
    with pytest.raises(CardRemoved):
        key.credit(TX, 1500, LIMIT)
    card.power_on()  # the customer puts the key back
    summary = ChipKey(card, KEYS).read_all()
    landed = TX in summary.txids
    assert summary.credit == (2000 if landed else 500)  # all or nothing, never half
    after = ChipKey(card, KEYS).credit(TX, 1500, LIMIT)  # the kiosk writes again, same txid
    assert after == 2000 and value_of(card) == 2000
    assert ChipKey(card, KEYS).read_all().txids == (TX,)


def test_state_survives_a_restart_in_its_file(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    card = VirtualCard(UID, path)
    ChipKey(card, KEYS).personalise(IDENT, upper=LIMIT, initial=500)
    ChipKey(card, KEYS).credit(TX, 1500, LIMIT)
    again = VirtualCard(bytes(7), path)  # loaded from the file
    assert again.uid == UID and ChipKey(again, KEYS).read_summary().credit == 2000


def test_session_mac_chain_binds_every_command() -> None:
    """Dropping one command from the middle of a session breaks the chain for the next."""
    card = new_key()
    df = Desfire(card)
    df.select_application(0xF05E01)
    df.authenticate(K_CREDIT, KEYS.card_key(K_CREDIT, UID))
    assert df.session is not None
    df.session.cmac(b"\x6c\x01")  # the host thinks a command went out that the card never saw
    with pytest.raises(ResponseMacError):
        df.get_value(F_CREDIT)


def test_a_customer_key_where_a_technician_key_is_required_is_refused() -> None:
    card = new_key()
    summary = ChipKey(card, KEYS).read_summary()
    with pytest.raises(WrongRole, match="a customer key cannot be used where a technician"):
        require_role(summary, "technician")
    assert value_of(card) == 500 and ChipKey(card, KEYS).read_summary() == summary
    tech = VirtualCard(bytes.fromhex("04666666666666"))
    ChipKey(tech, KEYS).personalise(
        Identity("SWEJP", "", "", "electricity", "T-1", "technician", "EUR"), upper=0
    )
    assert require_role(ChipKey(tech, KEYS).read_summary(), "technician").identity.serial == "T-1"


def test_enciphered_files_and_abort_transaction() -> None:
    card = VirtualCard(bytes.fromhex("04555555555555"))
    tap = Tamper(card)  # records the traffic, changes nothing
    df = Desfire(tap)  # type: ignore[arg-type]
    df.authenticate(0, bytes(16))
    df.create_application(0x0A0B0C)
    df.select_application(0x0A0B0C)
    df.authenticate(0, bytes(16))
    rights = access_rights(0, 0, 0, 0)
    df.create_std_data_file(0, Comm.ENC, rights, 40)
    df.create_value_file(1, Comm.ENC, rights, 0, 10_000, 100)
    secret = b"contract 4711, meter 1ESY1160000001".ljust(40, b".")
    df.write_data(0, 0, secret, Comm.ENC)
    assert df.read_data(0, 0, 40, Comm.ENC) == secret
    wire = tap.seen + tap.replies
    assert not any(b"contract 4711" in x for x in wire)  # never in clear, either direction
    df.credit(1, 250, Comm.ENC)
    df.abort()  # the staged credit is dropped
    assert df.get_value(1, Comm.ENC) == 100
    df.credit(1, 250, Comm.ENC)
    assert df.commit() and df.get_value(1, Comm.ENC) == 350
    assert df.commit() is False  # nothing left to commit: "no changes"


# ---------------------------------------------------------------- #17 item 6


def test_personalisation_leaves_no_factory_key_on_the_card() -> None:
    """Before: the card's own master key stayed at its factory value (anyone could format
    the key or put an application of their own on it)."""
    card = new_key()
    df = Desfire(card)
    df.select_application(0)
    with pytest.raises(AuthenticationError):
        df.authenticate(0, bytes(16))
    df.authenticate(0, KEYS.picc_key(UID))  # the utility's, diversified per card
    other = bytes.fromhex("04ffeeddccbbaa")
    assert KEYS.picc_key(other) != KEYS.picc_key(UID)


def test_the_kiosks_credit_key_cannot_rewrite_the_identity() -> None:
    """Before: a kiosk's credit key could rewrite serial, account and role. Now only the
    application's master key (issuing, never at a kiosk) writes the identity file."""
    from drivers.chipkey.profile import AID, F_IDENTITY, IDENTITY_SIZE, K_MASTER

    card = new_key()
    df = Desfire(card)
    df.select_application(AID)
    df.authenticate(K_CREDIT, KEYS.card_key(K_CREDIT, UID))
    before = df.read_data(F_IDENTITY, 0, IDENTITY_SIZE)  # it reads it
    forged = Identity("SWEJP", "9999999", "1ESY1160000001", "electricity", "K-1001",
                      "technician", "EUR").pack()  # fmt: skip
    with pytest.raises(PermissionDenied):
        df.write_data(F_IDENTITY, 0, forged)
    assert ChipKey(card, KEYS).read_summary().identity == IDENT  # nothing changed
    df.select_application(AID)
    df.authenticate(K_MASTER, KEYS.card_key(K_MASTER, UID))
    df.write_data(F_IDENTITY, 0, before)  # the issuer's key may


def test_every_write_is_numbered_and_the_log_says_how_far_back_it_reaches() -> None:
    """#17 item 4: the key counts its writes for ever; its log of ten shows which."""
    card = new_key()
    key = ChipKey(card, KEYS)
    fresh = key.read_all()
    assert (fresh.written, fresh.log_from) == (0, 0)
    for n in range(1, 13):
        key.credit(f"T{n}", 100, LIMIT)
        s = key.read_all()
        assert s.written == n and s.log_from == max(0, n - 9), (n, s.written, s.log_from)
    assert s.txids == tuple(f"T{n}" for n in range(3, 13))


def test_a_key_counts_its_writes_in_the_commit_that_writes_them() -> None:
    """Layout 2: the write counter is credited in each write's commit, so the summary knows
    the key's write count (the next write's number) in one frame, without the log."""
    card = new_key()
    key = ChipKey(card, KEYS)
    for n in range(1, 13):  # past the log's ten
        key.credit(f"T{n}", 100, LIMIT, new=n % 2 == 0)
        s = key.read_summary()
        assert s.log is None and s.written == n
        assert key.read_log()[-1].no == n  # the newest record's number is the same
    assert value_of(card) == 500 + 1200
    assert card.apps[AID].files[F_WRITES].value == 12


def test_keys_of_the_first_layout_are_read_and_written_as_before() -> None:
    """Keys personalised before the write counter (identity format 1) have no counter file:
    their write count is the newest record's, they are written without one, and read."""
    card = VirtualCard(UID)
    old = replace(IDENT, version=1)
    ChipKey(card, KEYS).personalise(old, upper=LIMIT, initial=500)
    assert F_WRITES not in card.apps[AID].files
    key = ChipKey(card, KEYS)
    _ = key.uid
    before = card.commands
    s = key.read_summary()
    assert card.commands - before == 9  # the newest record (2 frames) for the count
    assert (s.identity, s.written, s.credit) == (old, 0, 500)
    assert key.credit("T1", 100, LIMIT, new=True) == 600
    assert key.credit("T2", 100, LIMIT) == 700
    assert key.credit("T2", 100, LIMIT) == 700  # not new: its log has it, nothing written
    again = ChipKey(card, KEYS).read_all()
    assert again.written == 2 and again.txids == ("T1", "T2") and again.credit == 700
    assert F_WRITES not in card.apps[AID].files


def test_a_write_that_is_not_new_reads_the_log_first_and_a_repeat_writes_nothing() -> None:
    card = new_key()
    key = ChipKey(card, KEYS)
    key.read_summary()
    assert key.credit("T1", 100, LIMIT, new=True) == 600
    key = ChipKey(card, KEYS)
    key.read_summary()  # a new insertion: its log not read
    assert key.credit("T1", 100, LIMIT) == 600  # the log is read: T1 is there
    assert value_of(card) == 600 and ChipKey(card, KEYS).read_all().written == 1


def test_a_key_of_the_first_layout_is_upgraded_with_its_count_and_kiosks_count_on() -> None:
    card = VirtualCard(UID)
    ChipKey(card, KEYS).personalise(replace(IDENT, version=1), upper=LIMIT, initial=500)
    for n in range(1, 4):
        ChipKey(card, KEYS).credit(f"T{n}", 100, LIMIT, new=True)
    assert ChipKey(card, KEYS).upgrade() is True
    assert card.apps[AID].files[F_WRITES].value == 3
    s = ChipKey(card, KEYS).read_summary()
    assert (s.identity, s.written, s.credit) == (IDENT, 3, 800)  # layout 2, nothing else changed
    ChipKey(card, KEYS).credit("T4", 100, LIMIT, new=True)
    assert card.apps[AID].files[F_WRITES].value == 4
    assert ChipKey(card, KEYS).read_all().log[-1].no == 4  # type: ignore[index]
    before = {no: (f.value, f.data, list(f.records)) for no, f in card.apps[AID].files.items()}
    assert ChipKey(card, KEYS).upgrade() is False  # once only: nothing changes
    after = {no: (f.value, f.data, list(f.records)) for no, f in card.apps[AID].files.items()}
    assert after == before


def _old_key() -> VirtualCard:
    card = VirtualCard(UID)
    ChipKey(card, KEYS).personalise(replace(IDENT, version=1), upper=LIMIT, initial=500)
    ChipKey(card, KEYS).credit("T1", 100, LIMIT, new=True)
    return card


def _upgrade_length() -> int:
    card = _old_key()
    key = ChipKey(card, KEYS)
    _ = key.uid
    before = card.commands
    key.upgrade()
    return card.commands - before


@pytest.mark.parametrize("cut", range(1, _upgrade_length() + 1))
def test_an_upgrade_cut_short_anywhere_is_finished_by_the_next(cut: int) -> None:
    """The key pulled at any command of the upgrade: the key is of layout 1 (kiosks write it
    so, without the counter) or of layout 2 with the right count; the next upgrade finishes."""
    card = _old_key()
    key = ChipKey(card, KEYS)
    _ = key.uid
    card.tear_after(cut)
    with pytest.raises(CardRemoved):
        key.upgrade()
    card.power_on()
    layout = ChipKey(card, KEYS).read_summary().identity.version
    if layout == 1:  # a kiosk tops it up meanwhile, as a key of layout 1
        ChipKey(card, KEYS).credit("T2", 100, LIMIT, new=True)
        assert ChipKey(card, KEYS).upgrade() is True
    s = ChipKey(card, KEYS).read_all()
    assert (
        s.identity.version == 2
        and s.written == _newest_no(s) == card.apps[AID].files[F_WRITES].value
    )


def _newest_no(s: Summary) -> int:
    assert s.log is not None
    return s.log[-1].no


# ---------------------------------------------------------------- frames as an EV1 takes them


def authenticated(card: VirtualCard) -> Desfire:
    df = Desfire(card)
    df.select_application(AID)
    df.authenticate(K_CREDIT, KEYS.card_key(K_CREDIT, UID))
    return df


def test_the_card_refuses_a_frame_longer_than_it_takes_and_nothing_is_written() -> None:
    """What every top-up sent before: the 64-byte log record with its header and CMAC in one
    APDU of 79 data bytes. An EV1 answers 91 7E (length error), and so does the virtual card."""
    card = new_key()
    df = authenticated(card)
    s = df.session
    assert s is not None
    header = bytes((F_LOG,)) + bytes(3) + (64).to_bytes(3, "little")
    body = bytes(range(64))
    mac = s.cmac(bytes((0x3B,)) + header + body)[:8]
    data = header + body + mac
    apdu = bytes((0x90, 0x3B, 0, 0, len(data))) + data + b"\x00"
    records = list(card.apps[AID].files[F_LOG].records)
    assert card.transmit(apdu) == b"\x91\x7e"
    card.transmit(bytes.fromhex("90c7000000"))
    assert card.apps[AID].files[F_LOG].records == records


def test_a_top_up_goes_out_in_frames_of_54_bytes_and_long_answers_come_back_in_frames() -> None:
    card = new_key()
    tap = Tamper(card)
    ChipKey(tap, KEYS).credit(TX, 1500, LIMIT)  # type: ignore[arg-type]
    assert value_of(card) == 2000
    assert max(a[4] for a in tap.seen if len(a) > 5) <= 54
    first = next(i for i, a in enumerate(tap.seen) if a[1] == 0x3B)
    # the record's 79 bytes: 54 under WriteRecord, answered 91 AF and nothing else, 25 under AF
    assert tap.seen[first][4] == 54 and tap.replies[first] == b"\x91\xaf"
    assert tap.seen[first + 1][1] == 0xAF and tap.seen[first + 1][4] == 79 - 54
    assert tap.replies[first + 1][-2:] == b"\x91\x00" and len(tap.replies[first + 1]) == 10
    assert max(len(r) - 2 for r in tap.replies) <= 59
    log = ChipKey(card, KEYS).read_log()
    assert [t.txid for t in log][-1] == TX


def test_a_card_that_does_not_ask_for_the_rest_of_a_command_ends_the_session() -> None:
    class Impatient:
        """Answers 91 00 to the first frame of a chained write, as if it had it all."""

        def __init__(self, card: VirtualCard) -> None:
            self.card = card

        def transmit(self, apdu: bytes) -> bytes:
            if apdu[1] == 0x3B:
                return b"\x91\x00"
            return self.card.transmit(apdu)

    card = new_key()
    df = authenticated(card)
    df.card = Impatient(card)
    with pytest.raises(FrameError, match="did not ask for the rest"):
        df.write_record(F_LOG, 0, bytes(64))
    assert df.session is None


def test_nothing_to_commit_is_a_bare_status_word_and_the_session_goes_on() -> None:
    """NXP's cards MAC an answer of status 00 only: CommitTransaction with nothing staged
    answers 91 0C without a CMAC (libfreefare takes it so). We demanded a CMAC and dropped the
    session; now the commit says False and the next command's MAC still checks."""
    card = new_key()
    df = authenticated(card)
    tap = Tamper(card)
    df.card = tap  # type: ignore[assignment]
    assert df.commit() is False
    assert tap.replies[-1] == b"\x91\x0c"
    assert df.session is not None
    assert df.get_value(F_CREDIT) == 500  # its answer's CMAC checks on the same IV chain


def test_a_status_00_answer_without_its_cmac_is_still_refused() -> None:
    class Stripped:
        def __init__(self, card: VirtualCard) -> None:
            self.card = card

        def transmit(self, apdu: bytes) -> bytes:
            reply = self.card.transmit(apdu)
            return reply[-2:] if apdu[1] == 0xC7 else reply

    card = new_key()
    df = authenticated(card)
    df.credit(F_CREDIT, 100)
    df.card = Stripped(card)
    with pytest.raises(ResponseMacError):
        df.commit()
    assert df.session is None


def test_only_commit_takes_nothing_to_commit_without_a_cmac() -> None:
    """Found in review: every command took a bare 91 0C as a status-only answer, so a log
    read answered 91 0C by someone on the line came back empty, with the session going on.
    Only CommitTransaction has "nothing to commit"."""

    class Bare:
        def __init__(self, card: VirtualCard) -> None:
            self.card = card

        def transmit(self, apdu: bytes) -> bytes:
            return b"\x91\x0c" if apdu[1] == 0xBB else self.card.transmit(apdu)

    card = new_key()
    df = authenticated(card)
    df.card = Bare(card)
    with pytest.raises(ResponseMacError):
        df.read_records(F_LOG, 64)
    assert df.session is None


def test_a_card_that_never_stops_sending_frames_is_refused() -> None:
    class Endless:
        def __init__(self) -> None:
            self.asked = 0

        def transmit(self, apdu: bytes) -> bytes:
            self.asked += 1
            return bytes(59) + b"\x91\xaf"

    card = Endless()
    df = Desfire(card)
    with pytest.raises(FrameError, match="answer frames"):
        df.read_data(1, 0, 0, Comm.PLAIN)
    assert card.asked <= 200
