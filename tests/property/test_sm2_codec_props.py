"""ScienceMode2 codec under Hypothesis: fuzzing, chunking, round trips, stuffing.

Properties:
- arbitrary bytes never raise, and every frame returned carries a correct CRC and length;
- how a stream is split into reads never changes what is decoded;
- valid frames separated by garbage free of start bytes are all recovered, in order;
- every message round-trips through encode and decode.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from estim.device.sciencemode2.codec import (
    ESCAPE,
    ESCAPE_KEY,
    START,
    STOP,
    Frame,
    FrameDecoder,
    crc8,
    encode_frame,
    unescape,
)
from estim.device.sciencemode2.messages import (
    ChannelPulse,
    InitChannelListMode,
    Message,
    SinglePulse,
    StartChannelListMode,
    decode,
)

SPECIALS = [0xF0, 0x0F, 0x81, 0x55, 0x0A]

# Bytes biased towards the control values, so fuzzing hits the interesting paths.
interesting_bytes = st.one_of(st.integers(0, 255), st.sampled_from([*SPECIALS, 0x5A, 0xA5, 0xD4]))
byte_streams = st.lists(interesting_bytes, max_size=400).map(bytes)

frames = st.builds(
    encode_frame,
    counter=st.integers(0, 255),
    command=st.integers(0, 255),
    data=st.lists(interesting_bytes, max_size=32).map(bytes),
)


def _assert_well_formed(frame: Frame) -> None:
    raw = frame.raw
    assert raw[0] == START
    assert raw[-1] == STOP
    assert raw[1] == ESCAPE
    assert raw[3] == ESCAPE
    payload = raw[5:-1]
    assert raw[2] ^ ESCAPE_KEY == crc8(payload), "a frame with a bad CRC was returned"
    assert raw[4] ^ ESCAPE_KEY == len(payload), "a frame with a bad length was returned"
    plain = unescape(payload)
    assert (frame.counter, frame.command, frame.data) == (plain[0], plain[1], plain[2:])


def _decode_in_chunks(stream: bytes, cuts: list[int]) -> list[Frame]:
    decoder = FrameDecoder()
    out: list[Frame] = []
    points = sorted({c % (len(stream) + 1) for c in cuts})
    previous = 0
    for point in [*points, len(stream)]:
        out += decoder.feed(stream[previous:point])
        previous = point
    return out


@given(byte_streams)
def test_arbitrary_bytes_never_raise_and_never_yield_a_bad_frame(stream: bytes) -> None:
    for frame in FrameDecoder().feed(stream):
        _assert_well_formed(frame)


@given(
    st.lists(st.one_of(frames, byte_streams), max_size=8).map(b"".join),
    st.lists(st.integers(0, 4000)),
)
def test_split_and_merged_reads_decode_identically(stream: bytes, cuts: list[int]) -> None:
    whole = FrameDecoder().feed(stream)
    assert _decode_in_chunks(stream, cuts) == whole
    one_at_a_time = FrameDecoder()
    singly = [f for i in range(len(stream)) for f in one_at_a_time.feed(stream[i : i + 1])]
    assert singly == whole
    for frame in whole:
        _assert_well_formed(frame)


@given(
    st.lists(
        st.tuples(frames, st.lists(interesting_bytes.filter(lambda b: b != START), max_size=20)),
        min_size=1,
        max_size=6,
    )
)
def test_frames_behind_garbage_without_start_bytes_are_all_recovered(
    parts: list[tuple[bytes, list[int]]],
) -> None:
    stream = b"".join(bytes(garbage) + frame for frame, garbage in parts)
    decoded = FrameDecoder().feed(stream)
    assert [f.raw for f in decoded] == [frame for frame, _ in parts]


@given(
    st.integers(0, 255), st.integers(0, 255), st.lists(st.integers(0, 255), max_size=32).map(bytes)
)
def test_encode_decode_round_trip(counter: int, command: int, data: bytes) -> None:
    (frame,) = FrameDecoder().feed(encode_frame(counter, command, data))
    assert (frame.counter, frame.command, frame.data) == (counter, command, data)


@given(
    st.integers(0, 255), st.integers(0, 255), st.lists(st.integers(0, 255), max_size=32).map(bytes)
)
def test_encoded_payload_contains_no_raw_control_byte(
    counter: int, command: int, data: bytes
) -> None:
    wire = encode_frame(counter, command, data)
    payload = wire[5:-1]
    index = 0
    while index < len(payload):
        if payload[index] == ESCAPE:
            assert payload[index + 1] ^ ESCAPE_KEY in SPECIALS
            index += 2
        else:
            assert payload[index] not in SPECIALS
            index += 1


channel_pulses = st.builds(
    ChannelPulse,
    pulse_width_us=st.integers(0, 0xFFFF),
    amplitude_ma=st.integers(0, 255),
    mode=st.integers(0, 255),
)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        InitChannelListMode,
        active_channels=st.frozensets(st.integers(1, 8)),
        main_interval_code=st.integers(0, 0xFFFF),
        low_frequency_channels=st.frozensets(st.integers(1, 8)),
        low_frequency_factor=st.integers(0, 255),
        inter_pulse_interval_code=st.integers(0, 255),
        reserved=st.integers(0, 255),
    ),
    st.builds(StartChannelListMode, st.lists(channel_pulses, min_size=1, max_size=8).map(tuple)),
    st.builds(SinglePulse, st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 255)),
)


@given(messages, st.integers(0, 255))
def test_messages_round_trip(message: Message, counter: int) -> None:
    (frame,) = FrameDecoder().feed(message.encode(counter))
    assert frame.counter == counter
    assert decode(frame) == message


def test_every_special_value_in_every_payload_position_is_escaped_and_restored() -> None:
    # Exhaustive: the longest payload (counter, command, 32 data bytes), each position
    # holding each special value in turn, the rest ordinary.
    length = 34
    for position in range(length):
        for special in SPECIALS:
            plain = bytearray([0x11] * length)
            plain[position] = special
            wire = encode_frame(plain[0], plain[1], bytes(plain[2:]))
            payload = wire[5:-1]
            escaped_at = position  # ordinary bytes before it take one byte each
            assert payload[escaped_at : escaped_at + 2] == bytes((ESCAPE, special ^ ESCAPE_KEY))
            assert len(payload) == length + 1
            assert wire[4] ^ ESCAPE_KEY == length + 1
            (frame,) = FrameDecoder().feed(wire)
            assert bytes((frame.counter, frame.command)) + frame.data == bytes(plain)


def test_every_special_value_in_every_header_slot_is_sent_escaped() -> None:
    # The CRC slot: find a Watchdog counter whose CRC is each special value.
    seen = set()
    for counter in range(256):
        wire = encode_frame(counter, 4)
        crc = wire[2] ^ ESCAPE_KEY
        if crc in SPECIALS:
            seen.add(crc)
            assert wire[1] == ESCAPE
            (frame,) = FrameDecoder().feed(wire)
            assert frame.counter == counter
    assert seen == set(SPECIALS)
    # The LEN slot: escaped payload lengths 10 (0x0A) and 15 (0x0F) are reachable.
    for length in (0x0A, 0x0F):
        wire = encode_frame(1, 32, bytes([0x11] * (length - 2)))
        assert wire[3] == ESCAPE
        assert wire[4] == length ^ ESCAPE_KEY
        (frame,) = FrameDecoder().feed(wire)
        assert frame.data == bytes([0x11] * (length - 2))
