"""What the records store holds, as immutable models.

Patients are known by a pseudonymous code only (no names). Prescriptions keep their
protocol's content so a report can say what was prescribed even after the library
changes. Sessions keep everything needed to say what ran, on which device, for whom.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field

from estim.errors import InputError, Problem, RecordsError
from estim.events import JsonScalar, JsonValue
from estim.protocols.models import Frozen, Protocol
from estim.protocols.prescription import Prescription, ResolvedPrescription, resolve
from estim.records.checklist import ContraindicationChecklist

_CODE_RE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{1,31}$")
EARLIEST_YEAR_OF_BIRTH = 1900
EARLIEST_RECORD_DAY = date(2000, 1, 1)
"""No record (a diary day, a course's dates, a report's window) names a day before
this: a typo guard (0026 for 2026), and it keeps day arithmetic off the calendar's
first day."""


def normalize_code(code: str, location: str = "code") -> str:
    """A patient code in its stored form (upper case), or an :class:`InputError`.

    Codes are pseudonyms: 2-32 letters, digits, ``-`` or ``_``, with at least one
    digit, which keeps people from typing a name where a code belongs. Upper-casing
    makes ``pf-0042`` and ``PF-0042`` the same patient, not two.
    """
    candidate = code.strip().upper()  # checked after: "ß1".upper() is "SS1", another code
    if (
        not code.strip().isascii()
        or not _CODE_RE.match(candidate)
        or not any(ch.isdigit() for ch in candidate)
    ):
        raise InputError(
            f"{code!r} is not a patient code",
            [
                Problem(
                    location,
                    "not a pseudonymous patient code",
                    value=code,
                    limit="2-32 characters: letters, digits, - and _, at least one digit",
                    fix="use a code such as PF-0042; never a name",
                )
            ],
        )
    return candidate


class Patient(Frozen):
    code: str
    year_of_birth: int
    notes: str = ""
    created_at: datetime


class Outcome(StrEnum):
    """How a session ended (the architecture's stop vocabulary, plus interruption)."""

    COMPLETED = "completed"  # ran its full prescribed time and ramped down
    STOPPED = "stopped"  # ended early in an orderly way (ramp down, off)
    ABORTED = "aborted"  # emergency stop: immediate zero
    FAULT = "fault"  # an interlock tripped or the device faulted
    INTERRUPTED = "interrupted"  # the process ended without recording an outcome

    @classmethod
    def from_controller(cls, value: str) -> Outcome:
        """The record's outcome for the controller's (``estim.session.summary.Outcome``
        values; records do not import the controller): an emergency stop is ``aborted``;
        a session that ended before any stimulation is ``stopped`` (its on-time of zero
        keeps it out of the dose count)."""
        mapped = {"emergency_stop": "aborted", "not_started": "stopped"}.get(value, value)
        try:
            return cls(mapped)
        except ValueError:
            raise RecordsError(f"unknown session outcome {value!r}") from None


class PrescriptionRecord(Frozen):
    """A course as stored: the prescription's current revision and its protocol."""

    id: int
    patient_code: str
    revision: int
    prescription: Prescription
    protocol: Protocol  # the library protocol as prescribed (adjustments not applied)
    prescription_sha256: str
    created_at: datetime
    changed_at: datetime

    def resolved(self) -> ResolvedPrescription:
        return resolve(self.prescription, self.protocol)

    @property
    def effective_protocol(self) -> Protocol:
        return self.resolved().protocol

    def is_active_on(self, day: date) -> bool:
        return self.prescription.is_active_on(day)

    def describe(self) -> str:
        p = self.prescription
        until = p.end_date.isoformat() if p.end_date else "open-ended"
        return (
            f"#{self.id} {p.protocol.id} v{p.protocol.version}, max {p.max_amplitude_ma} mA, "
            f"{p.start_date} to {until}"
        )


class PrescriptionRevision(Frozen):
    revision: int
    prescription: Prescription
    prescription_sha256: str
    changed_at: datetime
    changed_by: str
    reason: str


class ChecklistRecord(Frozen):
    id: int
    prescription_id: int
    checklist: ContraindicationChecklist
    sha256: str
    recorded_at: datetime


class ValidationRef(Frozen):
    """The bench validation record of the device used: its file's SHA-256 and key fields.

    Built from the JSON record ``estim profile bench`` writes
    (:class:`estim.validation.record.ValidationRecord`); the file's hash pins the exact
    evidence, the fields say what it vouches for.
    """

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    fields: dict[str, JsonScalar] = Field(default_factory=dict)

    @classmethod
    def from_file(cls, path: Path) -> ValidationRef:
        """Load, validate and hash a bench validation record (InputError if it is not one)."""
        from estim.validation.record import load_record

        record = load_record(path)
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise InputError(f"{path}: cannot read the validation record ({err.strerror})") from err
        return cls(
            path=str(path),
            sha256=hashlib.sha256(raw).hexdigest(),
            fields={
                "kind": record.kind,
                "spec_version": record.spec_version,
                "profile_sha256": record.profile_sha256,
                "profile_model": record.profile_model,
                "device_model": record.device.model,
                "device_serial": record.device.serial_number,
                "device_firmware": record.device.firmware,
                "technician": record.technician,
                "finished_at": record.finished_at.isoformat(),
                "passed": record.passed,
                # the serial on the unit's label (records since format 3 that name one)
                **(
                    {"device_label_serial": record.device.label_serial}
                    if record.device.label_serial is not None
                    else {}
                ),
            },
        )


class DeviceRecord(Frozen):
    """The identity the connected device reported."""

    model: str = Field(min_length=1, max_length=120)
    serial_number: str = Field(min_length=1, max_length=120)
    firmware: str = Field(min_length=1, max_length=60)

    def as_data(self) -> dict[str, JsonValue]:
        return {
            "model": self.model,
            "serial_number": self.serial_number,
            "firmware": self.firmware,
        }

    @classmethod
    def from_data(cls, data: Any) -> DeviceRecord | None:
        """From event data with ``model``, ``serial_number`` and ``firmware`` (else None)."""
        if not isinstance(data, dict):
            return None
        fields = [data.get(k) for k in ("model", "serial_number", "firmware")]
        if not all(isinstance(f, str) and f for f in fields):
            return None
        return cls(model=fields[0], serial_number=fields[1], firmware=fields[2])

    @classmethod
    def of(cls, identity: Any) -> DeviceRecord:
        """From a :class:`estim.device.base.DeviceIdentity` (or anything shaped like it)."""
        return cls(
            model=identity.model,
            serial_number=identity.serial_number,
            firmware=identity.firmware,
        )


class EligibilityOverride(Frozen):
    """A clinician's decision to stimulate despite the diary showing voluntary contraction."""

    reason: str = Field(min_length=10, max_length=1000)
    clinician: str = Field(min_length=2, max_length=120)


class SessionStart(Frozen):
    """Everything the records need to open a session (see :meth:`Store.begin_session`)."""

    patient_code: str
    protocol_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # the *effective* protocol
    profile_name: str = Field(min_length=1, max_length=200)
    profile_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    clinician: str = Field(min_length=2, max_length=120)
    # None: not connected yet; recorded from the controller's "connected" event (or
    # SessionRecorder.set_device) when it is.
    device: DeviceRecord | None = None
    prescription_id: int | None = None  # None: the patient's prescription active today
    validation: ValidationRef | None = None
    diary_day: date | None = None  # None: today (local)
    eligibility_override: EligibilityOverride | None = None


class SessionSummary(Frozen):
    """What a session delivered. All integers: uA and us."""

    confirmed_amplitude_ua: int | None = Field(default=None, ge=0)
    on_time_us: int | None = Field(default=0, ge=0)  # None: unknown (interrupted)
    contractions: int | None = Field(default=0, ge=0)


class SessionRecord(Frozen):
    id: int
    uid: str
    patient_code: str
    prescription_id: int
    prescription_revision: int
    prescription_sha256: str
    protocol_sha256: str
    profile_name: str
    profile_sha256: str
    validation_sha256: str | None
    validation: dict[str, Any] | None
    device: DeviceRecord | None  # None: the session never reached a device
    clinician: str
    diary_day: date
    started_at: datetime
    ended_at: datetime | None
    outcome: Outcome | None
    reason: str | None
    confirmed_amplitude_ua: int | None
    on_time_us: int | None
    contractions: int | None
    event_count: int
    last_event_kind: str | None
    last_event_at: datetime | None
    header_sha256: str
    last_event_sha256: str
    override_id: int | None
    owner_host: str | None

    @property
    def is_open(self) -> bool:
        return self.outcome is None

    @property
    def delivered_nothing(self) -> bool:
        """Known to have delivered no stimulation (so it does not count toward a dose).

        Never true of an interrupted session: what it delivered after its last status
        event (the dose figures are written once a second) is unknown.
        """
        return (
            self.outcome is not None
            and self.outcome is not Outcome.INTERRUPTED
            and self.on_time_us == 0
        )

    @property
    def duration_s(self) -> float | None:
        """For display only."""
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


class OverrideRecord(Frozen):
    id: int
    patient_code: str
    kind: str
    finding_code: str
    finding_message: str
    reason: str
    clinician: str
    recorded_at: datetime
