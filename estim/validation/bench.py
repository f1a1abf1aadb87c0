"""Technician bench validation: prove a device profile true on one device unit.

:class:`BenchValidation` runs the checks through the driver's public API (the same
calls the controller makes) except where a check must bypass the controller on purpose:

1. ``identity``: model, firmware range and channel count match the profile (and, where
   the device reports them, its amplitude limit and watchdog timeout).
2. ``amplitude-accuracy``: at several test points per channel, measured current is
   within the profile's tolerance of the commanded current. Measured by the device
   (status readback) when it can; otherwise from outside, on a known bench load, by a
   :class:`~estim.validation.current.CurrentSource`: the technician's instrument
   (typed at a prompt, or recorded in a file) or, on estim's simulator, the
   simulator's own instrument. With no source the check is *not verified*.
3. ``refuses-over-limit``: the device itself refuses an amplitude, a phase width and a
   rate beyond the profile's limits, and does not clamp: the controller's own limits are
   bypassed for this check only, by talking to the driver directly.
4. ``watchdog``: with output on and the host silent, the device stops the output and
   reports it within the declared timeout (+ 20 ms).
5. ``stop-latency``: STOP ALL is acknowledged quickly and the output is confirmed off.
6. ``open-circuit``: losing an electrode trips the output (injected on the simulator
   with its ``SIM_INJECT`` command; prompted to the technician on a real device).

A device that reports no serial number (ScienceMode2) is named by the serial on its
label, which the technician enters (``label_serial``): without it the bench is refused
before any check (:func:`check_label_serial`), since its record could not say which
unit it was made on.

Every check starts and ends with the output off. The result is a frozen
:class:`~estim.validation.record.ValidationRecord`. Time comes from an injected clock
(real time on the bench; virtual time against an in-process simulator in tests).
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from math import ceil, floor
from typing import Any, Protocol

from estim import __version__
from estim.clock import NS_PER_MS, Clock, MonotonicClock
from estim.device.base import ChannelConfig, DeviceEvent, DeviceIdentity, FaultFlag, Stimulator
from estim.device.profile import DeviceProfile
from estim.errors import DeviceError, DeviceRejected, InputError
from estim.protocols.models import ShapeKind
from estim.validation.current import (
    BENCH_LOAD_OHM,
    AccuracyPoint,
    CurrentSource,
    NotMeasured,
    accuracy_amplitudes_ua,
    accuracy_plan,
    describe_plan,
    format_fraction,
    simulator_instrument_for,
)
from estim.validation.record import (
    SIMULATOR_CAPABILITY,
    UNIT_SERIAL_OPTION,
    CheckResult,
    DeviceUnit,
    Measurement,
    MeasurementMethod,
    Outcome,
    ValidationRecord,
    parse_label_serial,
    same_serial,
    serial_reported,
    utc_now,
)

log = logging.getLogger(__name__)

WATCHDOG_MARGIN_MS = 20
"""The watchdog must trip within its declared timeout plus this margin, or plus
:data:`WATCHDOG_MARGIN_FRACTION` of it if that is more: the host sees the trip only
through the device's report of it, and a device's watchdog timer has a resolution of
its own (a RehaStim2's 2 s watchdog is judged to within 50 ms, a 250 ms one to 20 ms)."""

WATCHDOG_MARGIN_FRACTION = Fraction(1, 40)


def watchdog_limit_ms(declared_ms: int) -> int:
    """The latest a watchdog declared at ``declared_ms`` may trip and still pass."""
    return declared_ms + max(WATCHDOG_MARGIN_MS, ceil(declared_ms * WATCHDOG_MARGIN_FRACTION))


STOP_ACK_LIMIT_MS = 20
"""STOP ALL must be acknowledged within the device reply deadline of estim-wire/1."""

STOP_TRIALS = 20
READINGS_PER_POINT = 5

ACCURACY_TITLE = "Amplitude accuracy within the profile's tolerance"

Prompt = Callable[[str], bool]
"""Ask the technician to do something; True when done, False when they cannot."""


def check_label_serial(
    identity: DeviceIdentity,
    label_serial: str | None,
    *,
    command: str = "estim profile bench PROFILE --port PORT",
) -> None:
    """Refuse (``InputError``) a bench whose record could not say which unit it was on.

    A unit that reports no serial number needs the serial on its label; a label serial
    given for a unit that reports its own must be the same serial. ``command`` is the
    bench command line to show in the fix.
    """
    if serial_reported(identity):
        if label_serial is not None and not same_serial(label_serial, identity.serial_number):
            raise InputError(
                f"{UNIT_SERIAL_OPTION} {label_serial}, but the connected {identity.model} "
                f"reports serial {identity.serial_number}: check the label of the unit on "
                f"the bench (or leave out {UNIT_SERIAL_OPTION}: this unit names itself)"
            )
        return
    if label_serial is None:
        raise InputError(
            f"the {identity.model} reports no serial number ({identity.serial_number}), "
            "so a record of this bench could not say which unit it was made on, and would "
            f"vouch for any {identity.model}: read the serial number printed on the unit's "
            f"label and give it: {command} {UNIT_SERIAL_OPTION} SN"
        )


class _Injecting(Protocol):
    def inject_fault(self, spec: str) -> None: ...


@dataclass
class _Events:
    items: list[DeviceEvent] = field(default_factory=list)

    def __call__(self, event: DeviceEvent) -> None:
        self.items.append(event)

    def first(self, flag: FaultFlag, since: int = 0) -> DeviceEvent | None:
        for event in self.items[since:]:
            if flag in event.faults:
                return event
        return None


class BenchValidation:
    """Run the bench checks on an *opened* ``stimulator`` against ``profile``."""

    def __init__(
        self,
        profile: DeviceProfile,
        stimulator: Stimulator,
        *,
        technician: str,
        port: str,
        profile_source: str = "",
        clock: Clock | None = None,
        prompt: Prompt | None = None,
        progress: Callable[[str], None] | None = None,
        current_source: CurrentSource | None = None,
        bench_load_ohm: int = BENCH_LOAD_OHM,
        label_serial: str | None = None,
        label_serial_source: str | None = None,
    ) -> None:
        if stimulator.identity is None:
            raise ValueError("open the stimulator before validating it")
        self.profile = profile
        self.stim = stimulator
        self.identity: DeviceIdentity = stimulator.identity
        self.label_serial = None if label_serial is None else parse_label_serial(label_serial)
        """The serial on the unit's label, entered by the technician (required for a unit
        that reports no serial number)."""
        check_label_serial(self.identity, self.label_serial)
        self.label_serial_source = label_serial_source or (
            f"entered by {technician} from the unit's label"
        )
        self.technician = technician
        self.port = port
        self.profile_source = profile_source
        self.clock: Clock = clock or getattr(stimulator, "clock", None) or MonotonicClock()
        self.prompt = prompt
        self.progress = progress or (lambda text: None)
        self.current_source = current_source
        """Who measures output current; None: the device, or (on estim's simulator of a
        device that cannot) the simulator instrument, or nobody (not verified)."""
        self.bench_load_ohm = bench_load_ohm
        """The known load on each channel for an external measurement."""
        self.events = _Events()

    # --- the whole run ----------------------------------------------------------------

    def run(self) -> ValidationRecord:
        started = utc_now()
        self.stim.add_event_listener(self.events)
        checks: list[CheckResult] = []
        try:
            for check in (
                self.check_identity,
                self.check_amplitude_accuracy,
                self.check_refuses_over_limit,
                self.check_watchdog,
                self.check_stop_latency,
                self.check_open_circuit,
            ):
                self.progress(check.__doc__.splitlines()[0] if check.__doc__ else check.__name__)
                try:
                    checks.append(check())
                except DeviceError as err:
                    checks.append(self._errored(check, err))
                finally:
                    self._make_safe()
        finally:
            self.stim.remove_event_listener(self.events)
        return ValidationRecord(
            profile_sha256=self.profile.sha256,
            profile_model=self.profile.identity.model,
            profile_source=self.profile_source,
            device=DeviceUnit.from_identity(
                self.identity,
                label_serial=self.label_serial,
                label_serial_source=None if self.label_serial is None else self.label_serial_source,
            ),
            port=self.port,
            technician=self.technician,
            started_at=started,
            finished_at=utc_now(),
            estim_version=__version__,
            checks=tuple(checks),
            passed=all(c.outcome is Outcome.PASS for c in checks),
        )

    # --- 1. identity ------------------------------------------------------------------

    def check_identity(self) -> CheckResult:
        """Identity: model, firmware range, channels."""
        expected = self.profile.identity
        ident = self.identity
        measurements = [
            Measurement(
                name="model",
                text=ident.model,
                limit=expected.model,
                passed=ident.model == expected.model,
            ),
            Measurement(
                name="firmware",
                text=ident.firmware,
                limit=f"{expected.firmware_min}..{expected.firmware_max}",
                passed=expected.accepts_firmware(ident.firmware),
            ),
            Measurement(name="serial number", text=ident.serial_number),
            Measurement(name="manufacturer", text=ident.manufacturer),
        ]
        if self.label_serial is not None:
            named = serial_reported(ident)
            measurements.append(
                Measurement(
                    name="label serial",
                    text=self.label_serial,
                    limit=f"= {ident.serial_number}" if named else None,
                    passed=True if named else None,  # a mismatch never gets this far
                    source=self.label_serial_source,
                )
            )
        info = getattr(self.stim, "device_info", None)
        if info is not None:
            out = self.profile.output
            reported: list[tuple[str, int, int, str]] = [
                ("channels", info.channels, out.channels, ""),
                ("amplitude maximum", info.amplitude_max_ua, out.amplitude_max_ua, "uA"),
                ("amplitude step", info.amplitude_step_ua, out.amplitude_resolution_ua, "uA"),
                ("watchdog timeout", info.watchdog_ms, self.profile.link.watchdog_timeout_ms, "ms"),
            ]
            for name, value, limit, unit in reported:
                measurements.append(
                    Measurement(
                        name=f"{name} (device says)",
                        value=value,
                        unit=unit,
                        limit=f"= {limit}",
                        passed=value == limit,
                    )
                )
        return _result(
            "identity",
            "Identity matches the profile",
            measurements,
            failure="the device is not the one the profile describes",
        )

    # --- 2. amplitude accuracy ----------------------------------------------------------

    def check_amplitude_accuracy(self) -> CheckResult:
        """Amplitude accuracy at several test points."""
        measure = self.profile.measurement
        if self.current_source is not None or not measure.measures_current:
            return self._external_accuracy()
        measurements: list[Measurement] = []
        for channel in range(1, self.profile.output.channels + 1):
            load_ohm = self._load_ohm(channel)
            if load_ohm is not None:
                measurements.append(
                    Measurement(name=f"ch{channel} bench load", value=load_ohm, unit="ohm")
                )
            self.stim.configure([self._safe_config(channel)])
            points = self._test_points(load_ohm)
            self.stim.set_amplitudes({channel: 0})
            self.stim.output_on([channel])
            for target_ua in points:
                self.stim.set_amplitudes({channel: target_ua})
                readings = self._readings(channel)
                worst = max(readings, key=lambda r: abs(r - target_ua))
                tolerance = measure.tolerance_ua(target_ua)
                measurements.append(
                    Measurement(
                        name=f"ch{channel} at {target_ua} uA: worst of {len(readings)} readings",
                        value=worst,
                        unit="uA",
                        limit=f"{target_ua} +/- {format_fraction(tolerance)} uA",
                        passed=abs(worst - target_ua) <= tolerance,
                        method=MeasurementMethod.DEVICE_READBACK,
                        source="the device's own current measurement (status)",
                    )
                )
            self.stim.output_off()
        return _result(
            "amplitude-accuracy",
            ACCURACY_TITLE,
            measurements,
            failure="measured current strayed beyond the tolerance",
        )

    def accuracy_plan(self) -> tuple[AccuracyPoint, ...]:
        """The test points of an external accuracy measurement on the bench load."""
        return accuracy_plan(self.profile, self.bench_load_ohm)

    def _external_accuracy(self) -> CheckResult:
        """Accuracy measured from outside: each point on, read, off; a channel at a time.

        The output is on only while a reading is taken: it goes off after each point,
        and at once (STOP) if the reading fails in any way, Ctrl-C included.
        """
        points = self.accuracy_plan()
        source = self.current_source or simulator_instrument_for(self.stim)
        if source is None:
            return CheckResult(
                id="amplitude-accuracy",
                title=ACCURACY_TITLE,
                outcome=Outcome.NOT_VERIFIED,
                detail=f"not measured: the {self.profile.identity.model} cannot measure its "
                "output current and no external measurement was given (a technician at "
                "the bench prompt, or a measurements file); test points: " + describe_plan(points),
            )
        measurements = [
            Measurement(name="method", text=source.describe(), method=source.method),
        ]
        try:
            for channel in range(1, self.profile.output.channels + 1):
                source.connect_channel(channel, self.bench_load_ohm)  # output is off
                measurements.append(
                    Measurement(
                        name=f"ch{channel} bench load",
                        value=self.bench_load_ohm,
                        unit="ohm",
                        source="declared by the technician"
                        if source.method is MeasurementMethod.EXTERNAL_INSTRUMENT
                        else "placed on the simulator",
                    )
                )
                for point in (p for p in points if p.channel == channel):
                    measurements.append(self._external_reading(source, point))
        except NotMeasured as why:
            # A reading already out of tolerance is a failure, whatever is missing.
            strayed = any(m.passed is False for m in measurements)
            return CheckResult(
                id="amplitude-accuracy",
                title=ACCURACY_TITLE,
                outcome=Outcome.FAIL if strayed else Outcome.NOT_VERIFIED,
                detail=("measured current strayed beyond the tolerance; " if strayed else "")
                + f"not measured: {why}; every test point needs a reading "
                f"({describe_plan(points)})",
                measurements=tuple(measurements),
            )
        return _result(
            "amplitude-accuracy",
            ACCURACY_TITLE,
            measurements,
            failure="measured current strayed beyond the tolerance",
        )

    def _external_reading(self, source: CurrentSource, point: AccuracyPoint) -> Measurement:
        self._stimulate(point.channel, point.commanded_ua)
        try:
            reading = source.read(point)
        except BaseException:
            self.stim.stop_all()  # at once, whatever went wrong (Ctrl-C, EOF, no reading)
            raise
        self.stim.output_off()
        source.finished(point, reading)
        return Measurement(
            name=f"ch{point.channel} at {point.commanded_ua} uA",
            value=reading.measured_ua,
            unit="uA",
            limit=point.limit(),
            passed=point.accepts(reading.measured_ua),
            method=reading.method,
            source=reading.source,
        )

    # --- 3. refuses over-limit ----------------------------------------------------------

    def check_refuses_over_limit(self) -> CheckResult:
        """The device refuses over-limit commands by itself."""
        out = self.profile.output
        channel = 1
        base = self._safe_config(channel)
        self.stim.configure([base])
        attempts: list[tuple[str, Callable[[], None], str]] = [
            (
                f"amplitude {out.amplitude_max_ua + out.amplitude_resolution_ua} uA",
                lambda: self.stim.set_amplitudes(
                    {channel: out.amplitude_max_ua + out.amplitude_resolution_ua}
                ),
                f"max {out.amplitude_max_ua} uA",
            ),
            (
                f"phase width {out.phase_width_max_us + out.phase_width_resolution_us} us",
                lambda: self.stim.configure([self._wider(base)]),
                f"max {out.phase_width_max_us} us",
            ),
            (
                f"rate above {out.frequency_max_hz} Hz",
                lambda: self.stim.configure([self._faster(base)]),
                f"max {out.frequency_max_hz} Hz",
            ),
        ]
        measurements = []
        for name, attempt, limit in attempts:
            try:
                attempt()
            except DeviceRejected as err:
                measurements.append(
                    Measurement(
                        name=f"{name}: refused",
                        text=err.code_name or str(err.code),
                        limit=limit,
                        passed=True,
                    )
                )
            else:
                self.stim.stop_all()
                measurements.append(
                    Measurement(
                        name=f"{name}: ACCEPTED", text="accepted", limit=limit, passed=False
                    )
                )
        status = self.stim.status().channel(channel)
        measurements.append(
            Measurement(
                name="commanded amplitude afterwards (not clamped)",
                value=status.commanded_ua,
                unit="uA",
                limit="= 0",
                passed=status.commanded_ua == 0,
            )
        )
        return _result(
            "refuses-over-limit",
            "Device refuses over-limit commands itself (controller limits bypassed)",
            measurements,
            failure="the device accepted a value beyond its own limits",
        )

    # --- 4. watchdog --------------------------------------------------------------------

    def check_watchdog(self) -> CheckResult:
        """Watchdog stops output when the host goes silent."""
        declared_ms = self.profile.link.watchdog_timeout_ms
        limit_ms = watchdog_limit_ms(declared_ms)
        channel = 1
        self._stimulate(channel, self._test_points(self._load_ohm(channel))[0])
        since = len(self.events.items)
        with self._silence():
            self.stim.status()  # the last frame before the silence
            silent_from = self._last_write_ns()
            deadline = silent_from + (declared_ms + 500) * NS_PER_MS
            self._wait_until(lambda: self.events.first(FaultFlag.WATCHDOG, since), deadline)
        event = self.events.first(FaultFlag.WATCHDOG, since)
        status = self.stim.status()
        measurements = [
            Measurement(name="declared timeout", value=declared_ms, unit="ms"),
            Measurement(
                name="output off afterwards",
                value=not status.any_output_on,
                passed=not status.any_output_on,
            ),
            Measurement(
                name="WATCHDOG fault latched",
                value=FaultFlag.WATCHDOG in status.all_faults,
                passed=FaultFlag.WATCHDOG in status.all_faults,
            ),
        ]
        if event is None:
            measurements.append(
                Measurement(
                    name="trip reported", value=False, limit=f"<= {limit_ms} ms", passed=False
                )
            )
        else:
            trip_ms = _ms(event.at_ns - silent_from)
            measurements.append(
                Measurement(
                    name="silence to trip report",
                    value=trip_ms,
                    unit="ms",
                    limit=f"<= {limit_ms} ms",
                    passed=trip_ms <= limit_ms,
                )
            )
        return _result(
            "watchdog",
            f"Watchdog stops output within {declared_ms} ms + {limit_ms - declared_ms} ms",
            measurements,
            failure="the watchdog did not stop the output in time",
        )

    # --- 5. stop latency ----------------------------------------------------------------

    def check_stop_latency(self) -> CheckResult:
        """STOP ALL latency."""
        channel = 1
        points = self._test_points(self._load_ohm(channel))
        latencies_ms: list[Decimal] = []
        all_off = True
        for _ in range(STOP_TRIALS):
            self._stimulate(channel, points[0])
            before = self.clock.now_ns()
            self.stim.stop_all()
            latencies_ms.append(_ms(self.clock.now_ns() - before))
            all_off = all_off and not self.stim.status().any_output_on
        ordered = sorted(latencies_ms)
        measurements = [
            Measurement(
                name=f"STOP ALL acknowledged, median of {STOP_TRIALS}",
                value=_round(Decimal(statistics.median(ordered))),
                unit="ms",
            ),
            Measurement(
                name=f"STOP ALL acknowledged, worst of {STOP_TRIALS}",
                value=ordered[-1],
                unit="ms",
                limit=f"<= {STOP_ACK_LIMIT_MS} ms",
                passed=ordered[-1] <= STOP_ACK_LIMIT_MS,
            ),
            Measurement(
                name="output confirmed off after every stop",
                value=all_off,
                passed=all_off,
            ),
        ]
        return _result(
            "stop-latency",
            "STOP ALL is fast and leaves the output off",
            measurements,
            failure="STOP ALL was slow or did not leave the output off",
        )

    # --- 6. open circuit ----------------------------------------------------------------

    def check_open_circuit(self) -> CheckResult:
        """Open-circuit detection."""
        title = "Open electrode trips the output"
        channel = 1
        amplitude = self._test_points(self._load_ohm(channel))[0]
        injector = self._injector()
        if injector is None and self.prompt is None:
            return CheckResult(
                id="open-circuit",
                title=title,
                outcome=Outcome.NOT_VERIFIED,
                detail="a real device needs the technician to pull an electrode lead; "
                "run the bench interactively",
            )
        self._stimulate(channel, amplitude)
        since = len(self.events.items)
        started = self.clock.now_ns()
        how = "injected on the simulator"
        if injector is not None:
            injector.inject_fault(f"open:ch={channel}")
        else:
            assert self.prompt is not None
            how = "electrode lead pulled by the technician"
            if not self.prompt(
                f"Output is ON on channel {channel} at {amplitude / 1000} mA into the bench "
                "load. Disconnect that channel's electrode lead now, then confirm."
            ):
                self.stim.stop_all()
                return CheckResult(
                    id="open-circuit",
                    title=title,
                    outcome=Outcome.NOT_VERIFIED,
                    detail="the technician could not disconnect the lead",
                )
            started = self.clock.now_ns()
        wait_ms = 2000 if injector is not None else 10_000

        # A device without impedance readback (ScienceMode2) reports its own
        # device-level "electrode error" instead of a per-channel open circuit.
        def detected() -> DeviceEvent | None:
            return self.events.first(FaultFlag.OPEN_CIRCUIT, since) or self.events.first(
                FaultFlag.ELECTRODE, since
            )

        self._wait_until(detected, started + wait_ms * NS_PER_MS)
        event = detected()
        status = self.stim.status()
        latched = bool(status.all_faults & (FaultFlag.OPEN_CIRCUIT | FaultFlag.ELECTRODE))
        measurements = [
            Measurement(name="method", text=how),
            Measurement(
                name="OPEN_CIRCUIT (or device-level ELECTRODE) reported",
                value=event is not None,
                passed=event is not None,
            ),
            Measurement(
                name="reported on the right channel (when the device names one)",
                value=None if event is None else event.channel,
                limit=f"= {channel}",
                passed=event is not None and event.channel in (channel, None),
            ),
            Measurement(name="fault latched", value=latched, passed=latched),
            Measurement(
                name="output off afterwards",
                value=not status.any_output_on,
                passed=not status.any_output_on,
            ),
        ]
        if injector is not None:
            injector.inject_fault(f"close:ch={channel}")
        elif self.prompt is not None:
            self.prompt(f"Reconnect channel {channel}'s electrode lead, then confirm.")
        measurements.append(self._recovers(channel))
        return _result(
            "open-circuit",
            title,
            measurements,
            failure="an open electrode did not trip the output",
        )

    def _recovers(self, channel: int) -> Measurement:
        """With the electrode back, the fault clears and the channel sets up again (a
        ScienceMode2 device clears its own latch only when the channel list is set up
        again): the unit is left as a session will find it."""
        try:
            self._make_safe()
            self.stim.configure([self._safe_config(channel)])
            self.stim.output_off()
            faults = self.stim.status().all_faults
        except DeviceError as err:
            return Measurement(
                name="sets up again with the electrode reconnected", text=str(err), passed=False
            )
        return Measurement(
            name="sets up again with the electrode reconnected",
            text=faults.describe() if faults else "no fault",
            passed=not faults,
        )

    # --- helpers ----------------------------------------------------------------------

    def _errored(self, check: Callable[[], CheckResult], err: DeviceError) -> CheckResult:
        name = (check.__name__ or "check").removeprefix("check_").replace("_", "-")
        return CheckResult(
            id=name,
            title=(check.__doc__ or name).splitlines()[0],
            outcome=Outcome.FAIL,
            detail=f"device error during the check: {err}",
        )

    def _make_safe(self) -> None:
        """Output off and faults cleared between checks (best effort, logged)."""
        try:
            self.stim.stop_all()
            self.stim.clear_fault()
        except DeviceError as err:
            log.warning("could not reset the device between checks: %s", err)

    def _stimulate(self, channel: int, amplitude_ua: int) -> None:
        self._make_safe()
        self.stim.configure([self._safe_config(channel)])
        self.stim.set_amplitudes({channel: amplitude_ua})
        self.stim.output_on([channel])
        if not self.stim.status().channel(channel).output_on:
            raise DeviceError(f"channel {channel} did not switch on")

    def _readings(self, channel: int) -> list[int]:
        """Settle two status periods, then take readings (polling keeps the watchdog fed)."""
        period_ns = self.profile.measurement.status_period_ms * NS_PER_MS
        settle_until = self.clock.now_ns() + 2 * period_ns
        while self.clock.now_ns() < settle_until:
            self.stim.status()
            self.clock.sleep_until(min(settle_until, self.clock.now_ns() + period_ns // 2))
        readings = []
        for _ in range(READINGS_PER_POINT):
            measured = self.stim.status().channel(channel).measured_ua
            if measured is None:
                raise DeviceError(f"channel {channel} reported no measured current")
            readings.append(measured)
            self.clock.sleep_until(self.clock.now_ns() + period_ns)
        return readings

    def _load_ohm(self, channel: int) -> int | None:
        if not self.profile.measurement.measures_impedance:
            return None
        return self.stim.measure_impedance(channel)

    def _test_points(self, load_ohm: int | None) -> list[int]:
        """Amplitudes to test: fractions of what the hardware can drive into this load."""
        return accuracy_amplitudes_ua(self.profile, load_ohm)

    def _safe_config(self, channel: int) -> ChannelConfig:
        """A modest pulse the profile allows: ~200 us phases at ~20 Hz."""
        out = self.profile.output
        step = out.phase_width_resolution_us
        width = min(out.phase_width_max_us, max(out.phase_width_min_us, 200))
        width = ceil(width / step) * step
        rate = min(
            Fraction(out.frequency_max_hz), max(Fraction(out.frequency_min_hz), Fraction(20))
        )
        period = ceil(Fraction(1_000_000) / rate)
        resolution = out.pulse_period_resolution_us or 1
        period = ceil(period / resolution) * resolution
        shape = out.supported_shapes[0]
        widths = (width,) if shape is ShapeKind.MONOPHASIC_RECTANGULAR else (width, width)
        return ChannelConfig(channel, shape, widths, 0, period)

    def _wider(self, base: ChannelConfig) -> ChannelConfig:
        out = self.profile.output
        too_wide = out.phase_width_max_us + out.phase_width_resolution_us
        widths = tuple(too_wide for _ in base.phase_widths_us)
        period = max(base.period_us, sum(widths) * 4)
        slowest = floor(Fraction(1_000_000) / Fraction(out.frequency_min_hz))
        return ChannelConfig(base.channel, base.shape, widths, 0, min(period, slowest))

    def _faster(self, base: ChannelConfig) -> ChannelConfig:
        out = self.profile.output
        shortest = ceil(Fraction(1_000_000) / Fraction(out.frequency_max_hz))
        too_fast = shortest - (out.pulse_period_resolution_us or 1)
        return ChannelConfig(
            base.channel, base.shape, base.phase_widths_us, base.interphase_gap_us, too_fast
        )

    def _injector(self) -> _Injecting | None:
        if SIMULATOR_CAPABILITY in self.identity.capabilities and hasattr(
            self.stim, "inject_fault"
        ):
            return self.stim
        return None

    def _silence(self) -> AbstractContextManager[Any]:
        suspended = getattr(self.stim, "keepalive_suspended", None)
        return suspended() if suspended is not None else nullcontext()

    def _last_write_ns(self) -> int:
        last = getattr(self.stim, "last_write_ns", None)
        return int(last) if last else self.clock.now_ns()

    def _wait_until(self, found: Callable[[], object], deadline_ns: int) -> None:
        """Wait (on the injected clock) until ``found()`` is truthy or the deadline."""
        poll = getattr(self.stim, "poll_events", None)
        while True:
            if poll is not None:
                poll()
            if found() or self.clock.now_ns() >= deadline_ns:
                return
            self.clock.sleep_until(min(deadline_ns, self.clock.now_ns() + NS_PER_MS))


def _result(
    check_id: str, title: str, measurements: list[Measurement], *, failure: str
) -> CheckResult:
    passed = all(m.passed is not False for m in measurements)
    return CheckResult(
        id=check_id,
        title=title,
        outcome=Outcome.PASS if passed else Outcome.FAIL,
        detail="" if passed else failure,
        measurements=tuple(measurements),
    )


def _ms(ns: int) -> Decimal:
    return _round(Decimal(ns) / NS_PER_MS)


def _round(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.001"))
