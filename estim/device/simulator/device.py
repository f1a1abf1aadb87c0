"""A whole simulated stimulator: hardware model + personality + link + scheduled faults.

:class:`SimulatedDevice` is transport-agnostic. A transport moves bytes and time:

- the pty server (:mod:`estim.device.simulator.pty_server`) for real time, so any
  serial client can connect to ``/dev/pts/N``;
- the in-process ``sim://`` pyserial port (:mod:`estim.device.simulator.protocol_sim`)
  for the real driver without a pty, in real or virtual time.

Both call :meth:`SimulatedDevice.receive` with what the host wrote,
:meth:`SimulatedDevice.tick` when time passes, and :meth:`SimulatedDevice.transmit` to
collect what the device sends; :meth:`SimulatedDevice.next_deadline_ns` says when the
next timer is due so a real-time transport can sleep until then. With a
:class:`~estim.clock.VirtualClock` the device also subscribes to the clock, so its
watchdog and scheduled faults fire at the right virtual instant whoever advances time.

Every device ever created is tracked until it is closed (:func:`open_devices`), so
the test suite can assert that each one ended closed with every output off.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from estim.clock import Clock, MonotonicClock, VirtualClock
from estim.device.base import FaultFlag
from estim.device.profile import DeviceProfile
from estim.device.simulator.faults import Direction, FaultKind, FaultSpec, parse_fault
from estim.device.simulator.hardware import OutputState, SimulatedStimulator
from estim.device.simulator.personality import Personality, personality_class
from estim.device.simulator.trace import Trace

_names = itertools.count(1)
_registry_lock = threading.Lock()
_OPEN: dict[str, SimulatedDevice] = {}
_CLOSE_REPORTS: deque[CloseReport] = deque(maxlen=10_000)


@dataclass(frozen=True, slots=True)
class CloseReport:
    """How a device was left: its real outputs just before it powered off."""

    name: str
    outputs: tuple[OutputState, ...]
    latched: FaultFlag

    @property
    def output_was_on(self) -> bool:
        return any(o.output_on or o.amplitude_ua for o in self.outputs)


def take_close_reports() -> list[CloseReport]:
    """Reports of devices closed since the last call (oldest first), then forget them."""
    with _registry_lock:
        reports = list(_CLOSE_REPORTS)
        _CLOSE_REPORTS.clear()
    return reports


def open_devices() -> list[SimulatedDevice]:
    """Every simulated device created and not yet closed."""
    with _registry_lock:
        return list(_OPEN.values())


def find_device(name: str) -> SimulatedDevice | None:
    """The open device called ``name`` (the part after ``sim://`` in its URL)."""
    with _registry_lock:
        return _OPEN.get(name)


class SimulatedDevice:
    """One simulated stimulator impersonating ``profile``.

    ``faults`` are fault specs (text or parsed) applied at their ``at=`` time, counted
    from construction. ``trace`` is a :class:`Trace`, a path for a JSON-lines file, or
    None for an in-memory trace. ``seed`` makes noise and random link faults
    reproducible.
    """

    def __init__(
        self,
        profile: DeviceProfile,
        *,
        clock: Clock | None = None,
        faults: Iterable[FaultSpec | str] = (),
        trace: Trace | Path | str | None = None,
        seed: int = 0,
        serial_number: str | None = None,
        firmware: str | None = None,
        load_ohm: int | None = None,
        personality: type[Personality] | None = None,
        name: str | None = None,
    ) -> None:
        self.profile = profile
        self.clock: Clock = clock or MonotonicClock()
        self._owns_trace = not isinstance(trace, Trace)
        self.trace = trace if isinstance(trace, Trace) else Trace(trace, clock=self.clock)
        self.hardware = SimulatedStimulator(
            profile,
            self.clock,
            trace=self.trace,
            seed=seed,
            serial_number=serial_number,
            firmware=firmware,
            load_ohm=load_ohm,
        )
        cls = personality or personality_class(profile.link.wire_protocol)
        self.personality: Personality = cls(self.hardware)
        self.personality.inject_fault = self.inject
        self._lock = threading.RLock()
        self._rng = random.Random(seed + 1)
        self._started_ns = self.clock.now_ns()
        self._pending: list[FaultSpec] = []
        self._drop: dict[Direction, float] = {}
        self._corrupt: dict[Direction, float] = {}
        self._delay_ns: dict[Direction, int] = {}
        self._delayed_in: deque[tuple[int, bytes]] = deque()
        self._delayed_out: deque[tuple[int, bytes]] = deque()
        self._ready_out = bytearray()
        self._disconnected = False
        self._closed = False
        self._disconnect_listeners: list[Callable[[], None]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self.name = name or f"dev{next(_names)}"
        with _registry_lock:
            if self.name in _OPEN:
                raise ValueError(f"a simulated device called {self.name!r} is already open")
            _OPEN[self.name] = self
        for fault in faults:
            self.inject(fault)
        if isinstance(self.clock, VirtualClock):
            self._unsubscribe = self.clock.subscribe(self.tick)

    # --- identity ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """A pyserial URL that opens this device in-process (``sim://NAME``)."""
        return f"sim://{self.name}"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def disconnected(self) -> bool:
        return self._disconnected

    @property
    def elapsed_ns(self) -> int:
        """Time since the device started, on its own clock."""
        return self.clock.now_ns() - self._started_ns

    # --- transport side --------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """The host wrote ``data`` (lost if the link is down)."""
        with self._lock:
            now = self.clock.now_ns()
            self._apply_due_faults(now)
            if self._disconnected or self._closed or not data:
                return
            data = self._mangle(data, Direction.IN)
            delay = self._delay_ns.get(Direction.IN, 0)
            if delay:
                self._delayed_in.append((now + delay, data))
            elif data:
                self.personality.feed(data)
            self._run(now)

    def tick(self, now_ns: int | None = None) -> None:
        """Let time reach ``now_ns`` (default: the clock's now): timers, faults, replies."""
        with self._lock:
            if self._closed:
                return
            now = self.clock.now_ns() if now_ns is None else now_ns
            self._apply_due_faults(now)
            while self._delayed_in and self._delayed_in[0][0] <= now:
                self.personality.feed(self._delayed_in.popleft()[1])
            self._run(now)

    def transmit(self) -> bytes:
        """Bytes the device sends to the host now (after link faults and delays)."""
        with self._lock:
            now = self.clock.now_ns()
            self._collect_output(now)
            while self._delayed_out and self._delayed_out[0][0] <= now:
                self._ready_out += self._delayed_out.popleft()[1]
            data = bytes(self._ready_out)
            self._ready_out.clear()
            if self._disconnected:
                return b""
            return data

    def next_deadline_ns(self) -> int | None:
        """The earliest instant at which :meth:`tick` has something to do."""
        with self._lock:
            candidates = [
                self.hardware.next_deadline_ns(),
                self.personality.next_deadline_ns(),
            ]
            candidates += [self._started_ns + f.at_ns for f in self._pending if f.at_ns]
            if self._delayed_in:
                candidates.append(self._delayed_in[0][0])
            if self._delayed_out:
                candidates.append(self._delayed_out[0][0])
            due = [c for c in candidates if c is not None]
            return min(due) if due else None

    def on_disconnect(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (under the device lock) when a disconnect fault fires."""
        with self._lock:
            self._disconnect_listeners.append(listener)

    # --- control -----------------------------------------------------------------------

    def inject(self, fault: FaultSpec | str) -> None:
        """Apply a fault now, or at its ``at=`` time (counted from device start)."""
        spec = (
            parse_fault(fault, channels=self.profile.output.channels)
            if isinstance(fault, str)
            else fault
        )
        if spec.channel is not None and spec.channel > self.profile.output.channels:
            parse_fault(spec.text, channels=self.profile.output.channels)  # raises InputError
        with self._lock:
            if spec.at_ns is not None and self._started_ns + spec.at_ns > self.clock.now_ns():
                self._pending.append(spec)
                self._pending.sort(key=lambda f: f.at_ns or 0)
                self.trace.record("inject", spec=spec.text, scheduled_at_ns=spec.at_ns)
            else:
                self._apply(spec, self.clock.now_ns())

    def reset(self, detail: str = "device reset") -> None:
        """Restart the device (outputs off, configuration lost, RESET latched)."""
        with self._lock:
            self._delayed_in.clear()
            self._delayed_out.clear()
            self._ready_out.clear()
            self.hardware.power_cycle(detail)
            self.personality.on_power_cycle()
            self._run(self.clock.now_ns())

    def disconnect(self) -> None:
        """The port vanishes; the device itself keeps running (its watchdog will trip)."""
        with self._lock:
            if self._disconnected:
                return
            self._disconnected = True
            self.trace.record("link", what="disconnect")
            listeners = list(self._disconnect_listeners)
        for listener in listeners:
            listener()

    def close(self) -> None:
        """Power the device off (every output to zero) and release it. Idempotent."""
        with self._lock:
            if self._closed:
                return
            report = CloseReport(self.name, self.hardware.outputs(), self.hardware.latched_faults())
            self.hardware.shut_down()
            self._closed = True
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
        with _registry_lock:
            if _OPEN.get(self.name) is self:
                del _OPEN[self.name]
            _CLOSE_REPORTS.append(report)
        if self._owns_trace:
            self.trace.close()

    def __enter__(self) -> SimulatedDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ---------------------------------------------------------------------

    def _run(self, now: int) -> None:
        self.hardware.poll(now)
        self.personality.poll(now)
        self._collect_output(now)

    def _collect_output(self, now: int) -> None:
        data = self.personality.take_output()
        if not data:
            return
        data = self._mangle(data, Direction.OUT)
        delay = self._delay_ns.get(Direction.OUT, 0)
        if delay:
            self._delayed_out.append((now + delay, data))
        else:
            self._ready_out += data

    def _mangle(self, data: bytes, direction: Direction) -> bytes:
        drop = self._drop.get(direction, 0.0)
        corrupt = self._corrupt.get(direction, 0.0)
        if not drop and not corrupt:
            return data
        out = bytearray()
        dropped = flipped = 0
        for byte in data:
            if drop and self._rng.random() < drop:
                dropped += 1
                continue
            if corrupt and self._rng.random() < corrupt:
                out.append(byte ^ (1 << self._rng.randrange(8)))
                flipped += 1
            else:
                out.append(byte)
        if dropped or flipped:
            self.trace.record(
                "link", what="mangle", direction=direction.value, dropped=dropped, flipped=flipped
            )
        return bytes(out)

    def _apply_due_faults(self, now: int) -> None:
        while self._pending and self._started_ns + (self._pending[0].at_ns or 0) <= now:
            self._apply(self._pending.pop(0), now)

    def _apply(self, spec: FaultSpec, now: int) -> None:
        hw = self.hardware
        self.trace.record("inject", spec=spec.text)
        match spec.kind:
            case FaultKind.OPEN:
                assert spec.channel is not None
                hw.open_electrode(spec.channel)
                if spec.duration_ns:
                    elapsed = now - self._started_ns
                    self._pending.append(
                        FaultSpec(
                            FaultKind.CLOSE,
                            f"close:ch={spec.channel}",
                            at_ns=elapsed + spec.duration_ns,
                            channel=spec.channel,
                        )
                    )
                    self._pending.sort(key=lambda f: f.at_ns or 0)
            case FaultKind.CLOSE:
                assert spec.channel is not None
                hw.restore_electrode(spec.channel)
            case FaultKind.DRIFT:
                assert spec.channel is not None
                assert spec.ohm_per_s is not None
                hw.drift(spec.channel, spec.ohm_per_s)
            case FaultKind.LOAD:
                assert spec.channel is not None
                assert spec.ohm is not None
                hw.set_load(spec.channel, max(1, round(spec.ohm)))
            case FaultKind.STUCK:
                assert spec.channel is not None
                hw.stick_output(spec.channel, spec.level_ua)
            case FaultKind.LIE_OUTPUT:
                hw.lie_about_output(True)
            case FaultKind.RESET:
                self.reset("injected reset")
            case FaultKind.DISCONNECT:
                self.disconnect()
            case FaultKind.DROP | FaultKind.CORRUPT:
                table = self._drop if spec.kind is FaultKind.DROP else self._corrupt
                assert spec.probability is not None
                for direction in (Direction.IN, Direction.OUT):
                    if spec.direction.covers(direction):
                        table[direction] = float(spec.probability)
            case FaultKind.DELAY:
                assert spec.delay_ns is not None
                for direction in (Direction.IN, Direction.OUT):
                    if spec.direction.covers(direction):
                        self._delay_ns[direction] = spec.delay_ns
