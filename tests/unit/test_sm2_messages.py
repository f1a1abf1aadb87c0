"""ScienceMode2 messages: every frame type, exact bytes written by hand from the facts.

Each case lays out a frame byte by byte (comments say which fact each byte comes
from); CRCs were computed by polynomial long division independently of estim's code.
Both directions are checked: our encoder must produce the bytes, and the decoder must
turn the bytes back into the same message.
"""

from __future__ import annotations

import pytest

from estim.device.sciencemode2.codec import FrameDecoder
from estim.device.sciencemode2.messages import (
    HOST_COMMANDS,
    ChannelPulse,
    Command,
    GetStimulationMode,
    GetStimulationModeAck,
    Init,
    InitAck,
    InitChannelListMode,
    InitChannelListModeAck,
    Message,
    MessageError,
    PulseMode,
    Result,
    SinglePulse,
    SinglePulseAck,
    StartChannelListMode,
    StartChannelListModeAck,
    StimulationError,
    StimulationErrorCode,
    StopChannelListMode,
    StopChannelListModeAck,
    UnknownCommand,
    Unrecognised,
    Watchdog,
    channel_mask,
    channels_of_mask,
    command_from_wire,
    counter_from_wire,
    decode,
    inter_pulse_interval_code,
    main_interval_code,
)

CASES: list[tuple[str, int, Message, str]] = [
    # name, counter, message, frame as hex
    (
        # Init: cmd 1, version byte 1. Payload 00 01 01; CRC 0x12 -> 47; LEN 3 -> 56.
        "Init",
        0,
        Init(version=1),
        "F0 81 47 81 56 00 01 01 0F",
    ),
    (
        # InitAck: cmd 2, result 0, echoing the Init's counter 5.
        # Payload 05 02 00; CRC 0xEA -> BF; LEN 3 -> 56.
        "InitAck",
        5,
        InitAck(Result.OK),
        "F0 81 BF 81 56 05 02 00 0F",
    ),
    (
        # UnknownCommand: cmd 3, no data. Payload 00 03; CRC 0x09 -> 5C; LEN 2 -> 57.
        "UnknownCommand",
        0,
        UnknownCommand(),
        "F0 81 5C 81 57 00 03 0F",
    ),
    (
        # Watchdog: cmd 4, no data. Payload 00 04; CRC 0x1C -> 49; LEN 2 -> 57.
        "Watchdog",
        0,
        Watchdog(),
        "F0 81 49 81 57 00 04 0F",
    ),
    (
        # GetStimulationMode: cmd 10 = 0x0A is special, sent 81 5F.
        # Payload 03 81 5F; CRC 0x84 -> D1; LEN 3 -> 56.
        "GetStimulationMode",
        3,
        GetStimulationMode(),
        "F0 81 D1 81 56 03 81 5F 0F",
    ),
    (
        # GetStimulationModeAck: cmd 11, result 0, mode 2 (stimulating).
        # Payload 07 0B 00 02; CRC 0x80 -> D5; LEN 4 -> 51.
        "GetStimulationModeAck",
        7,
        GetStimulationModeAck(Result.OK, 2),
        "F0 81 D5 81 51 07 0B 00 02 0F",
    ),
    (
        # GetStimulationMode with counter 10 = 0x0A: counter and command both escaped.
        # Payload 81 5F 81 5F; CRC 0x7D -> 28; LEN 4 -> 51.
        "GetStimulationMode special counter",
        10,
        GetStimulationMode(),
        "F0 81 28 81 51 81 5F 81 5F 0F",
    ),
    (
        # GetStimulationModeAck: result 0, mode 0 (start). Payload 09 0B 00 00;
        # CRC 0x4A -> 1F; LEN 4 -> 51.
        "GetStimulationModeAck start",
        9,
        GetStimulationModeAck(Result.OK, 0),
        "F0 81 1F 81 51 09 0B 00 00 0F",
    ),
    (
        # GetStimulationModeAck: result 0, mode 1 (initialised). Payload 09 0B 00 01;
        # CRC 0x4D -> 18; LEN 4 -> 51.
        "GetStimulationModeAck initialised",
        9,
        GetStimulationModeAck(Result.OK, 1),
        "F0 81 18 81 51 09 0B 00 01 0F",
    ),
    (
        # GetStimulationModeAck: result -3 (wrong mode) = FD, mode 0. Payload
        # 09 0B FD 00; CRC 0xB7 -> E2; LEN 4 -> 51.
        "GetStimulationModeAck refused",
        9,
        GetStimulationModeAck(Result.WRONG_MODE, 0),
        "F0 81 E2 81 51 09 0B FD 00 0F",
    ),
    (
        # InitChannelListMode: cmd 30 = 0x1E. LF factor 0; channels 1+2 -> mask 03;
        # LF mask 00; IPI 2 ms -> (2 - 1.5) x 2 = 1; main 50 ms -> (50 - 1) / 0.5 = 98
        # = 00 62; reserved 00. Payload 01 1E 00 03 00 01 00 62 00; CRC 0x0E -> 5B;
        # LEN 9 -> 5C.
        "InitChannelListMode",
        1,
        InitChannelListMode(frozenset({1, 2}), main_interval_code=98),
        "F0 81 5B 81 5C 01 1E 00 03 00 01 00 62 00 0F",
    ),
    (
        # InitChannelListMode, main 8.5 ms -> code 15 = 0x0F (LSB is special: 81 5A),
        # channel 1 only. Payload 04 1E 00 01 00 01 00 81 5A 00; CRC 0xA1 -> F4;
        # LEN 10 -> 5F.
        "InitChannelListMode 8.5 ms",
        4,
        InitChannelListMode(frozenset({1}), main_interval_code=15),
        "F0 81 F4 81 5F 04 1E 00 01 00 01 00 81 5A 00 0F",
    ),
    (
        # InitChannelListMode, main 1025 ms -> code 2048 = 08 00 (the longest).
        # Payload 00 1E 00 01 00 01 08 00 00; CRC 0xAB -> FE; LEN 9 -> 5C.
        "InitChannelListMode 1025 ms",
        0,
        InitChannelListMode(frozenset({1}), main_interval_code=2048),
        "F0 81 FE 81 5C 00 1E 00 01 00 01 08 00 00 0F",
    ),
    (
        # InitChannelListModeAck: cmd 31 = 0x1F, result -2 (parameter error) = FE.
        # Payload 08 1F FE; CRC 0x31 -> 64; LEN 3 -> 56.
        "InitChannelListModeAck",
        8,
        InitChannelListModeAck(Result.PARAMETER_ERROR),
        "F0 81 64 81 56 08 1F FE 0F",
    ),
    (
        # StartChannelListMode: cmd 32 = 0x20. Channel A: single (00), 300 us = 01 2C,
        # 20 mA = 14. Channel B: single, 250 us = 00 FA, 15 mA = 0x0F (special: 81 5A).
        # Payload 02 20 00 01 2C 14 00 00 FA 81 5A; CRC 0xC3 -> 96; LEN 11 -> 5E.
        "StartChannelListMode",
        2,
        StartChannelListMode((ChannelPulse(300, 20), ChannelPulse(250, 15))),
        "F0 81 96 81 5E 02 20 00 01 2C 14 00 00 FA 81 5A 0F",
    ),
    (
        # StartChannelListModeAck: cmd 33 = 0x21, result -8 (busy) = F8.
        # Payload 06 21 F8; CRC 0x20 -> 75; LEN 3 -> 56.
        "StartChannelListModeAck",
        6,
        StartChannelListModeAck(Result.BUSY),
        "F0 81 75 81 56 06 21 F8 0F",
    ),
    (
        # StopChannelListMode: cmd 34 = 0x22. Payload 00 22; CRC 0xEE -> BB; LEN 2 -> 57.
        "StopChannelListMode",
        0,
        StopChannelListMode(),
        "F0 81 BB 81 57 00 22 0F",
    ),
    (
        # StopChannelListModeAck: cmd 35 = 0x23, result -3 (wrong mode) = FD.
        # Payload 09 23 FD; CRC 0x56 -> 03; LEN 3 -> 56.
        "StopChannelListModeAck",
        9,
        StopChannelListModeAck(Result.WRONG_MODE),
        "F0 81 03 81 56 09 23 FD 0F",
    ),
    (
        # StopChannelListModeAck OK. Payload 01 23 00; CRC 0xFA -> AF; LEN 3 -> 56.
        "StopChannelListModeAck ok",
        1,
        StopChannelListModeAck(Result.OK),
        "F0 81 AF 81 56 01 23 00 0F",
    ),
    (
        # SinglePulse: cmd 36 = 0x24, channel index 0, 200 us = 00 C8, 10 mA = 0x0A
        # (special: 81 5F). Payload 0B 24 00 00 C8 81 5F; CRC 0xF6 -> A3; LEN 7 -> 52.
        "SinglePulse",
        11,
        SinglePulse(0, 200, 10),
        "F0 81 A3 81 52 0B 24 00 00 C8 81 5F 0F",
    ),
    (
        # SinglePulseAck: cmd 37 = 0x25, result 0. Payload 0C 25 00; CRC 0x15 -> 40.
        "SinglePulseAck",
        12,
        SinglePulseAck(Result.OK),
        "F0 81 40 81 56 0C 25 00 0F",
    ),
    (
        # StimulationError: cmd 38 = 0x26, code -2 (electrode error) = FE.
        # Payload 0D 26 FE; CRC 0xB5 -> E0; LEN 3 -> 56.
        "StimulationError",
        13,
        StimulationError(StimulationErrorCode.ELECTRODE),
        "F0 81 E0 81 56 0D 26 FE 0F",
    ),
]


@pytest.mark.parametrize(("name", "counter", "message", "wire"), CASES, ids=[c[0] for c in CASES])
def test_encode_exact_bytes(name: str, counter: int, message: Message, wire: str) -> None:
    assert message.encode(counter) == bytes.fromhex(wire), name


@pytest.mark.parametrize(("name", "counter", "message", "wire"), CASES, ids=[c[0] for c in CASES])
def test_decode_exact_bytes(name: str, counter: int, message: Message, wire: str) -> None:
    (frame,) = FrameDecoder().feed(bytes.fromhex(wire))
    assert frame.counter == counter
    assert decode(frame) == message, name


def test_every_command_has_a_case() -> None:
    covered = {type(m).COMMAND for _, _, m, _ in CASES}
    assert covered == set(Command)


def test_command_numbers_match_the_facts() -> None:
    assert {c.name: c.value for c in Command} == {
        "INIT": 1,
        "INIT_ACK": 2,
        "UNKNOWN_COMMAND": 3,
        "WATCHDOG": 4,
        "GET_STIMULATION_MODE": 10,
        "GET_STIMULATION_MODE_ACK": 11,
        "INIT_CHANNEL_LIST_MODE": 30,
        "INIT_CHANNEL_LIST_MODE_ACK": 31,
        "START_CHANNEL_LIST_MODE": 32,
        "START_CHANNEL_LIST_MODE_ACK": 33,
        "STOP_CHANNEL_LIST_MODE": 34,
        "STOP_CHANNEL_LIST_MODE_ACK": 35,
        "SINGLE_PULSE": 36,
        "SINGLE_PULSE_ACK": 37,
        "STIMULATION_ERROR": 38,
    }


# --- interval and channel coding -------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval_us", "code"),
    [(1000, 0), (8000, 14), (20000, 38), (50000, 98), (1_025_000, 2048), (8500, 15)],
)
def test_main_interval_code(interval_us: int, code: int) -> None:
    assert main_interval_code(interval_us) == code
    message = InitChannelListMode(frozenset({1}), main_interval_code=code)
    assert message.main_interval_us == interval_us


@pytest.mark.parametrize("interval_us", [999, 1_025_500, 20250, 28571])
def test_main_interval_refuses_what_the_wire_cannot_carry(interval_us: int) -> None:
    with pytest.raises(ValueError, match="interval"):
        main_interval_code(interval_us)


@pytest.mark.parametrize(
    ("interval_us", "code"), [(1500, 0), (2000, 1), (8000, 13), (129_000, 255)]
)
def test_inter_pulse_interval_code(interval_us: int, code: int) -> None:
    assert inter_pulse_interval_code(interval_us) == code


@pytest.mark.parametrize("interval_us", [1000, 129_500, 2250])
def test_inter_pulse_interval_refuses_out_of_range(interval_us: int) -> None:
    with pytest.raises(ValueError, match="inter-pulse"):
        inter_pulse_interval_code(interval_us)


def test_channel_masks() -> None:
    # "sum of 2^(channel-1)": channels 1 and 4 -> 1 + 8 = 9; all eight -> 0xFF.
    assert channel_mask(frozenset({1, 4})) == 9
    assert channel_mask(frozenset(range(1, 9))) == 0xFF
    assert channels_of_mask(0b1000_0001) == frozenset({1, 8})
    with pytest.raises(ValueError, match="channel 9"):
        channel_mask(frozenset({9}))


def test_from_intervals_builds_wire_values() -> None:
    message = InitChannelListMode.from_intervals(
        frozenset({1, 3}),
        20_000,
        low_frequency_channels=frozenset({3}),
        low_frequency_factor=1,
    )
    assert message.data() == bytes([1, 0b101, 0b100, 1, 0, 38, 0])
    assert message.main_interval_us == 20_000
    assert message.inter_pulse_interval_us == 2000


# --- layouts refused -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "data"),
    [
        (Command.INIT, b""),
        (Command.INIT_ACK, b"\x00\x00"),
        (Command.WATCHDOG, b"\x00"),
        (Command.GET_STIMULATION_MODE_ACK, b"\x00"),
        (Command.INIT_CHANNEL_LIST_MODE, bytes(6)),
        (Command.START_CHANNEL_LIST_MODE, bytes(5)),
        (Command.START_CHANNEL_LIST_MODE, b""),
        (Command.START_CHANNEL_LIST_MODE, bytes(36)),
        (Command.SINGLE_PULSE, bytes(3)),
        (Command.STIMULATION_ERROR, b""),
    ],
)
def test_wrong_data_length_is_a_message_error(command: int, data: bytes) -> None:
    from estim.device.sciencemode2.codec import Frame

    with pytest.raises(MessageError):
        decode(Frame(0, command, data))


def test_unknown_command_decodes_as_unrecognised() -> None:
    from estim.device.sciencemode2.codec import Frame

    # 60 is MOTOmed "ActualValues" traffic: not ours, but not an error either.
    message = decode(Frame(0, 60, b"\x01\x02"))
    assert message == Unrecognised(60, b"\x01\x02")


def test_values_that_do_not_fit_their_bytes_are_refused() -> None:
    with pytest.raises(ValueError, match="amplitude"):
        ChannelPulse(100, 256)
    with pytest.raises(ValueError, match="signed byte"):
        InitAck(200)
    with pytest.raises(ValueError, match=r"1\.\.8"):
        StartChannelListMode(())


def test_out_of_firmware_range_values_are_representable_for_the_bench() -> None:
    # The device, not the codec, refuses 200 mA: the bench must be able to send it.
    pulse = ChannelPulse(pulse_width_us=600, amplitude_ma=200, mode=PulseMode.SINGLE)
    assert pulse.data() == bytes([0, 0x02, 0x58, 200])


# --- the pyScienceMode quirk -------------------------------------------------------------------


def test_quirky_command_byte_maps_back_on_the_device_side() -> None:
    # GetStimulationMode (0x0A) XOR 0x55 = 0x5F, sent without escape by pyScienceMode.
    assert command_from_wire(0x5F) == Command.GET_STIMULATION_MODE
    assert command_from_wire(Command.WATCHDOG) == Command.WATCHDOG
    assert command_from_wire(0x77) == 0x77  # neither: left alone


def test_quirky_frame_decodes_to_get_stimulation_mode() -> None:
    # Payload 5F 5F (counter 0x0A and command 0x0A, both XOR-ed, no escapes).
    (frame,) = FrameDecoder().feed(bytes.fromhex("F0 81 00 81 57 5F 5F 0F"))
    assert decode(frame, HOST_COMMANDS) == GetStimulationMode()
    assert counter_from_wire(frame.counter) == frozenset({0x5F, 0x0A})
    assert counter_from_wire(0x20) == frozenset({0x20})


def test_result_descriptions() -> None:
    assert Result.describe(-2) == "parameter error"
    assert Result.describe(-5) == "unknown result -5"
    assert StimulationErrorCode.describe(-2) == "electrode error"
