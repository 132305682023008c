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


def test_unknown_bmp_is_refused_not_guessed() -> None:
    with pytest.raises(FrameError, match="unknown BMP 5F"):
        parse_status_information(bytes.fromhex("27 00 5f 01"))


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
