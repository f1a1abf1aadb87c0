"""Runtime and preflight interlocks: pure predicates with an ID, a hazard and a reason.

Each interlock is constructed with its thresholds (checked at construction: a bad
threshold is refused, never clamped), and answers one question about one reading:
:meth:`Interlock.should_trip` returns a :class:`Trip` saying which interlock, which
hazards, and why, in a sentence a clinician can read; or None. Interlocks do no I/O and
keep no state, so the same reading always gives the same answer, and the tests can
show exactly what trips each one.

Every comparison is exact: currents in integer microamps, impedances in integer ohms,
times in integer nanoseconds or microseconds, tolerances as :class:`~fractions.Fraction`.

A trip is latched by the controller (FAULT until a person acknowledges it), so no
interlock needs a resume condition or hysteresis: nothing here resumes by itself.

Readings are plain data built by the controller from what the device reported; this
module knows no driver (fault flags arrive as lower-case names, as in
``estim.device.base.FaultFlag``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from typing import ClassVar, Generic, TypeVar

from estim.device.profile import DeviceProfile
from estim.errors import InputError, InterlockTripped, Problem
from estim.safety.hazards import HAZARD_IDS
from estim.units import ma_to_ua

NS_PER_MS = 1_000_000

OPEN_CIRCUIT_FLAG = "open_circuit"
"""The device's own open-circuit fault, by its ``FaultFlag`` name."""

COMPLIANCE_FLAG = "compliance"
"""The device cannot drive the commanded current into the load (not latched)."""


# --- what a trip says ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trip:
    """An interlock said stop: which one, the hazards it controls, and why."""

    interlock_id: str
    hazards: tuple[str, ...]
    reason: str

    def as_error(self) -> InterlockTripped:
        return InterlockTripped(self.interlock_id, self.reason)

    def __str__(self) -> str:
        return f"{self.interlock_id}: {self.reason}"


class Stage(Enum):
    """When an interlock is evaluated."""

    PREFLIGHT = "preflight"  # before output may be switched on
    COMMAND = "command"  # on every amplitude command, before it is sent
    RUNTIME = "runtime"  # on every status reading while connected


# --- readings ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelReading:
    """One channel as the device reported it, beside what the controller commanded."""

    channel: int
    commanded_ua: int  # the controller's own record of what it last commanded
    device_set_ua: int | None = None  # what the device says it is set to (None: not told)
    measured_ua: int | None = None  # None: the device does not measure current
    impedance_ohm: int | None = None  # None: not measured in this reading
    output_on: bool = False
    faults: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class StatusReading:
    """One status poll (or a failed attempt at one), as the runtime interlocks see it."""

    at_ns: int  # controller clock when the reading was taken
    last_reply_ns: int  # controller clock of the last valid reply from the device
    output_expected: bool  # the controller's state and commands allow output now
    channels: tuple[ChannelReading, ...] = ()
    device_faults: frozenset[str] = frozenset()
    rejected: str | None = None  # a command the device refused (NACK) since last time
    link_error: str | None = None  # the link itself failed (port gone, device unplugged)
    # Controller wall-clock time so far in this session (see estim.session.stimulation_time):
    stimulation_elapsed_us: int = 0  # running and stopping
    titration_elapsed_us: int = 0  # titrating


@dataclass(frozen=True, slots=True)
class AmplitudeCommand:
    """An amplitude the controller is about to send, and the one before it."""

    channel: int
    previous_ua: int
    requested_ua: int
    titration: bool  # a person's step (the step limit applies), not an envelope update


@dataclass(frozen=True, slots=True)
class DoseReading:
    """Sessions already done (from the caller, later the records store)."""

    sessions_today: int
    sessions_this_week: int


@dataclass(frozen=True, slots=True)
class FindingSummary:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class FindingsReading:
    """The static checks' findings for this prescription x protocol x profile."""

    errors: tuple[FindingSummary, ...] = ()
    warnings: tuple[FindingSummary, ...] = ()
    acknowledged: frozenset[str] = frozenset()  # warning codes a clinician acknowledged


@dataclass(frozen=True, slots=True)
class IdentityReading:
    model: str
    firmware: str
    serial_number: str = ""


# --- the base class and the registry -----------------------------------------------------

R = TypeVar("R")

INTERLOCKS: dict[str, type[Interlock[object]]] = {}
"""Every interlock class by ID. The hazard trace and its tests are checked against it."""


class Interlock(ABC, Generic[R]):
    """A pure predicate over one kind of reading."""

    ID: ClassVar[str]
    TITLE: ClassVar[str]
    HAZARDS: ClassVar[tuple[str, ...]]
    STAGE: ClassVar[Stage]
    DESCRIPTION: ClassVar[str]

    skip_reason: str | None = None
    """Set when this interlock cannot work with the given device (it then never trips)."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("ID"):
            return
        unknown = set(cls.HAZARDS) - HAZARD_IDS
        if unknown or not cls.HAZARDS:
            raise TypeError(f"{cls.ID}: unknown or missing hazards {sorted(unknown)}")
        if cls.ID in INTERLOCKS:
            raise TypeError(f"interlock ID {cls.ID} registered twice")
        INTERLOCKS[cls.ID] = cls  # type: ignore[assignment]

    @abstractmethod
    def should_trip(self, reading: R) -> Trip | None:
        """A :class:`Trip` with a reason when the reading is unsafe, else None."""

    def _trip(self, reason: str) -> Trip:
        return Trip(self.ID, self.HAZARDS, reason)


def _refuse(interlock_id: str, field_name: str, value: object, limit: str) -> InputError:
    return InputError(
        f"{interlock_id}: invalid threshold",
        [Problem(field_name, "threshold out of range", value=value, limit=limit)],
    )


def _ma(value_ua: int | Fraction) -> str:
    """Milliamps for a reason sentence (exact, no float artefacts)."""
    frac = Fraction(value_ua) / 1000
    text = f"{float(frac):.3f}".rstrip("0").rstrip(".")
    return f"{text} mA"


def _channel_names(channels: Iterable[ChannelReading]) -> str:
    return ", ".join(str(c.channel) for c in channels)


# --- runtime ----------------------------------------------------------------------------


class CommunicationLoss(Interlock[StatusReading]):
    ID = "IL-COMM-LOSS"
    TITLE = "communication loss"
    HAZARDS = ("H-UNCONTROLLED",)
    STAGE = Stage.RUNTIME
    DESCRIPTION = (
        "No valid reply or status from the device within the bound (default: the "
        "device's watchdog timeout), or the port failed."
    )

    MAX_BOUND_NS = 10_000 * NS_PER_MS

    def __init__(self, bound_ns: int) -> None:
        if not 0 < bound_ns <= self.MAX_BOUND_NS:
            raise _refuse(self.ID, "bound_ns", bound_ns, f"0 < bound <= {self.MAX_BOUND_NS}")
        self.bound_ns = bound_ns

    @classmethod
    def for_profile(cls, profile: DeviceProfile) -> CommunicationLoss:
        return cls(profile.link.watchdog_timeout_ms * NS_PER_MS)

    def should_trip(self, reading: StatusReading) -> Trip | None:
        if reading.link_error is not None:
            return self._trip(f"the link to the device failed: {reading.link_error}")
        silent_ns = reading.at_ns - reading.last_reply_ns
        if silent_ns > self.bound_ns:
            return self._trip(
                f"no reply from the device for {silent_ns // NS_PER_MS} ms "
                f"(limit {self.bound_ns // NS_PER_MS} ms)"
            )
        return None


class OpenCircuit(Interlock[StatusReading]):
    ID = "IL-OPEN-CIRCUIT"
    TITLE = "open circuit"
    HAZARDS = ("H-SURGE", "H-BURN")
    STAGE = Stage.RUNTIME
    DESCRIPTION = (
        "An electrode lost contact: impedance at or above the profile's open-circuit "
        "threshold, or the device's own open-circuit fault. Checked before start and on "
        "every reading."
    )

    def __init__(self, open_circuit_ohm: int) -> None:
        if open_circuit_ohm <= 0:
            raise _refuse(self.ID, "open_circuit_ohm", open_circuit_ohm, "> 0")
        self.open_circuit_ohm = open_circuit_ohm

    @classmethod
    def for_profile(cls, profile: DeviceProfile) -> OpenCircuit:
        return cls(int(profile.impedance.open_circuit_ohm))

    def should_trip(self, reading: StatusReading) -> Trip | None:
        for ch in reading.channels:
            if OPEN_CIRCUIT_FLAG in ch.faults:
                return self._trip(f"channel {ch.channel}: the device reports an open circuit")
            if ch.impedance_ohm is not None and ch.impedance_ohm >= self.open_circuit_ohm:
                return self._trip(
                    f"channel {ch.channel}: electrode open ({ch.impedance_ohm} ohm, "
                    f"open-circuit threshold {self.open_circuit_ohm} ohm); check the "
                    "electrode contact"
                )
        return None


class ImpedanceRange(Interlock[StatusReading]):
    ID = "IL-IMPEDANCE-RANGE"
    TITLE = "electrode impedance out of range"
    HAZARDS = ("H-BURN",)
    STAGE = Stage.RUNTIME
    DESCRIPTION = (
        "Electrode impedance outside the profile's range for a good contact (below it "
        "suggests a short or wet contact, above it a poor contact concentrating current). "
        "Checked before start and on every reading."
    )

    def __init__(self, good_min_ohm: int, good_max_ohm: int, open_circuit_ohm: int) -> None:
        if not 0 < good_min_ohm < good_max_ohm < open_circuit_ohm:
            raise _refuse(
                self.ID,
                "good_min_ohm, good_max_ohm",
                (good_min_ohm, good_max_ohm),
                "0 < good_min < good_max < open_circuit",
            )
        self.good_min_ohm = good_min_ohm
        self.good_max_ohm = good_max_ohm
        self.open_circuit_ohm = open_circuit_ohm

    @classmethod
    def for_profile(cls, profile: DeviceProfile) -> ImpedanceRange:
        imp = profile.impedance
        skip = (
            None
            if profile.measurement.measures_impedance
            else "the device cannot measure electrode impedance (profile: measures_impedance "
            "= false); contact quality rests on the device's own open-circuit trip"
        )
        interlock = cls(int(imp.good_min_ohm), int(imp.good_max_ohm), int(imp.open_circuit_ohm))
        interlock.skip_reason = skip
        return interlock

    def should_trip(self, reading: StatusReading) -> Trip | None:
        if self.skip_reason is not None:
            return None
        for ch in reading.channels:
            z = ch.impedance_ohm
            # At or above the open-circuit threshold is IL-OPEN-CIRCUIT's to report.
            if z is None or z >= self.open_circuit_ohm:
                continue
            if not self.good_min_ohm <= z <= self.good_max_ohm:
                return self._trip(
                    f"channel {ch.channel}: electrode impedance {z} ohm is outside the "
                    f"good-contact range {self.good_min_ohm}-{self.good_max_ohm} ohm; "
                    "check the electrode and its placement"
                )
        return None


class DeviceFault(Interlock[StatusReading]):
    ID = "IL-DEVICE-FAULT"
    TITLE = "device fault or refused command"
    HAZARDS = ("H-DEVICE", "H-UNCONTROLLED")
    STAGE = Stage.RUNTIME
    DESCRIPTION = (
        "The device reports a fault flag (over-current, watchdog, hardware, its own stop "
        "switch, reset, electrode), or refused (NACK) a command."
    )

    def should_trip(self, reading: StatusReading) -> Trip | None:
        if reading.rejected is not None:
            return self._trip(f"the device refused a command: {reading.rejected}")
        if reading.device_faults:
            names = ", ".join(sorted(reading.device_faults)).replace("_", " ")
            return self._trip(f"the device reports a fault: {names}")
        for ch in reading.channels:
            # IL-OPEN-CIRCUIT reports an open circuit; compliance (the load will not take
            # the commanded current) is a condition, not a latched fault, and
            # IL-CURRENT-DEVIATION judges whether the shortfall matters.
            faults = ch.faults - {OPEN_CIRCUIT_FLAG, COMPLIANCE_FLAG}
            if faults:
                names = ", ".join(sorted(faults)).replace("_", " ")
                return self._trip(f"channel {ch.channel}: the device reports a fault: {names}")
        return None


class CurrentDeviation(Interlock[StatusReading]):
    ID = "IL-CURRENT-DEVIATION"
    TITLE = "measured current deviates from commanded"
    HAZARDS = ("H-DEVICE", "H-BURN")
    STAGE = Stage.RUNTIME
    DESCRIPTION = (
        "On a channel with output on, the measured current differs from the commanded by "
        "more than the profile's tolerance (the larger of its absolute and relative "
        "bounds), or the device reports a set-point other than the one commanded, or "
        "reports output off on a channel commanded on. "
        "Skipped, with the reason recorded, when the device cannot measure current."
    )

    def __init__(
        self,
        tolerance_ua: int,
        tolerance_percent: Fraction,
        *,
        measures_current: bool = True,
    ) -> None:
        if tolerance_ua < 0:
            raise _refuse(self.ID, "tolerance_ua", tolerance_ua, ">= 0")
        if not 0 <= tolerance_percent <= 50:
            raise _refuse(self.ID, "tolerance_percent", tolerance_percent, "0..50 %")
        if tolerance_ua == 0 and tolerance_percent == 0:
            raise _refuse(self.ID, "tolerance", 0, "some tolerance above zero (noise)")
        self.tolerance_ua = tolerance_ua
        self.tolerance_percent = Fraction(tolerance_percent)
        # |deviation| > max(abs, commanded x pct / 100), in integers: scale by 100 x den.
        self._num = self.tolerance_percent.numerator
        self._den = self.tolerance_percent.denominator
        if not measures_current:
            self.skip_reason = (
                "the device cannot measure output current (profile: measures_current = "
                "false); delivered current is not checked against commanded"
            )

    @classmethod
    def for_profile(cls, profile: DeviceProfile) -> CurrentDeviation:
        m = profile.measurement
        return cls(
            ma_to_ua(m.current_tolerance_ma),
            Fraction(m.current_tolerance_percent),
            measures_current=m.measures_current,
        )

    def allowed_ua(self, commanded_ua: int) -> Fraction:
        relative = Fraction(commanded_ua) * self.tolerance_percent / 100
        return max(Fraction(self.tolerance_ua), relative)

    def should_trip(self, reading: StatusReading) -> Trip | None:
        if self.skip_reason is not None:
            return None
        for ch in reading.channels:
            if not ch.output_on:
                if reading.output_expected and ch.commanded_ua > 0:
                    return self._trip(
                        f"channel {ch.channel}: the device reports output off while "
                        f"{_ma(ch.commanded_ua)} is commanded"
                    )
                continue
            if ch.device_set_ua is not None and ch.device_set_ua != ch.commanded_ua:
                return self._trip(
                    f"channel {ch.channel}: the device reports {_ma(ch.device_set_ua)} set, "
                    f"but {_ma(ch.commanded_ua)} was commanded"
                )
            if ch.measured_ua is None:
                return self._trip(
                    f"channel {ch.channel}: the device stopped reporting measured current"
                )
            deviation = abs(ch.measured_ua - ch.commanded_ua)
            scaled_allowed = max(self.tolerance_ua * 100 * self._den, ch.commanded_ua * self._num)
            if deviation * 100 * self._den > scaled_allowed:
                allowed = self.allowed_ua(ch.commanded_ua)
                return self._trip(
                    f"channel {ch.channel}: measured {_ma(ch.measured_ua)} against "
                    f"{_ma(ch.commanded_ua)} commanded (tolerance {_ma(allowed)}); check "
                    "the electrode contact (compliance) and the device"
                )
        return None


class UnexpectedOutput(Interlock[StatusReading]):
    ID = "IL-OUTPUT-UNEXPECTED"
    TITLE = "output on when it must be off"
    HAZARDS = ("H-UNINTENDED",)
    STAGE = Stage.RUNTIME
    DESCRIPTION = (
        "The device reports output on, or measures current above its noise tolerance, "
        "while the controller's state or commands say output must be off."
    )

    def __init__(self, noise_ua: int) -> None:
        if noise_ua < 0:
            raise _refuse(self.ID, "noise_ua", noise_ua, ">= 0")
        self.noise_ua = noise_ua

    @classmethod
    def for_profile(cls, profile: DeviceProfile) -> UnexpectedOutput:
        return cls(ma_to_ua(profile.measurement.current_tolerance_ma))

    def should_trip(self, reading: StatusReading) -> Trip | None:
        if reading.output_expected:
            return None
        on = [ch for ch in reading.channels if ch.output_on]
        if on:
            return self._trip(
                f"channel {_channel_names(on)}: the device reports output on while it must be off"
            )
        flowing = [
            ch
            for ch in reading.channels
            if ch.measured_ua is not None and ch.measured_ua > self.noise_ua
        ]
        if flowing:
            ch = flowing[0]
            return self._trip(
                f"channel {ch.channel}: {_ma(ch.measured_ua or 0)} measured while output "
                f"must be off (noise limit {_ma(self.noise_ua)})"
            )
        return None


class SessionTimeCap(Interlock[StatusReading]):
    ID = "IL-SESSION-TIME"
    TITLE = "session and titration time caps"
    HAZARDS = ("H-OVERDOSE",)
    STAGE = Stage.RUNTIME
    DESCRIPTION = (
        "Stimulation beyond the prescribed session (plus its stop ramp), or a titration "
        "that goes on beyond the titration limit, both timed by the controller's own "
        "clock and not by the schedule (the schedule ends before the cap; this catches "
        "a schedule timer that does not, and a titration nobody finishes)."
    )

    MAX_CAP_US = 120 * 60 * 1_000_000  # the protocol model's own maximum session
    MAX_TITRATION_CAP_US = 30 * 60 * 1_000_000  # the configurable limit's sanity range
    MAX_STOP_ALLOWANCE_US = 60 * 1_000_000  # the protocol model's longest ramp down

    def __init__(self, cap_us: int, *, titration_cap_us: int, stop_allowance_us: int = 0) -> None:
        """``stop_allowance_us``: stimulation an orderly stop begun just before the cap
        may still take (its ramp down), on top of the cap."""
        if not 0 < cap_us <= self.MAX_CAP_US:
            raise _refuse(self.ID, "cap_us", cap_us, f"0 < cap <= {self.MAX_CAP_US} us")
        if not 0 < titration_cap_us <= self.MAX_TITRATION_CAP_US:
            raise _refuse(
                self.ID,
                "titration_cap_us",
                titration_cap_us,
                f"0 < cap <= {self.MAX_TITRATION_CAP_US} us",
            )
        if not 0 <= stop_allowance_us <= self.MAX_STOP_ALLOWANCE_US:
            raise _refuse(
                self.ID,
                "stop_allowance_us",
                stop_allowance_us,
                f"0 <= allowance <= {self.MAX_STOP_ALLOWANCE_US} us",
            )
        self.cap_us = cap_us
        self.titration_cap_us = titration_cap_us
        self.stop_allowance_us = stop_allowance_us

    def should_trip(self, reading: StatusReading) -> Trip | None:
        if reading.stimulation_elapsed_us > self.cap_us + self.stop_allowance_us:
            allowance = self.stop_allowance_us
            return self._trip(
                f"stimulation has run {_seconds(reading.stimulation_elapsed_us)}, beyond "
                f"the session cap of {_seconds(self.cap_us)}"
                + (f" and its stop ramp of {_seconds(allowance)}" if allowance else "")
            )
        if reading.titration_elapsed_us > self.titration_cap_us:
            return self._trip(
                f"titration has gone on for {_seconds(reading.titration_elapsed_us)}, "
                f"beyond the titration limit of {_seconds(self.titration_cap_us)}: "
                "confirm an amplitude sooner, or start again"
            )
        return None


def _seconds(us: int) -> str:
    """Whole seconds, or to the millisecond when not whole (never rounded up to a cap)."""
    whole_s, rest_us = divmod(us, 1_000_000)
    return f"{whole_s}.{rest_us // 1000:03d} s" if rest_us >= 1000 else f"{whole_s} s"


# --- command ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ceiling:
    """One upper bound on amplitude and where it comes from."""

    ua: int
    source: str


class AmplitudeLimit(Interlock[AmplitudeCommand | StatusReading]):
    ID = "IL-AMPLITUDE-LIMIT"
    TITLE = "amplitude above ceiling or step above limit"
    HAZARDS = ("H-BURN", "H-SURGE")
    STAGE = Stage.COMMAND
    DESCRIPTION = (
        "An amplitude about to be commanded (or reported set by the device) is above the "
        "lowest ceiling (patient prescription, protocol, device profile, standard limit), "
        "or a titration step is larger than the prescribed step."
    )

    def __init__(self, ceilings: Sequence[Ceiling], step_ua: int) -> None:
        if not ceilings:
            raise _refuse(self.ID, "ceilings", (), "at least one ceiling")
        for c in ceilings:
            if c.ua <= 0:
                raise _refuse(self.ID, f"ceiling ({c.source})", c.ua, "> 0 uA")
        self.ceilings = tuple(sorted(ceilings, key=lambda c: c.ua))
        if not 0 < step_ua <= self.ceiling_ua:
            raise _refuse(self.ID, "step_ua", step_ua, f"0 < step <= {self.ceiling_ua}")
        self.step_ua = step_ua

    @property
    def ceiling_ua(self) -> int:
        return self.ceilings[0].ua

    @property
    def binding(self) -> Ceiling:
        """The ceiling that binds (the lowest)."""
        return self.ceilings[0]

    def should_trip(self, reading: AmplitudeCommand | StatusReading) -> Trip | None:
        if isinstance(reading, StatusReading):
            for ch in reading.channels:
                if ch.device_set_ua is not None and ch.device_set_ua > self.ceiling_ua:
                    return self._trip(
                        f"channel {ch.channel}: the device reports {_ma(ch.device_set_ua)} "
                        f"set, above the ceiling {_ma(self.ceiling_ua)} "
                        f"({self.binding.source})"
                    )
            return None
        if reading.requested_ua < 0:
            return self._trip(f"channel {reading.channel}: negative amplitude requested")
        if reading.requested_ua > self.ceiling_ua:
            return self._trip(
                f"channel {reading.channel}: {_ma(reading.requested_ua)} requested, above the "
                f"ceiling {_ma(self.ceiling_ua)} ({self.binding.source})"
            )
        step = reading.requested_ua - reading.previous_ua
        if reading.titration and step > self.step_ua:
            return self._trip(
                f"channel {reading.channel}: a titration step of {_ma(step)} is above the "
                f"prescribed step {_ma(self.step_ua)}"
            )
        return None


# --- preflight ---------------------------------------------------------------------------


class DoseCap(Interlock[DoseReading]):
    ID = "IL-DOSE-CAP"
    TITLE = "dose cap (sessions per day / week)"
    HAZARDS = ("H-OVERDOSE",)
    STAGE = Stage.PREFLIGHT
    DESCRIPTION = (
        "The patient has already had the prescribed number of sessions today or this week "
        "(counts from the caller or the records store)."
    )

    def __init__(self, per_day: int, per_week: int) -> None:
        if per_day < 1:
            raise _refuse(self.ID, "per_day", per_day, ">= 1")
        if not per_day <= per_week <= 7 * per_day:
            raise _refuse(self.ID, "per_week", per_week, f"{per_day}..{7 * per_day}")
        self.per_day = per_day
        self.per_week = per_week

    def should_trip(self, reading: DoseReading) -> Trip | None:
        if reading.sessions_today < 0 or reading.sessions_this_week < reading.sessions_today:
            return self._trip(
                f"the session counts do not add up ({reading.sessions_today} today, "
                f"{reading.sessions_this_week} this week); check the records"
            )
        if reading.sessions_today >= self.per_day:
            return self._trip(
                f"{reading.sessions_today} session(s) already today; the prescription allows "
                f"{self.per_day} a day"
            )
        if reading.sessions_this_week >= self.per_week:
            return self._trip(
                f"{reading.sessions_this_week} session(s) already this week; the prescription "
                f"allows {self.per_week} a week"
            )
        return None


class PreflightFindings(Interlock[FindingsReading]):
    ID = "IL-PREFLIGHT-CHECK"
    TITLE = "static-check errors or unacknowledged warnings"
    HAZARDS = ("H-PRESCRIPTION", "H-BURN")
    STAGE = Stage.PREFLIGHT
    DESCRIPTION = (
        "The static checks of prescription x protocol x profile x standard limits found "
        "an error, or a warning that no clinician acknowledged."
    )

    def should_trip(self, reading: FindingsReading) -> Trip | None:
        if reading.errors:
            first = reading.errors[0]
            more = f" (and {len(reading.errors) - 1} more)" if len(reading.errors) > 1 else ""
            return self._trip(f"static check error {first.code}: {first.message}{more}")
        pending = [w for w in reading.warnings if w.code not in reading.acknowledged]
        if pending:
            codes = ", ".join(w.code for w in pending)
            return self._trip(
                f"warning(s) not acknowledged: {codes}; a clinician must read and "
                "acknowledge each before the session may start"
            )
        return None


class DeviceIdentityCheck(Interlock[IdentityReading]):
    ID = "IL-DEVICE-IDENTITY"
    TITLE = "device identity does not match the profile"
    HAZARDS = ("H-DEVICE", "H-PRESCRIPTION")
    STAGE = Stage.PREFLIGHT
    DESCRIPTION = (
        "The connected device's model or firmware is not what the device profile "
        "describes, so its limits and behaviour are not the ones checked."
    )

    def __init__(self, model: str, firmware_min: str, firmware_max: str) -> None:
        if not model:
            raise _refuse(self.ID, "model", model, "a model name")
        self.model = model
        self.firmware_min = _version(firmware_min)
        self.firmware_max = _version(firmware_max)
        if self.firmware_min > self.firmware_max:
            raise _refuse(self.ID, "firmware range", (firmware_min, firmware_max), "min <= max")

    @classmethod
    def for_profile(cls, profile: DeviceProfile) -> DeviceIdentityCheck:
        ident = profile.identity
        return cls(ident.model, ident.firmware_min, ident.firmware_max)

    def should_trip(self, reading: IdentityReading) -> Trip | None:
        if reading.model != self.model:
            return self._trip(
                f"connected device is {reading.model!r}, the profile describes {self.model!r}"
            )
        try:
            version = _version(reading.firmware)
        except ValueError:
            return self._trip(f"device firmware {reading.firmware!r} is not a version number")
        if not self.firmware_min <= version <= self.firmware_max:
            low = ".".join(map(str, self.firmware_min))
            high = ".".join(map(str, self.firmware_max))
            return self._trip(
                f"device firmware {reading.firmware} is outside the profile's range {low}-{high}"
            )
        return None


@dataclass(frozen=True, slots=True)
class ValidationReading:
    """What the bench validation record says about the connected unit."""

    record: str | None  # the record's path; None: no record given
    problems: tuple[str, ...] = ()  # why it does not vouch for this unit
    unit_confirmation: Mapping[str, str | bool | None] | None = None
    """A person's confirmation of which unit is connected (the serial on its label, for
    a device that reports none), logged by the controller as a ``unit_confirmation``
    session event before the check; None: nobody was asked."""


class DeviceValidation(Interlock[ValidationReading]):
    ID = "IL-DEVICE-VALIDATION"
    TITLE = "no bench validation record for this unit"
    HAZARDS = ("H-DEVICE",)
    STAGE = Stage.PREFLIGHT
    DESCRIPTION = (
        "No bench validation record (estim profile bench) vouches for this profile on "
        "this unit (serial, firmware; for a device that reports no serial number, the "
        "label serial a person confirmed), so its limits, accuracy and trips are unproven."
    )

    def should_trip(self, reading: ValidationReading) -> Trip | None:
        fix = (
            "run `estim profile bench PROFILE --port PORT` on this unit (with --unit-serial "
            "SN, the serial on its label, if it reports none) and give the record with "
            "--validation FILE"
        )
        if reading.record is None:
            return self._trip(f"no bench validation record for the connected unit; {fix}")
        if reading.problems:
            return self._trip(
                f"the validation record {reading.record} does not vouch for this unit: "
                + "; ".join(reading.problems)
            )
        return None


def _version(text: str) -> tuple[int, ...]:
    parts = text.strip().split(".")
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(text)
    return tuple(int(p) for p in parts)


# --- sets -------------------------------------------------------------------------------


@dataclass
class RuntimeInterlocks:
    """The interlocks evaluated on every status reading, in order of specificity.

    Order matters only for which reason is reported first when several trip at once:
    the most specific cause leads (an open electrode also makes the current deviate).
    """

    items: tuple[Interlock[StatusReading], ...]
    amplitude: AmplitudeLimit
    skipped: tuple[tuple[str, str], ...] = field(init=False)

    def __post_init__(self) -> None:
        self.skipped = tuple((i.ID, i.skip_reason) for i in self.items if i.skip_reason is not None)

    def evaluate(self, reading: StatusReading) -> list[Trip]:
        """Every trip for this reading, most specific first (empty: all clear)."""
        trips = [t for t in (i.should_trip(reading) for i in self.items) if t is not None]
        set_point = self.amplitude.should_trip(reading)
        if set_point is not None:
            trips.insert(0, set_point)
        return trips

    @classmethod
    def for_profile(
        cls,
        profile: DeviceProfile,
        amplitude: AmplitudeLimit,
        session_cap_us: int,
        *,
        titration_cap_us: int,
        stop_allowance_us: int,
    ) -> RuntimeInterlocks:
        return cls(
            items=(
                CommunicationLoss.for_profile(profile),
                OpenCircuit.for_profile(profile),
                ImpedanceRange.for_profile(profile),
                UnexpectedOutput.for_profile(profile),
                DeviceFault(),
                CurrentDeviation.for_profile(profile),
                SessionTimeCap(
                    session_cap_us,
                    titration_cap_us=titration_cap_us,
                    stop_allowance_us=stop_allowance_us,
                ),
            ),
            amplitude=amplitude,
        )
