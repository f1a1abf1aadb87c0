"""estim-wire/1 framing, against bytes laid out by hand.

The expected frames are the worked examples of docs/wire-protocol.md. Each was laid out
from the spec: header bytes, payload, the CRC from the bit-by-bit reference below (not
the codec's ``binascii`` CRC), and COBS done by hand (split the body at each 0x00, prefix
each run with its length + 1). The COBS vectors are the classic ones from Cheshire and
Baker's paper and its common test suites.
"""

from __future__ import annotations

import pytest

from estim.device.wire.codec import (
    MAX_BODY_LEN,
    MAX_ENCODED_LEN,
    MAX_PAYLOAD_LEN,
    CobsError,
    Frame,
    FrameDecoder,
    cobs_decode,
    cobs_encode,
    crc16,
    encode_frame,
    parse_body,
)


def reference_crc16(data: bytes) -> int:
    """CRC-16/IBM-3740, bit by bit, exactly as the spec's C listing."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --- CRC ----------------------------------------------------------------------------------


def test_crc_check_value_is_29b1() -> None:
    assert reference_crc16(b"123456789") == 0x29B1
    assert crc16(b"123456789") == 0x29B1


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xff" * 7, bytes(range(256)), b"estim-wire/1"])
def test_crc_matches_the_bitwise_reference(data: bytes) -> None:
    assert crc16(data) == reference_crc16(data)


# --- COBS ---------------------------------------------------------------------------------

COBS_VECTORS = [
    ("00", "01 01"),
    ("00 00", "01 01 01"),
    ("11 22 00 33", "03 11 22 02 33"),
    ("11 22 33 44", "05 11 22 33 44"),
    ("11 00 00 00", "02 11 01 01 01"),
    ("", "01"),
]


@pytest.mark.parametrize(("plain", "encoded"), COBS_VECTORS)
def test_cobs_known_vectors(plain: str, encoded: str) -> None:
    assert cobs_encode(h(plain)) == h(encoded)
    assert cobs_decode(h(encoded)) == h(plain)


def test_cobs_long_run_uses_ff_blocks() -> None:
    data = bytes(range(1, 256))  # 255 non-zero bytes
    encoded = cobs_encode(data)
    assert encoded[0] == 0xFF
    assert encoded[255] == 0x02  # one byte left after the 254-byte block
    assert b"\x00" not in encoded
    assert cobs_decode(encoded) == data


@pytest.mark.parametrize("bad", ["05 11 22", "00 11", "03 11 00"])
def test_cobs_rejects_invalid_encodings(bad: str) -> None:
    with pytest.raises(CobsError):
        cobs_decode(h(bad))


# --- whole frames: the spec's worked examples ---------------------------------------------

EXAMPLES = [
    # (code, seq, payload, body, wire)
    (0x01, 0x01, "", "01 01 01 00 f6 75", "04 01 01 01 03 f6 75 00"),
    (0x07, 0x05, "", "01 05 07 00 80 13", "04 01 05 07 03 80 13 00"),
    (0x80, 0x05, "07", "01 05 80 01 07 7f 94", "08 01 05 80 01 07 7f 94 00"),
    (0x06, 0x2A, "", "01 2a 06 00 19 d5", "04 01 2a 06 03 19 d5 00"),
    (0x0A, 0x02, "00 80", "01 02 0a 02 00 80 98 70", "05 01 02 0a 02 04 80 98 70 00"),
    (
        0x03,
        0x07,
        "01 01 00 00 4e 20",
        "01 07 03 06 01 01 00 00 4e 20 b3 d7",
        "07 01 07 03 06 01 01 01 05 4e 20 b3 d7 00",
    ),
    (0x04, 0x08, "00 01", "01 08 04 02 00 01 fd 2d", "05 01 08 04 02 04 01 fd 2d 00"),
    (
        0x02,
        0x06,
        "01 01 00 00 00 c8 00 00 00 c8 00 00 00 00 00 00 4e 20",
        "01 06 02 12 01 01 00 00 00 c8 00 00 00 c8 00 00 00 00 00 00 4e 20 1e f2",
        "07 01 06 02 12 01 01 01 01 02 c8 01 01 02 c8 01 01 01 01 01 05 4e 20 1e f2 00",
    ),
    (
        0x81,
        0x09,
        "03 05 01 00 01 5f 90",
        "01 09 81 07 03 05 01 00 01 5f 90 21 1b",
        "08 01 09 81 07 03 05 01 06 01 5f 90 21 1b 00",
    ),
    (
        0x82,
        0x00,
        "00 00 04 00 00 30 39",
        "01 00 82 07 00 00 04 00 00 30 39 99 62",
        "02 01 03 82 07 01 02 04 01 05 30 39 99 62 00",
    ),
]


@pytest.mark.parametrize(("code", "seq", "payload", "body", "wire"), EXAMPLES)
def test_worked_examples_encode_exactly(
    code: int, seq: int, payload: str, body: str, wire: str
) -> None:
    assert reference_crc16(h(body)[:-2]) == int.from_bytes(h(body)[-2:], "big")
    frame = Frame(code, seq, h(payload))
    assert frame.body() == h(body)
    assert frame.encode() == h(wire)
    assert encode_frame(code, seq, h(payload)) == h(wire)


@pytest.mark.parametrize(("code", "seq", "payload", "body", "wire"), EXAMPLES)
def test_worked_examples_decode_exactly(
    code: int, seq: int, payload: str, body: str, wire: str
) -> None:
    decoder = FrameDecoder()
    (frame,) = decoder.feed(h(wire))
    assert (frame.version, frame.code, frame.seq, frame.payload) == (1, code, seq, h(payload))
    assert frame.raw == h(body)
    assert parse_body(h(body)) == frame


def test_size_limits_are_consistent() -> None:
    assert MAX_PAYLOAD_LEN == 247
    assert MAX_BODY_LEN == 253
    longest = Frame(0x08, 1, b"\x01" * MAX_PAYLOAD_LEN).encode()
    assert len(longest) == MAX_ENCODED_LEN + 1  # + delimiter
    with pytest.raises(ValueError, match="exceeds the maximum"):
        Frame(0x08, 1, b"\x01" * (MAX_PAYLOAD_LEN + 1)).body()
    with pytest.raises(ValueError, match="does not fit in a byte"):
        Frame(0x100, 1).body()


# --- the incremental decoder ----------------------------------------------------------------

HEARTBEAT = h("04 01 05 07 03 80 13 00")
STOP = h("04 01 2a 06 03 19 d5 00")


def test_decoder_resynchronises_after_garbage() -> None:
    decoder = FrameDecoder()
    frames = decoder.feed(b"\x13\x37garbage\xff" + b"\x00" + HEARTBEAT)
    assert [f.code for f in frames] == [0x07]
    assert decoder.stats.rejected == 1


def test_decoder_drops_a_frame_with_one_flipped_bit_and_keeps_the_next() -> None:
    corrupted = bytearray(HEARTBEAT)
    corrupted[3] ^= 0x10
    decoder = FrameDecoder()
    frames = decoder.feed(bytes(corrupted) + STOP)
    assert [f.code for f in frames] == [0x06]
    assert decoder.stats.crc_errors == 1


def test_decoder_gives_the_same_frames_byte_by_byte() -> None:
    stream = HEARTBEAT + b"\x00\x00" + STOP + HEARTBEAT
    whole = FrameDecoder().feed(stream)
    decoder = FrameDecoder()
    pieces = [f for i in range(len(stream)) for f in decoder.feed(stream[i : i + 1])]
    assert pieces == whole
    assert [f.code for f in whole] == [0x07, 0x06, 0x07]


def test_decoder_discards_an_overlong_run_and_recovers() -> None:
    decoder = FrameDecoder()
    frames = decoder.feed(b"\x01" * 600 + b"\x00" + HEARTBEAT)
    assert [f.code for f in frames] == [0x07]
    assert decoder.stats.overlong == 1


def test_decoder_rejects_a_wrong_length_field() -> None:
    head = bytes((1, 5, 7, 3))  # says 3 payload bytes, carries none
    body = head + reference_crc16(head).to_bytes(2, "big")
    decoder = FrameDecoder()
    assert decoder.feed(cobs_encode(body) + b"\x00") == []
    assert decoder.stats.length_errors == 1


def test_decoder_rejects_runts() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(cobs_encode(b"\x01\x02\x03") + b"\x00") == []
    assert decoder.stats.length_errors == 1


def test_decoder_passes_other_versions_up_for_a_nack() -> None:
    head = bytes((2, 9, 1, 0))
    body = head + reference_crc16(head).to_bytes(2, "big")
    (frame,) = FrameDecoder().feed(cobs_encode(body) + b"\x00")
    assert frame.version == 2
    assert frame.seq == 9


def test_reset_forgets_a_half_frame() -> None:
    decoder = FrameDecoder()
    decoder.feed(HEARTBEAT[:4])
    decoder.reset()
    assert decoder.feed(HEARTBEAT[4:]) == []
    assert decoder.feed(HEARTBEAT) != []
