"""estim-wire/1 framing: COBS, CRC-16/IBM-3740, frame encoding and an incremental decoder.

Pure: no I/O, no clock, no threads. A frame on the wire is ``COBS(body) 0x00`` where
``body`` is::

    version (1) | seq (1) | code (1) | length (1) | payload (length) | CRC-16 (2, big-endian)

and the CRC is CRC-16/IBM-3740 (also known as CRC-16/CCITT-FALSE: polynomial 0x1021,
initial value 0xFFFF, no reflection, no final XOR; check value 0x29B1) over every body
byte before it. COBS removes every 0x00 from the body, so 0x00 only ever marks the end
of a frame and a receiver resynchronises at the next one after any garbage.

:class:`FrameDecoder` is fed arbitrary chunks and returns only frames whose COBS, length
and CRC are all valid; anything else is counted in :class:`DecoderStats` and dropped.
It never raises on input bytes, and the chunking does not change what it returns.
See docs/wire-protocol.md for the normative description.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field

PROTOCOL_VERSION = 1
DELIMITER = 0x00
HEADER_LEN = 4  # version, seq, code, length
CRC_LEN = 2
MIN_BODY_LEN = HEADER_LEN + CRC_LEN
MAX_BODY_LEN = 253
"""Longest frame body; with COBS overhead of one byte it stays within 254 bytes."""
MAX_PAYLOAD_LEN = MAX_BODY_LEN - MIN_BODY_LEN  # 247
MAX_ENCODED_LEN = MAX_BODY_LEN + 1  # 254, plus the 0x00 delimiter on the wire


def crc16(data: bytes | bytearray | memoryview, crc: int = 0xFFFF) -> int:
    """CRC-16/IBM-3740 (CCITT-FALSE): poly 0x1021, init 0xFFFF, no reflection, no xorout.

    ``binascii.crc_hqx`` is exactly this CRC when seeded with 0xFFFF (and runs in C).
    """
    return binascii.crc_hqx(data, crc)


_RUN_CODES = tuple(bytes((length + 1,)) for length in range(254))
"""The COBS code byte for a run of 0..253 non-zero bytes followed by a zero (or the end)."""


def cobs_encode(data: bytes | bytearray) -> bytes:
    """Consistent Overhead Byte Stuffing (Cheshire & Baker 1999): no 0x00 in the result.

    Every run of non-zero bytes between zeros becomes its length + 1 followed by the
    run. Runs shorter than 254 bytes (every frame body: at most 253 bytes) are joined
    in one go; a longer run needs 0xFF blocks and takes the general path.
    """
    runs = bytes(data).split(b"\x00")
    parts: list[bytes] = []
    append = parts.append
    try:
        for run in runs:
            append(_RUN_CODES[len(run)])
            append(run)
    except IndexError:  # a run of 254 bytes or more
        return _cobs_encode_long_runs(runs)
    return b"".join(parts)


def _cobs_encode_long_runs(runs: list[bytes]) -> bytes:
    out = bytearray()
    for run in runs:
        rest = run
        while len(rest) >= 254:
            out.append(0xFF)
            out += rest[:254]
            rest = rest[254:]
        out.append(len(rest) + 1)
        out += rest
    return bytes(out)


class CobsError(ValueError):
    """The bytes are not a valid COBS encoding."""


def cobs_decode(data: bytes | bytearray) -> bytes:
    """Invert :func:`cobs_encode`; raise :class:`CobsError` on an invalid encoding.

    Fast path for the usual input (no 0x00 anywhere, no 0xFF block): the decoded bytes
    are the encoded ones without the first code byte and with every later code byte
    replaced by the zero it stands for, so only the code bytes are visited. Anything
    else (an invalid encoding, a 0xFF block) takes the general block-by-block path,
    which gives the same bytes or the same error.
    """
    length = len(data)
    if not length or DELIMITER in data:
        return _cobs_decode_blocks(data)
    out = bytearray(data)
    code = index = out[0]
    while code != 0xFF and index < length:
        code = out[index]  # the code byte of the next block ...
        out[index] = 0  # ... stands for the zero that ended the one before
        index += code
    if code != 0xFF and index == length:
        del out[0]
        return bytes(out)
    return _cobs_decode_blocks(data)  # a 0xFF block, or a block runs past the end


def _cobs_decode_blocks(data: bytes | bytearray) -> bytes:
    out = bytearray()
    index = 0
    length = len(data)
    while index < length:
        code = data[index]
        if code == 0:
            raise CobsError("zero byte inside a COBS block")
        end = index + code
        if end > length:
            raise CobsError("COBS block runs past the end of the frame")
        block = data[index + 1 : end]
        if DELIMITER in block:
            raise CobsError("zero byte inside a COBS block")
        out += block
        index = end
        if code != 0xFF and index < length:
            out.append(0)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded (or to-be-encoded) frame. ``raw`` is the body as received."""

    code: int
    seq: int
    payload: bytes = b""
    version: int = PROTOCOL_VERSION
    raw: bytes = field(default=b"", compare=False, repr=False)

    def body(self) -> bytes:
        """Header, payload and CRC, before COBS."""
        return _body(self.version, self.seq, self.code, self.payload)

    def encode(self) -> bytes:
        """The bytes to put on the wire: ``COBS(body) 0x00``."""
        return cobs_encode(_body(self.version, self.seq, self.code, self.payload)) + b"\x00"


def encode_frame(code: int, seq: int, payload: bytes = b"") -> bytes:
    """``Frame(code, seq, payload).encode()`` without making the Frame (every command
    and every reply is encoded with this)."""
    return cobs_encode(_body(PROTOCOL_VERSION, seq, code, payload)) + b"\x00"


def _body(version: int, seq: int, code: int, payload: bytes) -> bytes:
    if not (
        0 <= version <= 0xFF
        and 0 <= seq <= 0xFF
        and 0 <= code <= 0xFF
        and len(payload) <= MAX_PAYLOAD_LEN
    ):
        for name, value in (("version", version), ("seq", seq), ("code", code)):
            if not 0 <= value <= 0xFF:
                raise ValueError(f"{name} {value} does not fit in a byte")
        raise ValueError(f"payload of {len(payload)} bytes exceeds the maximum {MAX_PAYLOAD_LEN}")
    head = bytes((version, seq, code, len(payload))) + payload
    return head + crc16(head).to_bytes(2, "big")


def parse_body(body: bytes) -> Frame:
    """Check a decoded body (length, length field, CRC) and split it into a :class:`Frame`."""
    if len(body) < MIN_BODY_LEN:
        raise ValueError(f"frame of {len(body)} bytes is shorter than {MIN_BODY_LEN}")
    if len(body) > MAX_BODY_LEN:
        raise ValueError(f"frame of {len(body)} bytes is longer than {MAX_BODY_LEN}")
    expected = crc16(body[:-CRC_LEN])
    received = int.from_bytes(body[-CRC_LEN:], "big")
    if expected != received:
        raise ValueError(f"CRC {received:04X} does not match {expected:04X}")
    length = body[3]
    if length != len(body) - MIN_BODY_LEN:
        raise ValueError(f"length field {length} does not match {len(body) - MIN_BODY_LEN}")
    return Frame(
        code=body[2], seq=body[1], payload=bytes(body[4:-CRC_LEN]), version=body[0], raw=body
    )


@dataclass(slots=True)
class DecoderStats:
    """What the decoder threw away, by reason (diagnostics for a noisy line)."""

    frames: int = 0
    crc_errors: int = 0
    cobs_errors: int = 0
    length_errors: int = 0
    overlong: int = 0

    @property
    def rejected(self) -> int:
        return self.crc_errors + self.cobs_errors + self.length_errors + self.overlong


class FrameDecoder:
    """Incremental decoder: feed any chunks, get back the valid frames they complete."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._overlong = False
        self.stats = DecoderStats()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        frames: list[Frame] = []
        *complete, rest = bytes(data).split(b"\x00")
        for encoded in complete:  # each ended by a delimiter in this chunk
            if self._buffer or self._overlong:  # it began in an earlier chunk
                self._append(encoded)
                frame = self._finish()
            else:  # the usual case: a whole frame in one chunk, decoded without copying
                frame = self._decode(encoded)
            if frame is not None:
                frames.append(frame)
        self._append(rest)
        return frames

    def reset(self) -> None:
        """Forget a partly received frame (after a reset or reopening the port)."""
        self._buffer.clear()
        self._overlong = False

    def _append(self, chunk: bytes) -> None:
        if self._overlong or not chunk:
            return
        if len(self._buffer) + len(chunk) > MAX_ENCODED_LEN:
            # No valid frame is this long: wait for the next delimiter and resync there.
            self._overlong = True
            self._buffer.clear()
            return
        self._buffer += chunk

    def _finish(self) -> Frame | None:
        if self._overlong:
            self._overlong = False
            self.stats.overlong += 1
            return None
        encoded = bytes(self._buffer)
        self._buffer.clear()
        return self._decode(encoded)

    def _decode(self, encoded: bytes) -> Frame | None:
        """One delimited frame (``_append`` + ``_finish`` when it came in one piece)."""
        if not encoded:
            return None  # back-to-back delimiters: idle line, not an error
        if len(encoded) > MAX_ENCODED_LEN:
            self.stats.overlong += 1
            return None
        try:
            body = cobs_decode(encoded)
        except CobsError:
            self.stats.cobs_errors += 1
            return None
        if len(body) < MIN_BODY_LEN or len(body) > MAX_BODY_LEN:
            self.stats.length_errors += 1
            return None
        # This CRC (no reflection, no final XOR) run over the body *with* its big-endian
        # CRC leaves zero exactly when that CRC is right: one C call, no slicing.
        if crc16(body):
            self.stats.crc_errors += 1
            return None
        if body[3] != len(body) - MIN_BODY_LEN:
            self.stats.length_errors += 1
            return None
        self.stats.frames += 1
        return Frame(code=body[2], seq=body[1], payload=body[4:-CRC_LEN], version=body[0], raw=body)
