"""What a session will do, decided before it connects: the :class:`SessionPlan`.

A plan binds a resolved prescription to a device profile: the compiled schedule, the
channels, the amplitude policy (every ceiling that applies and where it comes from,
and the titration step), the static-check findings, the dose counts so far, and the
session time cap. The runner only carries a plan out; every decision it needs is here,
checked, so a bad combination is refused before any port is opened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol as TypingProtocol

from estim.device.base import DeviceIdentity
from estim.device.profile import DeviceProfile
from estim.errors import InputError, Problem
from estim.protocols.prescription import ResolvedPrescription
from estim.protocols.schedule import Schedule, SegmentPhase, compile_schedule
from estim.safety.interlocks import (
    AmplitudeLimit,
    Ceiling,
    DoseReading,
    FindingsReading,
    FindingSummary,
    ValidationReading,
)
from estim.safety.limits import DEFAULT_LIMITS, LimitId, Limits

ValidationCheck = Callable[[DeviceIdentity], ValidationReading]
"""Given the connected unit's identity, what its bench validation record says."""


class _FindingLike(TypingProtocol):
    @property
    def code(self) -> str: ...

    @property
    def message(self) -> str: ...


class _VerdictLike(TypingProtocol):
    """The static checks' verdict (``estim.safety.checks.Verdict``), structurally."""

    @property
    def errors(self) -> tuple[_FindingLike, ...]: ...

    @property
    def warnings(self) -> tuple[_FindingLike, ...]: ...


def findings_from_verdict(
    verdict: _VerdictLike, acknowledged: Iterable[str] = ()
) -> FindingsReading:
    """What the preflight interlock needs from a static-check verdict."""
    return FindingsReading(
        errors=tuple(FindingSummary(f.code, f.message) for f in verdict.errors),
        warnings=tuple(FindingSummary(f.code, f.message) for f in verdict.warnings),
        acknowledged=frozenset(acknowledged),
    )


def truncate_schedule(schedule: Schedule, cycles: int) -> Schedule:
    """The first ``cycles`` whole cycles of a cycled schedule (for a shortened demo).

    Only whole cycles, so a shortened session still ends after a full rest, like the
    prescribed one; a continuous schedule cannot be shortened this way.
    """
    if schedule.continuous:
        raise InputError("a continuous schedule has no cycles to keep; shorten the protocol")
    if not 1 <= cycles <= schedule.cycles:
        raise InputError(f"cycles must be 1..{schedule.cycles}, got {cycles}")
    kept = tuple(s for s in schedule.segments if s.cycle < cycles)
    return Schedule(kept, cycles=cycles, duration_us=kept[-1].end_us, continuous=False)


NO_VALIDATION_REQUIRED = (
    "no bench validation record is required for this session (simulator or dry run)"
)
"""Why a plan built without a validation check skips it (unless the caller says why)."""


def titration_cap_us_of(limits: Limits) -> int:
    """The titration time limit (``TITRATION_TIME_MAX``) in whole microseconds."""
    minutes = limits.get(LimitId.TITRATION_TIME_MAX).figure
    return int(minutes * 60 * 1_000_000)


@dataclass(frozen=True)
class SessionPlan:
    """Everything a session needs, checked; see :meth:`build`."""

    resolved: ResolvedPrescription
    profile: DeviceProfile
    schedule: Schedule
    channels: tuple[int, ...]
    amplitude: AmplitudeLimit
    findings: FindingsReading
    dose: DoseReading
    session_cap_us: int
    # The limits the plan was checked against (a site's overrides, or the defaults):
    # the session log names every override, and the titration cap comes from them.
    limits: Limits = DEFAULT_LIMITS
    labels: dict[str, str] = field(default_factory=dict)  # patient code, clinician ...
    validation: ValidationCheck | None = None
    validation_skip_reason: str = NO_VALIDATION_REQUIRED

    @property
    def titration_cap_us(self) -> int:
        """Titration is output outside the prescribed session: capped on its own, by
        ``TITRATION_TIME_MAX`` of :attr:`limits` (the one source of the figure)."""
        return titration_cap_us_of(self.limits)

    @property
    def ceiling_ua(self) -> int:
        return self.amplitude.ceiling_ua

    @property
    def step_ua(self) -> int:
        return self.amplitude.step_ua

    @property
    def resolution_ua(self) -> int:
        return self.profile.output.amplitude_resolution_ua

    @property
    def ramp_up_us(self) -> int:
        first = self.schedule.segments[0]
        return first.duration_us if first.phase is SegmentPhase.RAMP_UP else 0

    @property
    def ramp_down_us(self) -> int:
        for seg in self.schedule.segments:
            if seg.phase is SegmentPhase.RAMP_DOWN:
                return seg.duration_us
        return 0

    @classmethod
    def build(
        cls,
        resolved: ResolvedPrescription,
        profile: DeviceProfile,
        *,
        findings: FindingsReading,
        dose: DoseReading,
        schedule: Schedule | None = None,
        standard_ceiling: Ceiling | None = None,
        labels: dict[str, str] | None = None,
        validation: ValidationCheck | None = None,
        validation_skip_reason: str | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> SessionPlan:
        """Check the combination and bind it; refuses (never adjusts) what does not fit.

        ``standard_ceiling`` is the highest amplitude the standard limits allow for this
        pulse (from the static checks), when known. ``schedule`` overrides the compiled
        one (a shortened demo); it may only be shorter. ``validation`` checks the bench
        record against the connected unit; without it the check is skipped and
        ``validation_skip_reason`` says why in the session log. ``limits`` are those
        the static checks used (a site's overrides, or the defaults); the titration
        time limit comes from them.
        """
        problems: list[Problem] = []
        protocol = resolved.protocol
        out = profile.output
        compiled = compile_schedule(resolved)
        chosen = schedule or compiled
        if chosen.duration_us > compiled.duration_us:
            problems.append(
                Problem(
                    "schedule",
                    "longer than the prescribed session",
                    value=chosen.duration_us,
                    limit=f"<= {compiled.duration_us} us",
                )
            )
        if titration_cap_us_of(limits) <= 0:
            # Refused here, before any port is opened, rather than by the interlock.
            problems.append(
                Problem(
                    "titration_time_max_min",
                    "the titration time limit is shorter than a microsecond",
                    value=str(limits.titration_time_max_min),
                    limit="at least 1 us (in minutes)",
                    fix="give the site's titration time limit in minutes, e.g. 5",
                )
            )
        if protocol.channels > out.channels:
            problems.append(
                Problem(
                    "channels",
                    "the protocol needs more channels than the device has",
                    value=protocol.channels,
                    limit=f"<= {out.channels} ({profile.identity.model})",
                    fix="use a device with more channels",
                )
            )
        resolution = out.amplitude_resolution_ua
        step = resolved.step_ua
        if step % resolution:
            problems.append(
                Problem(
                    "titration_step_ma",
                    "the step is not a whole number of the device's amplitude resolution",
                    value=step,
                    limit=f"multiple of {resolution} uA",
                    fix="prescribe a step the device can set",
                )
            )
        ceilings = [
            Ceiling(resolved.ceiling_ua, "patient prescription"),
            Ceiling(protocol.amplitude.ceiling_ua, f"protocol {protocol.id}"),
            Ceiling(out.amplitude_max_ua, f"device profile {profile.identity.model}"),
        ]
        if standard_ceiling is not None:
            ceilings.append(standard_ceiling)
        if problems:
            raise InputError(
                f"cannot plan a session of {protocol.id} on {profile.identity.model}", problems
            )
        return cls(
            resolved=resolved,
            profile=profile,
            schedule=chosen,
            channels=tuple(range(1, protocol.channels + 1)),
            amplitude=AmplitudeLimit(ceilings, step),
            findings=findings,
            dose=dose,
            session_cap_us=protocol.session_us,
            limits=limits,
            labels=dict(labels or {}),
            validation=validation,
            validation_skip_reason=validation_skip_reason or NO_VALIDATION_REQUIRED,
        )
