"""estim-wire/1 messages: command codes, error codes, and every payload, both directions.

Pure functions from typed values to payload bytes and back. All multi-byte integers are
big-endian and unsigned. A payload that does not parse raises :class:`MessageError`
(a ``ValueError``): the driver turns it into a :class:`~estim.errors.ProtocolError`,
the simulator into a ``BAD_LENGTH`` / ``BAD_ARGUMENT`` NACK. The layouts are specified
in docs/wire-protocol.md; the exact-bytes tests pin them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from estim.device.base import ChannelConfig, ChannelStatus, DeviceIdentity, DeviceStatus, FaultFlag
from estim.protocols.models import ShapeKind

UNAVAILABLE_U32 = 0xFFFFFFFF
"""A measured value the device cannot provide (no current or impedance sensing)."""

NO_LIMIT = 0xFFFFFFFF
"""NACK detail when there is no limit to report."""

MAX_CHANNELS = 16


class MessageError(ValueError):
    """A payload does not have the layout its code requires."""


class Command(IntEnum):
    """Host-to-device commands."""

    IDENTIFY = 0x01
    CONFIGURE = 0x02
    SET_AMPLITUDE = 0x03
    OUTPUT_ON = 0x04
    OUTPUT_OFF = 0x05
    STOP_ALL = 0x06
    HEARTBEAT = 0x07
    STATUS = 0x08
    MEASURE_IMPEDANCE = 0x09
    CLEAR_FAULT = 0x0A
    SIM_INJECT = 0x70  # vendor range 0x70-0x7F: estim's simulator only


class Reply(IntEnum):
    """Device-to-host frame codes."""

    ACK = 0x80
    NACK = 0x81
    EVENT = 0x82


IDEMPOTENT = frozenset(
    {
        Command.IDENTIFY,
        Command.OUTPUT_OFF,
        Command.STOP_ALL,
        Command.HEARTBEAT,
        Command.STATUS,
        Command.MEASURE_IMPEDANCE,
    }
)
"""Commands a host may re-send (same seq, same bytes) after a reply timeout.

Commands that can raise or re-enable output (CONFIGURE, SET_AMPLITUDE, OUTPUT_ON,
CLEAR_FAULT) are never retried: a late retry could land after an emergency stop.
"""


class ErrorCode(IntEnum):
    """NACK error codes."""

    UNKNOWN_COMMAND = 0x01
    BAD_LENGTH = 0x02
    BAD_VERSION = 0x03
    UNKNOWN_CHANNEL = 0x04
    OUT_OF_RANGE = 0x05
    NOT_A_STEP = 0x06
    UNSUPPORTED_SHAPE = 0x07
    BAD_ARGUMENT = 0x08
    NOT_CONFIGURED = 0x09
    FAULT_LATCHED = 0x0A
    WRONG_STATE = 0x0B
    BUSY = 0x0C


class Capability(IntFlag):
    """IDENTIFY capability bits."""

    MEASURES_CURRENT = 1 << 0
    MEASURES_IMPEDANCE = 1 << 1
    DEVICE_RAMPS = 1 << 2
    LONG_PULSE = 1 << 3
    SIM_FAULT_INJECTION = 1 << 4


CAPABILITY_NAMES: dict[Capability, str] = {
    Capability.MEASURES_CURRENT: "measures-current",
    Capability.MEASURES_IMPEDANCE: "measures-impedance",
    Capability.DEVICE_RAMPS: "device-ramps",
    Capability.LONG_PULSE: "long-pulse",
    Capability.SIM_FAULT_INJECTION: "sim-fault-injection",
}

SHAPE_CODES: dict[ShapeKind, int] = {
    ShapeKind.SYMMETRIC_BIPHASIC: 0x01,
    ShapeKind.ASYMMETRIC_BIPHASIC: 0x02,
    ShapeKind.LONG_BIPHASIC_RECTANGULAR: 0x03,
    ShapeKind.LONG_BIPHASIC_TRIANGULAR: 0x04,
    ShapeKind.MONOPHASIC_RECTANGULAR: 0x05,
}
SHAPES_BY_CODE = {code: kind for kind, code in SHAPE_CODES.items()}

FAULT_MASK_ALL = 0xFFFF


_NAMES: dict[int, str] = {int(m): m.name for enum in (Command, Reply) for m in enum}


def command_name(code: int) -> str:
    """The name of a command or reply code (``0x..`` for an unknown one)."""
    name = _NAMES.get(code)
    return name if name is not None else f"0x{code:02X}"


# --- primitive readers ------------------------------------------------------------------


class _Reader:
    def __init__(self, payload: bytes, what: str) -> None:
        self._data = payload
        self._pos = 0
        self._what = what

    def take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise MessageError(f"{self._what}: payload ends early ({len(self._data)} bytes)")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def text(self) -> str:
        raw = self.take(self.u8())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise MessageError(f"{self._what}: text is not UTF-8") from err

    def rest(self) -> bytes:
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk

    def end(self) -> None:
        if self._pos != len(self._data):
            raise MessageError(
                f"{self._what}: {len(self._data) - self._pos} unexpected trailing bytes"
            )


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def _u32(value: int) -> bytes:
    if not 0 <= value <= UNAVAILABLE_U32:
        raise MessageError(f"{value} does not fit in 32 bits")
    return value.to_bytes(4, "big")


def _text(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise MessageError(f"text of {len(raw)} bytes is longer than 255")
    return bytes((len(raw),)) + raw


def _channel(value: int, what: str) -> int:
    if not 1 <= value <= MAX_CHANNELS:
        raise MessageError(f"{what}: channel {value} is outside 1..{MAX_CHANNELS}")
    return value


# --- IDENTIFY ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdentifyReply:
    protocol_version: int
    channels: int
    capabilities: Capability
    amplitude_max_ua: int
    amplitude_step_ua: int
    watchdog_ms: int
    manufacturer: str
    model: str
    serial_number: str
    firmware: str

    def encode(self) -> bytes:
        return (
            bytes((self.protocol_version, self.channels))
            + _u16(int(self.capabilities))
            + _u32(self.amplitude_max_ua)
            + _u32(self.amplitude_step_ua)
            + _u16(self.watchdog_ms)
            + _text(self.manufacturer)
            + _text(self.model)
            + _text(self.serial_number)
            + _text(self.firmware)
        )

    @classmethod
    def decode(cls, payload: bytes) -> IdentifyReply:
        r = _Reader(payload, "IDENTIFY reply")
        reply = cls(
            protocol_version=r.u8(),
            channels=r.u8(),
            capabilities=Capability(r.u16() & int(sum(Capability))),
            amplitude_max_ua=r.u32(),
            amplitude_step_ua=r.u32(),
            watchdog_ms=r.u16(),
            manufacturer=r.text(),
            model=r.text(),
            serial_number=r.text(),
            firmware=r.text(),
        )
        r.end()
        return reply

    def capability_names(self) -> frozenset[str]:
        return frozenset(
            name for flag, name in CAPABILITY_NAMES.items() if flag in self.capabilities
        )

    def to_identity(self) -> DeviceIdentity:
        return DeviceIdentity(
            model=self.model,
            serial_number=self.serial_number,
            firmware=self.firmware,
            protocol_version=self.protocol_version,
            manufacturer=self.manufacturer,
            capabilities=self.capability_names(),
        )


# --- CONFIGURE --------------------------------------------------------------------------


def encode_configure(config: ChannelConfig) -> bytes:
    widths = config.phase_widths_us
    if not 1 <= len(widths) <= 2:
        raise MessageError(f"a pulse has 1 or 2 phases, not {len(widths)}")
    second = widths[1] if len(widths) == 2 else 0
    return (
        bytes((_channel(config.channel, "CONFIGURE"), SHAPE_CODES[config.shape]))
        + _u32(widths[0])
        + _u32(second)
        + _u32(config.interphase_gap_us)
        + _u32(config.period_us)
    )


def decode_configure(payload: bytes) -> ChannelConfig:
    r = _Reader(payload, "CONFIGURE")
    channel = r.u8()
    shape_code = r.u8()
    first, second, gap, period = r.u32(), r.u32(), r.u32(), r.u32()
    r.end()
    try:
        shape = SHAPES_BY_CODE[shape_code]
    except KeyError:
        raise MessageError(f"CONFIGURE: unknown shape code 0x{shape_code:02X}") from None
    widths = (first,) if shape is ShapeKind.MONOPHASIC_RECTANGULAR else (first, second)
    return ChannelConfig(
        channel=channel,
        shape=shape,
        phase_widths_us=widths,
        interphase_gap_us=gap,
        period_us=period,
    )


# --- SET_AMPLITUDE ----------------------------------------------------------------------


def encode_set_amplitude(amplitudes_ua: Mapping[int, int]) -> bytes:
    if not 1 <= len(amplitudes_ua) <= MAX_CHANNELS:
        raise MessageError("SET_AMPLITUDE needs 1..16 channels")
    out = bytearray((len(amplitudes_ua),))
    for channel, value in sorted(amplitudes_ua.items()):
        out.append(_channel(channel, "SET_AMPLITUDE"))
        out += _u32(value)
    return bytes(out)


def decode_set_amplitude(payload: bytes) -> dict[int, int]:
    r = _Reader(payload, "SET_AMPLITUDE")
    count = r.u8()
    if count == 0:
        raise MessageError("SET_AMPLITUDE: no channel given")
    values: dict[int, int] = {}
    for _ in range(count):
        channel = r.u8()
        if channel in values:
            raise MessageError(f"SET_AMPLITUDE: channel {channel} given twice")
        values[channel] = r.u32()
    r.end()
    return values


# --- OUTPUT_ON --------------------------------------------------------------------------


def encode_channel_mask(channels: Iterable[int]) -> bytes:
    mask = 0
    for channel in channels:
        mask |= 1 << (_channel(channel, "OUTPUT_ON") - 1)
    if not mask:
        raise MessageError("OUTPUT_ON needs at least one channel")
    return _u16(mask)


def decode_channel_mask(payload: bytes) -> tuple[int, ...]:
    r = _Reader(payload, "OUTPUT_ON")
    mask = r.u16()
    r.end()
    if not mask:
        raise MessageError("OUTPUT_ON: empty channel mask")
    return tuple(bit + 1 for bit in range(MAX_CHANNELS) if mask & (1 << bit))


# --- STATUS -----------------------------------------------------------------------------

_STATUS_OUTPUT_ON = 0x01


def _optional(value: int | None) -> bytes:
    return _u32(UNAVAILABLE_U32 if value is None else value)


_STATUS_HEAD = struct.Struct(">HIB")  # device faults, uptime, channel count
_STATUS_CHANNEL = struct.Struct(">BHIII")  # flags, faults, commanded, measured, impedance
_FAULT_FLAGS = tuple(FaultFlag(value) for value in range(256))
"""``FaultFlag(v)`` for every byte ``v``: an indexed lookup instead of an enum call."""


def encode_status(status: DeviceStatus, uptime_ms: int) -> bytes:
    if len(status.channels) > 15:
        raise MessageError("STATUS carries at most 15 channels")
    out = bytearray(_u16(int(status.faults)) + _u32(uptime_ms & 0xFFFFFFFF))
    out.append(len(status.channels))
    for channel in status.channels:
        out.append(_STATUS_OUTPUT_ON if channel.output_on else 0)
        out += _u16(int(channel.faults))
        out += _u32(channel.commanded_ua)
        out += _optional(channel.measured_ua)
        out += _optional(channel.impedance_ohm)
    return bytes(out)


def decode_status(payload: bytes, taken_at_ns: int = 0) -> tuple[DeviceStatus, int]:
    """The status and the device's uptime in milliseconds.

    A payload of exactly the length its channel count implies is unpacked with
    :mod:`struct` (the controller reads one twenty times a second); any other goes
    through the field-by-field reader, which names what is wrong. Both read the same
    big-endian fields into the same values.
    """
    if len(payload) >= _STATUS_HEAD.size:
        device_faults, uptime_ms, count = _STATUS_HEAD.unpack_from(payload)
        if len(payload) == _STATUS_HEAD.size + count * _STATUS_CHANNEL.size:
            channels = tuple(
                ChannelStatus(
                    channel=number,
                    commanded_ua=commanded,
                    measured_ua=None if measured == UNAVAILABLE_U32 else measured,
                    impedance_ohm=None if impedance == UNAVAILABLE_U32 else impedance,
                    output_on=bool(flags & _STATUS_OUTPUT_ON),
                    faults=_FAULT_FLAGS[faults & 0xFF],
                )
                for number, (flags, faults, commanded, measured, impedance) in enumerate(
                    _STATUS_CHANNEL.iter_unpack(payload[_STATUS_HEAD.size :]), start=1
                )
            )
            status = DeviceStatus(
                channels, faults=_FAULT_FLAGS[device_faults & 0xFF], taken_at_ns=taken_at_ns
            )
            return status, uptime_ms
    return _decode_status_fields(payload, taken_at_ns)


def _decode_status_fields(payload: bytes, taken_at_ns: int = 0) -> tuple[DeviceStatus, int]:
    r = _Reader(payload, "STATUS reply")
    device_faults = FaultFlag(r.u16() & 0xFF)
    uptime_ms = r.u32()
    count = r.u8()
    channels = []
    for number in range(1, count + 1):
        flags = r.u8()
        faults = FaultFlag(r.u16() & 0xFF)
        commanded = r.u32()
        measured = r.u32()
        impedance = r.u32()
        channels.append(
            ChannelStatus(
                channel=number,
                commanded_ua=commanded,
                measured_ua=None if measured == UNAVAILABLE_U32 else measured,
                impedance_ohm=None if impedance == UNAVAILABLE_U32 else impedance,
                output_on=bool(flags & _STATUS_OUTPUT_ON),
                faults=faults,
            )
        )
    r.end()
    return DeviceStatus(tuple(channels), faults=device_faults, taken_at_ns=taken_at_ns), uptime_ms


# --- MEASURE_IMPEDANCE, CLEAR_FAULT -----------------------------------------------------


def encode_channel(channel: int) -> bytes:
    return bytes((_channel(channel, "MEASURE_IMPEDANCE"),))


def decode_channel(payload: bytes) -> int:
    r = _Reader(payload, "MEASURE_IMPEDANCE")
    channel = r.u8()
    r.end()
    return channel


def encode_impedance(channel: int, impedance_ohm: int) -> bytes:
    return bytes((channel,)) + _u32(impedance_ohm)


def decode_impedance(payload: bytes) -> tuple[int, int]:
    r = _Reader(payload, "MEASURE_IMPEDANCE reply")
    channel, ohm = r.u8(), r.u32()
    r.end()
    return channel, ohm


def encode_fault_mask(mask: int) -> bytes:
    return _u16(mask & 0xFFFF)


def decode_fault_mask(payload: bytes, what: str = "CLEAR_FAULT") -> int:
    r = _Reader(payload, what)
    mask = r.u16()
    r.end()
    return mask


# --- ACK, NACK, EVENT -------------------------------------------------------------------


def encode_ack(command: int, data: bytes = b"") -> bytes:
    return bytes((command,)) + data


def decode_ack(payload: bytes) -> tuple[int, bytes]:
    """The acknowledged command code and the reply data."""
    if not payload:
        raise MessageError("ACK: empty payload")
    return payload[0], payload[1:]


@dataclass(frozen=True, slots=True)
class Nack:
    command: int
    error: int
    channel: int | None = None  # 0 on the wire: not about one channel
    detail: int | None = None  # the limit, or latched fault flags for FAULT_LATCHED
    message: str = ""

    def encode(self) -> bytes:
        message = self.message.encode("utf-8")[:200]
        return (
            bytes((self.command, self.error, self.channel or 0))
            + _u32(NO_LIMIT if self.detail is None else self.detail)
            + message
        )

    @classmethod
    def decode(cls, payload: bytes) -> Nack:
        r = _Reader(payload, "NACK")
        command, error, channel, detail = r.u8(), r.u8(), r.u8(), r.u32()
        message = r.rest().decode("utf-8", errors="replace")
        return cls(
            command=command,
            error=error,
            channel=channel or None,
            detail=None if detail == NO_LIMIT else detail,
            message=message,
        )

    @property
    def error_name(self) -> str:
        try:
            return ErrorCode(self.error).name
        except ValueError:
            return f"0x{self.error:02X}"


@dataclass(frozen=True, slots=True)
class Event:
    """Unsolicited: faults newly latched (``RESET`` after a restart)."""

    faults: FaultFlag
    channel: int | None
    uptime_ms: int
    detail: str = ""

    def encode(self) -> bytes:
        return (
            bytes((self.channel or 0,))
            + _u16(int(self.faults))
            + _u32(self.uptime_ms & 0xFFFFFFFF)
            + self.detail.encode("utf-8")[:200]
        )

    @classmethod
    def decode(cls, payload: bytes) -> Event:
        r = _Reader(payload, "EVENT")
        channel, faults, uptime = r.u8(), r.u16(), r.u32()
        detail = r.rest().decode("utf-8", errors="replace")
        return cls(FaultFlag(faults & 0xFF), channel or None, uptime, detail)
