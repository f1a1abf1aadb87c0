"""ScienceMode2 framing: exact bytes written by hand from the protocol facts.

Every expected frame below was laid out byte by byte from the facts
(``F0 | 81 | CRC^55 | 81 | LEN^55 | escaped payload | 0F``); the CRC values were
computed by polynomial long division (x^8 + x^2 + x + 1, initial 0), independently of
estim's CRC code, and that method reproduces the published CRC-8/SMBUS check value.
Nothing here is produced by the encoder under test.
"""

from __future__ import annotations

import pytest

from estim.device.sciencemode2.codec import (
    ESCAPE,
    SPECIAL_BYTES,
    FrameDecoder,
    crc8,
    crc8_fast,
    encode_frame,
    escape,
    unescape,
    wrap_escaped_payload,
)

# --- CRC ---------------------------------------------------------------------------------


def test_crc8_matches_the_published_check_value() -> None:
    # CRC-8 poly 0x07, init 0, no reflection, no final XOR ("CRC-8/SMBUS") of the
    # ASCII digits 1-9 is 0xF4 in the CRC catalogue.
    assert crc8(b"123456789") == 0xF4
    assert crc8_fast(b"123456789") == 0xF4


@pytest.mark.parametrize(
    ("index", "value"),
    # Entries of the CRC table printed in an independent C++ ScienceMode2 client.
    [(0x01, 0x07), (0x10, 0x70), (0x20, 0xE0), (0x40, 0xC7), (0x80, 0x89), (0xFF, 0xF3)],
)
def test_crc8_single_bytes_match_an_independent_table(index: int, value: int) -> None:
    assert crc8(bytes([index])) == value
    assert crc8_fast(bytes([index])) == value


def test_crc8_of_nothing_is_zero() -> None:
    assert crc8(b"") == 0


# --- escaping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("special", "escaped"),
    [
        (0xF0, b"\x81\xa5"),
        (0x0F, b"\x81\x5a"),
        (0x81, b"\x81\xd4"),
        (0x55, b"\x81\x00"),
        (0x0A, b"\x81\x5f"),
    ],
)
def test_each_special_byte_escapes_to_escape_byte_and_xor_55(special: int, escaped: bytes) -> None:
    assert escape([special]) == escaped
    assert unescape(escaped) == bytes([special])


def test_ordinary_bytes_pass_unchanged() -> None:
    ordinary = bytes(b for b in range(256) if b not in SPECIAL_BYTES)
    assert escape(ordinary) == ordinary
    assert unescape(ordinary) == ordinary


def test_unescape_refuses_a_dangling_escape_byte() -> None:
    with pytest.raises(ValueError, match="dangling"):
        unescape(b"\x01\x81")


# --- exact frames --------------------------------------------------------------------------

# Watchdog, counter 0: payload 00 04, CRC 0x1C (sent 0x49), LEN 2 (sent 0x57).
WATCHDOG_C0 = bytes.fromhex("F0 81 49 81 57 00 04 0F")
# StopChannelListMode, counter 0: payload 00 22, CRC 0xEE -> 0xBB, LEN 2 -> 0x57.
STOP_C0 = bytes.fromhex("F0 81 BB 81 57 00 22 0F")
# Init (device), counter 0, version 1: payload 00 01 01, CRC 0x12 -> 0x47, LEN 3 -> 0x56.
INIT_C0 = bytes.fromhex("F0 81 47 81 56 00 01 01 0F")


def test_encode_watchdog() -> None:
    assert encode_frame(0, 4) == WATCHDOG_C0


def test_encode_stop() -> None:
    assert encode_frame(0, 34) == STOP_C0


def test_encode_init() -> None:
    assert encode_frame(0, 1, b"\x01") == INIT_C0


def test_encode_escapes_a_special_counter() -> None:
    # Stop with counter 0x0F: payload 81 5A 22 (escaped counter), CRC over the escaped
    # payload is 0x00 (sent 0x55), LEN 3 (sent 0x56).
    assert encode_frame(0x0F, 34) == bytes.fromhex("F0 81 55 81 56 81 5A 22 0F")


def test_encode_escapes_a_special_command() -> None:
    # GetStimulationMode (10 = 0x0A), counter 3: payload 03 81 5F, CRC 0x84 -> 0xD1,
    # LEN 3 -> 0x56: the length counts the escape byte.
    assert encode_frame(3, 10) == bytes.fromhex("F0 81 D1 81 56 03 81 5F 0F")


def test_encode_refuses_out_of_range_fields() -> None:
    with pytest.raises(ValueError, match="bytes"):
        encode_frame(256, 4)
    with pytest.raises(ValueError, match="exceed"):
        encode_frame(0, 32, bytes(33))


@pytest.mark.parametrize(
    ("frame", "what"),
    [
        # Watchdog with counter 0xDC: CRC 0x5A is sent as 0x0F, the stop byte's value.
        (bytes.fromhex("F0 81 0F 81 57 DC 04 0F"), "CRC slot holds 0x0F"),
        # Watchdog with counter 0xC4: CRC 0xA5 is sent as 0xF0, the start byte's value.
        (bytes.fromhex("F0 81 F0 81 57 C4 04 0F"), "CRC slot holds 0xF0"),
        # Watchdog with counter 0x86: CRC 0xD4 is sent as 0x81, the escape byte's value.
        (bytes.fromhex("F0 81 81 81 57 86 04 0F"), "CRC slot holds 0x81"),
    ],
)
def test_crc_is_always_escaped_even_when_it_looks_like_a_control_byte(
    frame: bytes, what: str
) -> None:
    counter = frame[5]
    assert encode_frame(counter, 4) == frame, what
    (decoded,) = FrameDecoder().feed(frame)
    assert (decoded.counter, decoded.command, decoded.data) == (counter, 4, b"")


# --- decoding ------------------------------------------------------------------------------


def test_decode_one_frame() -> None:
    decoder = FrameDecoder()
    (frame,) = decoder.feed(INIT_C0)
    assert (frame.counter, frame.command, frame.data) == (0, 1, b"\x01")
    assert frame.raw == INIT_C0
    assert decoder.pending == 0
    assert decoder.stats.frames == 1


def test_decode_unescapes_counter_command_and_data() -> None:
    # SinglePulse, counter 11, channel index 0, 200 us (00 C8), 10 mA (0x0A escaped):
    # payload 0B 24 00 00 C8 81 5F, CRC 0xF6 -> 0xA3, LEN 7 -> 0x52.
    frame_bytes = bytes.fromhex("F0 81 A3 81 52 0B 24 00 00 C8 81 5F 0F")
    (frame,) = FrameDecoder().feed(frame_bytes)
    assert (frame.counter, frame.command, frame.data) == (11, 36, bytes.fromhex("00 00 C8 0A"))


def test_decode_skips_garbage_and_finds_frames_behind_it() -> None:
    garbage = bytes.fromhex("00 FF 0F 81 55 F0 F0 81 12")
    decoder = FrameDecoder()
    frames = decoder.feed(garbage + WATCHDOG_C0 + b"\x42" + STOP_C0)
    assert [f.command for f in frames] == [4, 34]
    assert decoder.stats.discarded_bytes == len(garbage) + 1


def test_decode_rejects_a_bad_crc() -> None:
    corrupted = bytearray(WATCHDOG_C0)
    corrupted[2] ^= 0x01
    decoder = FrameDecoder()
    assert decoder.feed(bytes(corrupted)) == []
    assert decoder.stats.bad_crc == 1


def test_decode_rejects_a_bad_length() -> None:
    corrupted = bytearray(WATCHDOG_C0)
    corrupted[4] = 3 ^ 0x55
    decoder = FrameDecoder()
    assert decoder.feed(bytes(corrupted)) == []
    assert decoder.stats.bad_length == 1


def test_decode_resyncs_on_a_start_byte_inside_a_truncated_frame() -> None:
    truncated = WATCHDOG_C0[:6]  # F0 81 49 81 57 00, then a new frame starts
    (frame,) = FrameDecoder().feed(truncated + STOP_C0)
    assert frame.command == 34


def test_decode_resyncs_when_the_start_byte_sits_in_a_header_slot() -> None:
    # Garbage "F0 81" followed by a real frame: the real start byte lands in the CRC
    # slot of the false frame; rescanning from the byte after the false start finds it.
    (frame,) = FrameDecoder().feed(bytes.fromhex("F0 81") + STOP_C0)
    assert frame.command == 34


def test_decode_waits_for_the_rest_of_a_frame() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(INIT_C0[:4]) == []
    assert decoder.pending == 4
    assert decoder.feed(INIT_C0[4:8]) == []
    (frame,) = decoder.feed(INIT_C0[8:])
    assert frame.command == 1


def test_decode_waits_when_a_chunk_ends_on_an_escape_byte() -> None:
    frame_bytes = bytes.fromhex("F0 81 D1 81 56 03 81 5F 0F")
    decoder = FrameDecoder()
    assert decoder.feed(frame_bytes[:7]) == []  # ends with the escape byte 0x81
    (frame,) = decoder.feed(frame_bytes[7:])
    assert frame.command == 10


def test_decode_rejects_an_overlong_frame() -> None:
    header = bytes.fromhex("F0 81 00 81 00")
    decoder = FrameDecoder()
    assert decoder.feed(header + bytes([0x11]) * 100 + b"\x0f") == []
    assert decoder.stats.malformed >= 1


def test_decode_rejects_a_payload_without_command() -> None:
    # A one-byte payload (just 0x01): CRC 0x07 -> 0x52, LEN 1 -> 0x54.
    decoder = FrameDecoder()
    assert decoder.feed(bytes.fromhex("F0 81 52 81 54 01 0F")) == []
    assert decoder.stats.malformed == 1


def test_decode_accepts_a_frame_escaped_by_a_client_that_escapes_only_three_values() -> None:
    # A client that escapes only F0, 0F and 81 sends 0x55 and 0x0A plainly. Watchdog
    # with counter 0x55: payload 55 04 (no escape), CRC over it by long division 0x51
    # (sent 0x04).
    plain_counter = bytes([0x55, 0x04])
    assert wrap_escaped_payload(plain_counter) == bytes.fromhex("F0 81 04 81 57 55 04 0F")
    (frame,) = FrameDecoder().feed(bytes.fromhex("F0 81 04 81 57 55 04 0F"))
    assert (frame.counter, frame.command) == (0x55, 4)


def test_decode_accepts_the_pyscience_mode_counter_and_command_quirk() -> None:
    # pyScienceMode sends GetStimulationMode with counter 0x0A as payload 5F 5F: both
    # special bytes XOR-ed with 0x55 and no escape byte. CRC of 5F 5F is 0x55 (sent
    # 0x00), LEN 2 (sent 0x57). The frame is intact, so it decodes; the message layer
    # maps the command back.
    (frame,) = FrameDecoder().feed(bytes.fromhex("F0 81 00 81 57 5F 5F 0F"))
    assert (frame.counter, frame.command) == (0x5F, 0x5F)


def test_escape_byte_followed_by_a_start_byte_resyncs() -> None:
    decoder = FrameDecoder()
    frames = decoder.feed(bytes.fromhex("F0 81 00 81 57 01 81") + WATCHDOG_C0)
    assert [f.command for f in frames] == [4]


def test_escape_constant_is_0x81() -> None:
    assert ESCAPE == 0x81
