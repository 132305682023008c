"""DESFire EV1 (AES) conformance: our driver and our virtual card against traffic others
recorded from real cards, and against the frame limits of the card.

Sources (facts and bytes carried over, the code is ours):

- RFDOORLOCK: "DESFire EV1 Communication Examples", a debug log of a real EV1 card (software
  1.4) behind a PN532, published in github.com/sotechcllc/RFDoorLock, file
  "Desfire EV1 Communication Examples.htm", section "AES". Native commands there; we send the
  same commands ISO 7816-4 wrapped (90 INS 00 00 Lc data 00, answers data 91 status), which
  changes no byte of the secure messaging.
- ACR1281U: ACS ACR1281U reference manual, "Example 2: DESFIRE Frame Level Chaining (ISO 7816
  wrapping mode)": GetVersion of a real card in three frames.
- FRAMES: the card's frame size (64 bytes, FSCI 5); proxmark3 client/src/mifare/desfirecore.h
  (DESFIRE_TX_FRAME_MAX_LEN 54 per wrapped command frame); Chameleon Mini's DESFire emulation
  (DESFIRE_MAX_PAYLOAD_SIZE 59 per answer frame).
- STATUS: DESFire status codes as libfreefare (mifare_desfire_error.c) and proxmark3
  (desfire.h, MFDES_E_*) name them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import drivers.chipkey.desfire as desfire_module
import drivers.chipkey.sim as sim_module
from drivers.chipkey.crypto import cbc_decrypt, cbc_encrypt, crc32_desfire, rotate_left
from drivers.chipkey.desfire import (
    MAX_ANSWER_DATA,
    MAX_COMMAND_DATA,
    AuthenticationError,
    BoundaryError,
    Comm,
    Desfire,
    DesfireError,
    IntegrityError,
    NotFound,
    PermissionDenied,
    Session,
    access_rights,
    wrap,
)
from drivers.chipkey.sim import FRAME, FRAME_IN, VirtualCard
from drivers.errors import FrameError


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def wrapped(native_command: str, native_answer: str) -> tuple[bytes, bytes]:
    """A native exchange as the same exchange in ISO 7816-4 wrapping."""
    cmd, ans = h(native_command), h(native_answer)
    return wrap(cmd[0], cmd[1:]), ans[1:] + bytes((0x91, ans[0]))


class Replay:
    """A card that is a recorded session: each APDU must be the recorded one, and gets the
    recorded answer."""

    def __init__(self, exchanges: list[tuple[bytes, bytes]]) -> None:
        self.exchanges = list(exchanges)

    def transmit(self, apdu: bytes) -> bytes:
        assert self.exchanges, f"an APDU the recording does not have: {apdu.hex(' ')}"
        expected, answer = self.exchanges.pop(0)
        assert apdu.hex(" ") == expected.hex(" ")
        return answer


@pytest.fixture
def rnd(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """The random numbers the recording used, in order (host RndA, or the card's RndB)."""
    queue: list[bytes] = []

    def recorded(n: int) -> bytes:
        value = queue.pop(0)
        assert len(value) == n
        return value

    monkeypatch.setattr(desfire_module.os, "urandom", recorded)
    yield queue
    assert not queue, "a recorded random number was not used"


# ---------------------------------------------------------------- RFDOORLOCK, section AES


@dataclass(frozen=True)
class Auth:
    """One recorded AES authentication: key number, key, RndB, RndA, and the three frames."""

    name: str
    key_no: int
    key: str
    rnd_b: str
    rnd_a: str
    rnd_b_enc: str
    rnd_ab_enc: str
    rnd_a_enc: str
    session_key: str


AUTHS = [
    Auth(
        "RFDOORLOCK AES: Authenticate(KeyNo=0, key all zeros)",
        0,
        "00000000000000000000000000000000",
        "C05DDD714FD788A6B7B754F3C4D066E8",
        "F44B26F5686F3A391CD38EBD10772281",
        "B969FDFE56FD91FC9DE6F6F213B8FD1E",
        "36AAD7DF6E436BA08D18613830A70D5AD43E3D3F4A8D47541EEE623A934E4774",
        "800DB680BC146BD121D6578F2D2E2059",
        "F44B26F5C05DDD7110772281C4D066E8",
    ),
    Auth(
        "RFDOORLOCK AES: Authenticate(KeyNo=0, key 00 10 20 .. 80)",
        0,
        "00102030405060708090A0B0B0A09080",
        "271047125A2AA58178F5C51B1177A19B",
        "C2A1E47B96A5589FAAE90C03FE6D00A7",
        "CCC8316C2B2613FE9A189BAC9CC89D03",
        "C02E061E72E17726489CAEEC997C523758BF863EFE7671C55B4665D06ACCD97B",
        "72ACCC0BDEA482B53185BB5AD0086246",
        "C2A1E47B27104712FE6D00A71177A19B",
    ),
    Auth(
        "RFDOORLOCK AES: Authenticate(KeyNo=0, key 10 18 20 .. 88)",
        0,
        "10182028303840485058606870788088",
        "910368457E2E9AA167355BFB544B9931",
        "90F7A201C4DB760538FF8A49EC63DECD",
        "3E2BE626C05E7798EE518355A751648E",
        "FABF71BB0DC45B8F31BAEDDFF7F3439652D4094DF12C17EF0C94353E6D7770C8",
        "1CE6C574E24923D404E18B6A240C1B08",
        "90F7A20191036845EC63DECD544B9931",
    ),
    Auth(
        "RFDOORLOCK AES: Authenticate(KeyNo=0, key all zeros, again)",
        0,
        "00000000000000000000000000000000",
        "D81000444B976F48340DCDE34D7AB17C",
        "C2A1E47B96A5589FAAE90C03FE6D00A7",
        "EDDAF0C5D9A7CF42B8808BE2013899A1",
        "D8105F874E2CA57B76C354A8066B0D7880B0C4EC399DBF253438DB46D75F8F60",
        "459C76B71AB9F1736413F5ACD73E7DF9",
        "C2A1E47BD8100044FE6D00A74D7AB17C",
    ),
    Auth(
        "RFDOORLOCK AES: Authenticate(KeyNo=1, key 10 18 20 .. 88)",
        1,
        "10182028303840485058606870788088",
        "626FFBD45CAF334ACCA45599304F5B17",
        "40E7D27174CBA675E8EFBAB99C530E3D",
        "B351CB2465D4F33AC627FD6E87A168F2",
        "044B6CAC343A08658951496 49CA8DDE1F5AC4EC67BD208900AF02F049E05F0B0".replace(" ", ""),
        "A2EE144B1012FBEB7B2F11132D95A454",
        "40E7D271626FFBD49C530E3D304F5B17",
    ),
]


def auth_exchanges(a: Auth) -> list[tuple[bytes, bytes]]:
    return [
        wrapped(f"AA{a.key_no:02X}", "AF" + a.rnd_b_enc),
        wrapped("AF" + a.rnd_ab_enc, "00" + a.rnd_a_enc),
    ]


@pytest.mark.parametrize("a", AUTHS, ids=[a.name for a in AUTHS])
def test_the_crypto_of_a_recorded_authentication(a: Auth) -> None:
    key = h(a.key)
    assert cbc_decrypt(key, h(a.rnd_b_enc)) == h(a.rnd_b)
    token = cbc_encrypt(key, h(a.rnd_a) + rotate_left(h(a.rnd_b)), h(a.rnd_b_enc))
    assert token == h(a.rnd_ab_enc)
    assert cbc_decrypt(key, h(a.rnd_a_enc), token[-16:]) == rotate_left(h(a.rnd_a))


@pytest.mark.parametrize("a", AUTHS, ids=[a.name for a in AUTHS])
def test_our_driver_authenticates_as_the_recording_did(a: Auth, rnd: list[bytes]) -> None:
    rnd.append(h(a.rnd_a))
    df = Desfire(Replay(auth_exchanges(a)))
    df.authenticate(a.key_no, h(a.key))
    assert df.session is not None and df.session.key == h(a.session_key)
    assert df.session.iv == bytes(16)  # zeroed once, at the start of the session


def test_our_driver_refuses_a_card_that_does_not_prove_the_key(rnd: list[bytes]) -> None:
    a = AUTHS[0]
    rnd.append(h(a.rnd_a))
    forged = h(a.rnd_a_enc)[:-1] + bytes((h(a.rnd_a_enc)[-1] ^ 1,))
    card = Replay([auth_exchanges(a)[0], (auth_exchanges(a)[1][0], forged + b"\x91\x00")])
    df = Desfire(card)
    with pytest.raises(AuthenticationError):
        df.authenticate(a.key_no, h(a.key))
    assert df.session is None


@pytest.mark.parametrize("a", AUTHS, ids=[a.name for a in AUTHS])
def test_our_virtual_card_answers_a_recorded_authentication_as_the_card_did(
    a: Auth, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The card's side: given the recording's RndB, our virtual card sends the recorded
    E(RndB), takes the recorded token and answers the recorded E(RndA')."""
    monkeypatch.setattr(sim_module.os, "urandom", lambda n: h(a.rnd_b))
    card = VirtualCard(h("04063F72633480"))
    card.apps[0xAE16] = sim_module.VApp([h(a.key)] * 2, 0x0F, {}, [0x10, 0x10])
    card.transmit(wrap(0x5A, h("16AE00")))
    for command, answer in auth_exchanges(a):
        assert card.transmit(command).hex(" ") == answer.hex(" ")
    assert card.session is not None and card.session.key == h(a.session_key)


# ChangeKey: (name, the session's key, its IV before, authenticated key no, changed key no,
# new key, old key, version, CRC32 of the cryptogram, CRC32 of the new key, the enciphered
# cryptogram, the card's answer)
CHANGE_KEYS = [
    (
        "RFDOORLOCK AES: ChangeKey(KeyNo=0) its own key, first in the session",
        AUTHS[0].session_key, "00" * 16, 0, 0,
        "00102030405060708090A0B0B0A09080", None, 0x10, "D2C6E66B", None,
        "E9F85E219496C2B58C1090DC3935FAE9E840CF61B383D9531946256B1F110C10", "00",
    ),
    (
        "RFDOORLOCK AES: ChangeKey(KeyNo=0) its own key again",
        AUTHS[1].session_key, "00" * 16, 0, 0,
        "10182028303840485058606870788088", None, 0x10, "74856362", None,
        "2945E3760E60F4A4046BB8A505B31CF559A3A2E05213BC82942CA6AB5DBCECF5", "00",
    ),
    (
        "RFDOORLOCK AES: ChangeKey(KeyNo=0) after GetKeyVersion (the IV chained)",
        AUTHS[2].session_key, "8A8FA36F55CD210DD8054658AC70D99A", 0, 0,
        "00000000000000000000000000000000", None, 0x00, "0A0F861B", None,
        "635375E4919F8AF2E9E86B1C1BA55B0C0807EAF484D7A7EF6E0C3084160F5A61", "00",
    ),
    (
        "RFDOORLOCK AES: ChangeKey(KeyNo=1) another key, answered with a CMAC",
        AUTHS[3].session_key, "00" * 16, 0, 1,
        "00102030405060708090A0B0B0A09080", "00000000000000000000000000000000", 0x10,
        "3370B484", "BFE37919",
        "E7ECCB6BD1CA64BC161A12B1C024F71430337408C8A87EACAB7A1FF18951FCA3",
        "002128D3CD9C9ACFFF",
    ),
    (
        "RFDOORLOCK AES: ChangeKey(KeyNo=1) another key again (IV = the last answer's CMAC)",
        AUTHS[3].session_key, "2128D3CD9C9ACFFFF6EB9546ADF35E17", 0, 1,
        "10182028303840485058606870788088", "00102030405060708090A0B0B0A09080", 0x10,
        "29EAE6E0", "B36E762A",
        "2841938C40A4BC2C33064482FEADA5F43EC535D34255B0286C2352CD173863C7",
        "00CAF3BF0B2836E9DE",
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", CHANGE_KEYS, ids=[c[0] for c in CHANGE_KEYS])
def test_our_driver_changes_a_key_with_the_recorded_bytes(case: tuple) -> None:  # type: ignore[type-arg]
    (_, skey, iv, auth_no, key_no, new, old, version, crc, crc_new, enc, answer) = case
    header = bytes((0xC4, key_no))
    if old is None:
        body = h(new) + bytes((version,))
    else:
        body = bytes(a ^ b for a, b in zip(h(new), h(old), strict=True)) + bytes((version,))
    assert crc32_desfire(header + body) == h(crc)
    if crc_new is not None:
        assert crc32_desfire(h(new)) == h(crc_new)
    df = Desfire(Replay([wrapped(f"C4{key_no:02X}" + enc, answer)]))
    df.session, df.key_no = Session(h(skey)), auth_no
    df.session.iv = h(iv)
    df.change_key(key_no, h(new), None if old is None else h(old), version)
    if key_no == auth_no:
        assert df.session is None  # changing the key of the session ends it
    else:
        assert df.session is not None  # the answer's CMAC checked


# The CMAC chain of one session (AUTHS[4]'s session key, IV zeroed after the authentication):
# (what, the bytes MAC'd, the first 8 bytes of the CMAC the recording shows).
SESSION = AUTHS[4].session_key
WRITE_1 = "3D05000000340000" + bytes(range(0x00, 0x34)).hex()
WRITE_2 = "3D053400001C0000" + bytes(range(0x34, 0x50)).hex()
CHAIN = [
    ("TX CreateStdDataFile(5, plain, 80 bytes)", "CD050011005000 00", "F23B0368578C65AD"),
    ("RX its status", "00", "A75316AD1596B953"),
    ("TX GetFileIDs", "6F", "F69B3BADA99A58AA"),
    ("RX file 5 and the status", "0500", "2D5FF67FFEC9D2D3"),
    ("TX GetFileSettings(5)", "F505", "6365D3B198DCA840"),
    ("RX the settings and the status", "0000110050000000", "2AAC7517024E09DC"),
    ("TX WriteData(5, 0, 52 bytes), plain: MAC'd, not sent", WRITE_1, "5F7BCA269F97495C"),
    ("RX its status", "00", "765C9DAA50ECB62F"),
    ("TX WriteData(5, 52, 28 bytes)", WRITE_2, "EDF32CB90997155F"),
    ("RX its status", "00", "3E0AED986B8B0F37"),
    ("TX ReadData(5, 0, 48)", "BD05000000300000", "433303AB3CFFA758"),
    ("RX 48 bytes and the status", bytes(range(0x00, 0x30)).hex() + "00", "4C65F1F842262BAC"),
    ("TX ReadData(5, 48, 32)", "BD05300000200000", "C26BDE4EB965BC3C"),
    ("RX 32 bytes and the status", bytes(range(0x30, 0x50)).hex() + "00", "F02205CF913C03C9"),
    ("TX DeleteFile(5)", "DF05", "169188F617AE87D4"),
    ("RX its status", "00", "1BEF0D32B6D1D7F9"),
    ("TX GetFileIDs", "6F", "3406A84E411431A2"),
    ("RX no files, the status", "00", "FC194EA93E3EF8E7"),
]


def test_the_cmac_chain_of_a_recorded_session() -> None:
    s = Session(h(SESSION))
    for what, data, mac in CHAIN:
        assert s.cmac(h(data))[:8].hex().upper() == mac, what


def test_our_driver_creates_writes_and_reads_a_file_as_the_recording_did() -> None:
    """The same session through our driver's commands (the first WriteData of 52 bytes fits a
    native frame of the recording but not a wrapped one of 54 data bytes: its CMAC is chained
    here by hand, as the card chained it)."""
    exchanges = [
        wrapped("CD050011005000 00".replace(" ", ""), "00A75316AD1596B953"),
        wrapped(WRITE_2, "003E0AED986B8B0F37"),
        wrapped("BD05000000300000", "00" + bytes(range(0x30)).hex() + "4C65F1F842262BAC"),
        wrapped("BD05300000200000", "00" + bytes(range(0x30, 0x50)).hex() + "F02205CF913C03C9"),
    ]
    df = Desfire(Replay(exchanges))
    df.session, df.key_no = Session(h(SESSION)), 1
    df.create_std_data_file(5, Comm.PLAIN, access_rights(0, 0, 1, 1), 80)
    s = df.session
    for _, data, _ in CHAIN[2:8]:  # GetFileIDs .. the first write's answer: not our commands
        s.cmac(h(data))
    df.write_data(5, 0x34, bytes(range(0x34, 0x50)), Comm.PLAIN)
    assert df.read_data(5, 0, 48, Comm.PLAIN) == bytes(range(0x30))
    assert df.read_data(5, 48, 32, Comm.PLAIN) == bytes(range(0x30, 0x50))


def test_a_recorded_answer_with_one_bit_flipped_fails_its_cmac() -> None:
    flipped = "00" + "01" + bytes(range(1, 0x30)).hex() + "4C65F1F842262BAC"
    exchanges = [wrapped("BD05000000300000", flipped)]
    df = Desfire(Replay(exchanges))
    df.session = Session(h(SESSION))
    df.session.iv = h("EDF32CB90997155F8C0A15BBCA118DA1")  # as after the second write
    df.session.cmac(h("00"))  # ... and its answer
    with pytest.raises(desfire_module.ResponseMacError):
        df.read_data(5, 0, 48, Comm.PLAIN)
    assert df.session is None


def test_access_rights_as_the_recorded_file_settings_show_them() -> None:
    # RFDOORLOCK GetFileSettings(5): "Access Read: 0x0, Write: 0x0, Rd+Wr: 0x1, Change: 0x1"
    assert access_rights(0, 0, 1, 1) == h("1100")


# ---------------------------------------------------------------- ACR1281U: GetVersion


def test_get_version_in_three_frames_as_the_reader_manual_shows() -> None:
    df = Desfire(
        Replay(
            [
                (h("9060000000"), h("04010100021805 91AF".replace(" ", ""))),
                (h("90AF000000"), h("04010100061805 91AF".replace(" ", ""))),
                (h("90AF000000"), h("04525A19B21B808E36544D40260491 00".replace(" ", ""))),
            ]
        )
    )
    v = df.get_version()
    assert v.hardware == h("04010100021805") and v.software == h("04010100061805")
    assert v.uid == h("04525A19B21B80") and v.batch == h("8E36544D40")


# ---------------------------------------------------------------- FRAMES


def test_the_driver_frames_no_more_than_the_card_takes() -> None:
    assert MAX_COMMAND_DATA <= FRAME_IN == 54
    assert MAX_ANSWER_DATA == FRAME == 59
    assert len(wrap(0x3B, bytes(54))) == 5 + 54 + 1
    with pytest.raises(FrameError, match="54 at most"):
        wrap(0x3B, bytes(55))


@pytest.mark.parametrize("n", [54, 55, 60, 79])
def test_the_virtual_card_takes_54_data_bytes_in_a_frame_and_no_more(n: int) -> None:
    card = VirtualCard(h("04063F72633480"))
    apdu = bytes((0x90, 0x5A, 0, 0, n)) + bytes(n) + b"\x00"  # a SelectApplication padded out
    answer = card.transmit(apdu)
    assert answer == (b"\x91\x00" if n <= 54 else b"\x91\x7e")


def test_an_apdu_whose_lc_does_not_match_its_length_is_refused() -> None:
    card = VirtualCard(h("04063F72633480"))
    assert card.transmit(h("905A0000 05 000000 00".replace(" ", ""))) == h("6700")


def test_a_long_answer_comes_in_frames_of_59_bytes() -> None:
    card = VirtualCard(h("04063F72633480"), picc_key=bytes(16))
    df = Desfire(card)
    df.authenticate(0, bytes(16))
    df.create_application(0x0A0B0C, 0x0F, 1)
    df.select_application(0x0A0B0C)
    df.authenticate(0, bytes(16))
    df.create_std_data_file(1, Comm.PLAIN, access_rights(0xE, 0xE, 0xE, 0xE), 200)
    df.select_application(0x0A0B0C)  # free access, no session: no MAC either way
    before = card.commands
    df.write_data(1, 0, bytes(range(200)), Comm.PLAIN)
    assert card.commands - before == 4  # 7 + 200 bytes: 54 + 54 + 54 + 45
    before = card.commands
    assert df.read_data(1, 0, 200, Comm.PLAIN) == bytes(range(200))
    assert card.commands - before == 4  # 59 + 59 + 59 + 23


# ---------------------------------------------------------------- STATUS


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (0xAE, AuthenticationError),
        (0x9D, PermissionDenied),
        (0xBE, BoundaryError),
        (0x1E, IntegrityError),
        (0xA0, NotFound),
        (0xF0, NotFound),
        (0x7E, DesfireError),
        (0x1C, DesfireError),
        (0x40, DesfireError),
        (0xCA, DesfireError),
    ],
)
def test_error_statuses_end_the_session_and_name_themselves(status: int, kind: type) -> None:
    class Refusing:
        def transmit(self, apdu: bytes) -> bytes:
            return bytes((0x91, status))

    df = Desfire(Refusing())
    df.session = Session(bytes(16))
    with pytest.raises(kind) as err:
        df.get_value(1)
    assert f"91 {status:02X}" in str(err.value) and df.session is None
