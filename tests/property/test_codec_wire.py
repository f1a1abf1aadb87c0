"""estim-wire/1 codec properties: fuzzing the decoder, round trips, chunking invariance."""

from __future__ import annotations

import contextlib
import itertools

from hypothesis import given
from hypothesis import strategies as st

from estim.device.base import ChannelConfig
from estim.device.wire.codec import (
    MAX_PAYLOAD_LEN,
    Frame,
    FrameDecoder,
    cobs_decode,
    cobs_encode,
    crc16,
)
from estim.device.wire.messages import (
    SHAPE_CODES,
    Event,
    IdentifyReply,
    MessageError,
    Nack,
    decode_configure,
    decode_set_amplitude,
    decode_status,
    encode_configure,
    encode_set_amplitude,
)
from estim.protocols.models import ShapeKind

frames = st.builds(
    Frame,
    code=st.integers(0, 255),
    seq=st.integers(0, 255),
    payload=st.binary(max_size=MAX_PAYLOAD_LEN),
)


def decode_all(chunks: list[bytes]) -> list[Frame]:
    decoder = FrameDecoder()
    return [f for chunk in chunks for f in decoder.feed(chunk)]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash_and_never_yield_a_bad_crc(data: bytes) -> None:
    for frame in FrameDecoder().feed(data):
        assert crc16(frame.raw[:-2]) == int.from_bytes(frame.raw[-2:], "big")
        assert frame.raw[3] == len(frame.payload)
        assert Frame(frame.code, frame.seq, frame.payload, frame.version).body() == frame.raw


@given(st.binary(max_size=1500), st.lists(st.integers(0, 5000), max_size=30))
def test_split_and_merged_reads_decode_identically(data: bytes, cuts: list[int]) -> None:
    assert decode_all(split(data, cuts)) == decode_all([data])


@given(st.lists(frames, max_size=8), st.lists(st.integers(0, 10_000), max_size=20))
def test_every_frame_round_trips_in_any_chunking(batch: list[Frame], cuts: list[int]) -> None:
    stream = b"".join(f.encode() for f in batch)
    assert decode_all(split(stream, cuts)) == batch


@given(frames, st.binary(max_size=300))
def test_a_frame_after_garbage_and_a_delimiter_is_recovered(frame: Frame, junk: bytes) -> None:
    decoded = decode_all([junk + b"\x00" + frame.encode()])
    assert decoded[-1] == frame


@given(frames, st.integers(0, 10_000), st.integers(0, 7))
def test_a_single_bit_error_in_a_frame_is_always_caught(
    frame: Frame, position: int, bit: int
) -> None:
    body = bytearray(frame.body())
    body[position % len(body)] ^= 1 << bit
    # CRC-16 detects every single-bit error, so the damaged frame is dropped...
    decoder = FrameDecoder()
    assert decoder.feed(cobs_encode(bytes(body)) + b"\x00") == []
    assert decoder.stats.rejected == 1
    # ...and the decoder is in step for the next one.
    assert decoder.feed(frame.encode()) == [frame]


@given(st.binary(max_size=600))
def test_cobs_round_trip_has_no_zero(data: bytes) -> None:
    encoded = cobs_encode(data)
    assert b"\x00" not in encoded
    assert cobs_decode(encoded) == data


@given(st.binary(max_size=300))
def test_payload_parsers_only_raise_message_errors(payload: bytes) -> None:
    for parse in (
        decode_configure,
        decode_set_amplitude,
        decode_status,
        IdentifyReply.decode,
        Nack.decode,
        Event.decode,
    ):
        with contextlib.suppress(MessageError):
            parse(payload)


u32 = st.integers(0, 2**32 - 1)


@st.composite
def channel_configs(draw: st.DrawFn) -> ChannelConfig:
    shape = draw(st.sampled_from(sorted(SHAPE_CODES)))
    first, second = draw(u32), draw(u32)
    widths = (first,) if shape is ShapeKind.MONOPHASIC_RECTANGULAR else (first, second)
    return ChannelConfig(draw(st.integers(1, 16)), shape, widths, draw(u32), draw(u32))


@given(channel_configs())
def test_configure_round_trips(config: ChannelConfig) -> None:
    assert decode_configure(encode_configure(config)) == config


@given(st.dictionaries(st.integers(1, 16), st.integers(0, 2**32 - 1), min_size=1))
def test_set_amplitude_round_trips(values: dict[int, int]) -> None:
    assert decode_set_amplitude(encode_set_amplitude(values)) == values
