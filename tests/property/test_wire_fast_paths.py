"""The estim-wire fast paths give exactly what the plain definitions give.

The codec and the STATUS message take shortcuts on the hot path (COBS through
``bytes.split``/``join`` and a walk over code bytes only, the CRC residue check,
``struct`` unpacking, frames encoded without a ``Frame`` object). Each is pinned here
against a textbook implementation written out in this file, on arbitrary input: the
same bytes out, or the same error.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from estim.device.base import ChannelStatus, DeviceStatus, FaultFlag
from estim.device.wire import codec
from estim.device.wire.codec import CobsError, Frame, FrameDecoder, crc16, encode_frame
from estim.device.wire.messages import (
    Command,
    MessageError,
    Reply,
    _decode_status_fields,
    command_name,
    decode_status,
    encode_status,
)

# --- textbook references ------------------------------------------------------------------


def reference_crc16(data: bytes) -> int:
    """CRC-16/IBM-3740 bit by bit: poly 0x1021, init 0xFFFF, no reflection, no xorout."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def reference_cobs_encode(data: bytes) -> bytes:
    """COBS byte by byte (Cheshire & Baker 1999, figure 2)."""
    out = bytearray([0])  # placeholder for the first code byte
    code_at, code = 0, 1
    for byte in data:
        if byte == 0:
            out[code_at] = code
            code_at, code = len(out), 1
            out.append(0)
            continue
        out.append(byte)
        code += 1
        if code == 0xFF:
            out[code_at] = code
            code_at, code = len(out), 1
            out.append(0)
    out[code_at] = code
    return bytes(out)


def reference_cobs_decode(data: bytes) -> bytes | None:
    """COBS decoding byte by byte; None where the input is not a valid encoding."""
    out = bytearray()
    index = 0
    while index < len(data):
        code = data[index]
        if code == 0 or index + code > len(data):
            return None
        for offset in range(1, code):
            if data[index + offset] == 0:
                return None
            out.append(data[index + offset])
        index += code
        if code != 0xFF and index < len(data):
            out.append(0)
    return bytes(out)


# Bytes with long runs of non-zero bytes (0xFF blocks) and with many zeros, not only
# the uniform random bytes Hypothesis starts from.
long_runs = st.lists(
    st.one_of(
        st.binary(max_size=8),
        st.integers(250, 600).map(lambda n: bytes([0x5A]) * n),
        st.just(b"\x00"),
        st.just(b"\xff"),
    ),
    max_size=6,
).map(b"".join)
any_bytes = st.one_of(st.binary(max_size=700), long_runs)


# --- CRC ----------------------------------------------------------------------------------


def test_crc_check_value_is_the_specification_s() -> None:
    assert crc16(b"123456789") == 0x29B1 == reference_crc16(b"123456789")


@given(st.binary(max_size=300))
def test_crc_is_the_bitwise_crc(data: bytes) -> None:
    assert crc16(data) == reference_crc16(data)


@given(st.binary(max_size=300), st.integers(0, 0xFFFF))
def test_crc_over_a_body_with_its_crc_is_zero_exactly_when_the_crc_is_right(
    data: bytes, received: int
) -> None:
    # The decoder checks a frame with crc16(body) == 0 (no slicing); the same verdict
    # as comparing the received CRC with the computed one.
    right = crc16(data)
    assert crc16(data + right.to_bytes(2, "big")) == 0
    assert (crc16(data + received.to_bytes(2, "big")) == 0) == (received == right)


# --- COBS ---------------------------------------------------------------------------------


@given(any_bytes)
def test_cobs_encode_is_the_bytewise_encoding(data: bytes) -> None:
    assert codec.cobs_encode(data) == reference_cobs_encode(data)
    assert codec.cobs_encode(bytearray(data)) == reference_cobs_encode(data)


@given(any_bytes)
def test_cobs_decode_inverts_the_bytewise_encoding(data: bytes) -> None:
    assert codec.cobs_decode(reference_cobs_encode(data)) == data


def outcome(decoder: Callable[[bytes], bytes], data: bytes) -> bytes | str:
    try:
        return decoder(data)
    except CobsError as err:
        return f"CobsError: {err}"


@given(st.one_of(any_bytes, any_bytes.map(reference_cobs_encode)))
def test_cobs_decode_of_any_bytes_agrees_with_the_bytewise_decoder(data: bytes) -> None:
    expected = reference_cobs_decode(data)
    got = outcome(codec.cobs_decode, data)
    if expected is None:
        # Refused, with the message the block-by-block decoder gives.
        assert isinstance(got, str)
        assert got == outcome(codec._cobs_decode_blocks, data)
    else:
        assert got == expected


# --- frames -------------------------------------------------------------------------------


@given(
    st.integers(-1, 256),
    st.integers(-1, 256),
    st.binary(max_size=codec.MAX_PAYLOAD_LEN + 2),
)
def test_encode_frame_is_frame_encode(code: int, seq: int, payload: bytes) -> None:
    try:
        expected: bytes | str = Frame(code, seq, payload).encode()
    except ValueError as err:
        expected = str(err)
    try:
        got: bytes | str = encode_frame(code, seq, payload)
    except ValueError as err:
        got = str(err)
    assert got == expected


def reference_feed(data: bytes) -> tuple[list[Frame], tuple[int, ...]]:
    """Frames from one chunk, decoded one delimited piece at a time by the definition."""
    frames: list[Frame] = []
    counts = [0, 0, 0, 0]  # cobs, length, crc, overlong
    *pieces, _rest = data.split(b"\x00")
    for piece in pieces:
        if not piece:
            continue
        if len(piece) > codec.MAX_ENCODED_LEN:
            counts[3] += 1
            continue
        body = reference_cobs_decode(piece)
        if body is None:
            counts[0] += 1
        elif not codec.MIN_BODY_LEN <= len(body) <= codec.MAX_BODY_LEN:
            counts[1] += 1
        elif reference_crc16(body[:-2]) != int.from_bytes(body[-2:], "big"):
            counts[2] += 1
        elif body[3] != len(body) - codec.MIN_BODY_LEN:
            counts[1] += 1
        else:
            frames.append(Frame(body[2], body[1], body[4:-2], body[0], raw=body))
    return frames, tuple(counts)


frames = st.builds(
    Frame, st.integers(0, 255), st.integers(0, 255), st.binary(max_size=40), st.integers(0, 3)
)
streams = st.lists(
    st.one_of(frames.map(Frame.encode), st.binary(max_size=40), st.just(b"\x00")), max_size=8
).map(b"".join)


@given(streams)
def test_the_decoder_finds_what_the_definition_finds(data: bytes) -> None:
    decoder = FrameDecoder()
    got = decoder.feed(data)
    expected, counts = reference_feed(data)
    assert [(f, f.raw) for f in got] == [(f, f.raw) for f in expected]
    stats = decoder.stats
    assert (stats.cobs_errors, stats.length_errors, stats.crc_errors, stats.overlong) == counts


# --- messages -----------------------------------------------------------------------------

measured = st.one_of(st.none(), st.integers(0, 0xFFFFFFFE))
channel_statuses = st.builds(
    ChannelStatus,
    channel=st.just(0),
    commanded_ua=st.integers(0, 0xFFFFFFFF),
    measured_ua=measured,
    impedance_ohm=measured,
    output_on=st.booleans(),
    faults=st.integers(0, 0xFF).map(FaultFlag),
)
statuses = st.builds(
    DeviceStatus,
    st.lists(channel_statuses, max_size=15).map(tuple),
    faults=st.integers(0, 0xFF).map(FaultFlag),
)


def decoded(payload: bytes, reader: object) -> object:
    try:
        return reader(payload, 7)  # type: ignore[operator]
    except MessageError as err:
        return ("MessageError", str(err))


@given(st.one_of(statuses.map(lambda s: encode_status(s, 12_345)), st.binary(max_size=80)))
def test_decode_status_is_the_field_by_field_reader(payload: bytes) -> None:
    assert decoded(payload, decode_status) == decoded(payload, _decode_status_fields)


@given(st.binary(min_size=7, max_size=7), st.lists(st.binary(min_size=15, max_size=15)))
def test_decode_status_of_random_well_sized_payloads(head: bytes, channels: list[bytes]) -> None:
    payload = head[:6] + bytes((len(channels),)) + b"".join(channels)
    assert decoded(payload, decode_status) == decoded(payload, _decode_status_fields)


def test_command_names_are_the_enum_names() -> None:
    for code in range(256):
        name = f"0x{code:02X}"
        for enum in (Command, Reply):
            try:
                name = enum(code).name
                break
            except ValueError:
                continue
        assert command_name(code) == name
