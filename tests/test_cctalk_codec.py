"""ccTalk framing from the published examples, property tests, and the incremental decoder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.cctalk.codec import (
    BILL_EVENTS,
    COIN_ERRORS,
    FAULT_CODES,
    Decoder,
    Frame,
    Header,
    decode,
    encode,
    new_event_count,
    next_counter,
    parse_bill_id,
    parse_coin_id,
)
from drivers.errors import DriverError, FrameError

# (frame, bytes on the wire, crc16 mode): generic specification examples and recorded traffic.
EXAMPLES = [
    (Frame(2, 1, Header.SIMPLE_POLL), "02 00 01 fe ff", False),  # simple poll
    (Frame(1, 2, Header.REPLY), "01 00 02 00 fd", False),  # its ACK
    (Frame(2, 1, Header.REQUEST_SERIAL_NUMBER), "02 00 01 f2 0b", False),  # [2][0][1][242][11]
    (Frame(1, 2, 0, bytes((78, 97, 188))), "01 03 02 00 4e 61 bc 8f", False),  # its reply
    (Frame(2, 1, Header.READ_BUFFERED_CREDIT), "02 00 01 e5 18", False),  # appendix 4: 24, not 18
    (Frame(40, None, Header.RESET_DEVICE), "28 00 46 01 3f", True),  # CRC16 0x3F46
    (Frame(1, None, Header.REPLY), "01 00 30 00 37", True),  # its ACK
]


@pytest.mark.parametrize("frame,wire,crc", EXAMPLES)
def test_published_examples(frame: Frame, wire: str, crc: bool) -> None:
    raw = bytes.fromhex(wire)
    assert encode(frame, crc16_mode=crc) == raw
    assert decode(raw, crc16_mode=crc) == frame


@pytest.mark.parametrize(
    "raw,message",
    [
        ("02 00 01 fe", "short frame"),
        ("02 01 01 fe ff", "length byte says 1"),
        ("02 00 01 fe fe", "checksum FE does not match FF"),
        ("01 03 02 00 4e 61 bc 8e", "checksum"),
    ],
)
def test_bad_frames_are_refused_with_the_reason(raw: str, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        decode(bytes.fromhex(raw))
    assert issubclass(FrameError, ValueError) and issubclass(FrameError, DriverError)


def test_bad_crc_is_refused() -> None:
    with pytest.raises(FrameError, match="CRC"):
        decode(bytes.fromhex("28 00 46 01 3e"), crc16_mode=True)


def test_frames_check_their_fields() -> None:
    with pytest.raises(FrameError):
        Frame(256, 1, 0)
    with pytest.raises(FrameError):
        Frame(2, 1, 0, bytes(251))
    with pytest.raises(FrameError, match="source"):
        encode(Frame(2, None, 254))


frames = st.builds(
    Frame,
    dest=st.integers(0, 255),
    src=st.integers(0, 255),
    header=st.integers(0, 255),
    data=st.binary(max_size=250),
)


@given(frames, st.booleans())
def test_round_trip(frame: Frame, crc: bool) -> None:
    if crc:
        frame = Frame(frame.dest, None, frame.header, frame.data)
    assert decode(encode(frame, crc16_mode=crc), crc16_mode=crc) == frame


@given(frames, st.data(), st.booleans())
def test_any_single_corrupted_byte_is_rejected(
    frame: Frame, data: st.DataObject, crc: bool
) -> None:
    if crc:
        frame = Frame(frame.dest, None, frame.header, frame.data)
    raw = bytearray(encode(frame, crc16_mode=crc))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(FrameError):
        decode(bytes(raw), crc16_mode=crc)


@given(st.lists(frames, min_size=1, max_size=5), st.data())
def test_decoder_takes_any_fragmentation(fs: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(encode(f) for f in fs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    d = Decoder()
    out = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += d.feed(stream[a:b])
    assert out == fs


def test_byte_at_a_time() -> None:
    d = Decoder()
    raw = bytes.fromhex("01 03 02 00 4e 61 bc 8f")
    got = [f for b in raw for f in d.feed(bytes((b,)))]
    assert got == [Frame(1, 2, 0, bytes((78, 97, 188)))]


def test_decoder_skips_its_own_echo_and_resyncs_after_garbage() -> None:
    d = Decoder()
    request = encode(Frame(2, 1, Header.SIMPLE_POLL))
    d.expect_echo(request)
    reply = encode(Frame(1, 2, 0))
    # echo, then garbage whose length byte claims more than arrives, then the reply
    assert d.feed(request + b"\x07\xff\x13" + reply) == []
    assert d.salvage(lambda f: f.dest == 1 and f.src == 2) == Frame(1, 2, 0)
    assert d.errors == 3


def test_a_run_of_zero_bytes_inside_a_frame_does_not_split_it() -> None:
    """An empty event buffer is 11 zero bytes, and five zeros are a valid frame on their own."""
    reply = encode(Frame(1, 2, 0, bytes(11)))
    d = Decoder()
    got = [f for b in reply for f in d.feed(bytes((b,)))]
    assert got == [Frame(1, 2, 0, bytes(11))] and d.errors == 0


def test_decoder_drops_a_partial_frame_after_the_inter_byte_gap() -> None:
    d = Decoder()
    raw = encode(Frame(1, 2, 0, b"abc"))
    assert d.feed(raw[:4], now=0.0) == []
    assert d.feed(raw, now=0.2) == [Frame(1, 2, 0, b"abc")]  # the stale 4 bytes were dropped
    assert d.errors == 4


def test_event_counter_arithmetic() -> None:
    assert new_event_count(5, 5) == 0
    assert new_event_count(5, 7) == 2
    assert new_event_count(254, 2) == 3  # 255, 1, 2: the counter skips 0 when it wraps
    assert new_event_count(255, 1) == 1
    assert new_event_count(0, 3) == 3  # first events after a reset
    assert new_event_count(10, 9) == 254  # looks like a burst: the caller reports lost events
    assert [next_counter(253, k) for k in range(1, 5)] == [254, 255, 1, 2]
    assert next_counter(0) == 1
    with pytest.raises(ValueError):
        new_event_count(5, 0)


def test_ids() -> None:
    assert parse_coin_id("EU200A") == ("EU", 200, "A")
    assert parse_coin_id("CH500A") == ("CH", 500, "A")
    assert parse_coin_id("GB1K0A") == ("GB", 1000, "A")
    assert parse_coin_id("......") is None
    assert parse_bill_id("EU0020A") == ("EU", 20, "A")
    with pytest.raises(FrameError):
        parse_coin_id("EU2X0A")
    with pytest.raises(FrameError):
        parse_bill_id("120005A")


def test_code_tables_have_texts() -> None:
    assert COIN_ERRORS[1] == "reject coin" and COIN_ERRORS[128] == "inhibited coin type 1"
    assert BILL_EVENTS[7][0] == "bill jammed in stacker"
    assert FAULT_CODES[45] == "stacker full"


def test_the_decoder_says_how_many_bytes_must_still_come_and_when_a_salvage_is_worth_it() -> None:
    """What the bus waits for at the line rate instead of waking for each byte: the echo's
    rest and the frame begun; and a salvage only for a head that cannot be the reply."""
    d = Decoder()
    request = encode(Frame(2, 1, Header.SIMPLE_POLL))
    d.expect_echo(request)
    assert d.awaited() == len(request) + 5  # the echo, then at least a frame without data
    reply = encode(Frame(1, 2, 0, bytes(11)))
    assert d.feed(request + reply[:2]) == []
    assert d.awaited() == len(reply) - 2  # its length byte is in: the rest of it
    assert not d.stuck(1, 2)  # (fewer than 5 bytes yet)
    assert d.feed(reply[2:6]) == [] and not d.stuck(1, 2)  # the reply's head, completing
    assert d.feed(reply[6:]) == [Frame(1, 2, 0, bytes(11))] and d.awaited() == 5
    d.feed(b"\x07\xf0\x13\x00\x00")  # a head that is not from 2 to the host, claiming more
    assert d.stuck(1, 2)
