"""A prescription: one patient, one pinned protocol, a personal ceiling, and adjustments.

A prescription never widens a protocol: its amplitude ceiling is at most the
protocol's, its titration step at most the protocol's, and it may change only the
parameters the protocol declares adjustable, within the declared ranges. Resolving a
prescription against a protocol returns the *effective* protocol the patient gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator, model_validator

from estim.errors import InputError, Problem
from estim.protocols.models import (
    SPEC_VERSION,
    Adjustable,
    Frozen,
    PositiveDecimal,
    Protocol,
    Slug,
)
from estim.units import ma_to_ua

PatientCode = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{1,31}$")]


class ProtocolRef(Frozen):
    """Pins a protocol by id, version and content: an edited library file will not match."""

    id: Slug
    version: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @classmethod
    def of(cls, protocol: Protocol) -> ProtocolRef:
        return cls(id=protocol.id, version=protocol.version, sha256=protocol.content_hash)


class Prescription(Frozen):
    spec_version: int = Field(default=SPEC_VERSION, ge=1)
    patient_code: PatientCode
    protocol: ProtocolRef
    max_amplitude_ma: PositiveDecimal = Field(le=250)
    titration_step_ma: PositiveDecimal | None = Field(default=None, le=10)
    adjustments: dict[Adjustable, Decimal] = Field(default_factory=dict)
    prescriber: str = Field(min_length=2, max_length=120)
    start_date: date
    end_date: date | None = None
    notes: str = ""

    @field_validator("max_amplitude_ma", "titration_step_ma")
    @classmethod
    def _whole_microamps(cls, value: Decimal | None) -> Decimal | None:
        if value is not None:
            ma_to_ua(value)  # refuses 0.0001 mA: amplitudes are whole microamps
        return value

    @model_validator(mode="after")
    def _dates_in_order(self) -> Prescription:
        if self.end_date is not None and self.end_date < self.start_date:
            raise ValueError(f"end_date {self.end_date} is before start_date {self.start_date}")
        return self

    @property
    def max_amplitude_ua(self) -> int:
        return ma_to_ua(self.max_amplitude_ma)

    def is_active_on(self, day: date) -> bool:
        return self.start_date <= day and (self.end_date is None or day <= self.end_date)


@dataclass(frozen=True, slots=True)
class ResolvedPrescription:
    """A prescription checked against its protocol, with the adjustments applied."""

    prescription: Prescription
    library_protocol: Protocol
    protocol: Protocol  # effective: adjustments applied, re-validated

    @property
    def ceiling_ua(self) -> int:
        return self.prescription.max_amplitude_ua

    @property
    def step_ua(self) -> int:
        step = self.prescription.titration_step_ma
        if step is None:
            return self.protocol.amplitude.titration_step_ua
        return ma_to_ua(step)


def resolve(prescription: Prescription, protocol: Protocol) -> ResolvedPrescription:
    """Check a prescription against its protocol and apply its adjustments.

    Raises :class:`InputError` listing every problem at once; nothing is clamped.
    """
    problems: list[Problem] = []
    ref = prescription.protocol
    if (ref.id, ref.version) != (protocol.id, protocol.version):
        problems.append(
            Problem(
                "protocol",
                "prescription names a different protocol",
                value=f"{ref.id} v{ref.version}",
                limit=f"{protocol.id} v{protocol.version}",
                fix="prescribe against the protocol you load",
            )
        )
    elif ref.sha256 != protocol.content_hash:
        problems.append(
            Problem(
                "protocol.sha256",
                "the protocol's content changed since it was prescribed",
                value=ref.sha256[:12],
                limit=protocol.content_hash[:12],
                fix="review the protocol change and re-prescribe",
            )
        )
    ceiling = protocol.amplitude.ceiling_ma
    if prescription.max_amplitude_ma > ceiling:
        problems.append(
            Problem(
                "max_amplitude_ma",
                "patient ceiling above the protocol's ceiling",
                value=prescription.max_amplitude_ma,
                limit=f"<= {ceiling} mA ({protocol.id})",
                fix=f"prescribe at most {ceiling} mA",
            )
        )
    step = prescription.titration_step_ma
    if step is not None and step > protocol.amplitude.titration_step_ma:
        problems.append(
            Problem(
                "titration_step_ma",
                "titration step larger than the protocol allows",
                value=step,
                limit=f"<= {protocol.amplitude.titration_step_ma} mA",
                fix="use a smaller step, or leave it out to use the protocol's",
            )
        )
    if step is not None and step > prescription.max_amplitude_ma:
        problems.append(
            Problem(
                "titration_step_ma",
                "titration step larger than the patient ceiling",
                value=step,
                limit=f"<= {prescription.max_amplitude_ma} mA",
                fix="use a smaller step",
            )
        )
    for name, value in prescription.adjustments.items():
        allowed = protocol.adjustable.get(name)
        if allowed is None:
            declared = ", ".join(sorted(protocol.adjustable)) or "none"
            problems.append(
                Problem(
                    f"adjustments.{name}",
                    "the protocol does not declare this parameter adjustable",
                    value=value,
                    limit=f"adjustable: {declared}",
                    fix="remove the adjustment or choose another protocol",
                )
            )
        elif value not in allowed:
            problems.append(
                Problem(
                    f"adjustments.{name}",
                    "adjustment outside the protocol's declared range",
                    value=value,
                    limit=f"[{allowed.min}, {allowed.max}]",
                    fix=f"choose a value between {allowed.min} and {allowed.max}",
                )
            )
    if problems:
        raise InputError(
            f"prescription for {prescription.patient_code} does not fit protocol {protocol.id}",
            problems,
        )
    effective = apply_adjustments(protocol, prescription.adjustments)
    return ResolvedPrescription(prescription, protocol, effective)


def apply_adjustments(protocol: Protocol, adjustments: dict[Adjustable, Decimal]) -> Protocol:
    """Return the protocol with adjustments applied, re-validated as a whole."""
    if not adjustments:
        return protocol
    data: dict[str, Any] = protocol.model_dump()
    for name, value in adjustments.items():
        if name is Adjustable.FREQUENCY_HZ:
            data["pulse"]["frequency_hz"] = value
        elif name is Adjustable.PHASE_WIDTH_US:
            if value != value.to_integral_value():
                raise InputError(
                    "phase_width_us adjustments are whole microseconds",
                    [Problem("adjustments.phase_width_us", "not a whole number", value=value)],
                )
            data["pulse"]["shape"]["phase_width_us"] = int(value)
        elif name is Adjustable.SESSION_DURATION_MIN:
            data["session_duration_min"] = value
        else:
            data["cycle"][name.value] = value
    try:
        return Protocol.model_validate(data)
    except ValidationError as err:
        raise InputError(
            f"adjustments make protocol {protocol.id} inconsistent",
            [Problem("adjustments", e["msg"]) for e in err.errors()],
        ) from err
