"""The one small base class every stimulator driver implements.

Public methods (``configure``, ``set_amplitudes``, ``stop_all`` ...) log, check the
arguments' *form*, and translate errors; a backend implements only the private
``_``-prefixed frame-level methods. Drivers carry out, they do not judge: safety policy
lives in :mod:`estim.safety` and the controller, and the device enforces its own
hardware limits (so the bench can prove that it does).

Thread safety contract for backends: :meth:`Stimulator.stop_all` may be called from any
thread at any time, including while another thread is inside a command; it must put
STOP ALL on the wire ahead of anything queued and must not wait for a pending reply.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntFlag
from fractions import Fraction
from math import ceil
from types import TracebackType

from estim.device.profile import DeviceProfile
from estim.errors import DeviceError
from estim.protocols.models import PulseTrain, ShapeKind

log = logging.getLogger(__name__)


class FaultFlag(IntFlag):
    """Fault conditions a device reports, per channel or for the whole device."""

    NONE = 0
    OPEN_CIRCUIT = 1 << 0
    OVER_CURRENT = 1 << 1
    WATCHDOG = 1 << 2
    COMPLIANCE = 1 << 3  # could not drive the commanded current into the load
    HARDWARE = 1 << 4  # internal stimulation module error
    EMERGENCY_SWITCH = 1 << 5  # the device's own stop button / interlock input
    ELECTRODE = 1 << 6  # electrode error reported without an impedance figure
    RESET = 1 << 7  # the device restarted since the host last cleared faults

    def describe(self) -> str:
        if not self:
            return "none"
        return ", ".join(
            (f.name or "").lower().replace("_", " ") for f in FaultFlag if f and f in self
        )


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    model: str
    serial_number: str
    firmware: str
    protocol_version: int
    manufacturer: str = ""
    capabilities: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """What one channel should produce, in integer device units."""

    channel: int
    shape: ShapeKind
    phase_widths_us: tuple[int, ...]
    interphase_gap_us: int
    period_us: int

    @classmethod
    def from_train(
        cls, channel: int, train: PulseTrain, period_resolution_us: int = 1
    ) -> ChannelConfig:
        """Derive a channel configuration from a protocol's pulse train.

        A frequency such as 35 Hz has no whole-microsecond period; the period is
        rounded *up* to the device's resolution, so the delivered rate (and with it
        the r.m.s. current) is never above the prescribed one.
        """
        period = Fraction(ceil(train.period_us / period_resolution_us) * period_resolution_us)
        return cls(
            channel=channel,
            shape=train.shape.kind,
            phase_widths_us=tuple(p.width_us for p in train.shape.phases),
            interphase_gap_us=train.shape.interphase_gap_us,
            period_us=int(period),
        )


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    channel: int
    commanded_ua: int
    measured_ua: int | None  # None: the device cannot measure current
    impedance_ohm: int | None  # None: the device cannot measure load impedance
    output_on: bool
    faults: FaultFlag = FaultFlag.NONE


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    channels: tuple[ChannelStatus, ...]
    faults: FaultFlag = FaultFlag.NONE  # device-level, latched until clear_fault
    taken_at_ns: int = 0

    @property
    def any_output_on(self) -> bool:
        return any(c.output_on for c in self.channels)

    @property
    def all_faults(self) -> FaultFlag:
        flags = self.faults
        for c in self.channels:
            flags |= c.faults
        return flags

    def channel(self, number: int) -> ChannelStatus:
        for c in self.channels:
            if c.channel == number:
                return c
        raise KeyError(number)


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """Something the device said without being asked (fault, reset, watchdog trip)."""

    faults: FaultFlag
    channel: int | None = None
    detail: str = ""
    at_ns: int = 0


EventListener = Callable[[DeviceEvent], None]


@dataclass
class _Listeners:
    items: list[EventListener] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Stimulator(ABC):
    """A stimulator reached through some wire protocol.

    Life cycle: ``open()`` (handshake, returns identity) -> ``configure()`` channels with
    output off -> ``set_amplitudes()`` / ``output_on()`` -> ... -> ``output_off()`` ->
    ``close()``. ``stop_all()`` is the emergency path and works in every state.
    The first frame after ``open()`` arms the device watchdog: the owner must then
    send some frame (``status()`` or ``heartbeat()``) at least every
    ``profile.link.heartbeat_period_ms``.
    """

    def __init__(self, profile: DeviceProfile, url: str) -> None:
        self.profile = profile
        self.url = url
        self.identity: DeviceIdentity | None = None
        self._listeners = _Listeners()

    # --- public API: log, check form, translate --------------------------------------

    def open(self) -> DeviceIdentity:
        log.info("opening %s (%s)", self.url, self.profile.link.wire_protocol)
        self.identity = self._open()
        log.info("connected: %s", self.identity)
        return self.identity

    def close(self) -> None:
        """Stop all output (best effort) and release the port. Safe to call twice."""
        try:
            self.stop_all()
        except DeviceError as err:
            log.warning("stop before close failed: %s", err)
        finally:
            self._close()

    def identify(self) -> DeviceIdentity:
        self.identity = self._identify()
        return self.identity

    def configure(self, configs: Sequence[ChannelConfig]) -> None:
        self._check_channels(c.channel for c in configs)
        log.debug("configure %s", configs)
        self._configure(tuple(configs))

    def set_amplitudes(self, amplitudes_ua: Mapping[int, int]) -> None:
        """Command per-channel amplitudes (uA). The device may refuse; it never clamps."""
        self._check_channels(amplitudes_ua)
        for channel, value in amplitudes_ua.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"channel {channel}: amplitude must be a whole uA >= 0")
        self._set_amplitudes(dict(amplitudes_ua))

    def output_on(self, channels: Sequence[int]) -> None:
        self._check_channels(channels)
        log.info("output on: channels %s", list(channels))
        self._output_on(tuple(channels))

    def output_off(self) -> None:
        """Orderly off: amplitudes to zero and outputs disabled, acknowledged."""
        log.info("output off")
        self._output_off()

    def stop_all(self) -> None:
        """EMERGENCY: zero every channel now. Any thread; idempotent; ahead of the queue."""
        log.warning("STOP ALL")
        self._stop_all()

    def heartbeat(self) -> None:
        self._heartbeat()

    def status(self) -> DeviceStatus:
        return self._status()

    def measure_impedance(self, channel: int) -> int | None:
        """Load impedance in ohms, or None when the device cannot measure it."""
        self._check_channels([channel])
        if not self.profile.measurement.measures_impedance:
            return None
        return self._measure_impedance(channel)

    def clear_fault(self) -> None:
        log.info("clear fault")
        self._clear_fault()

    def add_event_listener(self, listener: EventListener) -> None:
        with self._listeners.lock:
            self._listeners.items.append(listener)

    def remove_event_listener(self, listener: EventListener) -> None:
        with self._listeners.lock:
            if listener in self._listeners.items:
                self._listeners.items.remove(listener)

    def __enter__(self) -> Stimulator:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- for backends ----------------------------------------------------------------

    def _emit(self, event: DeviceEvent) -> None:
        """Deliver an unsolicited device event to every listener (never raises)."""
        with self._listeners.lock:
            listeners = list(self._listeners.items)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not kill the reader thread
                log.exception("device event listener failed")

    def _check_channels(self, channels: Iterable[int]) -> None:
        count = self.profile.output.channels
        for channel in channels:
            if not isinstance(channel, int) or not 1 <= channel <= count:
                raise ValueError(f"channel {channel!r} does not exist (1..{count})")

    @abstractmethod
    def _open(self) -> DeviceIdentity: ...

    @abstractmethod
    def _close(self) -> None: ...

    @abstractmethod
    def _identify(self) -> DeviceIdentity: ...

    @abstractmethod
    def _configure(self, configs: tuple[ChannelConfig, ...]) -> None: ...

    @abstractmethod
    def _set_amplitudes(self, amplitudes_ua: dict[int, int]) -> None: ...

    @abstractmethod
    def _output_on(self, channels: tuple[int, ...]) -> None: ...

    @abstractmethod
    def _output_off(self) -> None: ...

    @abstractmethod
    def _stop_all(self) -> None: ...

    @abstractmethod
    def _heartbeat(self) -> None: ...

    @abstractmethod
    def _status(self) -> DeviceStatus: ...

    @abstractmethod
    def _measure_impedance(self, channel: int) -> int: ...

    @abstractmethod
    def _clear_fault(self) -> None: ...
