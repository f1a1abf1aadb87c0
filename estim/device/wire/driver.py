"""The estim-wire/1 serial driver.

:class:`WireStimulator` opens any pyserial URL (a real port, a pty, ``sim://``) and
speaks estim-wire/1 over it:

- **Replies by sequence number.** Each command carries a fresh sequence number; the
  reply with that number (and the same echoed command code) completes it. Late or
  unknown replies are counted and ignored.
- **Timeouts and retries.** Every command waits ``profile.link.reply_timeout_ms``.
  Only idempotent commands (:data:`~estim.device.wire.messages.IDEMPOTENT`) are re-sent,
  byte for byte, up to ``retries`` times; the device answers a repeat from its reply
  cache without acting twice.
- **Emergency stop.** :meth:`stop_all` may be called from any thread at any time. It
  does not take the command lock: it writes STOP ALL (preceded by a frame delimiter,
  so a device mid-frame resynchronises) as soon as the write lock is free, which is
  held only for the few microseconds of one ``write``; it never waits behind another
  command's reply.
- **No hidden heartbeat.** By default nothing is sent unless the owner asks: the
  controller's control loop polls status every period, so a hung controller trips the
  device watchdog, as it should. Tools that idle while output may be on (the bench)
  opt in with ``keepalive=True``.
- **Errors at the boundary.** pyserial errors become :class:`DeviceDisconnected` /
  :class:`DeviceTimeout` (via :mod:`estim.device.transport`); a port that vanishes
  fails every waiting and future call at once with :class:`DeviceDisconnected`.
- **Time.** With a real clock a reader thread receives frames. With a
  :class:`~estim.clock.VirtualClock` there is no thread: a waiting call reads what
  the (in-process) device has sent and, while nothing has come, advances virtual time
  in 1 ms steps up to the reply timeout, so the whole exchange is deterministic.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from estim.clock import NS_PER_MS, NS_PER_S, Clock, MonotonicClock
from estim.device.base import (
    ChannelConfig,
    DeviceEvent,
    DeviceIdentity,
    DeviceStatus,
    FaultFlag,
    Stimulator,
)
from estim.device.profile import DeviceProfile
from estim.device.transport import DEFAULT_READ_TIMEOUT_S, SerialLink, open_link
from estim.device.wire.codec import (
    PROTOCOL_VERSION,
    DecoderStats,
    Frame,
    FrameDecoder,
    encode_frame,
)
from estim.device.wire.messages import (
    FAULT_MASK_ALL,
    IDEMPOTENT,
    Command,
    ErrorCode,
    Event,
    IdentifyReply,
    MessageError,
    Nack,
    Reply,
    decode_ack,
    decode_fault_mask,
    decode_impedance,
    decode_status,
    encode_channel,
    encode_channel_mask,
    encode_configure,
    encode_fault_mask,
    encode_set_amplitude,
)
from estim.errors import (
    DeviceDisconnected,
    DeviceError,
    DeviceFaulted,
    DeviceRejected,
    DeviceTimeout,
    IdentityMismatch,
    ProtocolError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

VIRTUAL_STEP_NS = NS_PER_MS
"""How far a waiting call advances a virtual clock between looks at the port."""


class WireRejected(DeviceRejected):
    """The device NACKed a command; ``nack`` holds the code, channel and limit."""

    def __init__(self, message: str, nack: Nack) -> None:
        self.nack = nack
        super().__init__(message, code=nack.error, code_name=nack.error_name)


@dataclass(slots=True)
class DriverStats:
    """Link health counters (shown by the bench, logged on close)."""

    frames_sent: int = 0
    retries: int = 0
    timeouts: int = 0
    stale_replies: int = 0
    events: int = 0
    protocol_errors: int = 0
    decoder: DecoderStats = field(default_factory=DecoderStats)


class _Done:
    """A one-shot event: set once (from any thread, possibly twice), waited on by one.

    The reply to every command is waited for on one of these, twenty times a second
    for hours, so it is one lock (held while not set) rather than a
    :class:`threading.Event` (a condition variable, a lock and a waiter list per
    command, and a second lock per wait).
    """

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._set = False
        self._lock = threading.Lock()
        self._lock.acquire()  # held: not set

    # try/except rather than contextlib.suppress: no context manager object per call.
    def set(self) -> None:
        self._set = True
        try:  # noqa: SIM105
            self._lock.release()
        except RuntimeError:  # already released: set before
            pass

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout_s: float) -> bool:
        """True once set; False if ``timeout_s`` passed first."""
        if self._set:
            return True
        if self._lock.acquire(timeout=timeout_s):
            try:  # noqa: SIM105
                self._lock.release()  # stay released: set for good
            except RuntimeError:  # a second set() released it again
                pass
        return self._set


class _Pending:
    __slots__ = ("command", "done", "reply")

    def __init__(self, command: Command) -> None:
        self.command = command
        self.done = _Done()
        self.reply: Frame | None = None


class WireStimulator(Stimulator):
    """A stimulator speaking estim-wire/1 over a pyserial URL.

    Options: ``clock`` (default real time), ``keepalive`` (send HEARTBEAT whenever
    nothing was sent for a heartbeat period; off by default), ``check_identity``
    (refuse a device whose model, firmware or channel count differ from the profile;
    on by default), ``retries`` for idempotent commands, ``reply_timeout_ms``
    (default: the profile's).
    """

    def __init__(
        self,
        profile: DeviceProfile,
        url: str,
        *,
        clock: Clock | None = None,
        keepalive: bool = False,
        check_identity: bool = True,
        retries: int = 2,
        reply_timeout_ms: int | None = None,
    ) -> None:
        super().__init__(profile, url)
        self.clock: Clock = clock or MonotonicClock()
        if keepalive and self.clock.is_virtual:
            raise ValueError("keepalive needs real time; in virtual time the owner sends frames")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.keepalive = keepalive
        self.check_identity = check_identity
        self.retries = retries
        self.reply_timeout_ns = (reply_timeout_ms or profile.link.reply_timeout_ms) * NS_PER_MS
        self.device_info: IdentifyReply | None = None
        self.stats = DriverStats()
        self._link: SerialLink | None = None
        self._decoder = FrameDecoder()
        self.stats.decoder = self._decoder.stats
        self._write_lock = threading.Lock()
        self._command_lock = threading.Lock()
        self._pump_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._seq = itertools.count(1)
        self._stopping = threading.Event()
        self._failure: DeviceError | None = None
        self._reader: threading.Thread | None = None
        self._keeper: threading.Thread | None = None
        self._keepalive_suspended = threading.Event()
        self._last_write_ns = 0
        self._handshaking = False

    @property
    def is_open(self) -> bool:
        return self._link is not None and self._failure is None

    # --- life cycle -------------------------------------------------------------------

    def _open(self) -> DeviceIdentity:
        if self._link is not None:
            raise DeviceError(f"{self.url}: already open")
        self._stopping.clear()
        self._failure = None
        self._decoder.reset()
        self._handshaking = True
        self._link = open_link(
            self.url,
            self.profile.link,
            read_timeout_s=0 if self.clock.is_virtual else DEFAULT_READ_TIMEOUT_S,
        )
        try:
            self._link.discard_input()
            if not self.clock.is_virtual:
                self._reader = threading.Thread(
                    target=self._read_loop, name=f"estim-wire reader {self.url}", daemon=True
                )
                self._reader.start()
            self._write(b"\x00")  # end any half frame the device may hold
            identity = self._identify()
            assert self.device_info is not None
            if self.device_info.protocol_version != PROTOCOL_VERSION:
                raise ProtocolError(
                    f"{self.url}: device speaks estim-wire/{self.device_info.protocol_version}, "
                    f"this driver estim-wire/{PROTOCOL_VERSION}"
                )
            if self.check_identity:
                self._check_identity(self.device_info)
            # Handshake: acknowledge the power-up RESET flag, and nothing else.
            self._transact(Command.CLEAR_FAULT, encode_fault_mask(FaultFlag.RESET))
            if self.keepalive:
                self._keeper = threading.Thread(
                    target=self._keepalive_loop,
                    name=f"estim-wire keepalive {self.url}",
                    daemon=True,
                )
                self._keeper.start()
            return identity
        except BaseException:
            self._shutdown()
            raise
        finally:
            self._handshaking = False

    def _close(self) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        self._stopping.set()
        link = self._link
        if link is not None:
            link.cancel_read()
        for thread in (self._keeper, self._reader):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5.0)
        self._keeper = self._reader = None
        if link is not None:
            link.close()
        self._link = None
        self._fail(DeviceDisconnected(f"{self.url}: the port is closed"))
        if self.stats.decoder.rejected or self.stats.retries or self.stats.timeouts:
            log.info("%s link statistics: %s", self.url, self.stats)

    # --- backend methods ------------------------------------------------------------

    def _identify(self) -> DeviceIdentity:
        data = self._transact(Command.IDENTIFY)
        try:
            self.device_info = IdentifyReply.decode(data)
        except MessageError as err:
            raise ProtocolError(f"{self.url}: malformed IDENTIFY reply: {err}") from err
        return self.device_info.to_identity()

    def _configure(self, configs: tuple[ChannelConfig, ...]) -> None:
        for config in configs:
            self._transact(Command.CONFIGURE, _encode(encode_configure, config))

    def _set_amplitudes(self, amplitudes_ua: dict[int, int]) -> None:
        self._transact(Command.SET_AMPLITUDE, _encode(encode_set_amplitude, amplitudes_ua))

    def _output_on(self, channels: tuple[int, ...]) -> None:
        self._transact(Command.OUTPUT_ON, _encode(encode_channel_mask, channels))

    def _output_off(self) -> None:
        self._transact(Command.OUTPUT_OFF)

    def _heartbeat(self) -> None:
        self._transact(Command.HEARTBEAT)

    def _status(self) -> DeviceStatus:
        data = self._transact(Command.STATUS)
        try:
            status, _uptime_ms = decode_status(data, taken_at_ns=self.clock.now_ns())
        except MessageError as err:
            self.stats.protocol_errors += 1
            raise ProtocolError(f"{self.url}: malformed STATUS reply: {err}") from err
        return status

    def _measure_impedance(self, channel: int) -> int:
        data = self._transact(Command.MEASURE_IMPEDANCE, encode_channel(channel))
        try:
            replied_channel, ohm = decode_impedance(data)
        except MessageError as err:
            self.stats.protocol_errors += 1
            raise ProtocolError(f"{self.url}: malformed impedance reply: {err}") from err
        if replied_channel != channel:
            raise ProtocolError(
                f"{self.url}: asked for channel {channel}'s impedance, "
                f"got channel {replied_channel}"
            )
        return ohm

    def _clear_fault(self) -> None:
        remaining = self.clear_faults(FaultFlag(FAULT_MASK_ALL & 0xFF))
        if remaining:
            raise DeviceFaulted(
                f"{self.url}: faults still latched after clear: {remaining.describe()}; "
                "remove the cause (electrode contact, emergency switch) and clear again",
                flags=int(remaining),
            )

    def _stop_all(self) -> None:
        # Deliberately outside the command lock: never behind another command's reply.
        self._raise_if_failed()
        seq = self._take_seq()
        frame = b"\x00" + encode_frame(Command.STOP_ALL, seq)
        self._exchange(Command.STOP_ALL, seq, frame, retry=True)

    # --- extras beyond the base class -------------------------------------------------

    def clear_faults(self, mask: FaultFlag) -> FaultFlag:
        """Clear the latched faults in ``mask``; returns what the device still latches."""
        log.info("clear faults %s", mask.describe())
        data = self._transact(Command.CLEAR_FAULT, encode_fault_mask(int(mask)))
        try:
            return FaultFlag(decode_fault_mask(data, "CLEAR_FAULT reply") & 0xFF)
        except MessageError as err:
            raise ProtocolError(f"{self.url}: malformed CLEAR_FAULT reply: {err}") from err

    def inject_fault(self, spec: str) -> None:
        """Simulator only (SIM_INJECT): inject a fault spec such as ``open:ch=1``.

        A real device refuses with ``UNKNOWN_COMMAND``; check for the
        ``sim-fault-injection`` capability first.
        """
        self._transact(Command.SIM_INJECT, spec.encode("utf-8"))

    @contextlib.contextmanager
    def keepalive_suspended(self) -> Iterator[None]:
        """Stop the opt-in keep-alive for a while (e.g. to prove the device watchdog)."""
        self._keepalive_suspended.set()
        try:
            yield
        finally:
            self._keepalive_suspended.clear()

    @property
    def last_write_ns(self) -> int:
        """When the last byte was handed to the port, on the driver's clock."""
        return self._last_write_ns

    def poll_events(self) -> None:
        """Virtual time: read what the device sent (events reach listeners). No-op when a
        reader thread does this already."""
        if self.clock.is_virtual and self._link is not None:
            self._pump()

    # --- the exchange -----------------------------------------------------------------

    def _transact(self, command: Command, payload: bytes = b"") -> bytes:
        self._raise_if_failed()
        with self._command_lock:
            seq = self._take_seq()
            frame = encode_frame(command, seq, payload)
            return self._exchange(command, seq, frame, retry=command in IDEMPOTENT)

    def _exchange(self, command: Command, seq: int, frame: bytes, *, retry: bool) -> bytes:
        pending = _Pending(command)
        with self._pending_lock:
            self._pending[seq] = pending
        try:
            attempts = 1 + (self.retries if retry else 0)
            for attempt in range(attempts):
                if attempt:
                    self.stats.retries += 1
                    log.warning("%s: no reply to %s, retry %d", self.url, command.name, attempt)
                self._write(frame)
                self.stats.frames_sent += 1
                if self._wait(pending, self.clock.now_ns() + self.reply_timeout_ns):
                    break
            else:
                self.stats.timeouts += 1
                timeout_ms = self.reply_timeout_ns // NS_PER_MS
                raise DeviceTimeout(
                    f"{self.url}: no reply to {command.name} within {timeout_ms} ms "
                    f"({attempts} attempt{'s' if attempts > 1 else ''}); "
                    "check the cable and that the device is powered"
                )
        finally:
            with self._pending_lock:
                self._pending.pop(seq, None)
        reply = pending.reply
        assert reply is not None
        if reply.code == Reply.NACK:
            raise self._rejection(command, reply.payload)
        try:
            _command, data = decode_ack(reply.payload)
        except MessageError as err:
            self.stats.protocol_errors += 1
            raise ProtocolError(f"{self.url}: malformed ACK to {command.name}: {err}") from err
        return data

    def _rejection(self, command: Command, payload: bytes) -> DeviceError:
        try:
            nack = Nack.decode(payload)
        except MessageError as err:
            self.stats.protocol_errors += 1
            return ProtocolError(f"{self.url}: malformed NACK to {command.name}: {err}")
        text = (
            f"device refused {command.name}: {nack.message or nack.error_name} ({nack.error_name})"
        )
        if nack.error == ErrorCode.FAULT_LATCHED:
            flags = FaultFlag((nack.detail or 0) & 0xFF)
            return DeviceFaulted(f"{text}; latched: {flags.describe()}", flags=int(flags))
        return WireRejected(text, nack)

    def _wait(self, pending: _Pending, deadline_ns: int) -> bool:
        """True when the reply arrived; False at the deadline; raise if the link failed."""
        while True:
            if not self.clock.is_virtual:
                remaining = deadline_ns - self.clock.now_ns()
                if remaining > 0:
                    pending.done.wait(remaining / NS_PER_S)
            else:
                self._pump()
            if pending.done.is_set():
                if pending.reply is None:
                    self._raise_if_failed()
                    raise DeviceDisconnected(f"{self.url}: the link failed")
                return True
            self._raise_if_failed()
            now = self.clock.now_ns()
            if now >= deadline_ns:
                return False
            if self.clock.is_virtual:
                self.clock.sleep_until(min(deadline_ns, now + VIRTUAL_STEP_NS))

    def _take_seq(self) -> int:
        with self._pending_lock:
            while True:
                seq = next(self._seq) & 0xFF
                if seq not in self._pending:
                    return seq

    def _write(self, data: bytes) -> None:
        link = self._link
        if link is None:
            raise DeviceDisconnected(f"{self.url}: the port is not open")
        try:
            with self._write_lock:
                link.write(data)
                self._last_write_ns = self.clock.now_ns()
        except DeviceError as err:
            self._fail(err)
            raise

    # --- receiving ----------------------------------------------------------------

    def _read_loop(self) -> None:
        link = self._link
        assert link is not None
        # "is link": a reader that outlived its close (a join that timed out) must not
        # spin on the closed link once a reopen has cleared the stop flag.
        while not self._stopping.is_set() and self._link is link:
            try:
                data = link.read_available()
            except DeviceError as err:
                if not self._stopping.is_set():
                    log.error("%s: %s", self.url, err)
                    self._fail(err)
                return
            if not data:
                continue
            try:
                self._dispatch(self._decoder.feed(data))
            except Exception as err:  # a bug here must fail calls fast, not leave them waiting
                log.exception("%s: reader failed", self.url)
                self._fail(ProtocolError(f"{self.url}: the driver's reader failed: {err!r}"))
                return

    def _pump(self) -> None:
        link = self._link
        if link is None:
            return
        with self._pump_lock:
            try:
                data = link.read_available()
            except DeviceError as err:
                self._fail(err)
                raise
            if data:
                self._dispatch(self._decoder.feed(data))

    def _dispatch(self, frames: list[Frame]) -> None:
        for frame in frames:
            if frame.version != PROTOCOL_VERSION:
                self.stats.protocol_errors += 1
                continue
            if frame.code == Reply.EVENT:
                self._on_event(frame)
            elif frame.code in (Reply.ACK, Reply.NACK):
                with self._pending_lock:
                    pending = self._pending.get(frame.seq)
                echoed = frame.payload[0] if frame.payload else None
                if pending is None or pending.done.is_set() or echoed != pending.command:
                    self.stats.stale_replies += 1
                    continue
                pending.reply = frame
                pending.done.set()
            else:
                self.stats.protocol_errors += 1

    def _on_event(self, frame: Frame) -> None:
        try:
            event = Event.decode(frame.payload)
        except MessageError:
            self.stats.protocol_errors += 1
            return
        self.stats.events += 1
        if self._handshaking and event.faults == FaultFlag.RESET:
            # The power-up announcement: the handshake clears RESET; not news to anyone.
            log.debug("%s: device announced its power-up", self.url)
            return
        log.warning(
            "%s: device event: %s on %s: %s",
            self.url,
            event.faults.describe(),
            f"channel {event.channel}" if event.channel else "device",
            event.detail,
        )
        self._emit(
            DeviceEvent(
                faults=event.faults,
                channel=event.channel,
                detail=event.detail,
                at_ns=self.clock.now_ns(),
            )
        )

    def _fail(self, err: DeviceError) -> None:
        """The link is gone: fail every waiting and every future call with ``err``."""
        if self._failure is None:
            self._failure = err
        with self._pending_lock:
            waiting = list(self._pending.values())
        for pending in waiting:
            pending.done.set()

    def _raise_if_failed(self) -> None:
        failure = self._failure
        if failure is not None:
            raise DeviceDisconnected(str(failure)) from failure
        if self._link is None:
            raise DeviceDisconnected(f"{self.url}: the port is not open")

    # --- identity and keep-alive ------------------------------------------------------

    def _check_identity(self, info: IdentifyReply) -> None:
        expected = self.profile.identity
        problems = []
        if info.model != expected.model:
            problems.append(f"model is {info.model!r}, the profile says {expected.model!r}")
        if not expected.accepts_firmware(info.firmware):
            problems.append(
                f"firmware {info.firmware} is outside the profile's range "
                f"{expected.firmware_min}..{expected.firmware_max}"
            )
        if info.channels != self.profile.output.channels:
            problems.append(
                f"{info.channels} channels, the profile says {self.profile.output.channels}"
            )
        if problems:
            raise IdentityMismatch(
                f"{self.url}: this is not the device the profile describes: "
                + "; ".join(problems)
                + ". Use the profile written for this device, or validate a new one on the bench"
            )

    def _keepalive_loop(self) -> None:
        period_ns = self.profile.link.heartbeat_period_ms * NS_PER_MS
        while True:
            due = self._last_write_ns + period_ns
            wait_ns = max(0, due - self.clock.now_ns())
            if self._stopping.wait(wait_ns / NS_PER_S):
                return
            if self._keepalive_suspended.is_set():
                self._stopping.wait(period_ns / NS_PER_S)
                continue
            if self.clock.now_ns() - self._last_write_ns < period_ns:
                continue
            try:
                self._heartbeat()
            except DeviceError as err:
                if not self._stopping.is_set():
                    log.error("%s: keep-alive failed: %s", self.url, err)
                return


def _encode(encoder: Callable[[T], bytes], value: T) -> bytes:
    """Run a payload encoder; a value it cannot encode is a caller error (ValueError)."""
    try:
        return encoder(value)
    except MessageError as err:
        raise ValueError(str(err)) from err


__all__ = ["DriverStats", "WireRejected", "WireStimulator"]
