"""ScienceMode2 messages: command numbers, data layouts, result codes. Pure.

Each message class knows its command number and how its data bytes are laid out. The
classes hold *wire values* (coded intervals, mA, us), faithfully, including values a
device would refuse: the simulator must be able to receive an out-of-range request and
answer it with a parameter error, and the bench must be able to send one. Conversions
from estim's units, which refuse what the wire cannot represent, are the
``from_*`` constructors.

Layouts (data bytes after the counter and command):

====================  ===  ======  ==================================================
message               cmd  dir     data
====================  ===  ======  ==================================================
Init                  1    dev>    version
InitAck               2    >dev    result
UnknownCommand        3    dev>    (none)
Watchdog              4    >dev    (none)
GetStimulationMode    10   >dev    (none)
GetStimulationModeAck 11   dev>    result, mode
InitChannelListMode   30   >dev    lf factor, channel mask, lf mask, IPI code,
                                   main interval code MSB, LSB, reserved
InitChannelListModeAck 31  dev>    result
StartChannelListMode  32   >dev    per active channel: mode, width MSB, LSB, mA
StartChannelListModeAck 33 dev>    result
StopChannelListMode   34   >dev    (none)
StopChannelListModeAck 35  dev>    result
SinglePulse           36   >dev    channel, width MSB, LSB, mA
SinglePulseAck        37   dev>    result
StimulationError      38   dev>    error code
====================  ===  ======  ==================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from estim.device.sciencemode2.codec import (
    ESCAPE_KEY,
    MAX_CHANNELS,
    SPECIAL_BYTES,
    Frame,
    encode_frame,
)


class Command(IntEnum):
    INIT = 1
    INIT_ACK = 2
    UNKNOWN_COMMAND = 3
    WATCHDOG = 4
    GET_STIMULATION_MODE = 10
    GET_STIMULATION_MODE_ACK = 11
    INIT_CHANNEL_LIST_MODE = 30
    INIT_CHANNEL_LIST_MODE_ACK = 31
    START_CHANNEL_LIST_MODE = 32
    START_CHANNEL_LIST_MODE_ACK = 33
    STOP_CHANNEL_LIST_MODE = 34
    STOP_CHANNEL_LIST_MODE_ACK = 35
    SINGLE_PULSE = 36
    SINGLE_PULSE_ACK = 37
    STIMULATION_ERROR = 38


class Result(IntEnum):
    """Result byte of an acknowledgement (a signed byte on the wire)."""

    OK = 0
    TRANSFER_ERROR = -1
    PARAMETER_ERROR = -2
    WRONG_MODE = -3
    BUSY = -8

    @classmethod
    def describe(cls, code: int) -> str:
        try:
            return cls(code).name.lower().replace("_", " ")
        except ValueError:
            return f"unknown result {code}"


class StimulationErrorCode(IntEnum):
    """Code of an unsolicited StimulationError (the device stops stimulating)."""

    EMERGENCY_SWITCH = -1  # emergency switch activated, or not connected
    ELECTRODE = -2
    STIMULATION_MODULE = -3

    @classmethod
    def describe(cls, code: int) -> str:
        texts = {
            -1: "emergency switch activated or not connected",
            -2: "electrode error",
            -3: "stimulation module error",
        }
        return texts.get(code, f"unknown stimulation error {code}")


class StimulationMode(IntEnum):
    """What GetStimulationModeAck reports."""

    START = 0  # connected, channel list not initialised
    INITIALISED = 1  # InitChannelListMode accepted, not stimulating
    STIMULATING = 2


class PulseMode(IntEnum):
    """Pulses per channel per main interval (doublets and triplets use the IPI)."""

    SINGLE = 0
    DOUBLET = 1
    TRIPLET = 2


class MessageError(ValueError):
    """Data bytes that do not fit the layout of their command."""


# --- interval coding -------------------------------------------------------------------

MAIN_INTERVAL_OFFSET_US = 1000
INTERVAL_STEP_US = 500
INTER_PULSE_INTERVAL_OFFSET_US = 1500
MAIN_INTERVAL_WIRE_MIN_US = 1000
MAIN_INTERVAL_WIRE_MAX_US = 1_025_000  # code 2048
MAIN_INTERVAL_FIRMWARE_MIN_US = 8000  # the firmware refuses shorter intervals
INTER_PULSE_INTERVAL_MAX_US = INTER_PULSE_INTERVAL_OFFSET_US + 255 * INTERVAL_STEP_US  # 129 ms
PULSE_WIDTH_MAX_US = 500
PULSE_WIDTH_FIRMWARE_MIN_US = 20  # shorter (non-zero) widths are delivered as 20 us
LOW_FREQUENCY_FACTOR_MAX = 7


def main_interval_code(interval_us: int) -> int:
    """Wire code of a main stimulation interval: ``(ms - 1) / 0.5``; refuses inexact values."""
    if not MAIN_INTERVAL_WIRE_MIN_US <= interval_us <= MAIN_INTERVAL_WIRE_MAX_US:
        raise ValueError(
            f"main stimulation interval {interval_us} us is outside the protocol's "
            f"{MAIN_INTERVAL_WIRE_MIN_US}-{MAIN_INTERVAL_WIRE_MAX_US} us"
        )
    code, rest = divmod(interval_us - MAIN_INTERVAL_OFFSET_US, INTERVAL_STEP_US)
    if rest:
        raise ValueError(
            f"main stimulation interval {interval_us} us is not a multiple of 0.5 ms; "
            "ScienceMode2 cannot represent it"
        )
    return code


def inter_pulse_interval_code(interval_us: int) -> int:
    """Wire code of the doublet/triplet inter-pulse interval: ``(ms - 1.5) x 2``."""
    if not INTER_PULSE_INTERVAL_OFFSET_US <= interval_us <= INTER_PULSE_INTERVAL_MAX_US:
        raise ValueError(
            f"inter-pulse interval {interval_us} us is outside "
            f"{INTER_PULSE_INTERVAL_OFFSET_US}-{INTER_PULSE_INTERVAL_MAX_US} us"
        )
    code, rest = divmod(interval_us - INTER_PULSE_INTERVAL_OFFSET_US, INTERVAL_STEP_US)
    if rest:
        raise ValueError(f"inter-pulse interval {interval_us} us is not a multiple of 0.5 ms")
    return code


def channel_mask(channels: frozenset[int]) -> int:
    """Bitmask with bit ``channel - 1`` set for each channel 1..8."""
    mask = 0
    for channel in channels:
        if not 1 <= channel <= MAX_CHANNELS:
            raise ValueError(f"channel {channel} does not exist (1..{MAX_CHANNELS})")
        mask |= 1 << (channel - 1)
    return mask


def channels_of_mask(mask: int) -> frozenset[int]:
    return frozenset(bit + 1 for bit in range(MAX_CHANNELS) if mask >> bit & 1)


def _signed(byte: int) -> int:
    return byte - 0x100 if byte & 0x80 else byte


def _unsigned(value: int, what: str) -> int:
    if not -0x80 <= value <= 0x7F:
        raise ValueError(f"{what} {value} does not fit a signed byte")
    return value & 0xFF


def _check_byte(value: int, what: str) -> int:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{what} {value} does not fit a byte (0..255)")
    return value


# --- messages ----------------------------------------------------------------------------


class Message:
    """A ScienceMode2 message: its command number and its data bytes."""

    COMMAND: ClassVar[Command]

    def data(self) -> bytes:
        return b""

    @classmethod
    def parse(cls, data: bytes) -> Message:
        _expect_length(cls, data, 0)
        return cls()

    def encode(self, counter: int) -> bytes:
        """The complete frame for this message with packet counter ``counter``."""
        return encode_frame(counter, self.COMMAND, self.data())


def _expect_length(cls: type[Message], data: bytes, length: int) -> None:
    if len(data) != length:
        raise MessageError(
            f"{cls.__name__} carries {length} data bytes, got {len(data)}: {data.hex(' ')}"
        )


@dataclass(frozen=True, slots=True)
class _ResultMessage(Message):
    result: int = Result.OK

    def __post_init__(self) -> None:
        _unsigned(self.result, "result")

    @property
    def ok(self) -> bool:
        return self.result == Result.OK

    def data(self) -> bytes:
        return bytes((_unsigned(self.result, "result"),))

    @classmethod
    def parse(cls, data: bytes) -> Message:
        _expect_length(cls, data, 1)
        return cls(_signed(data[0]))


@dataclass(frozen=True, slots=True)
class Init(Message):
    """Device -> host at start-up, repeated until the host answers InitAck."""

    COMMAND: ClassVar[Command] = Command.INIT
    version: int = 1

    def __post_init__(self) -> None:
        _check_byte(self.version, "version")

    def data(self) -> bytes:
        return bytes((self.version,))

    @classmethod
    def parse(cls, data: bytes) -> Message:
        _expect_length(cls, data, 1)
        return cls(data[0])


@dataclass(frozen=True, slots=True)
class InitAck(_ResultMessage):
    """Host -> device; sent with the packet counter of the Init it answers."""

    COMMAND: ClassVar[Command] = Command.INIT_ACK


@dataclass(frozen=True, slots=True)
class UnknownCommand(Message):
    COMMAND: ClassVar[Command] = Command.UNKNOWN_COMMAND


@dataclass(frozen=True, slots=True)
class Watchdog(Message):
    COMMAND: ClassVar[Command] = Command.WATCHDOG


@dataclass(frozen=True, slots=True)
class GetStimulationMode(Message):
    COMMAND: ClassVar[Command] = Command.GET_STIMULATION_MODE


@dataclass(frozen=True, slots=True)
class GetStimulationModeAck(Message):
    COMMAND: ClassVar[Command] = Command.GET_STIMULATION_MODE_ACK
    result: int = Result.OK
    mode: int = StimulationMode.START

    def __post_init__(self) -> None:
        _unsigned(self.result, "result")
        _check_byte(self.mode, "mode")

    @property
    def ok(self) -> bool:
        return self.result == Result.OK

    def data(self) -> bytes:
        return bytes((_unsigned(self.result, "result"), self.mode))

    @classmethod
    def parse(cls, data: bytes) -> Message:
        _expect_length(cls, data, 2)
        return cls(_signed(data[0]), data[1])


@dataclass(frozen=True, slots=True)
class InitChannelListMode(Message):
    """Which channels stimulate, and how often (wire values)."""

    COMMAND: ClassVar[Command] = Command.INIT_CHANNEL_LIST_MODE
    active_channels: frozenset[int]
    main_interval_code: int
    low_frequency_channels: frozenset[int] = frozenset()
    low_frequency_factor: int = 0
    inter_pulse_interval_code: int = 1  # 2 ms; only doublets and triplets use it
    reserved: int = 0

    def __post_init__(self) -> None:
        channel_mask(self.active_channels)
        channel_mask(self.low_frequency_channels)
        _check_byte(self.low_frequency_factor, "low-frequency factor")
        _check_byte(self.inter_pulse_interval_code, "inter-pulse interval code")
        _check_byte(self.reserved, "reserved byte")
        if not 0 <= self.main_interval_code <= 0xFFFF:
            raise ValueError(f"main interval code {self.main_interval_code} does not fit 2 bytes")

    @classmethod
    def from_intervals(
        cls,
        active_channels: frozenset[int],
        main_interval_us: int,
        *,
        low_frequency_channels: frozenset[int] = frozenset(),
        low_frequency_factor: int = 0,
        inter_pulse_interval_us: int = 2000,
    ) -> InitChannelListMode:
        """Build from microseconds; refuses any interval the wire cannot carry exactly."""
        return cls(
            active_channels=frozenset(active_channels),
            main_interval_code=main_interval_code(main_interval_us),
            low_frequency_channels=frozenset(low_frequency_channels),
            low_frequency_factor=low_frequency_factor,
            inter_pulse_interval_code=inter_pulse_interval_code(inter_pulse_interval_us),
        )

    @property
    def main_interval_us(self) -> int:
        return MAIN_INTERVAL_OFFSET_US + INTERVAL_STEP_US * self.main_interval_code

    @property
    def inter_pulse_interval_us(self) -> int:
        return INTER_PULSE_INTERVAL_OFFSET_US + INTERVAL_STEP_US * self.inter_pulse_interval_code

    def data(self) -> bytes:
        return bytes(
            (
                self.low_frequency_factor,
                channel_mask(self.active_channels),
                channel_mask(self.low_frequency_channels),
                self.inter_pulse_interval_code,
                self.main_interval_code >> 8,
                self.main_interval_code & 0xFF,
                self.reserved,
            )
        )

    @classmethod
    def parse(cls, data: bytes) -> Message:
        _expect_length(cls, data, 7)
        return cls(
            low_frequency_factor=data[0],
            active_channels=channels_of_mask(data[1]),
            low_frequency_channels=channels_of_mask(data[2]),
            inter_pulse_interval_code=data[3],
            main_interval_code=data[4] << 8 | data[5],
            reserved=data[6],
        )


@dataclass(frozen=True, slots=True)
class ChannelPulse:
    """One active channel's entry in StartChannelListMode (wire values)."""

    pulse_width_us: int
    amplitude_ma: int
    mode: int = PulseMode.SINGLE

    def __post_init__(self) -> None:
        _check_byte(self.mode, "pulse mode")
        _check_byte(self.amplitude_ma, "amplitude (mA)")
        if not 0 <= self.pulse_width_us <= 0xFFFF:
            raise ValueError(f"pulse width {self.pulse_width_us} us does not fit 2 bytes")

    def data(self) -> bytes:
        width = self.pulse_width_us
        return bytes((self.mode, width >> 8, width & 0xFF, self.amplitude_ma))


@dataclass(frozen=True, slots=True)
class StartChannelListMode(Message):
    """Start stimulating, or update widths and amplitudes while stimulating.

    One entry per channel of the InitChannelListMode channel mask, in ascending channel
    order; the channel numbers themselves are not sent.
    """

    COMMAND: ClassVar[Command] = Command.START_CHANNEL_LIST_MODE
    pulses: tuple[ChannelPulse, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.pulses) <= MAX_CHANNELS:
            raise ValueError(f"StartChannelListMode needs 1..{MAX_CHANNELS} channel entries")

    def data(self) -> bytes:
        return b"".join(p.data() for p in self.pulses)

    @classmethod
    def parse(cls, data: bytes) -> Message:
        if not data or len(data) % 4 or len(data) > 4 * MAX_CHANNELS:
            raise MessageError(
                f"StartChannelListMode carries 4 bytes per channel (1..{MAX_CHANNELS}), "
                f"got {len(data)}"
            )
        pulses = tuple(
            ChannelPulse(
                mode=data[i],
                pulse_width_us=data[i + 1] << 8 | data[i + 2],
                amplitude_ma=data[i + 3],
            )
            for i in range(0, len(data), 4)
        )
        return cls(pulses)


@dataclass(frozen=True, slots=True)
class StopChannelListMode(Message):
    COMMAND: ClassVar[Command] = Command.STOP_CHANNEL_LIST_MODE


@dataclass(frozen=True, slots=True)
class InitChannelListModeAck(_ResultMessage):
    COMMAND: ClassVar[Command] = Command.INIT_CHANNEL_LIST_MODE_ACK


@dataclass(frozen=True, slots=True)
class StartChannelListModeAck(_ResultMessage):
    COMMAND: ClassVar[Command] = Command.START_CHANNEL_LIST_MODE_ACK


@dataclass(frozen=True, slots=True)
class StopChannelListModeAck(_ResultMessage):
    COMMAND: ClassVar[Command] = Command.STOP_CHANNEL_LIST_MODE_ACK


@dataclass(frozen=True, slots=True)
class SinglePulse(Message):
    """One pulse on one channel (start mode only). ``channel`` is the wire value 0..7.

    The sources we could read do not show whether the channel byte counts from 0 or 1;
    we follow the channel masks (bit 0 = channel 1). estim's driver never sends it.
    """

    COMMAND: ClassVar[Command] = Command.SINGLE_PULSE
    channel_index: int
    pulse_width_us: int
    amplitude_ma: int

    def __post_init__(self) -> None:
        _check_byte(self.channel_index, "channel")
        _check_byte(self.amplitude_ma, "amplitude (mA)")
        if not 0 <= self.pulse_width_us <= 0xFFFF:
            raise ValueError(f"pulse width {self.pulse_width_us} us does not fit 2 bytes")

    def data(self) -> bytes:
        width = self.pulse_width_us
        return bytes((self.channel_index, width >> 8, width & 0xFF, self.amplitude_ma))

    @classmethod
    def parse(cls, data: bytes) -> Message:
        _expect_length(cls, data, 4)
        return cls(data[0], data[1] << 8 | data[2], data[3])


@dataclass(frozen=True, slots=True)
class SinglePulseAck(_ResultMessage):
    COMMAND: ClassVar[Command] = Command.SINGLE_PULSE_ACK


@dataclass(frozen=True, slots=True)
class StimulationError(Message):
    """Device -> host, unsolicited: stimulation stopped because of ``code``."""

    COMMAND: ClassVar[Command] = Command.STIMULATION_ERROR
    code: int

    def __post_init__(self) -> None:
        _unsigned(self.code, "error code")

    def data(self) -> bytes:
        return bytes((_unsigned(self.code, "error code"),))

    @classmethod
    def parse(cls, data: bytes) -> Message:
        _expect_length(cls, data, 1)
        return cls(_signed(data[0]))


@dataclass(frozen=True, slots=True)
class Unrecognised(Message):
    """A frame whose command number is none of the above (e.g. MOTOmed traffic)."""

    command: int
    payload: bytes = b""

    def data(self) -> bytes:
        return self.payload

    def encode(self, counter: int) -> bytes:
        return encode_frame(counter, self.command, self.payload)


MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.COMMAND: cls
    for cls in (
        Init,
        InitAck,
        UnknownCommand,
        Watchdog,
        GetStimulationMode,
        GetStimulationModeAck,
        InitChannelListMode,
        InitChannelListModeAck,
        StartChannelListMode,
        StartChannelListModeAck,
        StopChannelListMode,
        StopChannelListModeAck,
        SinglePulse,
        SinglePulseAck,
        StimulationError,
    )
}

SIM_INJECT = 200
"""Simulator only, not ScienceMode2: data = a fault spec (ASCII), e.g. ``open:ch=1``.

A real RehaStim2 answers it with UnknownCommand; estim's simulator injects the fault
and answers :data:`SIM_INJECT_ACK` with a result byte. The number is far from every
ScienceMode2 and MOTOmed command."""
SIM_INJECT_ACK = 201

SIM_MEASURE_CURRENT = b"measure-current:ch="
"""Simulator only, over :data:`SIM_INJECT`: data ``measure-current:ch=N`` asks for the
peak current (uA) the simulated output stage delivers into channel N's load now, what
an oscilloscope across that load would read. The :data:`SIM_INJECT_ACK` reply carries
the result byte, then the current as an unsigned 32-bit little-endian number (0 while
the channel delivers no pulses). The bench uses it as its instrument on the simulator
of a device that cannot measure its own current."""


def encode_measure_current(channel: int) -> bytes:
    """The :data:`SIM_INJECT` data that asks the simulator for channel ``channel``'s current."""
    if not 1 <= channel <= 255:
        raise ValueError(f"channel {channel} is not 1-255")
    return SIM_MEASURE_CURRENT + str(channel).encode("ascii")


def parse_measure_current(data: bytes) -> int | None:
    """The channel a :data:`SIM_INJECT` payload asks the current of; None: not that query.

    Raises ``ValueError`` for a measure-current query whose channel is not a number.
    """
    if not data.startswith(SIM_MEASURE_CURRENT):
        return None
    text = data.removeprefix(SIM_MEASURE_CURRENT)
    if not text.isdigit() or len(text) > 3:
        raise ValueError(f"measure-current: channel {text!r} is not a number")
    return int(text)


def decode_measure_current_reply(payload: bytes) -> int:
    """The current (uA) in a successful measure-current reply (after the result byte)."""
    if len(payload) != 5:
        raise MessageError(f"measure-current reply has {len(payload)} bytes, expected 5")
    return int.from_bytes(payload[1:], "little")


HOST_COMMANDS = frozenset(
    {
        Command.INIT_ACK,
        Command.WATCHDOG,
        Command.GET_STIMULATION_MODE,
        Command.INIT_CHANNEL_LIST_MODE,
        Command.START_CHANNEL_LIST_MODE,
        Command.STOP_CHANNEL_LIST_MODE,
        Command.SINGLE_PULSE,
    }
)
"""Commands a host sends; the rest are the device's."""

ACK_OF: dict[Command, Command] = {
    Command.GET_STIMULATION_MODE: Command.GET_STIMULATION_MODE_ACK,
    Command.INIT_CHANNEL_LIST_MODE: Command.INIT_CHANNEL_LIST_MODE_ACK,
    Command.START_CHANNEL_LIST_MODE: Command.START_CHANNEL_LIST_MODE_ACK,
    Command.STOP_CHANNEL_LIST_MODE: Command.STOP_CHANNEL_LIST_MODE_ACK,
    Command.SINGLE_PULSE: Command.SINGLE_PULSE_ACK,
}
"""The acknowledgement each acknowledged host command gets."""


def command_from_wire(raw: int, expected: frozenset[Command] = HOST_COMMANDS) -> int:
    """The command a received command byte means, undoing pyScienceMode's quirk.

    pyScienceMode XORs a special byte in the command position with 0x55 without
    sending an escape byte, so GetStimulationMode (10 = 0x0A) arrives as 0x5F. A byte
    that is not an expected command but whose XOR with 0x55 is a special byte *and*
    an expected command is read as that command; no defined command collides with it.
    """
    if raw in expected:
        return raw
    unmasked = raw ^ ESCAPE_KEY
    if unmasked in SPECIAL_BYTES and unmasked in expected:
        return unmasked
    return raw


def counter_from_wire(raw: int) -> frozenset[int]:
    """The packet counters a received counter byte may stand for (quirk-aware)."""
    unmasked = raw ^ ESCAPE_KEY
    return frozenset({raw, unmasked}) if unmasked in SPECIAL_BYTES else frozenset({raw})


def decode(frame: Frame, expected: frozenset[Command] | None = None) -> Message:
    """The typed message in ``frame``; :class:`Unrecognised` for an unknown command.

    ``expected`` (for example :data:`HOST_COMMANDS` on the device side) enables the
    command-byte quirk tolerance. Raises :class:`MessageError` when the data do not fit
    the command's layout.
    """
    command = frame.command if expected is None else command_from_wire(frame.command, expected)
    cls = MESSAGE_TYPES.get(command)
    if cls is None:
        return Unrecognised(command, frame.data)
    try:
        return cls.parse(frame.data)
    except MessageError:
        raise
    except ValueError as err:
        raise MessageError(f"{cls.__name__}: {err}") from err
