"""ZVT codec: public recorded frames, specification examples, fragmentation, malformed input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import FrameError
from drivers.zvt.apdu import ApduReassembler, Cmd, decode_apdu, encode_apdu
from drivers.zvt.codes import result_text
from drivers.zvt.fields import encode_tlv, llvar, parse_bmps, parse_tlv
from drivers.zvt.framing import SerialDecoder, crc_kermit, frame, unframe
from drivers.zvt.messages import (
    parse_intermediate_status,
    parse_print_line,
    parse_print_text_block,
    parse_status_information,
)

# Serial frames recorded in public: a log to a P400 Plus, and ecrterm's test vector.
P400_AUTH = bytes.fromhex("10020601070400000000019010037657")
ECRTERM_COMPLETION = bytes.fromhex("1002060F0BF0F0F7") + b"2.14.15" + bytes.fromhex("001003B111")


def test_crc_check_value() -> None:
    assert crc_kermit(b"123456789") == 0x2189


@pytest.mark.parametrize("raw", [P400_AUTH, ECRTERM_COMPLETION])
def test_public_serial_frames(raw: bytes) -> None:
    apdu = unframe(raw)
    assert frame(apdu) == raw


def test_the_p400_frame_is_an_authorisation_for_1_90() -> None:
    a = decode_apdu(unframe(P400_AUTH))
    assert a.command == Cmd.AUTHORIZATION
    assert parse_bmps(a.data) == {0x04: bytes.fromhex("000000000190")}


def test_authorisation_example_from_the_spec() -> None:
    """06 01 07 04 00 00 00 00 10 00 is 10.00 EUR."""
    assert encode_apdu(Cmd.AUTHORIZATION, bytes.fromhex("04000000001000")).hex(" ") == (
        "06 01 07 04 00 00 00 00 10 00"
    )


def test_dle_in_the_data_is_doubled_and_not_counted() -> None:
    apdu = encode_apdu(Cmd.AUTHORIZATION, bytes.fromhex("04000000001000"))
    raw = frame(apdu)
    assert raw.count(b"\x10\x10") == 1 and unframe(raw) == apdu


def test_extended_length() -> None:
    """06 D3 FF 8E 02 ... means 654 data bytes."""
    data = bytes(654)
    raw = encode_apdu(Cmd.PRINT_TEXT_BLOCK, data)
    assert raw[:5].hex(" ") == "06 d3 ff 8e 02"
    assert decode_apdu(raw).data == data


@pytest.mark.parametrize(
    "raw,message",
    [
        (bytes.fromhex("1002060107040000000001901003765a"), "CRC"),
        (bytes.fromhex("100206011099"), "DLE followed by 99"),
        (bytes.fromhex("0602"), "DLE STX"),
    ],
)
def test_malformed_serial_frames(raw: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        unframe(raw)


@pytest.mark.parametrize("raw", ["06", "06 01 05 00", "06 01 01 00 00", "06 d3 ff 02"])
def test_malformed_apdus(raw: str) -> None:
    with pytest.raises(FrameError):
        decode_apdu(bytes.fromhex(raw))


@given(st.binary(min_size=2, max_size=2), st.binary(max_size=700))
def test_apdu_and_frame_round_trip(command: bytes, data: bytes) -> None:
    apdu = encode_apdu(command, data)
    assert decode_apdu(apdu).data == data
    assert unframe(frame(apdu)) == apdu


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=4), st.data())
def test_tcp_reassembly_in_any_fragmentation(datas: list[bytes], draw: st.DataObject) -> None:
    stream = b"".join(encode_apdu(Cmd.PRINT_LINE, d) for d in datas)
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    r = ApduReassembler()
    got = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += r.feed(stream[a:b])
    assert [g.data for g in got] == datas and r.pending == 0


def test_a_large_receipt_split_1024_plus_rest_and_two_apdus_in_one_read() -> None:
    big = encode_apdu(Cmd.PRINT_TEXT_BLOCK, bytes(1643))
    r = ApduReassembler()
    assert r.feed(big[:1024]) == []
    out = r.feed(big[1024:] + encode_apdu(Cmd.ACK))
    assert [o.command for o in out] == [Cmd.PRINT_TEXT_BLOCK, Cmd.ACK] and len(out[0].data) == 1643


def test_serial_decoder_byte_at_a_time_with_acks_around() -> None:
    d = SerialDecoder()
    got = [x for b in b"\x06" + P400_AUTH + b"\x15" for x in d.feed(bytes((b,)))]
    assert got == [0x06, unframe(P400_AUTH), 0x15]


def test_an_ack_before_a_damaged_frame_in_one_read_is_kept() -> None:
    damaged = bytearray(P400_AUTH)
    damaged[-1] ^= 0xFF
    got = SerialDecoder().feed(b"\x06" + bytes(damaged) + P400_AUTH)
    assert got[0] == 0x06 and isinstance(got[1], FrameError) and "CRC" in str(got[1])
    assert got[2:] == [unframe(P400_AUTH)]  # and decoding goes on after the damage


STATUS_HEX = (
    "27 00"  # result: approved
    " 04 00 00 00 00 20 00"  # 20.00
    " 49 09 78"  # EUR
    " 0b 00 00 00"  # trace 0 -> long trace in TLV 1F2B
    " 0c 14 35 12 0d 11 21 0e 28 12"  # 14:35:12, 21.11., expiry 12/28
    " 19 70"  # payment type: PIN
    " 22 f0 f9 67 26 00 ee ee ee 12 34 ff"  # PAN, masked
    " 29 52 50 00 38"  # terminal id
    " 87 00 41 88 00 90 41"  # receipt 41, turnover 9041
    " 8a 05 8b f0 f9 67 69 72 6f 63 61 72 64 00"  # girocard
    " 3c f0 f0 f5 8e 94 81 e1 21"  # additional text (CP437): "Äöüß!"
    " 06 0a 1f 2b 03 00 12 34 1f 10 01 02"  # TLV: long trace 1234, CVM online PIN
)


def test_status_information() -> None:
    info = parse_status_information(bytes.fromhex(STATUS_HEX))
    assert info.approved and info.amount == 2000 and info.currency == "EUR"
    assert info.trace_number == 1234  # BMP 0B was zero: the long trace from TLV 1F2B
    assert (info.receipt_number, info.turnover_number) == (41, 9041)
    assert info.terminal_id == "52500038" and info.card_type == 5 and info.card_name == "girocard"
    assert info.pan == "************1234"  # the terminal's first six masked too: last four
    assert (info.date, info.time, info.expiry) == ("1121", "143512", "2812")
    assert info.payment_type == 0x70 and info.additional_text == "Äöüß!"
    assert info.receipt_fields()["pan"] == "************1234"


def test_an_unknown_bmp_ends_the_reading_and_keeps_what_was_read() -> None:
    """#35: an unknown BMP raised, so the whole 04 0F of an approved payment was refused and
    the terminal reversed it. Its length cannot be known: the reading ends there, the fields
    before it are kept, and it is logged."""
    info = parse_status_information(bytes.fromhex("27 00 04 00 00 00 00 20 00 87 00 41 5f 01 99"))
    assert info.approved and info.amount == 2000 and info.receipt_number == 41
    assert any("unknown BMP 5F" in p for p in info.problems)
    with pytest.raises(FrameError, match="unknown BMP 5F"):  # what the ECR sends: strictly
        parse_bmps(bytes.fromhex("27 00 5f 01"))


@pytest.mark.parametrize("raw", ["04 00 00", "22 f0", "22 f9 12", "06 05 1f 2b 03 00"])
def test_truncated_fields_are_refused(raw: str) -> None:
    with pytest.raises(FrameError):
        parse_bmps(bytes.fromhex(raw))


def test_tlv_lengths_81_and_82_and_nesting() -> None:
    long = bytes(200)
    items = parse_tlv(encode_tlv(0x25, encode_tlv(0x07, long) + encode_tlv(0x07, b"x")))
    assert [len(c.value) for c in items[0].children] == [200, 1]
    assert encode_tlv(0x07, bytes(300))[:4].hex(" ") == "07 82 01 2c"


def test_intermediate_status() -> None:
    assert parse_intermediate_status(b"\x0a").text == "insert card"
    with_time = parse_intermediate_status(b"\x17\x02")
    assert (with_time.text, with_time.timeout_minutes) == ("please wait", 2)
    tlv = encode_tlv(0x24, encode_tlv(0x07, b"Karte einf\x81hren"))
    own = parse_intermediate_status(b"\xff\x06" + bytes((len(tlv),)) + tlv)
    assert own.text == "Karte einführen"
    with pytest.raises(FrameError):
        parse_intermediate_status(b"")


def test_print_line_and_text_block() -> None:
    line = parse_print_line(b"\x81Betrag EUR 20,00")
    assert line.text == "Betrag EUR 20,00" and line.last
    assert not parse_print_line(b"\x80").last
    body = encode_tlv(0x09, b"\x00") + encode_tlv(0x07, b"Gesch\x84ft") + encode_tlv(0x07, b"Danke")
    tlv = encode_tlv(0x1F07, b"\x02") + encode_tlv(0x25, body)
    block = parse_print_text_block(b"\x06" + bytes((len(tlv),)) + tlv)
    assert block.receipt_type == "customer" and block.lines == ("Geschäft", "Danke")
    with pytest.raises(FrameError):
        parse_print_text_block(b"\x07\x00")


def test_llvar_and_result_texts() -> None:
    assert llvar(b"abc") == b"\xf0\xf3abc"
    assert result_text(0x05) == "declined by the card issuer"
    assert result_text(0x37) == "declined by the host (55)"
    assert result_text(0x6C) == "abort via timeout or abort key"


# ---------------------------------------------------------------- card numbers (#17 item 7)


def test_a_card_number_sent_in_clear_is_masked_before_anyone_keeps_it() -> None:
    """A terminal set up to send the PAN in clear (BMP 22) or to print it: the journal, the
    receipts and the logs get the last four digits at most."""
    from drivers.zvt.fields import mask_pan

    pan = llvar(bytes.fromhex("4111111111111111"))
    info = parse_status_information(bytes([0x27, 0x00, 0x22]) + pan)
    assert info.pan == "************1111" and info.receipt_fields()["pan"] == "************1111"
    masked_by_terminal = llvar(bytes.fromhex("672600EEEEEE1234FF"))
    info = parse_status_information(bytes([0x27, 0x00, 0x22]) + masked_by_terminal)
    assert info.pan == "************1234"  # the terminal's six first digits masked too
    assert mask_pan("123456789") == "*****6789"  # short: the last four only


def test_card_numbers_in_receipt_lines_are_masked_and_other_numbers_kept() -> None:
    from drivers.zvt.fields import mask_card_numbers

    assert mask_card_numbers("Karte 4111 1111 1111 1111") == "Karte **** **** **** 1111"
    assert mask_card_numbers("PAN 5413330089010434") == "PAN ************0434"
    assert mask_card_numbers("Karte 672600******1234") == "Karte ************1234"
    assert mask_card_numbers("VU-Nr. 4567890123456") == "VU-Nr. 4567890123456"  # no check digit
    assert mask_card_numbers("############1234") == "############1234"
    assert mask_card_numbers("Betrag EUR 20,00") == "Betrag EUR 20,00"
    line = parse_print_line(b"\x00Karte 4111111111111111")
    assert line.text == "Karte ************1111"


@pytest.mark.parametrize(
    "gap", [" ", "  ", "\t", " \t", "-", ".", "/"], ids=["space", "two spaces", "tab",
                                                      "space tab", "dash", "dot", "slash"]
)  # fmt: skip
@pytest.mark.parametrize(
    ("pan", "groups"),
    [("4111111111111111", (4, 4, 4, 4)), ("371449635398431", (4, 6, 5)),
     ("6011000990139424", (4, 4, 4, 4)), ("4222222222222", (4, 4, 5)),
     ("6759649826438453", (4, 4, 4, 4)), ("6799990100000000019", (4, 4, 4, 4, 3)),
     ("411111111111", (4, 4, 4))],
)  # fmt: skip
def test_a_card_number_grouped_by_any_separator_is_masked_to_its_last_four(
    gap: str, pan: str, groups: tuple[int, ...]
) -> None:
    """Spaces, two spaces, tabs, dashes, dots or slashes between the groups: no more than the
    last four digits stay, in a receipt line from the terminal (print line and the receipt
    block) as in a log line; the grouping is kept."""
    from drivers.zvt.fields import luhn_valid, mask_card_numbers

    if not luhn_valid(pan):  # a made-up 12-digit number: give it its check digit
        pan = pan[:-1] + next(d for d in "0123456789" if luhn_valid(pan[:-1] + d))
    cut, parts = 0, []
    for n in groups:
        parts.append(pan[cut : cut + n])
        cut += n
    shown = gap.join(parts)
    hidden = iter("*" * (len(pan) - 4) + pan[-4:])
    want = "".join(next(hidden) if c.isdigit() else c for c in shown)
    assert mask_card_numbers(f"Karte {shown} gültig") == f"Karte {want} gültig"
    line = parse_print_line(b"\x00" + f"Nr. {shown}".encode("cp437"))
    assert line.text == f"Nr. {want}" and sum(c.isdigit() for c in line.text) == 4


# ---------------------------------------------------------------- #35: BMPs, quirks of terminals

#: PA00P015 13.08, chapter 13 "Summary of utilised BMPs": each BMP and its length (bytes, or
#: an LL/LLL variable length, or the TLV container); 4C from chapter 3.1.1 (LLVAR).
SPEC_BMPS = {
    **{b: 1 for b in (0x01, 0x02, 0x03, 0x05, 0x19, 0x27, 0x72, 0x73, 0x74, 0x75, 0x8A, 0x8C)},
    **{b: 1 for b in (0xA0, 0xD0, 0xD2, 0xD3, 0xE0, 0xE9, 0xEA, 0xF0, 0xF9, 0xFA, 0xFB, 0xFC)},
    0xFD: 1, 0x04: 6, 0x0B: 3, 0x0C: 3, 0x0D: 2, 0x0E: 2, 0x17: 2, 0x29: 4, 0x2A: 15,
    0x37: 3, 0x3A: 2, 0x3B: 8, 0x3D: 3, 0x49: 2, 0x70: 4, 0x71: 4, 0x87: 2, 0x88: 3,
    0xAA: 3, 0xBA: 5, 0xEB: 8, 0x06: "TLV",
    **{b: "LL" for b in (0x22, 0x23, 0x2D, 0x4C, 0x8B, 0xA7, 0xD1, *range(0xE1, 0xE9))},
    **{b: "LL" for b in range(0xF1, 0xF9)},
    **{b: "LLL" for b in (0x24, 0x2E, 0x3C, 0x60, 0x9A, 0xAF)},
}  # fmt: skip


def test_every_bmp_of_the_specification_has_its_length_format() -> None:
    """AA (date YYMMDD) was missing and D1 read as one byte; the specification, Portalum.Zvt
    (BmpParser.cs) and ecrterm (packets/bitmaps.py) say 3 bytes BCD and LLVAR."""
    from drivers.zvt.fields import BMP_FORMATS

    assert {b: BMP_FORMATS.get(b) for b in SPEC_BMPS} == SPEC_BMPS
    assert BMP_FORMATS[0xAA] == 3 and BMP_FORMATS[0xD1] == "LL"


def test_date_aa_and_pin_data_d1_are_read_by_their_formats() -> None:
    info = parse_status_information(
        bytes.fromhex("27 00 aa 26 03 31 d1 f0 f3 01 02 03 04 00 00 00 00 05 00 87 00 07")
    )
    assert info.approved and info.full_date == "260331" and info.amount == 500
    assert info.receipt_number == 7 and not info.problems


@pytest.mark.parametrize(
    "raw,amount,receipt,problem",
    [
        ("27 00 04 00 00 00 0a 00 00 87 00 41", None, 41, "BMP 04 skipped"),  # not BCD
        ("27 00 87 00 41 06 04 1f 2b 05 00 04 00 00 00 00 20 00", 2000, 41, "TLV"),
        ("27 00 04 00 00 00 00 20 00 22 f9 12 87 00 41", 2000, None, "LLVAR"),
        ("27 00 04 00 00 00 00 20 00 3c f0 f9 f9 41", 2000, None, "needs 99 bytes"),
        ("27 00 04 00 00 00 00 20 00 60 f0 f0 f3 01 02 03 87 00 41", 2000, 41, "BMP 60 skipped"),
    ],
    ids=["amount not BCD", "TLV inside malformed", "bad LL length", "cut off", "bad totals"],
)
def test_a_malformed_optional_field_never_costs_the_approval(
    raw: str, amount: int | None, receipt: int | None, problem: str
) -> None:
    """A field we cannot read is logged and left out; the approval (result code 00, read
    soundly) and the fields that are sound are taken."""
    info = parse_status_information(bytes.fromhex(raw))
    assert info.approved and (info.amount, info.receipt_number) == (amount, receipt)
    assert any(problem in p for p in info.problems), info.problems


@pytest.mark.parametrize(
    "raw",
    ["5f 27 00", "04 00 00 00 00 20 00 22 f9 27 00", "27 00 04 00 00 00 00 20 00 27 05", "27"],
    ids=["after an unknown BMP", "after a bad length", "twice, differing", "cut off"],
)
def test_approval_is_never_read_from_garbage(raw: str) -> None:
    """Only a result code read soundly approves: not one after a BMP whose length could not
    be known, not one that contradicts another, not a cut-off one."""
    info = parse_status_information(bytes.fromhex(raw))
    assert not info.approved and info.result_code is None


#: A real terminal's end-of-day status information, sent without its length byte: published
#: by bezahl-online/zvt, command/testdata/1617181236803PT.hex (result 00, 26.00 EUR, 10:59:37
#: on 31.3., BMP 60: receipts 68 to 71, four girocard payments of together 26.00).
EOD_WITHOUT_LENGTH = bytes.fromhex(
    "040f2700040000000026000c1059370d033160f0f5f3006800710400000000260000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000"
)


def test_the_real_end_of_day_without_length_is_one_status_information_on_serial() -> None:
    """On serial the frame says where the APDU ends: its length byte is missing (27 stands
    where it should be, and 00 after it is no BMP), so all of it is the data."""
    assert len(EOD_WITHOUT_LENGTH) == 75
    apdu = decode_apdu(unframe(frame(EOD_WITHOUT_LENGTH)))
    assert apdu.command == Cmd.STATUS_INFORMATION and apdu.data == EOD_WITHOUT_LENGTH[2:]
    info = parse_status_information(apdu.data)
    assert info.approved and info.amount == 2600 and (info.date, info.time) == ("0331", "105937")
    assert info.totals is not None and (info.totals.first_receipt, info.totals.last_receipt) == (
        68,
        71,
    )
    assert info.totals.groups[0] == ("girocard", 4, 2600) and not info.problems


@pytest.mark.parametrize("cuts", [(), (4,), (10, 40), (42,), (1, 2, 3, 74)])
def test_the_real_end_of_day_without_length_is_not_cut_into_apdus_on_tcp(
    cuts: tuple[int, ...],
) -> None:
    """The reassembler cut it after 39 data bytes and read the rest as a dozen invented
    APDUs. The terminal sends nothing after a status information until it is acknowledged:
    held until the stream is quiet, it is one APDU, however the reads split it."""
    r = ApduReassembler()
    got = []
    for a, b in zip((0, *cuts), (*cuts, len(EOD_WITHOUT_LENGTH)), strict=True):
        got += r.feed(EOD_WITHOUT_LENGTH[a:b])
    assert got == [] and r.waiting_for_quiet
    got = r.flush()
    assert [(g.command, g.data) for g in got] == [(Cmd.STATUS_INFORMATION, EOD_WITHOUT_LENGTH[2:])]
    assert r.pending == 0 and not r.waiting_for_quiet


def test_a_regular_status_information_of_39_bytes_stays_regular() -> None:
    """Length byte 27 (39 bytes) whose data are 39 bytes of BMPs: no quirk, on serial and on
    TCP, and an ACK read with it is not lost."""
    data = bytes.fromhex("27 00 04 00 00 00 00 20 00 87 00 41 0b 00 00 01 0c 10 59 37 0d 03 31")
    data += bytes.fromhex("29 52 50 00 38 8a 05 19 70 88 00 90 41 17 00 01")
    assert len(data) == 0x27
    raw = encode_apdu(Cmd.STATUS_INFORMATION, data)
    assert decode_apdu(unframe(frame(raw))).data == data
    r = ApduReassembler()
    assert r.feed(raw) == [] and r.waiting_for_quiet
    assert [g.data for g in r.flush()] == [data]
    both = r.feed(raw[:10]) + r.feed(raw[10:] + encode_apdu(Cmd.ACK)) + r.flush()
    assert [g.command for g in both] == [Cmd.STATUS_INFORMATION, Cmd.ACK]


def test_a_real_end_of_day_with_a_garbled_totals_field_keeps_its_sound_fields() -> None:
    """bezahl-online/zvt, command/testdata/1617177992186PT.hex: the same terminal's end-of-day
    without length byte and with BMP 60's length garbled (78 F2 76 is no LLLVAR); that
    library refuses it. Result, amount, time and date are sound and kept; BMP 60 and what
    follows it cannot be read and are logged."""
    raw = bytes.fromhex(
        "040f2700040000000026000c1005320d03316078f2765f0f040000f0ffffff00efa65f9d006b5f0200"
        "000043156c5f0000000002000000020000004c86705f020000000200000038008e07"
    )
    apdu = decode_apdu(unframe(frame(raw)))
    info = parse_status_information(apdu.data)
    assert info.approved and info.amount == 2600 and info.time == "100532" and info.date == "0331"
    assert info.totals is None and any("BMP 60" in p for p in info.problems)


def test_a_print_line_ending_with_a_receipt_type_tlv() -> None:
    """Some terminals end each 06 D1 with ``06 04 1F07 01 xx``: it is the receipt type, not
    text."""
    line = parse_print_line(b"\x00Betrag EUR 20,00" + bytes.fromhex("06 04 1f 07 01 02"))
    assert line.text == "Betrag EUR 20,00" and line.receipt_type == "customer"
    last = parse_print_line(b"\x81Danke" + bytes.fromhex("06 04 1f 07 01 01"))
    assert (last.text, last.receipt_type, last.last) == ("Danke", "merchant", True)
    plain = parse_print_line(b"\x00Karte \x06 gesteckt")  # a lone 06 in the text stays text
    assert plain.receipt_type is None and plain.text == "Karte \x06 gesteckt"


def test_attribute_ff_is_line_feeds_not_a_last_line() -> None:
    """PA00P015 3.5: attribute FF is followed by the number of line feeds."""
    feeds = parse_print_line(b"\xff\x03")
    assert not feeds.last and feeds.lines == ["", "", ""]
    assert parse_print_line(b"\x81Ende").last


def _status_39(extra: bytes) -> bytes:
    """An approval (result 00) with its amount, trace, time, date, receipt number, terminal
    id and currency, and `extra` to make 39 data bytes: its length byte is 27, the byte a
    status information without its length byte has there."""
    data = bytes.fromhex("2700 04000000001000 0b000153 0c192336 0d0416 870153 2929001006 490978"
                         .replace(" ", "")) + extra  # fmt: skip
    assert len(data) == 0x27
    return encode_apdu(Cmd.STATUS_INFORMATION, data)


@pytest.mark.parametrize(
    "extra",
    [bytes.fromhex("9b01020304050607"), b"\x8b\x30\x36MAESTR"[:8], b"\x8b\xf0\xf5MAEST"],
    ids=["an unknown BMP", "a bad LLVAR length", "all known"],
)
def test_a_regular_status_of_39_bytes_is_never_read_as_one_without_its_length(
    extra: bytes,
) -> None:
    """Found in review: a regular 04 0F whose length byte is 27 and which carries a field we
    cannot read was cut as one without its length byte: its result code read from the wrong
    byte (39, a decline) and acknowledged while the terminal kept the approved payment."""
    from drivers.zvt.messages import parse_status_information

    raw = _status_39(extra)
    for got in (decode_apdu(raw), *ApduReassembler().feed(raw)):
        assert got.data == raw[3:]
        assert parse_status_information(got.data).result_code == 0


def test_a_regular_status_of_39_bytes_split_over_a_quiet_gap_is_waited_for() -> None:
    raw = _status_39(b"\x8b\xf0\xf5MAEST")
    r = ApduReassembler()
    assert r.feed(raw[:20]) == [] and r.flush() == []  # not all here: wait for the rest
    (got,) = r.feed(raw[20:]) or r.flush()
    assert got.data == raw[3:]
