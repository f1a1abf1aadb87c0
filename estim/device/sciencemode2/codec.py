"""ScienceMode2 framing: escaping, CRC-8, frame encoding and a tolerant incremental decoder.

Pure: no I/O, no clock. A frame on the wire is::

    0xF0 | 0x81 | CRC ^ 0x55 | 0x81 | LEN ^ 0x55 | payload (escaped) | 0x0F

where ``payload`` is ``[packet counter, command, data...]`` and every payload byte in
:data:`SPECIAL_BYTES` is sent as :data:`ESCAPE` followed by the byte XOR
:data:`ESCAPE_KEY`. ``CRC`` (CRC-8, polynomial 0x07, initial value 0, no reflection, no
final XOR) and ``LEN`` are computed over the payload *as sent, after escaping*, and are
always sent escaped, whatever their value.

The decoder is deliberately tolerant of what other clients put on the wire: it unescapes
any byte that follows :data:`ESCAPE` (one client escapes only 0xF0, 0x0F and 0x81), and it
takes the counter and command bytes as they arrive (pyScienceMode XORs a special byte in
those positions with 0x55 *without* an escape byte; :func:`estim.device.sciencemode2.
messages.command_from_wire` maps such a command back). Integrity is judged by the CRC
and the length alone, so a quirky frame that is intact is accepted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

START = 0xF0
STOP = 0x0F
ESCAPE = 0x81
ESCAPE_KEY = 0x55
SPECIAL_BYTES = frozenset({0xF0, 0x0F, 0x81, 0x55, 0x0A})
"""Payload bytes that are always escaped by our encoder."""

HEADER_LEN = 5  # start, escape, CRC, escape, LEN
MAX_CHANNELS = 8
MAX_PAYLOAD_LEN = 2 + 4 * MAX_CHANNELS
"""Unescaped payload of the longest frame: StartChannelListMode for all 8 channels."""
MAX_ESCAPED_PAYLOAD_LEN = 2 * MAX_PAYLOAD_LEN
"""A longer escaped payload cannot be a ScienceMode2 frame: the decoder resyncs."""


def crc8(data: bytes | bytearray | memoryview) -> int:
    """CRC-8 with polynomial 0x07, initial value 0, no reflection and no final XOR."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc_table() -> tuple[int, ...]:
    return tuple(crc8(bytes([i])) for i in range(256))


_CRC_TABLE = _crc_table()


def crc8_fast(data: bytes | bytearray | memoryview) -> int:
    """Same as :func:`crc8`, table-driven (the decoder's hot path)."""
    crc = 0
    for byte in data:
        crc = _CRC_TABLE[crc ^ byte]
    return crc


def escape(payload: Iterable[int]) -> bytes:
    """Escape every special byte of ``payload`` (the counter and command included)."""
    out = bytearray()
    for byte in payload:
        if not 0 <= byte <= 0xFF:
            raise ValueError(f"byte value {byte} out of range 0..255")
        if byte in SPECIAL_BYTES:
            out += bytes((ESCAPE, byte ^ ESCAPE_KEY))
        else:
            out.append(byte)
    return bytes(out)


def unescape(escaped: bytes | bytearray | memoryview) -> bytes:
    """Undo :func:`escape`; any byte after an escape byte is unescaped (tolerant)."""
    out = bytearray()
    pending_escape = False
    for byte in escaped:
        if pending_escape:
            out.append(byte ^ ESCAPE_KEY)
            pending_escape = False
        elif byte == ESCAPE:
            pending_escape = True
        else:
            out.append(byte)
    if pending_escape:
        raise ValueError("escaped payload ends with a dangling escape byte")
    return bytes(out)


def encode_frame(counter: int, command: int, data: bytes | bytearray = b"") -> bytes:
    """One complete frame, escaped properly in every position."""
    if not 0 <= counter <= 0xFF or not 0 <= command <= 0xFF:
        raise ValueError("counter and command must be bytes (0..255)")
    if len(data) > MAX_PAYLOAD_LEN - 2:
        raise ValueError(f"{len(data)} data bytes exceed the longest frame ({MAX_PAYLOAD_LEN - 2})")
    payload = escape(bytes((counter, command)) + bytes(data))
    return wrap_escaped_payload(payload)


def wrap_escaped_payload(payload: bytes) -> bytes:
    """Add start byte, escaped CRC and length, and stop byte around an escaped payload.

    Exposed so that tests (and the simulator's client-quirk tests) can frame a payload
    that was escaped by other rules than ours.
    """
    if len(payload) > 0xFF:
        raise ValueError("escaped payload longer than 255 bytes cannot be framed")
    return bytes(
        (
            START,
            ESCAPE,
            crc8_fast(payload) ^ ESCAPE_KEY,
            ESCAPE,
            len(payload) ^ ESCAPE_KEY,
            *payload,
            STOP,
        )
    )


@dataclass(frozen=True, slots=True)
class Frame:
    """A valid frame: counter and command as received, data unescaped."""

    counter: int
    command: int
    data: bytes = b""
    raw: bytes = field(default=b"", compare=False, repr=False)


@dataclass
class DecoderStats:
    """What the decoder threw away, for traces and link-quality figures."""

    frames: int = 0
    bad_crc: int = 0
    bad_length: int = 0
    malformed: int = 0
    discarded_bytes: int = 0


class FrameDecoder:
    """Incremental decoder: feed it arbitrary chunks, get every valid frame, in order.

    Guarantees (proved by property tests): arbitrary bytes never raise; a frame is only
    returned if its CRC and length check; the frames returned do not depend on how the
    stream was split into chunks. On any inconsistency it drops the start byte it had
    committed to and rescans from the byte after it, so a real frame hidden behind
    garbage (even garbage that began with 0xF0) is still found.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.stats = DecoderStats()

    def reset(self) -> None:
        self._buffer.clear()

    @property
    def pending(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buffer)

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Frame]:
        self._buffer += chunk
        frames: list[Frame] = []
        while True:
            start = self._buffer.find(START)
            if start < 0:
                self._discard(len(self._buffer))
                return frames
            if start:
                self._discard(start)
            outcome = self._parse_at_start()
            if outcome is None:  # incomplete: wait for more bytes
                return frames
            if isinstance(outcome, Frame):
                frames.append(outcome)
                self.stats.frames += 1
                del self._buffer[: len(outcome.raw)]
            else:  # invalid: the committed start byte was not a frame start
                self._discard(1)

    def _discard(self, count: int) -> None:
        self.stats.discarded_bytes += count
        del self._buffer[:count]

    def _parse_at_start(self) -> Frame | bool | None:
        """Parse the frame whose start byte is ``buffer[0]``.

        Returns the frame, ``None`` if more bytes are needed, or ``False`` if the bytes
        cannot be a frame starting here.
        """
        buf = self._buffer
        if len(buf) < HEADER_LEN:
            if (len(buf) > 1 and buf[1] != ESCAPE) or (len(buf) > 3 and buf[3] != ESCAPE):
                self.stats.malformed += 1
                return False
            return None
        if buf[1] != ESCAPE or buf[3] != ESCAPE:
            self.stats.malformed += 1
            return False
        index = HEADER_LEN
        while True:
            if index >= len(buf):
                return None
            if index - HEADER_LEN > MAX_ESCAPED_PAYLOAD_LEN:
                self.stats.malformed += 1
                return False
            byte = buf[index]
            if byte == STOP:
                break
            if byte == START:  # a new frame begins inside this one: resync
                self.stats.malformed += 1
                return False
            if byte == ESCAPE:
                if index + 1 >= len(buf):
                    return None
                if buf[index + 1] in (START, STOP):
                    self.stats.malformed += 1
                    return False
                index += 2
            else:
                index += 1
        payload = bytes(buf[HEADER_LEN:index])
        if len(payload) != buf[4] ^ ESCAPE_KEY:
            self.stats.bad_length += 1
            return False
        if crc8_fast(payload) != buf[2] ^ ESCAPE_KEY:
            self.stats.bad_crc += 1
            return False
        plain = unescape(payload)  # cannot dangle: the loop consumed escapes in pairs
        if len(plain) < 2:
            self.stats.malformed += 1
            return False
        return Frame(plain[0], plain[1], plain[2:], raw=bytes(buf[: index + 1]))
