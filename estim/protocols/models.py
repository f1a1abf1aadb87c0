"""What a clinician prescribes: pulse shapes, pulse trains, cycles, protocols.

Pure data. Every model is frozen, refuses unknown keys, and carries its unit in each
field name. Human-facing numbers are :class:`~decimal.Decimal`; the ``*_ua`` / ``*_us``
properties turn them into exact integers for the safety checks. Ranges enforced here are
*physical sanity* (a phase width cannot be negative); whether a device or a standard
allows a value is the job of :mod:`estim.safety`, which reports it with a source.
"""

from __future__ import annotations

import hashlib
import json
from abc import abstractmethod
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from estim.units import US_PER_S, ma_to_ua, ms_to_us, s_to_us

SPEC_VERSION = 1
"""The protocol / prescription file format this code reads and writes."""

# A phase longer than this is a "long pulse": only long-pulse shapes may use it.
# Conventional NMES stays at or under 1 ms per phase (facts sheet: 200-500 us, some
# 1-5 ms for stress); denervated muscle needs tens to hundreds of milliseconds.
SHORT_PHASE_MAX_US = 5_000
LONG_PHASE_MAX_US = 500_000  # issue: long pulses "up to at least 300 ms" per phase

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$")]
PositiveDecimal = Annotated[Decimal, Field(gt=0)]
NonNegativeDecimal = Annotated[Decimal, Field(ge=0)]


class Frozen(BaseModel):
    """Base for estim's data models: immutable, strict about keys, exact numbers."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        str_strip_whitespace=True,
        validate_default=True,
    )


# --- pulse shapes ---------------------------------------------------------------------


class Waveform(StrEnum):
    """How current varies within one phase."""

    RECTANGULAR = "rectangular"
    TRIANGULAR = "triangular"  # linear rise from 0 to peak, then back to 0 at once


@dataclass(frozen=True, slots=True)
class PhaseSpec:
    """One phase of a pulse, relative to the pulse's peak amplitude.

    ``peak_ratio`` scales the pulse amplitude for this phase (1 for the leading phase;
    less for the recovery phase of an asymmetric pulse); ``polarity`` is +1 or -1.
    """

    width_us: int
    polarity: int
    peak_ratio: Fraction
    waveform: Waveform

    def charge_pc(self, amplitude_ua: int | Fraction) -> Fraction:
        """Signed charge of this phase in picocoulombs (uA x us)."""
        peak = Fraction(amplitude_ua) * self.peak_ratio
        area = peak * self.width_us
        if self.waveform is Waveform.TRIANGULAR:
            area /= 2
        return area * self.polarity

    def square_integral(self, amplitude_ua: int | Fraction) -> Fraction:
        """Integral of i(t)^2 dt over the phase, in uA^2 x us (for r.m.s. and energy)."""
        peak = Fraction(amplitude_ua) * self.peak_ratio
        integral = peak * peak * self.width_us
        if self.waveform is Waveform.TRIANGULAR:
            integral /= 3
        return integral


class ShapeKind(StrEnum):
    SYMMETRIC_BIPHASIC = "symmetric_biphasic"
    ASYMMETRIC_BIPHASIC = "asymmetric_biphasic"
    LONG_BIPHASIC_RECTANGULAR = "long_biphasic_rectangular"
    LONG_BIPHASIC_TRIANGULAR = "long_biphasic_triangular"
    MONOPHASIC_RECTANGULAR = "monophasic_rectangular"


class _Shape(Frozen):
    interphase_gap_us: int = Field(default=0, ge=0, le=LONG_PHASE_MAX_US)

    @property
    @abstractmethod
    def phases(self) -> tuple[PhaseSpec, ...]:
        """The phases of one pulse, in order."""

    @property
    def is_long_pulse(self) -> bool:
        return False

    @property
    def pulse_duration_us(self) -> int:
        """Phases plus the gaps between them."""
        widths = sum(p.width_us for p in self.phases)
        return widths + self.interphase_gap_us * (len(self.phases) - 1)

    @property
    def max_phase_width_us(self) -> int:
        return max(p.width_us for p in self.phases)

    @property
    def min_phase_width_us(self) -> int:
        return min(p.width_us for p in self.phases)

    def net_charge_pc(self, amplitude_ua: int | Fraction) -> Fraction:
        return sum((p.charge_pc(amplitude_ua) for p in self.phases), Fraction(0))

    def max_phase_charge_pc(self, amplitude_ua: int | Fraction) -> Fraction:
        return max(abs(p.charge_pc(amplitude_ua)) for p in self.phases)

    def square_integral(self, amplitude_ua: int | Fraction) -> Fraction:
        return sum((p.square_integral(amplitude_ua) for p in self.phases), Fraction(0))


class SymmetricBiphasic(_Shape):
    """Two equal rectangular phases of opposite polarity: zero net charge."""

    kind: Literal[ShapeKind.SYMMETRIC_BIPHASIC] = ShapeKind.SYMMETRIC_BIPHASIC
    phase_width_us: int = Field(gt=0, le=SHORT_PHASE_MAX_US)

    @property
    def phases(self) -> tuple[PhaseSpec, ...]:
        one = Fraction(1)
        w = self.phase_width_us
        rect = Waveform.RECTANGULAR
        return (PhaseSpec(w, +1, one, rect), PhaseSpec(w, -1, one, rect))


class AsymmetricBiphasic(_Shape):
    """A short leading phase at full amplitude, then a longer, lower recovery phase.

    The recovery amplitude is ``peak x lead / recovery`` so the pulse is charge-balanced
    by construction; requiring ``recovery >= lead`` keeps the recovery phase at or below
    the peak, so the peak is the lead amplitude.
    """

    kind: Literal[ShapeKind.ASYMMETRIC_BIPHASIC] = ShapeKind.ASYMMETRIC_BIPHASIC
    lead_phase_width_us: int = Field(gt=0, le=SHORT_PHASE_MAX_US)
    recovery_phase_width_us: int = Field(gt=0, le=8 * SHORT_PHASE_MAX_US)

    @model_validator(mode="after")
    def _recovery_not_shorter(self) -> AsymmetricBiphasic:
        if self.recovery_phase_width_us < self.lead_phase_width_us:
            raise ValueError(
                "recovery_phase_width_us must be at least lead_phase_width_us "
                "(the recovery phase balances the charge at a lower amplitude)"
            )
        return self

    @property
    def phases(self) -> tuple[PhaseSpec, ...]:
        lead, rec = self.lead_phase_width_us, self.recovery_phase_width_us
        rect = Waveform.RECTANGULAR
        return (
            PhaseSpec(lead, +1, Fraction(1), rect),
            PhaseSpec(rec, -1, Fraction(lead, rec), rect),
        )


class LongBiphasicRectangular(_Shape):
    """Long rectangular biphasic pulses for denervated muscle (tens to hundreds of ms)."""

    kind: Literal[ShapeKind.LONG_BIPHASIC_RECTANGULAR] = ShapeKind.LONG_BIPHASIC_RECTANGULAR
    phase_width_us: int = Field(gt=0, le=LONG_PHASE_MAX_US)

    @property
    def is_long_pulse(self) -> bool:
        return True

    @property
    def phases(self) -> tuple[PhaseSpec, ...]:
        w = self.phase_width_us
        rect = Waveform.RECTANGULAR
        return (PhaseSpec(w, +1, Fraction(1), rect), PhaseSpec(w, -1, Fraction(1), rect))


class LongBiphasicTriangular(_Shape):
    """Slow-rise (triangular) biphasic pulses.

    Innervated fibres accommodate to a slow rise while denervated fibres do not, so
    a triangular pulse recruits the denervated muscle selectively (Pieber 2015).
    """

    kind: Literal[ShapeKind.LONG_BIPHASIC_TRIANGULAR] = ShapeKind.LONG_BIPHASIC_TRIANGULAR
    phase_width_us: int = Field(gt=0, le=LONG_PHASE_MAX_US)

    @property
    def is_long_pulse(self) -> bool:
        return True

    @property
    def phases(self) -> tuple[PhaseSpec, ...]:
        w = self.phase_width_us
        tri = Waveform.TRIANGULAR
        return (PhaseSpec(w, +1, Fraction(1), tri), PhaseSpec(w, -1, Fraction(1), tri))


class MonophasicRectangular(_Shape):
    """One rectangular phase: interrupted DC. Carries net charge; checks say so."""

    kind: Literal[ShapeKind.MONOPHASIC_RECTANGULAR] = ShapeKind.MONOPHASIC_RECTANGULAR
    phase_width_us: int = Field(gt=0, le=LONG_PHASE_MAX_US)

    @property
    def is_long_pulse(self) -> bool:
        return self.phase_width_us > SHORT_PHASE_MAX_US

    @property
    def phases(self) -> tuple[PhaseSpec, ...]:
        return (PhaseSpec(self.phase_width_us, +1, Fraction(1), Waveform.RECTANGULAR),)


PulseShape = Annotated[
    SymmetricBiphasic
    | AsymmetricBiphasic
    | LongBiphasicRectangular
    | LongBiphasicTriangular
    | MonophasicRectangular,
    Field(discriminator="kind"),
]


class PulseTrain(Frozen):
    """A pulse shape and how often it repeats: a frequency, or (long pulses) an interval."""

    shape: PulseShape
    frequency_hz: PositiveDecimal | None = Field(default=None, le=10_000)
    pulse_interval_ms: PositiveDecimal | None = Field(default=None, le=60_000)

    @model_validator(mode="after")
    def _one_rate_that_fits(self) -> PulseTrain:
        if (self.frequency_hz is None) == (self.pulse_interval_ms is None):
            raise ValueError("give exactly one of frequency_hz or pulse_interval_ms")
        if self.period_us < self.shape.pulse_duration_us:
            raise ValueError(
                f"pulses overlap: the pulse lasts {self.shape.pulse_duration_us} us but "
                f"repeats every {float(self.period_us):.1f} us; lower the rate"
            )
        return self

    @property
    def period_us(self) -> Fraction:
        """Onset-to-onset time between pulses, exact."""
        if self.frequency_hz is not None:
            return Fraction(US_PER_S) / Fraction(self.frequency_hz)
        assert self.pulse_interval_ms is not None
        return Fraction(ms_to_us(self.pulse_interval_ms))

    @property
    def rate_hz(self) -> Fraction:
        return Fraction(US_PER_S) / self.period_us


# --- cycle ----------------------------------------------------------------------------


class CycledDuty(Frozen):
    """Work/rest: ramp up, hold (on), ramp down, rest (off), repeated."""

    mode: Literal["cycled"] = "cycled"
    ramp_up_s: NonNegativeDecimal = Field(le=60)
    on_s: PositiveDecimal = Field(le=600)
    ramp_down_s: NonNegativeDecimal = Field(le=60)
    off_s: NonNegativeDecimal = Field(le=600)

    @property
    def burst_us(self) -> int:
        """Time with pulses: ramp up + on + ramp down."""
        return s_to_us(self.ramp_up_s) + s_to_us(self.on_s) + s_to_us(self.ramp_down_s)

    @property
    def period_us(self) -> int:
        return self.burst_us + s_to_us(self.off_s)


class Continuous(Frozen):
    """One long burst for the whole session, ramped in at the start and out at the end."""

    mode: Literal["continuous"] = "continuous"
    ramp_up_s: NonNegativeDecimal = Field(le=60)
    ramp_down_s: NonNegativeDecimal = Field(le=60)


Cycle = Annotated[CycledDuty | Continuous, Field(discriminator="mode")]


# --- protocol -------------------------------------------------------------------------


class Indication(StrEnum):
    COMPLETE_DENERVATION = "complete_denervation"
    PARTIAL_DENERVATION = "partial_denervation"
    STRESS = "stress"
    URGE = "urge"
    MIXED = "mixed"


class Confidence(StrEnum):
    """How sure we are of a figure (see docs: reference/safety-facts.md)."""

    C = "C"  # read in the named source
    C2 = "C2"  # read, but in a secondary or manufacturer source
    U = "U"  # commonly cited, not confirmed
    I = "I"  # noqa: E741  our own inference


class Citation(Frozen):
    citation: str = Field(min_length=5)
    confidence: Confidence
    note: str = ""


class ElectrodeKind(StrEnum):
    VAGINAL_PROBE = "vaginal_probe"
    ANAL_PROBE = "anal_probe"
    SURFACE = "surface"


class ElectrodeRequirement(Frozen):
    kinds: tuple[ElectrodeKind, ...] = Field(min_length=1)
    min_contact_area_cm2: PositiveDecimal
    note: str = ""


class AmplitudePolicy(Frozen):
    ceiling_ma: PositiveDecimal = Field(le=250)
    titration_step_ma: PositiveDecimal = Field(le=10)

    @field_validator("ceiling_ma", "titration_step_ma")
    @classmethod
    def _whole_microamps(cls, value: Decimal) -> Decimal:
        ma_to_ua(value)  # refuses 0.0001 mA: amplitudes are whole microamps
        return value

    @model_validator(mode="after")
    def _step_below_ceiling(self) -> AmplitudePolicy:
        if self.titration_step_ma > self.ceiling_ma:
            raise ValueError("titration_step_ma cannot exceed ceiling_ma")
        return self

    @property
    def ceiling_ua(self) -> int:
        return ma_to_ua(self.ceiling_ma)

    @property
    def titration_step_ua(self) -> int:
        return ma_to_ua(self.titration_step_ma)


class Adjustable(StrEnum):
    """Parameters a protocol may let the prescriber change, within a declared range."""

    FREQUENCY_HZ = "frequency_hz"
    PHASE_WIDTH_US = "phase_width_us"
    RAMP_UP_S = "ramp_up_s"
    ON_S = "on_s"
    RAMP_DOWN_S = "ramp_down_s"
    OFF_S = "off_s"
    SESSION_DURATION_MIN = "session_duration_min"


class AdjustableRange(Frozen):
    min: Decimal
    max: Decimal

    @model_validator(mode="after")
    def _ordered(self) -> AdjustableRange:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def __contains__(self, value: object) -> bool:
        return isinstance(value, Decimal | int) and self.min <= value <= self.max


class Protocol(Frozen):
    """A stimulation protocol from the library: everything but the patient."""

    spec_version: int = Field(default=SPEC_VERSION, ge=1)
    id: Slug
    version: int = Field(ge=1)
    title: str = Field(min_length=3)
    summary: str = ""
    indication: Indication
    eligibility: tuple[str, ...] = Field(min_length=1)
    channels: int = Field(ge=1, le=8)
    pulse: PulseTrain
    cycle: Cycle
    session_duration_min: PositiveDecimal = Field(le=120)
    amplitude: AmplitudePolicy
    sessions_per_day: int = Field(ge=1, le=6)
    sessions_per_week: int = Field(ge=1, le=42)
    programme_weeks: int = Field(ge=1, le=104)
    electrode: ElectrodeRequirement
    adjustable: dict[Adjustable, AdjustableRange] = Field(default_factory=dict)
    source: Citation

    @model_validator(mode="after")
    def _coherent(self) -> Protocol:
        if self.sessions_per_week > 7 * self.sessions_per_day:
            raise ValueError(
                f"sessions_per_week {self.sessions_per_week} exceeds 7 x sessions_per_day"
            )
        if self.session_us < self.minimum_session_us:
            raise ValueError(
                "session_duration_min is shorter than one cycle (ramps + on + off); "
                "lengthen the session or shorten the cycle"
            )
        for name, allowed in self.adjustable.items():
            current = self.parameter(name)
            if current is None:
                raise ValueError(f"adjustable.{name} does not apply to this protocol")
            if current not in allowed:
                raise ValueError(
                    f"adjustable.{name}: the protocol's own value {current} lies outside "
                    f"[{allowed.min}, {allowed.max}]"
                )
        return self

    @property
    def session_us(self) -> int:
        return s_to_us(self.session_duration_min * 60)

    @property
    def minimum_session_us(self) -> int:
        if isinstance(self.cycle, CycledDuty):
            return self.cycle.period_us
        return s_to_us(self.cycle.ramp_up_s) + s_to_us(self.cycle.ramp_down_s)

    def parameter(self, name: Adjustable) -> Decimal | None:
        """The protocol's current value of an adjustable parameter, or None if n/a."""
        shape = self.pulse.shape
        match name:
            case Adjustable.FREQUENCY_HZ:
                return self.pulse.frequency_hz
            case Adjustable.PHASE_WIDTH_US:
                width = getattr(shape, "phase_width_us", None)
                return None if width is None else Decimal(width)
            case Adjustable.SESSION_DURATION_MIN:
                return self.session_duration_min
            case _:
                return getattr(self.cycle, name.value, None)

    @property
    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON form: a prescription pins the exact content."""
        return canonical_hash(self)


def canonical_json(model: BaseModel) -> str:
    """Stable JSON text: sorted keys, no whitespace, Decimals as canonical strings.

    A Decimal is written by value, not by spelling (``50``, ``50.0`` and ``5E+1`` are
    all ``"50"``), so a file that went through TOML or JSON and back, or was written
    with ``50.0`` instead of ``50``, keeps its content hash.
    """
    return json.dumps(
        model.model_dump(mode="python"),
        sort_keys=True,
        separators=(",", ":"),
        default=_canonical_default,
    )


def canonical_decimal(value: Decimal) -> str:
    """A Decimal's value as plain text: no exponent, no trailing zeros (``"0.5"``)."""
    if value.is_zero():
        return "0"
    return format(value.normalize(), "f")


def _canonical_default(value: object) -> object:
    if isinstance(value, Decimal):
        return canonical_decimal(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot hash a {type(value).__name__} canonically")


def canonical_hash(model: BaseModel) -> str:
    return hashlib.sha256(canonical_json(model).encode()).hexdigest()
