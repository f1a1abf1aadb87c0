"""The simulated stimulator's hardware and firmware, independent of any wire protocol.

:class:`SimulatedStimulator` is what a firmware engineer would write behind the UART:
per-channel pulse configuration, commanded amplitude, output enable, a load on each
channel, the device's own hardware limits taken from the :class:`DeviceProfile` it
impersonates, a watchdog, and monitors that trip and latch faults. A wire-protocol
*personality* (:mod:`estim.device.simulator.personality`) decodes frames and calls the
methods here; the same model therefore serves estim-wire/1, ScienceMode2, or any
protocol added later.

Firmware obligations honoured here (docs/wire-protocol.md, "Device obligations"):

- Power up with every output off, every amplitude 0, and the ``RESET`` fault latched.
- Refuse, never clamp: a value beyond the hardware limits raises :class:`Refusal` and
  changes nothing (multi-channel commands are all-or-nothing).
- Watchdog: armed by the first valid frame, re-armed by every valid frame. When it
  expires with any output on, every output goes to zero and ``WATCHDOG`` latches;
  when it expires with output already off it simply disarms.
- Open circuit (load at or above the profile's ``open_circuit_ohm`` on an enabled
  channel) and over-current (delivered above commanded + tolerance) trip: *every*
  output goes to zero first, then the fault latches on the channel and an event is
  queued for the host. Latched faults keep the output relays open and refuse
  ``output_on`` until cleared.
- Status reports the output truthfully (unless a ``lie-output`` fault is injected, to
  test that the host does not rely on the flag alone).

Load model: each channel has a load impedance (default: the middle of the profile's
good range) that can drift linearly; the output stage cannot drive more than its
compliance voltage, so the delivered current is ``min(commanded, V / Z)`` and the
channel reports ``COMPLIANCE`` while that bites. Measured current is the delivered
current plus seeded noise bounded by half the profile's measurement tolerance, so a
healthy simulator always passes the bench's accuracy check and a host interlock on
measured-vs-commanded is exercised by real deviations only.

Thread safety: every public method takes the instance lock, so fault injection from a
test thread may run while the serving thread processes frames.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from math import ceil, floor

from estim.clock import NS_PER_MS, NS_PER_S, Clock
from estim.device.base import (
    ChannelConfig,
    ChannelStatus,
    DeviceStatus,
    FaultFlag,
)
from estim.device.profile import DeviceProfile
from estim.device.simulator.trace import Trace
from estim.protocols.models import ShapeKind
from estim.units import ma_to_ua

# Faults that open a channel's output relay while latched.
TRIP_FLAGS = (
    FaultFlag.OPEN_CIRCUIT
    | FaultFlag.OVER_CURRENT
    | FaultFlag.WATCHDOG
    | FaultFlag.HARDWARE
    | FaultFlag.EMERGENCY_SWITCH
    | FaultFlag.ELECTRODE
    | FaultFlag.RESET
)
_TRIP_MASK = int(TRIP_FLAGS)
ALL_FAULTS = FaultFlag(sum(int(f) for f in FaultFlag))

# An open electrode reads as finite megaohms (stray capacitance), not infinity.
OPEN_ELECTRODE_OHM = 2_000_000

_TWO_PHASE_SHAPES = {
    ShapeKind.SYMMETRIC_BIPHASIC,
    ShapeKind.ASYMMETRIC_BIPHASIC,
    ShapeKind.LONG_BIPHASIC_RECTANGULAR,
    ShapeKind.LONG_BIPHASIC_TRIANGULAR,
}
_EQUAL_PHASE_SHAPES = _TWO_PHASE_SHAPES - {ShapeKind.ASYMMETRIC_BIPHASIC}


class RefusalReason(Enum):
    """Why the firmware refused a command; each personality maps these to its codes."""

    UNKNOWN_CHANNEL = "unknown channel"
    OUT_OF_RANGE = "value beyond the hardware limit"
    NOT_A_STEP = "value is not a whole number of hardware steps"
    UNSUPPORTED_SHAPE = "pulse shape not supported"
    BAD_ARGUMENT = "inconsistent arguments"
    NOT_CONFIGURED = "channel not configured"
    FAULT_LATCHED = "a fault is latched"
    WRONG_STATE = "not allowed in the current state"


class Refusal(Exception):
    """The simulated firmware refused a command; nothing was changed."""

    def __init__(
        self,
        reason: RefusalReason,
        message: str,
        *,
        channel: int | None = None,
        limit: int | None = None,
    ) -> None:
        self.reason = reason
        self.channel = channel
        self.limit = limit
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class HardwareEvent:
    """Something the firmware reports unasked: a trip, a watchdog expiry, a restart."""

    faults: FaultFlag
    channel: int | None
    detail: str
    at_ns: int


@dataclass(frozen=True, slots=True)
class OutputState:
    """What a channel really delivers (the truth, not what the device reports)."""

    channel: int
    amplitude_ua: int
    output_on: bool


class Revision:
    """Counts changes to a simulator's state: every assignment to a field of a channel
    or its load, and to the device's latched faults, adds one.

    :meth:`SimulatedStimulator._settle` runs for every status reply and every tick; it
    skips its work when nothing it reads has changed since a pass that changed nothing
    (see there). Counting assignments (rather than trusting each method to say "I
    changed something") means a new mutator cannot forget to invalidate that cache.
    """

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class _Counted:
    """Mixin for the mutable state records: every attribute assignment bumps
    ``revision`` (once it is set: the dataclass ``__init__`` assigns it last)."""

    revision: Revision

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        revision = self.__dict__.get("revision")
        if revision is not None:
            revision.count += 1


@dataclass(eq=False)
class ChannelLoad(_Counted):
    """The electrode load on one channel: impedance with linear drift, or open."""

    base_ohm: Fraction
    drift_ohm_per_s: Fraction = Fraction(0)
    drift_since_ns: int = 0
    is_open: bool = False
    revision: Revision = field(default_factory=Revision, repr=False)

    @property
    def drifting(self) -> bool:
        """True when the impedance depends on the time (a closed load with drift)."""
        return bool(self.drift_ohm_per_s) and not self.is_open

    def impedance_ohm(self, now_ns: int) -> int:
        if self.is_open:
            return OPEN_ELECTRODE_OHM
        if not self.drift_ohm_per_s:
            return max(1, floor(self.base_ohm))
        drifted = self.base_ohm + self.drift_ohm_per_s * Fraction(
            now_ns - self.drift_since_ns, NS_PER_S
        )
        return max(1, floor(drifted))

    def rebase(self, now_ns: int) -> None:
        """Fold the drift so far into the base (before changing the drift rate)."""
        self.base_ohm = Fraction(self.impedance_ohm(now_ns)) if not self.is_open else self.base_ohm
        self.drift_since_ns = now_ns


@dataclass(eq=False)
class _Channel(_Counted):
    number: int
    load: ChannelLoad
    config: ChannelConfig | None = None
    commanded_ua: int = 0
    enabled: bool = False
    stuck_ua: int | None = None  # output stage frozen at this level (injected fault)
    faults: FaultFlag = FaultFlag.NONE  # latched
    revision: Revision = field(default_factory=Revision, repr=False)
    delivered: OutputState = field(init=False)

    def __post_init__(self) -> None:
        self.delivered = OutputState(self.number, 0, False)


class SimulatedStimulator:
    """Protocol-neutral firmware and hardware model of the device ``profile`` describes."""

    def __init__(
        self,
        profile: DeviceProfile,
        clock: Clock,
        *,
        trace: Trace | None = None,
        seed: int = 0,
        serial_number: str | None = None,
        firmware: str | None = None,
        load_ohm: int | None = None,
    ) -> None:
        self.profile = profile
        self.clock = clock
        self.trace = trace if trace is not None else Trace(clock=clock)
        self.trace.bind_clock(clock)
        self.serial_number = serial_number or f"SIM{seed:06d}"
        self.firmware = firmware or profile.identity.firmware_min
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._events: list[HardwareEvent] = []
        good = profile.impedance
        middle_ohm = Fraction(good.good_min_ohm + good.good_max_ohm) / 2
        default_ohm = Fraction(load_ohm) if load_ohm else middle_ohm
        now = clock.now_ns()
        # One counter for every channel and load: see Revision and _settle.
        self._revision = Revision()
        self._settled_revision = -1  # the revision at the last pass that changed nothing
        self._drifting = False  # some load's impedance depends on the time
        self._channels = {
            n: _Channel(
                n,
                ChannelLoad(Fraction(default_ohm), drift_since_ns=now, revision=self._revision),
                revision=self._revision,
            )
            for n in range(1, profile.output.channels + 1)
        }
        self._device_faults_value = FaultFlag.NONE
        self._tolerance_bounds: dict[int, int] = {}  # measurement noise bound by current
        self._watchdog_armed = False
        self._last_frame_ns = now
        self._boot_ns = now
        self._lie_about_output = False
        self._powered = True
        volts = Fraction(profile.output.compliance_voltage_v)
        self._volts = (volts.numerator, volts.denominator)
        percent = Fraction(profile.measurement.current_tolerance_percent)
        self._tolerance_percent = (percent.numerator, percent.denominator)
        self._tolerance_abs_ua = ma_to_ua(profile.measurement.current_tolerance_ma)
        # Profile figures the firmware reads on every command or tick, converted once
        # (the profile is immutable; the properties convert from Decimal on each read).
        self._amplitude_max_ua = profile.output.amplitude_max_ua
        self._amplitude_step_ua = profile.output.amplitude_resolution_ua
        self._watchdog_ns = profile.link.watchdog_timeout_ms * NS_PER_MS
        self.trace.record("power", what="up", model=profile.identity.model)
        self._latch(FaultFlag.RESET, None, "powered up", now)

    @property
    def _device_faults(self) -> FaultFlag:
        return self._device_faults_value

    @_device_faults.setter
    def _device_faults(self, value: FaultFlag) -> None:
        self._device_faults_value = value
        self._revision.count += 1

    # --- identity ----------------------------------------------------------------------

    @property
    def channel_numbers(self) -> tuple[int, ...]:
        return tuple(self._channels)

    def capabilities(self) -> frozenset[str]:
        caps = set()
        if self.profile.measurement.measures_current:
            caps.add("measures-current")
        if self.profile.measurement.measures_impedance:
            caps.add("measures-impedance")
        if self.profile.output.device_ramps:
            caps.add("device-ramps")
        if self.profile.output.long_pulse_capable:
            caps.add("long-pulse")
        return frozenset(caps)

    def uptime_ms(self) -> int:
        return (self.clock.now_ns() - self._boot_ns) // NS_PER_MS

    # --- commands (a personality calls these after decoding a valid frame) -------------

    def frame_received(self) -> None:
        """A valid frame arrived: arm (or re-arm) the watchdog."""
        with self._lock:
            self._watchdog_armed = True
            self._last_frame_ns = self.clock.now_ns()

    def configure(self, config: ChannelConfig, *, live: bool = False) -> None:
        """Set one channel's pulse; the channel's output must be off.

        ``live=True`` changes the pulse of a channel whose output is on, without
        switching it off (ScienceMode2's StartChannelListMode updates pulse widths
        while stimulating); the output stays as it is.
        """
        with self._lock:
            channel = self._channel(config.channel)
            self._check_config(config)
            if channel.enabled and not live:
                raise Refusal(
                    RefusalReason.WRONG_STATE,
                    f"channel {config.channel}: switch the output off before reconfiguring",
                    channel=config.channel,
                )
            channel.config = config

    def set_amplitudes(self, amplitudes_ua: Mapping[int, int]) -> None:
        """Set commanded amplitudes, all or nothing; applies at once if output is on."""
        maximum_ua, step_ua = self._amplitude_max_ua, self._amplitude_step_ua
        with self._lock:
            for number, value in amplitudes_ua.items():
                self._channel(number)
                if value < 0 or value > maximum_ua:
                    raise Refusal(
                        RefusalReason.OUT_OF_RANGE,
                        f"channel {number}: amplitude {value} uA is beyond the hardware "
                        f"maximum {maximum_ua} uA",
                        channel=number,
                        limit=maximum_ua,
                    )
                if value % step_ua:
                    raise Refusal(
                        RefusalReason.NOT_A_STEP,
                        f"channel {number}: amplitude {value} uA is not a multiple of {step_ua} uA",
                        channel=number,
                        limit=step_ua,
                    )
            for number, value in amplitudes_ua.items():
                self._channels[number].commanded_ua = value
            self._settle()

    def output_on(self, channels: Iterable[int]) -> None:
        """Enable the listed channels' outputs (each configured, no fault latched anywhere)."""
        with self._lock:
            numbers = list(channels)
            for number in numbers:
                channel = self._channel(number)
                if channel.config is None:
                    raise Refusal(
                        RefusalReason.NOT_CONFIGURED,
                        f"channel {number}: configure the pulse before switching output on",
                        channel=number,
                    )
                latched = self.latched_faults()
                if latched:
                    raise Refusal(
                        RefusalReason.FAULT_LATCHED,
                        f"channel {number}: fault latched ({latched.describe()}); clear it first",
                        channel=number,
                    )
            for number in numbers:
                self._channels[number].enabled = True
            self._settle()

    def output_off(self, channels: Iterable[int] | None = None) -> None:
        """Orderly off: amplitude to zero and output disabled, on every channel or on
        ``channels`` only (ScienceMode2 turns one channel off with pulse width 0)."""
        with self._lock:
            if channels is None:
                self._zero_all()
            else:
                for number in list(channels):
                    channel = self._channel(number)
                    channel.commanded_ua = 0
                    channel.enabled = False
            self._settle()

    def stop_all(self, reason: str = "host") -> None:
        """Emergency stop: every output to zero now. Allowed in every state; idempotent."""
        with self._lock:
            self._zero_all()
            self._settle()
            self.trace.record("stop", reason=reason)

    def clear_faults(self, mask: FaultFlag = ALL_FAULTS) -> FaultFlag:
        """Clear latched faults in ``mask``; returns what is still latched."""
        with self._lock:
            self._device_faults &= ~mask
            for channel in self._channels.values():
                channel.faults &= ~mask
            self._settle()
            return self.latched_faults()

    def measure_impedance(self, channel: int) -> int:
        """A test-current impedance measurement (ohms), within 1 % of the true load."""
        with self._lock:
            ch = self._channel(channel)
            if ch.enabled:
                raise Refusal(
                    RefusalReason.WRONG_STATE,
                    f"channel {channel}: switch the output off before an impedance test",
                    channel=channel,
                )
            true_ohm = ch.load.impedance_ohm(self.clock.now_ns())
            if true_ohm >= OPEN_ELECTRODE_OHM:
                return true_ohm
            spread = max(1, true_ohm // 100)
            return true_ohm + self._rng.randint(-spread, spread)

    def status(self) -> DeviceStatus:
        """The status the firmware reports (which lies about output if told to)."""
        measures = self.profile.measurement
        with self._lock:
            now = self.clock.now_ns()
            self._settle()
            channels = []
            for channel in self._channels.values():
                impedance = channel.load.impedance_ohm(now)
                faults = channel.faults
                if self._compliance_limited(channel, impedance):
                    faults |= FaultFlag.COMPLIANCE
                delivered = channel.delivered
                channels.append(
                    ChannelStatus(
                        channel=channel.number,
                        commanded_ua=channel.commanded_ua,
                        measured_ua=self._measured_ua(delivered.amplitude_ua)
                        if measures.measures_current
                        else None,
                        impedance_ohm=impedance if measures.measures_impedance else None,
                        output_on=delivered.output_on and not self._lie_about_output,
                        faults=faults,
                    )
                )
            return DeviceStatus(tuple(channels), faults=self._device_faults, taken_at_ns=now)

    # --- time ----------------------------------------------------------------------------

    def poll(self, now_ns: int) -> None:
        """Run timers and monitors up to ``now_ns`` (watchdog, drift, trips)."""
        with self._lock:
            if self._watchdog_armed and now_ns - self._last_frame_ns >= self._watchdog_ns:
                self._watchdog_armed = False
                if any(c.enabled or c.delivered.output_on for c in self._channels.values()):
                    self._zero_all()
                    self._settle()
                    late_ms = (now_ns - self._last_frame_ns) // NS_PER_MS
                    self._latch(
                        FaultFlag.WATCHDOG, None, f"no valid frame for {late_ms} ms", now_ns
                    )
                else:
                    self.trace.record("watchdog", what="disarmed while idle")
            self._settle()

    def next_deadline_ns(self) -> int | None:
        """When :meth:`poll` must next run for a timer to fire on time (None: no timer)."""
        with self._lock:
            if self._watchdog_armed:
                return self._last_frame_ns + self._watchdog_ns
            return None

    def take_events(self) -> list[HardwareEvent]:
        """Events queued since the last call (trips, watchdog, restart), oldest first."""
        with self._lock:
            events, self._events = self._events, []
            return events

    # --- power -----------------------------------------------------------------------

    def power_cycle(self, detail: str = "device reset") -> None:
        """Restart the firmware: outputs off, configuration lost, ``RESET`` latched."""
        with self._lock:
            now = self.clock.now_ns()
            self._zero_all()
            for channel in self._channels.values():
                channel.config = None
                channel.faults = FaultFlag.NONE
                channel.stuck_ua = None
            self._device_faults = FaultFlag.NONE
            self._watchdog_armed = False
            self._boot_ns = now
            self._events.clear()
            self._settle()
            self.trace.record("power", what="reset", detail=detail)
            self._latch(FaultFlag.RESET, None, detail, now)

    def shut_down(self) -> None:
        """Power off for good (the simulator is closing): every output to zero."""
        with self._lock:
            self._zero_all()
            for channel in self._channels.values():
                channel.stuck_ua = None
            self._settle()
            if self._powered:
                self._powered = False
                self.trace.record("power", what="off")

    # --- truth, for tests, the bench and the trace -------------------------------------

    def outputs(self) -> tuple[OutputState, ...]:
        """What every channel really delivers right now."""
        with self._lock:
            self._settle()
            return tuple(c.delivered for c in self._channels.values())

    @property
    def any_output_on(self) -> bool:
        return any(o.output_on or o.amplitude_ua for o in self.outputs())

    def latched_faults(self) -> FaultFlag:
        with self._lock:
            flags = self._device_faults
            for channel in self._channels.values():
                flags |= channel.faults
            return flags

    def channel_config(self, channel: int) -> ChannelConfig | None:
        with self._lock:
            return self._channel(channel).config

    def load_ohm(self, channel: int) -> int:
        with self._lock:
            return self._channel(channel).load.impedance_ohm(self.clock.now_ns())

    # --- fault injection (hardware and load) -------------------------------------------

    def open_electrode(self, channel: int) -> None:
        """The electrode on ``channel`` loses contact (reads as megaohms)."""
        with self._lock:
            self._channel(channel).load.is_open = True
            self._settle()

    def restore_electrode(self, channel: int) -> None:
        """Contact on ``channel`` is restored at its previous impedance."""
        with self._lock:
            self._channel(channel).load.is_open = False
            self._settle()

    def set_load(self, channel: int, ohm: int) -> None:
        """Replace the load on ``channel`` by ``ohm`` (drift continues from there)."""
        if ohm <= 0:
            raise ValueError("load impedance must be positive")
        with self._lock:
            load = self._channel(channel).load
            load.base_ohm = Fraction(ohm)
            load.drift_since_ns = self.clock.now_ns()
            self._settle()

    def drift(self, channel: int, ohm_per_s: Fraction | int) -> None:
        """Let the load on ``channel`` drift by ``ohm_per_s`` from now on."""
        with self._lock:
            load = self._channel(channel).load
            load.rebase(self.clock.now_ns())
            load.drift_ohm_per_s = Fraction(ohm_per_s)

    def stick_output(self, channel: int, level_ua: int | None = None) -> None:
        """Freeze the output stage of ``channel`` at ``level_ua`` (default: what it
        delivers now): it ignores amplitude and off commands; only the over-current
        monitor's relay can cut it."""
        with self._lock:
            ch = self._channel(channel)
            ch.stuck_ua = ch.delivered.amplitude_ua if level_ua is None else level_ua
            self._settle()

    def lie_about_output(self, lie: bool = True) -> None:
        """Report every output as off in status, whatever the truth."""
        with self._lock:
            self._lie_about_output = lie

    # --- internals ---------------------------------------------------------------------

    def _channel(self, number: int) -> _Channel:
        try:
            return self._channels[number]
        except KeyError:
            raise Refusal(
                RefusalReason.UNKNOWN_CHANNEL,
                f"channel {number} does not exist (1..{len(self._channels)})",
                channel=number,
            ) from None

    def _check_config(self, config: ChannelConfig) -> None:
        out = self.profile.output
        number = config.channel
        if config.shape not in out.supported_shapes:
            raise Refusal(
                RefusalReason.UNSUPPORTED_SHAPE,
                f"channel {number}: shape {config.shape.value} is not supported "
                f"(supported: {', '.join(s.value for s in out.supported_shapes)})",
                channel=number,
            )
        widths = config.phase_widths_us
        expected_phases = 2 if config.shape in _TWO_PHASE_SHAPES else 1
        if len(widths) != expected_phases:
            raise Refusal(
                RefusalReason.BAD_ARGUMENT,
                f"channel {number}: {config.shape.value} needs {expected_phases} phase widths",
                channel=number,
            )
        for width in widths:
            if width < out.phase_width_min_us:
                raise Refusal(
                    RefusalReason.OUT_OF_RANGE,
                    f"channel {number}: phase width {width} us is below the hardware "
                    f"minimum {out.phase_width_min_us} us",
                    channel=number,
                    limit=out.phase_width_min_us,
                )
            if width > out.phase_width_max_us:
                raise Refusal(
                    RefusalReason.OUT_OF_RANGE,
                    f"channel {number}: phase width {width} us is beyond the hardware "
                    f"maximum {out.phase_width_max_us} us",
                    channel=number,
                    limit=out.phase_width_max_us,
                )
            if width % out.phase_width_resolution_us:
                raise Refusal(
                    RefusalReason.NOT_A_STEP,
                    f"channel {number}: phase width {width} us is not a multiple of "
                    f"{out.phase_width_resolution_us} us",
                    channel=number,
                    limit=out.phase_width_resolution_us,
                )
        if config.shape in _EQUAL_PHASE_SHAPES and widths[0] != widths[1]:
            raise Refusal(
                RefusalReason.BAD_ARGUMENT,
                f"channel {number}: {config.shape.value} needs two equal phase widths",
                channel=number,
            )
        if config.shape is ShapeKind.ASYMMETRIC_BIPHASIC and widths[1] < widths[0]:
            raise Refusal(
                RefusalReason.BAD_ARGUMENT,
                f"channel {number}: the recovery phase must not be shorter than the lead",
                channel=number,
            )
        if config.interphase_gap_us < 0:
            raise Refusal(
                RefusalReason.BAD_ARGUMENT,
                f"channel {number}: interphase gap must not be negative",
                channel=number,
            )
        shortest_period_us = ceil(Fraction(1_000_000) / Fraction(out.frequency_max_hz))
        longest_period_us = floor(Fraction(1_000_000) / Fraction(out.frequency_min_hz))
        if config.period_us < shortest_period_us:
            raise Refusal(
                RefusalReason.OUT_OF_RANGE,
                f"channel {number}: period {config.period_us} us is a rate above the "
                f"hardware maximum {out.frequency_max_hz} Hz",
                channel=number,
                limit=shortest_period_us,
            )
        if config.period_us > longest_period_us:
            raise Refusal(
                RefusalReason.OUT_OF_RANGE,
                f"channel {number}: period {config.period_us} us is a rate below the "
                f"hardware minimum {out.frequency_min_hz} Hz",
                channel=number,
                limit=longest_period_us,
            )
        resolution = out.pulse_period_resolution_us
        if resolution and config.period_us % resolution:
            raise Refusal(
                RefusalReason.NOT_A_STEP,
                f"channel {number}: period {config.period_us} us is not a multiple of "
                f"{resolution} us",
                channel=number,
                limit=resolution,
            )
        pulse_us = sum(widths) + config.interphase_gap_us * (len(widths) - 1)
        if pulse_us >= config.period_us:
            raise Refusal(
                RefusalReason.BAD_ARGUMENT,
                f"channel {number}: a {pulse_us} us pulse does not fit in a "
                f"{config.period_us} us period",
                channel=number,
            )

    def _zero_all(self) -> None:
        for channel in self._channels.values():
            channel.commanded_ua = 0
            channel.enabled = False

    def _compliance_limit_ua(self, impedance_ohm: int) -> int:
        num, den = self._volts
        return (num * 1_000_000) // (den * impedance_ohm)

    def _tolerance_floor_ua(self, commanded_ua: int) -> int:
        """floor(profile tolerance at ``commanded_ua``), in integers (the monitors run
        on every tick; against whole uA, ``x > tol`` is ``x > floor(tol)``)."""
        num, den = self._tolerance_percent
        return max(self._tolerance_abs_ua, (commanded_ua * num) // (den * 100))

    def _compliance_limited(self, channel: _Channel, impedance_ohm: int) -> bool:
        return channel.enabled and channel.commanded_ua > self._compliance_limit_ua(impedance_ohm)

    def _relay_open(self, channel: _Channel) -> bool:
        # Plain ints: IntFlag arithmetic is slow, and this runs for every channel per tick.
        return bool((int(self._device_faults) | int(channel.faults)) & _TRIP_MASK)

    def _compute_delivered(self, channel: _Channel, now_ns: int) -> OutputState:
        if self._relay_open(channel):
            return OutputState(channel.number, 0, False)
        if channel.stuck_ua is not None:
            return OutputState(channel.number, channel.stuck_ua, channel.stuck_ua > 0)
        if not channel.enabled:
            return OutputState(channel.number, 0, False)
        limit = self._compliance_limit_ua(channel.load.impedance_ohm(now_ns))
        return OutputState(channel.number, min(channel.commanded_ua, limit), True)

    def _update_outputs(self, now_ns: int) -> None:
        for channel in self._channels.values():
            state = self._compute_delivered(channel, now_ns)
            if state != channel.delivered:
                channel.delivered = state
                self.trace.record(
                    "output",
                    channel=state.channel,
                    amplitude_ua=state.amplitude_ua,
                    output_on=state.output_on,
                )

    _SETTLE_CACHE = True
    """Skip a settle pass that cannot change anything (False: always run it; the
    property tests compare both)."""

    def _settle(self) -> None:
        """Bring delivered outputs up to date and let the monitors trip if they must.

        A pass reads only the channels, their loads and the device's latched faults,
        and the time only through a drifting load's impedance. If the last pass changed
        nothing (the revision did not move while it ran), no state has been assigned
        since (the revision is still the same) and no load drifts, this pass would read
        exactly the same values and change nothing again: skip it. Status replies and
        ticks call this several times per exchange; it rarely has anything to do.
        """
        revision = self._revision.count
        if revision == self._settled_revision and not self._drifting and self._SETTLE_CACHE:
            return
        self._settle_pass()
        if self._revision.count == revision:  # a fixpoint: remember it
            self._settled_revision = revision
            self._drifting = any(c.load.drifting for c in self._channels.values())

    def _settle_pass(self) -> None:
        now = self.clock.now_ns()
        self._update_outputs(now)
        tolerance = self._tolerance_floor_ua
        for channel in self._channels.values():
            if self._relay_open(channel):
                continue
            impedance = channel.load.impedance_ohm(now)
            delivered = channel.delivered.amplitude_ua
            expected = channel.commanded_ua if channel.enabled else 0
            if channel.enabled and impedance >= self.profile.impedance.open_circuit_ohm:
                self._trip(
                    FaultFlag.OPEN_CIRCUIT,
                    channel,
                    f"load {impedance} ohm is at or above the open-circuit threshold "
                    f"{self.profile.impedance.open_circuit_ohm} ohm",
                    now,
                )
            elif delivered > expected + tolerance(expected):
                self._trip(
                    FaultFlag.OVER_CURRENT,
                    channel,
                    f"delivering {delivered} uA where {expected} uA is commanded",
                    now,
                )
            elif (
                channel.enabled
                and delivered < expected - tolerance(expected)
                and not self._compliance_limited(channel, impedance)
            ):
                self._trip(
                    FaultFlag.HARDWARE,
                    channel,
                    f"delivering {delivered} uA where {expected} uA is commanded "
                    "and the load allows it",
                    now,
                )

    def _trip(self, flag: FaultFlag, channel: _Channel, detail: str, now_ns: int) -> None:
        # Zero every output first, then latch: the relay opens because of the latch.
        self._zero_all()
        channel.faults |= flag
        self._update_outputs(now_ns)
        self._events.append(HardwareEvent(flag, channel.number, detail, now_ns))
        self.trace.record("fault", channel=channel.number, flags=flag.describe(), detail=detail)

    def _latch(self, flag: FaultFlag, channel: int | None, detail: str, now_ns: int) -> None:
        self._device_faults |= flag
        self._update_outputs(now_ns)
        self._events.append(HardwareEvent(flag, channel, detail, now_ns))
        self.trace.record("fault", channel=channel, flags=flag.describe(), detail=detail)

    def _measured_ua(self, delivered_ua: int) -> int:
        if delivered_ua == 0:
            return 0
        bound = self._tolerance_bounds.get(delivered_ua)
        if bound is None:  # exact (Fractions), once per current: every status needs it
            bound = floor(self.profile.measurement.tolerance_ua(delivered_ua) / 2)
            self._tolerance_bounds[delivered_ua] = bound
        return max(0, delivered_ua + self._rng.randint(-bound, bound))
