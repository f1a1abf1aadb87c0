"""Static safety checks: prescription x protocol x device profile x limits -> verdict.

Pure: no I/O, no clock. Each check turns one question into a :class:`Finding` with a
code, a severity, the value, the limit, its source and a sentence saying what to
change. Checks that pass are kept too (severity ``PASS``), so a clinician sees the
figure and the limit it was held against, not just the failures.

Severities:

- ``ERROR`` blocks the session. A *device* error (the profile cannot deliver the
  protocol) is an input problem (exit code 2); any other error is a blocking finding
  (exit code 1).
- ``WARNING`` needs a person's acknowledgement before the session may start.
- ``INFO`` informs; ``PASS`` records a check that passed.

**Monotonic in amplitude, by construction.** Every amplitude-dependent check has the
form ``q(ceiling) <= limit`` where ``q`` never decreases as the ceiling rises (r.m.s.
current, energy, charge, densities, compliance voltage, the ceiling itself). Nothing
triggers on a *low* amplitude, and facts that do not depend on the amplitude (shape,
timing, electrodes, step) give the same result at every ceiling. So lowering the
ceiling can only remove errors and warnings, never add one; a property test holds
:func:`evaluate` to this.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import Any

from estim.device.profile import DeviceProfile, ElectrodeSet
from estim.errors import InputError, Problem
from estim.protocols.dose import PC_PER_UC, Dose, dose_at, significant
from estim.protocols.models import (
    CycledDuty,
    ElectrodeKind,
    Protocol,
    ShapeKind,
)
from estim.protocols.prescription import Prescription, ResolvedPrescription, resolve
from estim.safety.limits import DEFAULT_LIMITS, Limit, LimitId, Limits, rms_limit_id
from estim.units import UA_PER_MA, US_PER_S, ma_to_ua, s_to_us, ua_to_ma


class Severity(StrEnum):
    ERROR = "error"  # blocks
    WARNING = "warning"  # needs acknowledgement
    INFO = "info"
    PASS = "pass"

    @property
    def rank(self) -> int:
        return {"error": 3, "warning": 2, "info": 1, "pass": 0}[self.value]


class Category(StrEnum):
    DEVICE = "device"  # the device cannot deliver what is asked (input problem)
    STANDARD = "standard"  # a figure from a standard (IEC 60601-2-10, FDA 1999)
    PRACTICE = "practice"  # clinical and home-device practice
    PROFILE = "profile"  # static validation of a device profile


@dataclass(frozen=True, slots=True)
class Finding:
    """The result of one check: what, how much, against which limit, and what to do."""

    code: str
    severity: Severity
    category: Category
    message: str
    value: str | None = None
    limit: str | None = None
    limit_id: LimitId | None = None
    source: str | None = None
    fix: str | None = None
    field: str | None = None

    @property
    def blocks(self) -> bool:
        return self.severity is Severity.ERROR

    @property
    def title(self) -> str:
        return CHECK_TITLES.get(self.code, self.code.lower().replace("_", " "))

    def __str__(self) -> str:
        parts = [f"{self.severity.value.upper()} {self.code}: {self.message}"]
        if self.value is not None:
            parts.append(f"value {self.value}")
        if self.limit is not None:
            limit = f"limit {self.limit}"
            if self.source:
                limit += f" ({self.source})"
            parts.append(limit)
        if self.fix:
            parts.append(f"fix: {self.fix}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "title": self.title,
            "severity": self.severity.value,
            "category": self.category.value,
            "message": self.message,
            "value": self.value,
            "limit": self.limit,
            "limit_id": None if self.limit_id is None else self.limit_id.value,
            "source": self.source,
            "fix": self.fix,
            "field": self.field,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """Every check's result for one combination, and the dose it was computed on."""

    subject: str
    results: tuple[Finding, ...]
    dose: Dose | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def findings(self) -> tuple[Finding, ...]:
        """Everything but the passes, most severe first (stable within a severity)."""
        kept = [r for r in self.results if r.severity is not Severity.PASS]
        return tuple(sorted(kept, key=lambda f: -f.severity.rank))

    @property
    def errors(self) -> tuple[Finding, ...]:
        return self._of(Severity.ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return self._of(Severity.WARNING)

    @property
    def infos(self) -> tuple[Finding, ...]:
        return self._of(Severity.INFO)

    @property
    def passes(self) -> tuple[Finding, ...]:
        return self._of(Severity.PASS)

    def _of(self, severity: Severity) -> tuple[Finding, ...]:
        return tuple(r for r in self.results if r.severity is severity)

    @property
    def blocked(self) -> bool:
        return bool(self.errors)

    @property
    def needs_acknowledgement(self) -> bool:
        """Warnings a person must acknowledge before a session may start."""
        return bool(self.warnings)

    @property
    def passed(self) -> bool:
        return not self.blocked

    @property
    def exit_code(self) -> int:
        """2: the device cannot deliver it; 1: blocking findings; 0: may proceed."""
        if any(f.category is Category.DEVICE for f in self.errors):
            return 2
        return 1 if self.errors else 0

    def codes(self, *severities: Severity) -> frozenset[str]:
        wanted = severities or (Severity.ERROR, Severity.WARNING, Severity.INFO)
        return frozenset(f.code for f in self.results if f.severity in wanted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "blocked": self.blocked,
            "needs_acknowledgement": self.needs_acknowledgement,
            "exit_code": self.exit_code,
            "counts": {s.value: len(self._of(s)) for s in Severity},
            "details": self.details,
            "findings": [f.to_dict() for f in self.findings],
            "passes": [f.to_dict() for f in self.passes],
            "dose": None if self.dose is None else self.dose.to_dict(),
        }


# --- formatting of values (display only; comparisons are exact) ---------------------


def _ma(value_ua: int | Fraction) -> str:
    return f"{ua_to_ma(value_ua).normalize():f} mA"


def _rms_ma(mean_square_ua2: Fraction) -> str:
    return f"{significant(math.sqrt(mean_square_ua2) / UA_PER_MA)} mA rms"


def _floor_to(value_ua: int, resolution_ua: int) -> int:
    """A suggested ceiling, rounded down to what the device can set."""
    return value_ua - value_ua % resolution_ua if resolution_ua > 0 else value_ua


def _seconds(value_us: int) -> str:
    return f"{Fraction(value_us, US_PER_S).__float__():g} s"


def _hz(rate: Fraction) -> str:
    return f"{significant(rate, 4)} Hz"


CHECK_TITLES: dict[str, str] = {
    "DEVICE_CHANNELS": "channels",
    "DEVICE_SHAPE": "pulse shape",
    "DEVICE_LONG_PULSE": "long pulses",
    "DEVICE_PHASE_WIDTH": "phase width range",
    "DEVICE_PHASE_WIDTH_RESOLUTION": "phase width steps",
    "DEVICE_RATE": "pulse rate range",
    "DEVICE_RATE_RESOLUTION": "pulse period steps",
    "DEVICE_AMPLITUDE": "amplitude range",
    "DEVICE_AMPLITUDE_RESOLUTION": "amplitude steps",
    "DEVICE_STEP_RESOLUTION": "titration step vs device steps",
    "DEVICE_ELECTRODE": "electrode kind",
    "DEVICE_ELECTRODE_AREA": "electrode contact area",
    "DEVICE_COMPLIANCE": "compliance voltage",
    "DEVICE_NO_CURRENT_MEASUREMENT": "measures current",
    "DEVICE_NO_IMPEDANCE_MEASUREMENT": "measures impedance",
    "IEC_RMS_CURRENT": "r.m.s. current",
    "IEC_ENERGY_PER_PULSE": "energy per pulse",
    "IEC_DC_COMPONENT": "DC component",
    "CHARGE_BALANCE": "charge balance",
    "IEC_CURRENT_DENSITY": "current density",
    "FDA_POWER_DENSITY": "power density",
    "LONG_PULSE_REGIME": "long-pulse figures",
    "FDA_MIN_BURST": "burst length",
    "FDA_MIN_REST": "rest length",
    "RAMP_UP": "ramp up",
    "RAMP_DOWN": "ramp down",
    "SESSION_MAX": "session length",
    "SESSION_HOME_AUTO_OFF": "home auto-off",
    "SESSIONS_PER_DAY": "sessions per day",
    "TITRATION_STEP": "titration step",
    "LIMIT_OVERRIDDEN": "limit overridden",
    "PROFILE_OPEN_CIRCUIT_VOLTAGE": "open-circuit voltage",
    "PROFILE_RMS_CAPABILITY": "hardware r.m.s. capability",
    "PROFILE_ENERGY_CAPABILITY": "hardware energy capability",
    "PROFILE_PROBE_AMPLITUDE": "probe amplitude",
    "PROFILE_MINIMUM_OUTPUT": "minimum output step",
    "PROFILE_WATCHDOG": "watchdog timeout",
    "PROFILE_DEVICE_RAMPS": "device-side ramps",
    "PROFILE_TOLERANCE_PERCENT": "current tolerance (%)",
    "PROFILE_TOLERANCE_MA": "current tolerance (mA)",
    "PROFILE_LEAKAGE": "leakage (normal)",
    "PROFILE_LEAKAGE_SINGLE_FAULT": "leakage (single fault)",
    "PROFILE_COMPLIANCE_REACH": "compliance reach",
}
"""A short human title for every finding code (tables, docs)."""


# --- the context every check reads ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckContext:
    """Everything a prescription check may look at; built once by :func:`evaluate`."""

    protocol: Protocol  # effective (adjustments applied)
    ceiling_ua: int
    step_ua: int
    profile: DeviceProfile
    limits: Limits
    electrodes: tuple[ElectrodeSet, ...]
    dose: Dose

    @property
    def shape_supported(self) -> bool:
        return self.protocol.pulse.shape.kind in self.profile.output.supported_shapes

    @property
    def long_pulse_exempt(self) -> bool:
        """A long-pulse protocol on a device built for it: IEC figures become warnings."""
        return (
            self.limits.long_pulse_as_warnings
            and self.protocol.pulse.shape.is_long_pulse
            and self.profile.output.long_pulse_capable
            and self.shape_supported
        )

    def limit(self, limit_id: LimitId) -> Limit:
        return self.limits.get(limit_id)

    def suggest(self, ceiling_ua: int) -> int:
        """A ceiling to suggest in a fix: at most ``ceiling_ua``, on the device's grid."""
        return _floor_to(max(ceiling_ua, 0), self.profile.output.amplitude_resolution_ua)


Check = Callable[[CheckContext], Iterator[Finding]]


def _finding(
    code: str,
    ok: bool,
    failing: Severity,
    category: Category,
    message: str,
    *,
    fix: str,
    passed: str | None = None,
    limit: Limit | None = None,
    limit_text: str | None = None,
    value: str | None = None,
    field: str | None = None,
) -> Finding:
    """A finding: ``PASS`` when ``ok`` (with the ``passed`` message), else ``failing``."""
    return Finding(
        code=code,
        severity=Severity.PASS if ok else failing,
        category=category,
        message=(passed or message) if ok else message,
        value=value,
        limit=limit_text if limit_text is not None else (None if limit is None else f"<= {limit}"),
        limit_id=None if limit is None else limit.id,
        source=None if limit is None else limit.citation,
        fix=None if ok else fix,
        field=field,
    )


# --- device capability ---------------------------------------------------------------


def _device_name(ctx: CheckContext) -> str:
    return f"{ctx.profile.identity.manufacturer} {ctx.profile.identity.model}"


def check_channels(ctx: CheckContext) -> Iterator[Finding]:
    needed, has = ctx.protocol.channels, ctx.profile.output.channels
    yield _finding(
        "DEVICE_CHANNELS",
        needed <= has,
        Severity.ERROR,
        Category.DEVICE,
        f"the protocol needs {needed} channel(s); the device has {has}",
        passed=f"{needed} channel(s) needed, device has {has}",
        value=str(needed),
        limit_text=f"<= {has} channels ({_device_name(ctx)})",
        fix="use a device with more channels, or a protocol with fewer",
        field="channels",
    )


def check_shape(ctx: CheckContext) -> Iterator[Finding]:
    shape = ctx.protocol.pulse.shape
    output = ctx.profile.output
    supported = ", ".join(s.value for s in output.supported_shapes)
    if shape.is_long_pulse and not output.long_pulse_capable:
        yield Finding(
            "DEVICE_LONG_PULSE",
            Severity.ERROR,
            Category.DEVICE,
            f"the protocol uses long pulses ({shape.max_phase_width_us / 1000:g} ms per "
            "phase) for denervated muscle; this device declares no long-pulse shape, "
            "so it cannot deliver them and its own hardware limits were not made for them",
            value=shape.kind.value,
            limit=f"one of: {supported}",
            fix="use a long-pulse profile (one that lists long_biphasic_rectangular or "
            "long_biphasic_triangular, such as estim-lp1)",
            field="pulse.shape.kind",
        )
        return
    yield _finding(
        "DEVICE_SHAPE",
        ctx.shape_supported,
        Severity.ERROR,
        Category.DEVICE,
        f"pulse shape {shape.kind.value} is not supported by this device",
        passed=f"pulse shape {shape.kind.value} supported",
        value=shape.kind.value,
        limit_text=f"one of: {supported}",
        fix="choose a protocol with a supported shape, or a device that supports this one",
        field="pulse.shape.kind",
    )


def _phase_width_fields(ctx: CheckContext) -> list[tuple[str, int]]:
    shape = ctx.protocol.pulse.shape
    if shape.kind is ShapeKind.ASYMMETRIC_BIPHASIC:
        lead, recovery = shape.phases
        return [
            ("pulse.shape.lead_phase_width_us", lead.width_us),
            ("pulse.shape.recovery_phase_width_us", recovery.width_us),
        ]
    return [("pulse.shape.phase_width_us", shape.phases[0].width_us)]


def check_phase_widths(ctx: CheckContext) -> Iterator[Finding]:
    output = ctx.profile.output
    lo, hi, res = (
        output.phase_width_min_us,
        output.phase_width_max_us,
        output.phase_width_resolution_us,
    )
    for field_name, width in _phase_width_fields(ctx):
        yield _finding(
            "DEVICE_PHASE_WIDTH",
            lo <= width <= hi,
            Severity.ERROR,
            Category.DEVICE,
            f"phase width {width} us is outside the device's range",
            passed=f"phase width {width} us within the device's range",
            value=f"{width} us",
            limit_text=f"{lo}-{hi} us",
            fix=f"use a phase width between {lo} and {hi} us, or another device",
            field=field_name,
        )
        yield _finding(
            "DEVICE_PHASE_WIDTH_RESOLUTION",
            width % res == 0,
            Severity.ERROR,
            Category.DEVICE,
            f"phase width {width} us is not a whole number of the device's {res} us steps "
            "(estim refuses rather than rounds)",
            passed=f"phase width {width} us on the device's {res} us grid",
            value=f"{width} us",
            limit_text=f"multiple of {res} us",
            fix=f"use {width - width % res} or {width - width % res + res} us",
            field=field_name,
        )


def check_rate(ctx: CheckContext) -> Iterator[Finding]:
    train = ctx.protocol.pulse
    output = ctx.profile.output
    rate = train.rate_hz
    lo, hi = Fraction(output.frequency_min_hz), Fraction(output.frequency_max_hz)
    field_name = (
        "pulse.frequency_hz" if train.frequency_hz is not None else "pulse.pulse_interval_ms"
    )
    yield _finding(
        "DEVICE_RATE",
        lo <= rate <= hi,
        Severity.ERROR,
        Category.DEVICE,
        f"pulse rate {_hz(rate)} is outside the device's range",
        passed=f"pulse rate {_hz(rate)} within the device's range",
        value=_hz(rate),
        limit_text=f"{output.frequency_min_hz}-{output.frequency_max_hz} Hz",
        fix=f"choose a rate between {output.frequency_min_hz} and {output.frequency_max_hz} Hz",
        field=field_name,
    )
    resolution = output.pulse_period_resolution_us or 1
    period = train.period_us
    delivered = math.ceil(period / resolution) * resolution
    if delivered != period:
        yield Finding(
            "DEVICE_RATE_RESOLUTION",
            Severity.INFO,
            Category.DEVICE,
            f"the period {significant(period, 7)} us is delivered as {delivered} us "
            f"({significant(Fraction(US_PER_S, delivered), 6)} Hz): rounded up, never faster "
            "than prescribed",
            value=f"{significant(period, 7)} us",
            limit=f"multiple of {resolution} us",
            field=field_name,
        )


def check_amplitude(ctx: CheckContext) -> Iterator[Finding]:
    output = ctx.profile.output
    top, res = output.amplitude_max_ua, output.amplitude_resolution_ua
    yield _finding(
        "DEVICE_AMPLITUDE",
        ctx.ceiling_ua <= top,
        Severity.ERROR,
        Category.DEVICE,
        f"the amplitude ceiling {_ma(ctx.ceiling_ua)} is above the device's maximum",
        passed=f"ceiling {_ma(ctx.ceiling_ua)} within the device's maximum",
        value=_ma(ctx.ceiling_ua),
        limit_text=f"<= {_ma(top)}",
        fix=f"prescribe at most {_ma(top)}, or use a device with a higher output",
        field="max_amplitude_ma",
    )
    if ctx.ceiling_ua % res:
        reachable = ctx.ceiling_ua - ctx.ceiling_ua % res
        yield Finding(
            "DEVICE_AMPLITUDE_RESOLUTION",
            Severity.INFO,
            Category.DEVICE,
            f"the device steps in {_ma(res)}; the highest amplitude at or below the "
            f"ceiling is {_ma(reachable)}",
            value=_ma(ctx.ceiling_ua),
            limit=f"multiple of {_ma(res)}",
            field="max_amplitude_ma",
        )
    yield _finding(
        "DEVICE_STEP_RESOLUTION",
        ctx.step_ua % res == 0,
        Severity.ERROR,
        Category.DEVICE,
        f"the titration step {_ma(ctx.step_ua)} is not a whole number of the device's "
        f"{_ma(res)} steps",
        passed=f"titration step {_ma(ctx.step_ua)} on the device's {_ma(res)} grid",
        value=_ma(ctx.step_ua),
        limit_text=f"multiple of {_ma(res)}",
        fix=f"use a titration step that is a multiple of {_ma(res)}",
        field="titration_step_ma",
    )


def check_electrodes(ctx: CheckContext) -> Iterator[Finding]:
    requirement = ctx.protocol.electrode
    kinds = ", ".join(k.value for k in requirement.kinds)
    if not ctx.electrodes:
        have = ", ".join(sorted({e.kind.value for e in ctx.profile.electrodes}))
        yield Finding(
            "DEVICE_ELECTRODE",
            Severity.ERROR,
            Category.DEVICE,
            f"the protocol needs electrodes of kind {kinds}; the device profile lists none",
            value=have,
            limit=kinds,
            fix="use a device profile that lists a suitable probe or electrode set",
            field="electrode.kinds",
        )
        return
    smallest = min(e.smallest_contact_cm2 for e in ctx.electrodes)
    need = requirement.min_contact_area_cm2
    yield _finding(
        "DEVICE_ELECTRODE_AREA",
        smallest >= need,
        Severity.ERROR,
        Category.DEVICE,
        f"the smallest {kinds} contact on this device is {smallest} cm2, smaller than "
        "the protocol requires",
        passed=f"smallest {kinds} contact {smallest} cm2 meets the protocol's minimum",
        value=f"{smallest} cm2",
        limit_text=f">= {need} cm2",
        fix="use electrodes with larger contacts (and remove the small set from the "
        "profile), or a protocol meant for them",
        field="electrode.min_contact_area_cm2",
    )


def check_compliance(ctx: CheckContext) -> Iterator[Finding]:
    impedance = ctx.profile.impedance.good_max_ohm
    compliance = ctx.profile.output.compliance_voltage_v
    # uA x ohm = uV; compare against the compliance in uV.
    needed_uv = ctx.ceiling_ua * Fraction(impedance)
    available_uv = Fraction(compliance) * 10**6
    reachable_ua = math.floor(available_uv / Fraction(impedance))
    yield _finding(
        "DEVICE_COMPLIANCE",
        needed_uv <= available_uv,
        Severity.WARNING,
        Category.DEVICE,
        f"driving {_ma(ctx.ceiling_ua)} through a {impedance} ohm contact (the top of the "
        f"good range) needs {significant(needed_uv / 10**6)} V, more than the device's "
        "compliance: the amplitude would fall short and the device may report a fault",
        passed=f"{_ma(ctx.ceiling_ua)} into {impedance} ohm needs "
        f"{significant(needed_uv / 10**6)} V, within compliance",
        value=f"{significant(needed_uv / 10**6)} V",
        limit_text=f"<= {compliance} V compliance",
        fix=f"keep the ceiling at or below {_ma(ctx.suggest(reachable_ua))}, or check the contact "
        "impedance before raising the amplitude",
        field="max_amplitude_ma",
    )


def check_measurement(ctx: CheckContext) -> Iterator[Finding]:
    yield from _measurement_findings(ctx.profile)


def _measurement_findings(profile: DeviceProfile) -> Iterator[Finding]:
    measurement = profile.measurement
    yield _finding(
        "DEVICE_NO_CURRENT_MEASUREMENT",
        measurement.measures_current,
        Severity.WARNING,
        Category.DEVICE,
        "the device does not report measured current: the measured-vs-commanded current "
        "interlock cannot run, and over-current is detected only by the device itself",
        passed="the device reports measured current (measured-vs-commanded interlock runs)",
        value="yes" if measurement.measures_current else "no",
        limit_text="measured current readback",
        fix="acknowledge that this interlock is off for this device, or use a device "
        "that measures its output current",
        field="measurement.measures_current",
    )
    yield _finding(
        "DEVICE_NO_IMPEDANCE_MEASUREMENT",
        measurement.measures_impedance,
        Severity.WARNING,
        Category.DEVICE,
        "the device does not report load impedance: the electrode-impedance preflight and "
        "the open-circuit interlock cannot run; only the device's own electrode "
        "detection guards the contact",
        passed="the device reports impedance (preflight and open-circuit interlock run)",
        value="yes" if measurement.measures_impedance else "no",
        limit_text="impedance readback",
        fix="check electrode contact by hand before each session and acknowledge, or use "
        "a device that measures impedance",
        field="measurement.measures_impedance",
    )


# --- standards -------------------------------------------------------------------------


def _exempt_note(ctx: CheckContext) -> str:
    return (
        " (a warning, not an error: long-pulse protocol on a device that declares "
        "long-pulse capability)"
        if ctx.long_pulse_exempt
        else ""
    )


def check_rms_current(ctx: CheckContext) -> Iterator[Finding]:
    dose = ctx.dose
    limit = ctx.limit(rms_limit_id(dose.rate_hz))
    limit_ua = ma_to_ua(limit.figure)
    ok = dose.mean_square_ua2 <= limit_ua * limit_ua
    severity = Severity.WARNING if ctx.long_pulse_exempt else Severity.ERROR
    rms = _rms_ma(dose.mean_square_ua2)
    # I_rms = I_ceiling x sqrt(mean square at 1 uA): the ceiling that meets the limit.
    unit_ms = ctx.protocol.pulse.shape.square_integral(1) / dose.period_us
    safe_ua = math.floor(limit_ua / math.sqrt(unit_ms)) if unit_ms else ctx.ceiling_ua
    yield _finding(
        "IEC_RMS_CURRENT",
        ok,
        severity,
        Category.STANDARD,
        f"r.m.s. current at the ceiling is {rms} into 500 ohm at {_hz(dose.rate_hz)}, above "
        f"the IEC limit{_exempt_note(ctx)}",
        passed=f"r.m.s. current at the ceiling {rms} at {_hz(dose.rate_hz)}",
        value=rms,
        limit=limit,
        fix=f"lower the ceiling to {_ma(ctx.suggest(safe_ua))} or below, or shorten the phases / "
        "lower the rate",
        field="max_amplitude_ma",
    )


def check_energy(ctx: CheckContext) -> Iterator[Finding]:
    dose = ctx.dose
    limit = ctx.limit(LimitId.IEC_ENERGY_PER_PULSE)
    limit_uj = Fraction(limit.figure) * 1000
    ok = dose.energy_per_pulse_uj <= limit_uj
    severity = Severity.WARNING if ctx.long_pulse_exempt else Severity.ERROR
    energy = f"{significant(dose.energy_per_pulse_uj / 1000)} mJ"
    ratio = limit_uj / dose.energy_per_pulse_uj if dose.energy_per_pulse_uj else Fraction(1)
    safe_ua = math.floor(ctx.ceiling_ua * math.sqrt(ratio))
    yield _finding(
        "IEC_ENERGY_PER_PULSE",
        ok,
        severity,
        Category.STANDARD,
        f"energy per pulse at the ceiling is {energy} into 500 ohm, above the IEC "
        f"limit{_exempt_note(ctx)}",
        passed=f"energy per pulse at the ceiling {energy} into 500 ohm",
        value=energy,
        limit=limit,
        fix=f"lower the ceiling to {_ma(ctx.suggest(safe_ua))} or below, or shorten the phases",
        field="max_amplitude_ma",
    )


def check_charge(ctx: CheckContext) -> Iterator[Finding]:
    dose = ctx.dose
    shape = ctx.protocol.pulse.shape
    limit = ctx.limit(LimitId.IEC_DC_COMPONENT)
    dc = abs(dose.dc_component_ua)
    yield _finding(
        "IEC_DC_COMPONENT",
        dc <= ma_to_ua(limit.figure),
        Severity.ERROR,
        Category.STANDARD,
        f"the mean (DC) current at the ceiling is {significant(dc / UA_PER_MA)} mA, above "
        "the IEC limit",
        passed=f"mean (DC) current at the ceiling {significant(dc / UA_PER_MA)} mA",
        value=f"{significant(dc / UA_PER_MA)} mA",
        limit=limit,
        fix="use a charge-balanced biphasic pulse, or lower the ceiling",
        field="pulse.shape.kind",
    )
    balanced = shape.net_charge_pc(1) == 0  # amplitude-independent by design
    net_uc = significant(dose.net_charge_pc / PC_PER_UC)
    yield Finding(
        "CHARGE_BALANCE",
        Severity.PASS if balanced else Severity.WARNING,
        Category.STANDARD,
        (
            "charge-balanced pulse: zero net charge per pulse"
            if balanced
            else f"the pulse carries net charge ({net_uc} uC per pulse at the ceiling): "
            "a DC component moves ions and irritates skin and mucosa"
        ),
        value=f"{net_uc} uC per pulse",
        limit="0 uC per pulse (charge-balanced)",
        source="charge balance and FDA 1999 (declare net charge) [C2]",
        fix=None if balanced else "use a symmetric or asymmetric biphasic pulse",
        field="pulse.shape.kind",
    )


def check_current_density(ctx: CheckContext) -> Iterator[Finding]:
    dose = ctx.dose
    density_sq = dose.current_density_sq
    if density_sq is None:
        return  # no suitable electrode: DEVICE_ELECTRODE already blocks
    limit = ctx.limit(LimitId.IEC_CURRENT_DENSITY_ATTENTION)
    limit_ua = Fraction(limit.figure) * UA_PER_MA
    density = f"{significant(math.sqrt(density_sq) / UA_PER_MA)} mA rms/cm2"
    yield _finding(
        "IEC_CURRENT_DENSITY",
        density_sq <= limit_ua * limit_ua,
        Severity.WARNING,
        Category.STANDARD,
        f"current density at the ceiling is {density} on the smallest contact "
        f"({dose.contact_area_cm2} cm2): the operator must pay special attention; reduced "
        "sensation after nerve damage means the patient may not feel a burn",
        passed=f"current density at the ceiling {density} on {dose.contact_area_cm2} cm2",
        value=density,
        limit=limit,
        fix="lower the ceiling, or use electrodes with larger contacts",
        field="max_amplitude_ma",
    )


def check_power_density(ctx: CheckContext) -> Iterator[Finding]:
    dose = ctx.dose
    power = dose.power_density_w_per_cm2
    if power is None:
        return
    limit = ctx.limit(LimitId.FDA_POWER_DENSITY)
    text = f"{significant(power)} W/cm2"
    yield _finding(
        "FDA_POWER_DENSITY",
        power <= Fraction(limit.figure),
        Severity.ERROR,
        Category.STANDARD,
        f"average power density at the ceiling is {text} on the smallest contact "
        f"({dose.contact_area_cm2} cm2), above the FDA limit",
        passed=f"average power density at the ceiling {text} on {dose.contact_area_cm2} cm2",
        value=text,
        limit=limit,
        fix="lower the ceiling, shorten the phases or lower the rate, or use larger contacts",
        field="max_amplitude_ma",
    )


def check_long_pulse_report(ctx: CheckContext) -> Iterator[Finding]:
    shape = ctx.protocol.pulse.shape
    if not shape.is_long_pulse:
        return
    dose = ctx.dose
    density = dose.current_density_ma_per_cm2
    charge_density = dose.charge_density_uc_per_cm2
    parts = [
        f"r.m.s. current {_rms_ma(dose.mean_square_ua2)}",
        f"charge per phase {significant(dose.max_phase_charge_pc / PC_PER_UC)} uC",
    ]
    if density is not None and charge_density is not None:
        parts.append(f"current density {significant(density)} mA rms/cm2")
        parts.append(f"charge density {significant(charge_density)} uC/cm2 per phase")
    yield Finding(
        "LONG_PULSE_REGIME",
        Severity.INFO,
        Category.STANDARD,
        "long-pulse protocol at the ceiling: " + ", ".join(parts) + " (the Shannon "
        "charge-density criterion is not validated for skin or probe electrodes)",
        value=f"{shape.max_phase_width_us / 1000:g} ms per phase",
        source="denervated-muscle regimes (facts sheet) [I]",
        field="pulse.shape",
    )


# --- practice ---------------------------------------------------------------------------


def check_burst_and_rest(ctx: CheckContext) -> Iterator[Finding]:
    cycle = ctx.protocol.cycle
    if not isinstance(cycle, CycledDuty):
        return  # continuous: one burst, no rests; the FDA figure is for muscle work
    burst_limit = ctx.limit(LimitId.FDA_MIN_BURST)
    rest_limit = ctx.limit(LimitId.FDA_MIN_REST)
    burst_us, rest_us = cycle.burst_us, s_to_us(cycle.off_s)
    yield _finding(
        "FDA_MIN_BURST",
        burst_us >= s_to_us(burst_limit.figure),
        Severity.WARNING,
        Category.PRACTICE,
        f"each burst stimulates for {_seconds(burst_us)}, too short for effective muscle work",
        passed=f"burst of {_seconds(burst_us)}",
        value=_seconds(burst_us),
        limit=burst_limit,
        limit_text=f">= {burst_limit}",
        fix="lengthen ramp up + on + ramp down to at least 1 s",
        field="cycle.on_s",
    )
    yield _finding(
        "FDA_MIN_REST",
        rest_us >= s_to_us(rest_limit.figure),
        Severity.WARNING,
        Category.PRACTICE,
        f"the rest between bursts is {_seconds(rest_us)}, too short for the muscle to recover",
        passed=f"rest of {_seconds(rest_us)} between bursts",
        value=_seconds(rest_us),
        limit=rest_limit,
        limit_text=f">= {rest_limit}",
        fix="lengthen off_s to at least 1 s",
        field="cycle.off_s",
    )


def check_ramps(ctx: CheckContext) -> Iterator[Finding]:
    cycle = ctx.protocol.cycle
    limit = ctx.limit(LimitId.RAMP_MIN)
    least = s_to_us(limit.figure)
    up, down = s_to_us(cycle.ramp_up_s), s_to_us(cycle.ramp_down_s)
    yield _finding(
        "RAMP_UP",
        up > 0 and up >= least,
        Severity.ERROR,
        Category.PRACTICE,
        f"ramp up of {_seconds(up)}: output must start at zero and ramp up",
        passed=f"ramp up of {_seconds(up)}",
        value=_seconds(up),
        limit=limit,
        limit_text=f">= {limit}",
        fix=f"set cycle.ramp_up_s to at least {limit.figure} s (1-2 s is usual)",
        field="cycle.ramp_up_s",
    )
    yield _finding(
        "RAMP_DOWN",
        down > 0 and down >= least,
        Severity.WARNING,
        Category.PRACTICE,
        f"ramp down of {_seconds(down)}: the contraction ends abruptly",
        passed=f"ramp down of {_seconds(down)}",
        value=_seconds(down),
        limit=limit,
        limit_text=f">= {limit}",
        fix=f"set cycle.ramp_down_s to at least {limit.figure} s",
        field="cycle.ramp_down_s",
    )


def check_session(ctx: CheckContext) -> Iterator[Finding]:
    protocol = ctx.protocol
    minutes = protocol.session_duration_min
    cap = ctx.limit(LimitId.SESSION_MAX)
    home = ctx.limit(LimitId.SESSION_HOME_AUTO_OFF)
    per_day = ctx.limit(LimitId.SESSIONS_PER_DAY_MAX)
    yield _finding(
        "SESSION_MAX",
        minutes <= cap.figure,
        Severity.ERROR,
        Category.PRACTICE,
        f"a session of {minutes} min is longer than the session cap",
        passed=f"session of {minutes} min",
        value=f"{minutes} min",
        limit=cap,
        limit_text=f"<= {cap}",
        fix=f"shorten session_duration_min to at most {cap.figure}",
        field="session_duration_min",
    )
    yield _finding(
        "SESSION_HOME_AUTO_OFF",
        minutes <= home.figure,
        Severity.WARNING,
        Category.PRACTICE,
        f"a session of {minutes} min runs past the {home.figure} min at which home "
        "devices switch off: confirm it is supervised",
        passed=f"session of {minutes} min within the home-device auto-off",
        value=f"{minutes} min",
        limit=home,
        limit_text=f"<= {home}",
        fix=f"shorten the session to {home.figure} min, or acknowledge supervised use",
        field="session_duration_min",
    )
    yield _finding(
        "SESSIONS_PER_DAY",
        protocol.sessions_per_day <= per_day.figure,
        Severity.WARNING,
        Category.PRACTICE,
        f"{protocol.sessions_per_day} sessions a day is more than home practice advises",
        passed=f"{protocol.sessions_per_day} session(s) a day",
        value=str(protocol.sessions_per_day),
        limit=per_day,
        limit_text=f"<= {per_day}",
        fix="prescribe at most one session a day, or acknowledge the clinical reason",
        field="sessions_per_day",
    )


def check_titration(ctx: CheckContext) -> Iterator[Finding]:
    limit = ctx.limit(LimitId.TITRATION_STEP_MAX)
    yield _finding(
        "TITRATION_STEP",
        ctx.step_ua <= ma_to_ua(limit.figure),
        Severity.ERROR,
        Category.PRACTICE,
        f"titration step of {_ma(ctx.step_ua)} per press is too coarse",
        passed=f"titration step of {_ma(ctx.step_ua)} per press",
        value=_ma(ctx.step_ua),
        limit=limit,
        limit_text=f"<= {limit}",
        fix=f"use a titration step of at most {limit.figure} mA (0.1-1 mA is usual)",
        field="titration_step_ma",
    )


def check_overrides(ctx: CheckContext) -> Iterator[Finding]:
    yield from _override_findings(ctx.limits)


def _override_findings(limits: Limits) -> Iterator[Finding]:
    for limit in limits.overrides():
        default = DEFAULT_LIMITS.get(limit.id)
        yield Finding(
            "LIMIT_OVERRIDDEN",
            Severity.INFO,
            Category.STANDARD,
            f"limit {limit.id.value} is set to {limit} instead of the default {default}",
            value=str(limit),
            limit=f"default {default}",
            limit_id=limit.id,
            source=limit.citation,
            field=limit.field,
        )


PRESCRIPTION_CHECKS: tuple[Check, ...] = (
    check_channels,
    check_shape,
    check_phase_widths,
    check_rate,
    check_amplitude,
    check_electrodes,
    check_compliance,
    check_measurement,
    check_rms_current,
    check_energy,
    check_charge,
    check_current_density,
    check_power_density,
    check_long_pulse_report,
    check_burst_and_rest,
    check_ramps,
    check_session,
    check_titration,
    check_overrides,
)
"""Every check :func:`evaluate` runs, in the order findings are listed."""


def matching_electrodes(protocol: Protocol, profile: DeviceProfile) -> tuple[ElectrodeSet, ...]:
    """The profile's electrode sets of a kind the protocol allows."""
    kinds: tuple[ElectrodeKind, ...] = protocol.electrode.kinds
    return profile.electrodes_of(kinds)


def evaluate(
    protocol: Protocol,
    ceiling_ua: int,
    step_ua: int,
    profile: DeviceProfile,
    limits: Limits = DEFAULT_LIMITS,
) -> Verdict:
    """Run every check on ``protocol`` (already effective) at ``ceiling_ua``.

    The core of :func:`check`; exposed so that properties can vary the ceiling alone.
    """
    if ceiling_ua < 0 or step_ua <= 0:
        raise ValueError(f"need ceiling_ua >= 0 and step_ua > 0, got {ceiling_ua}, {step_ua}")
    electrodes = matching_electrodes(protocol, profile)
    areas = [area for e in electrodes for area in e.contact_areas_cm2]
    dose = dose_at(protocol, ceiling_ua, areas)
    ctx = CheckContext(protocol, ceiling_ua, step_ua, profile, limits, electrodes, dose)
    results = tuple(finding for check_fn in PRESCRIPTION_CHECKS for finding in check_fn(ctx))
    subject = (
        f"{protocol.id} v{protocol.version} at {_ma(ceiling_ua)} on "
        f"{profile.identity.manufacturer} {profile.identity.model}"
    )
    details = {
        "protocol": {
            "id": protocol.id,
            "version": protocol.version,
            "sha256": protocol.content_hash,
        },
        "profile": {
            "manufacturer": profile.identity.manufacturer,
            "model": profile.identity.model,
            "sha256": profile.sha256,
        },
        "ceiling_ma": f"{ua_to_ma(ceiling_ua).normalize():f}",
        "titration_step_ma": f"{ua_to_ma(step_ua).normalize():f}",
        "limits_overridden": [limit.id.value for limit in limits.overrides()],
    }
    return Verdict(subject, results, dose, details)


def check(
    prescription: Prescription | ResolvedPrescription | None,
    protocol: Protocol,
    profile: DeviceProfile,
    limits: Limits = DEFAULT_LIMITS,
) -> Verdict:
    """Check a prescription (or, with None, the protocol at its own ceiling) on a device.

    A :class:`Prescription` is resolved against ``protocol`` first; one that does not
    fit (other protocol, changed content, ceiling above the protocol's, adjustments
    outside the declared ranges) raises :class:`~estim.errors.InputError`.
    """
    if prescription is None:
        amplitude = protocol.amplitude
        return evaluate(
            protocol, amplitude.ceiling_ua, amplitude.titration_step_ua, profile, limits
        )
    if isinstance(prescription, Prescription):
        resolved = resolve(prescription, protocol)
    else:
        resolved = prescription
        if resolved.library_protocol.content_hash != protocol.content_hash:
            raise InputError(
                "the resolved prescription was made against another protocol",
                [
                    Problem(
                        "protocol",
                        "resolved prescription and protocol differ",
                        value=resolved.library_protocol.id,
                        limit=protocol.id,
                        fix="resolve the prescription against the protocol you check",
                    )
                ],
            )
    return evaluate(resolved.protocol, resolved.ceiling_ua, resolved.step_ua, profile, limits)


# --- static profile validation ----------------------------------------------------------


def _profile_checks(profile: DeviceProfile, limits: Limits) -> Iterator[Finding]:
    output = profile.output
    cat = Category.PROFILE

    ocv = limits.get(LimitId.IEC_OPEN_CIRCUIT_VOLTAGE)
    yield _finding(
        "PROFILE_OPEN_CIRCUIT_VOLTAGE",
        output.compliance_voltage_v <= ocv.figure,
        Severity.ERROR,
        cat,
        f"compliance voltage {output.compliance_voltage_v} V is above the open-circuit "
        "voltage limit",
        passed=f"compliance voltage {output.compliance_voltage_v} V",
        value=f"{output.compliance_voltage_v} V",
        limit=ocv,
        limit_text=f"<= {ocv}",
        fix="this device is outside IEC 60601-2-10; do not use it for patients",
        field="output.compliance_voltage_v",
    )

    # Worst case the hardware could deliver into the 500 ohm reference load: the
    # amplitude is capped by the compliance voltage, every phase at full amplitude.
    load = limits.get(LimitId.IEC_REFERENCE_LOAD).figure
    compliance_ua = Fraction(output.compliance_voltage_v) * 10**6 / Fraction(load)
    peak_ua = min(output.amplitude_max_ua, math.floor(compliance_ua))
    phases = 1 if set(output.supported_shapes) == {ShapeKind.MONOPHASIC_RECTANGULAR} else 2
    duty = min(
        Fraction(1),
        Fraction(phases * output.phase_width_max_us) * Fraction(output.frequency_max_hz) / US_PER_S,
    )
    mean_square = Fraction(peak_ua) ** 2 * duty
    rms_limit = limits.get(rms_limit_id(Fraction(output.frequency_max_hz)))
    rms_limit_ua = ma_to_ua(rms_limit.figure)
    yield _finding(
        "PROFILE_RMS_CAPABILITY",
        mean_square <= rms_limit_ua * rms_limit_ua,
        Severity.WARNING,
        cat,
        f"at its maximum settings the hardware can deliver {_rms_ma(mean_square)} into "
        f"{load} ohm, above the IEC limit: only estim's checks keep prescriptions within "
        "it (no independent hardware limit; IEC 62304 class C)",
        passed=f"at its maximum settings the hardware delivers at most {_rms_ma(mean_square)}",
        value=_rms_ma(mean_square),
        limit=rms_limit,
        limit_text=f"<= {rms_limit}",
        fix="record the device's own hardware r.m.s./energy trip in its documentation, or "
        "restrict its output range in the profile",
        field="output.amplitude_max_ma",
    )
    energy_uj = (
        Fraction(peak_ua) ** 2 * phases * output.phase_width_max_us * Fraction(load) / 10**12
    )
    energy_limit = limits.get(LimitId.IEC_ENERGY_PER_PULSE)
    yield _finding(
        "PROFILE_ENERGY_CAPABILITY",
        energy_uj <= Fraction(energy_limit.figure) * 1000,
        Severity.WARNING,
        cat,
        f"at its maximum settings one pulse can carry {significant(energy_uj / 1000)} mJ "
        "into 500 ohm, above the IEC limit: only estim's checks keep prescriptions within it",
        passed=f"at its maximum settings one pulse carries at most "
        f"{significant(energy_uj / 1000)} mJ into 500 ohm",
        value=f"{significant(energy_uj / 1000)} mJ",
        limit=energy_limit,
        limit_text=f"<= {energy_limit}",
        fix="record the device's own hardware energy trip, or restrict its output range",
        field="output.phase_width_max_us",
    )

    probes = [e for e in profile.electrodes if e.kind is not ElectrodeKind.SURFACE]
    if probes:
        probe_limit = limits.get(LimitId.PROBE_AMPLITUDE_MAX)
        yield _finding(
            "PROFILE_PROBE_AMPLITUDE",
            output.amplitude_max_ma <= probe_limit.figure,
            Severity.WARNING,
            cat,
            f"the device reaches {output.amplitude_max_ma} mA and lists an internal probe; "
            "probe stimulators usually stop at 90-100 mA",
            passed=f"maximum {output.amplitude_max_ma} mA with internal probes",
            value=f"{output.amplitude_max_ma} mA",
            limit=probe_limit,
            limit_text=f"<= {probe_limit}",
            fix="keep probe prescriptions well below the device maximum (the protocol "
            "ceilings do), or list probes only on a device with a lower output",
            field="output.amplitude_max_ma",
        )

    min_output = limits.get(LimitId.IEC_MINIMUM_OUTPUT)
    share = Fraction(output.amplitude_resolution_ma) / Fraction(output.amplitude_max_ma) * 100
    yield _finding(
        "PROFILE_MINIMUM_OUTPUT",
        share <= Fraction(min_output.figure),
        Severity.WARNING,
        cat,
        f"the smallest non-zero step ({output.amplitude_resolution_ma} mA) is "
        f"{significant(share)} % of the maximum",
        passed=f"smallest step {output.amplitude_resolution_ma} mA = {significant(share)} % "
        "of the maximum",
        value=f"{significant(share)} %",
        limit=min_output,
        limit_text=f"<= {min_output}",
        fix="use a finer amplitude resolution",
        field="output.amplitude_resolution_ma",
    )

    watchdog = limits.get(LimitId.WATCHDOG_TIMEOUT_MAX)
    timeout = profile.link.watchdog_timeout_ms
    yield _finding(
        "PROFILE_WATCHDOG",
        timeout <= watchdog.figure,
        Severity.WARNING,
        cat,
        f"the device keeps stimulating for {timeout} ms after the host goes silent",
        passed=f"watchdog stops output {timeout} ms after the host goes silent",
        value=f"{timeout} ms",
        limit=watchdog,
        limit_text=f"<= {watchdog}",
        fix="configure a shorter device watchdog",
        field="link.watchdog_timeout_ms",
    )

    # Neither wire protocol can tell a device how long to ramp, so a device that ramps
    # by itself would do it on its own terms (or not at all, from zero to the plateau).
    # estim always ramps from the host, set-point by set-point, under its interlocks.
    yield _finding(
        "PROFILE_DEVICE_RAMPS",
        not output.device_ramps,
        Severity.ERROR,
        cat,
        "the profile says the device ramps by itself; estim cannot tell a device its ramp "
        "times and does not hand ramps to a device: every ramp is stepped by the host",
        passed="ramps are stepped by the host, set-point by set-point",
        value="yes" if output.device_ramps else "no",
        limit_text="device_ramps = false",
        fix="set output.device_ramps = false (estim steps every ramp itself)",
        field="output.device_ramps",
    )

    measurement = profile.measurement
    pct = limits.get(LimitId.CURRENT_TOLERANCE_PERCENT_MAX)
    yield _finding(
        "PROFILE_TOLERANCE_PERCENT",
        measurement.current_tolerance_percent <= pct.figure,
        Severity.WARNING,
        cat,
        f"measured current may differ from commanded by {measurement.current_tolerance_percent} % "
        "before the interlock trips: too loose to catch a fault early",
        passed=f"relative current tolerance {measurement.current_tolerance_percent} %",
        value=f"{measurement.current_tolerance_percent} %",
        limit=pct,
        limit_text=f"<= {pct}",
        fix="tighten measurement.current_tolerance_percent (bench-validate the device)",
        field="measurement.current_tolerance_percent",
    )
    absolute = limits.get(LimitId.CURRENT_TOLERANCE_MA_MAX)
    yield _finding(
        "PROFILE_TOLERANCE_MA",
        measurement.current_tolerance_ma <= absolute.figure,
        Severity.WARNING,
        cat,
        f"measured current may differ from commanded by {measurement.current_tolerance_ma} mA "
        "before the interlock trips",
        passed=f"absolute current tolerance {measurement.current_tolerance_ma} mA",
        value=f"{measurement.current_tolerance_ma} mA",
        limit=absolute,
        limit_text=f"<= {absolute}",
        fix="tighten measurement.current_tolerance_ma (bench-validate the device)",
        field="measurement.current_tolerance_ma",
    )
    yield from _measurement_findings(profile)

    leakage = profile.leakage
    normal = limits.get(LimitId.FDA_LEAKAGE_NORMAL)
    fault = limits.get(LimitId.FDA_LEAKAGE_SINGLE_FAULT)
    if leakage is None:
        yield Finding(
            "PROFILE_LEAKAGE",
            Severity.WARNING,
            cat,
            "the profile records no leakage current measurements",
            limit=f"<= {normal} normal, <= {fault} single fault",
            limit_id=LimitId.FDA_LEAKAGE_NORMAL,
            source=normal.citation,
            fix="measure leakage (normal and single-fault) and record it under [leakage]",
            field="leakage",
        )
    else:
        for code, measured, limit, field_name in (
            ("PROFILE_LEAKAGE", leakage.normal_ua, normal, "leakage.normal_ua"),
            (
                "PROFILE_LEAKAGE_SINGLE_FAULT",
                leakage.single_fault_ua,
                fault,
                "leakage.single_fault_ua",
            ),
        ):
            yield _finding(
                code,
                measured <= limit.figure,
                Severity.ERROR,
                cat,
                f"leakage current {measured} uA is above the FDA figure",
                passed=f"leakage current {measured} uA",
                value=f"{measured} uA",
                limit=limit,
                limit_text=f"<= {limit}",
                fix="repair or replace the device; do not use it on patients",
                field=field_name,
            )

    reach_ohm = Fraction(output.compliance_voltage_v) * 10**6 / output.amplitude_max_ua
    if reach_ohm < Fraction(profile.impedance.good_max_ohm):
        yield Finding(
            "PROFILE_COMPLIANCE_REACH",
            Severity.INFO,
            cat,
            f"at full amplitude ({output.amplitude_max_ma} mA) the {output.compliance_voltage_v} V "
            f"compliance drives at most {significant(reach_ohm)} ohm, less than the top of "
            f"the good-contact range ({profile.impedance.good_max_ohm} ohm); prescription "
            "checks warn when a ceiling needs more",
            value=f"{significant(reach_ohm)} ohm",
            limit=f"{profile.impedance.good_max_ohm} ohm",
            field="output.compliance_voltage_v",
        )
    yield from _override_findings(limits)


def check_profile(profile: DeviceProfile, limits: Limits = DEFAULT_LIMITS) -> Verdict:
    """Static validation of a device profile against the standards and estim's needs."""
    results = tuple(_profile_checks(profile, limits))
    subject = f"profile {profile.identity.manufacturer} {profile.identity.model}"
    details = {
        "profile": {
            "manufacturer": profile.identity.manufacturer,
            "model": profile.identity.model,
            "sha256": profile.sha256,
        },
        "long_pulse_capable": profile.output.long_pulse_capable,
        "limits_overridden": [limit.id.value for limit in limits.overrides()],
    }
    return Verdict(subject, results, None, details)
