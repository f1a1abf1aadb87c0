"""The bench validation record: proof that one device unit matches one profile.

Written by ``estim profile bench`` and kept by the clinic. A record binds the profile
(by its canonical SHA-256, so any edit to the profile invalidates it), the device unit
(serial number and firmware as the device reported them), the technician, the date,
and every measurement with its limit, its verdict and, for output current, how it was
measured (:class:`MeasurementMethod`). Sessions refuse a device that has no passing
record matching both the profile and the connected unit (:func:`check_record`).

A device that reports no serial number (ScienceMode2) cannot say which unit it is, so
a person says it: the technician enters the serial on the unit's label at the bench
(``label_serial``, with how it was obtained), and the clinician confirms the label of
the unit connected before a session (``unit_serial`` in :func:`record_problems`).

Format versions: 1 (no measurement methods), 2 (``method`` and ``source`` on a
measurement) and 3 (``label_serial`` and ``label_serial_source`` on the device) are
read; 3 is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PlainSerializer, model_validator

from estim.device.base import DeviceIdentity
from estim.device.profile import DeviceProfile
from estim.errors import InputError, PreflightBlocked
from estim.files import load_model, to_json
from estim.protocols.models import Frozen

RECORD_SPEC_VERSION = 3
"""The newest validation-record format this code understands; newer files are refused."""

SIMULATOR_CAPABILITY = "sim-fault-injection"
"""Capability every estim simulator reports (its simulator-only command)."""

SERIAL_NOT_REPORTED = "not reported"
"""What a device identity's serial number starts with when the protocol carries none
(ScienceMode2: "not reported by ScienceMode2")."""

LABEL_SERIAL_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9 ._/:#-]{0,62}[A-Za-z0-9])?$"
"""A serial number as printed on a unit's label: letters and digits, with spaces and
``. _ / : # -`` inside; at most 64 characters."""

UNIT_SERIAL_OPTION = "--unit-serial"
"""The command-line option that names the unit by its label (bench and session start)."""

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
# Decimals go out as JSON numbers (not strings) so a record reads back as it was written:
# estim parses JSON numbers as Decimal, and a figure like 250.344 survives the trip.
JsonDecimal = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NOT_VERIFIED = "not verified"  # could not be checked here: counts as not passed


class MeasurementMethod(StrEnum):
    """How a figure was measured (recorded for output current)."""

    DEVICE_READBACK = "device readback"  # the device's own current measurement
    EXTERNAL_INSTRUMENT = "external instrument"  # a technician's scope or meter
    SIMULATOR_INSTRUMENT = "simulator instrument"  # estim's simulator: its load model


class Measurement(Frozen):
    """One measured figure, with the limit it was held against."""

    name: str = Field(min_length=1)
    value: bool | int | JsonDecimal | None = None
    text: str | None = None  # a reading that is words, not a number (model, error code)
    unit: str = ""
    limit: str | None = None
    passed: bool | None = None  # None: informational
    method: MeasurementMethod | None = None  # how it was measured (output current)
    source: str | None = None  # who or what measured it, in words (technician, file)

    @property
    def shown(self) -> str:
        """The reading as a person reads it: number and unit, or the text."""
        if self.text is not None:
            return self.text
        if self.value is None:
            return ""
        return f"{self.value} {self.unit}".strip()


class CheckResult(Frozen):
    """One bench check: what was proven (or not), and the numbers behind it."""

    id: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    title: str = Field(min_length=1)
    outcome: Outcome
    detail: str = ""
    measurements: tuple[Measurement, ...] = ()


class DeviceUnit(Frozen):
    """The unit on the bench, as it identified itself, and the serial on its label."""

    manufacturer: str = ""
    model: str
    serial_number: str = Field(min_length=1)
    firmware: str
    protocol_version: int
    capabilities: tuple[str, ...] = ()
    label_serial: str | None = Field(default=None, pattern=LABEL_SERIAL_PATTERN)
    """The serial number printed on the unit's label, entered by the technician. For a
    device that reports none (ScienceMode2) it is all that names the unit."""
    label_serial_source: str | None = Field(default=None, min_length=1)
    """How ``label_serial`` was obtained, in words (who entered it, and how)."""

    @model_validator(mode="after")
    def _label_has_a_source(self) -> DeviceUnit:
        if (self.label_serial is None) != (self.label_serial_source is None):
            raise ValueError("label_serial and label_serial_source go together")
        return self

    @classmethod
    def from_identity(
        cls,
        identity: DeviceIdentity,
        *,
        label_serial: str | None = None,
        label_serial_source: str | None = None,
    ) -> DeviceUnit:
        return cls(
            manufacturer=identity.manufacturer,
            model=identity.model,
            serial_number=identity.serial_number,
            firmware=identity.firmware,
            protocol_version=identity.protocol_version,
            capabilities=tuple(sorted(identity.capabilities)),
            label_serial=label_serial,
            label_serial_source=label_serial_source,
        )

    @property
    def name(self) -> str:
        """The unit as a person finds it: by its reported serial, else by its label."""
        if serial_reported(self):
            return f"{self.model} serial {self.serial_number}"
        if self.label_serial is not None:
            return f"{self.model} labelled {self.label_serial}"
        return f"{self.model} (serial {self.serial_number}, no label serial recorded)"


class ValidationRecord(Frozen):
    spec_version: int = Field(default=RECORD_SPEC_VERSION, ge=1)
    kind: Literal["estim-bench-validation"] = "estim-bench-validation"
    profile_sha256: Sha256
    profile_model: str
    profile_source: str = ""
    device: DeviceUnit
    port: str
    technician: str = Field(min_length=1)
    started_at: datetime
    finished_at: datetime
    estim_version: str
    checks: tuple[CheckResult, ...] = Field(min_length=1)
    passed: bool

    @model_validator(mode="after")
    def _coherent(self) -> ValidationRecord:
        every_check_passed = all(c.outcome is Outcome.PASS for c in self.checks)
        if self.passed != every_check_passed:
            raise ValueError("passed must be true exactly when every check passed")
        if self.finished_at < self.started_at:
            raise ValueError("finished_at is before started_at")
        if self.started_at.tzinfo is None or self.finished_at.tzinfo is None:
            raise ValueError("times must carry a time zone (UTC)")
        return self

    def check(self, check_id: str) -> CheckResult:
        for result in self.checks:
            if result.id == check_id:
                return result
        raise KeyError(check_id)

    def matches(self, profile: DeviceProfile, identity: DeviceIdentity) -> bool:
        return not record_problems(self, profile, identity)

    @property
    def made_on_simulator(self) -> bool:
        return SIMULATOR_CAPABILITY in self.device.capabilities


def serial_reported(identity: DeviceIdentity | DeviceUnit) -> bool:
    """False when the device's protocol carries no serial number (ScienceMode2)."""
    return not identity.serial_number.startswith(SERIAL_NOT_REPORTED)


def parse_label_serial(text: str, *, what: str = UNIT_SERIAL_OPTION) -> str:
    """A serial number typed from a unit's label, trimmed, with runs of spaces made one.

    Refused (``InputError``, naming ``what``) unless it looks like a serial number
    (:data:`LABEL_SERIAL_PATTERN`), so a slip such as an empty answer or a pasted
    sentence never names a unit.
    """
    tidy = " ".join(text.split())
    if not tidy:
        raise InputError(f"{what}: give the serial number printed on the unit's label")
    if not re.fullmatch(LABEL_SERIAL_PATTERN, tidy):
        raise InputError(
            f"{what} {tidy!r} is not a serial number: type it as printed on the unit's "
            "label (letters and digits, with spaces and . _ / : # - inside; at most 64 "
            "characters)"
        )
    return tidy


def same_serial(first: str, second: str) -> bool:
    """Whether two serial numbers name the same unit.

    People read labels: case and spaces are not significant (``rs2 0417`` is
    ``RS2 0417`` and ``RS20417``), every other character is (``RS2-0417`` is not
    ``RS20417``).
    """
    return _canonical_serial(first) == _canonical_serial(second)


def _canonical_serial(text: str) -> str:
    return "".join(text.split()).casefold()


def unit_problems(
    record: ValidationRecord, identity: DeviceIdentity, unit_serial: str | None
) -> list[str]:
    """Why the record cannot be shown to be for the unit connected (empty: it can).

    ``unit_serial`` is a person's confirmation of the connected unit's label serial
    (None: nobody confirmed). A unit that reports its serial number is identified by
    it; a confirmation, if given, must name the same serial. A unit that reports none
    is identified only by its label: the record must name the label serial it was
    benched under, and a person must confirm that label on the unit connected.
    """
    model = identity.model
    if serial_reported(identity):
        if unit_serial is not None and not same_serial(unit_serial, identity.serial_number):
            return [
                f"the unit was confirmed as serial {unit_serial} ({UNIT_SERIAL_OPTION}), "
                f"but the connected {model} reports serial {identity.serial_number}: check "
                f"the label of the unit connected, or connect the unit labelled {unit_serial}"
            ]
        return []
    label = record.device.label_serial
    if label is None:
        return [
            f"the {model} reports no serial number and the record names no label serial, "
            f"so it cannot say which {model} it was made on (it was written without "
            f"{UNIT_SERIAL_OPTION}): bench this unit again with `estim profile bench "
            f"PROFILE --port PORT {UNIT_SERIAL_OPTION} SN`, SN being the serial on its label"
        ]
    if unit_serial is None:
        return [
            f"the {model} reports no serial number and nobody confirmed which unit is "
            f"connected: read the serial on the connected unit's label and give it with "
            f"{UNIT_SERIAL_OPTION} SN, or type it when asked in a terminal (the record is "
            f"for the unit labelled {label})"
        ]
    if not same_serial(unit_serial, label):
        return [
            f"the connected {model} was confirmed as label serial {unit_serial}, but the "
            f"record was made on the unit labelled {label}: connect that unit, or give "
            f"this unit's own record (benched with {UNIT_SERIAL_OPTION} {unit_serial})"
        ]
    return []


class ConfirmedHow(StrEnum):
    """How a person said which unit is connected."""

    OPTION = f"given with {UNIT_SERIAL_OPTION}"
    PROMPT = "typed at the prompt from the unit's label"


@dataclass(frozen=True, slots=True)
class UnitConfirmation:
    """A person's statement of which unit is connected: the serial on its label."""

    serial: str
    how: ConfirmedHow
    by: str  # who confirmed it

    def event_data(
        self, record: ValidationRecord | None, identity: DeviceIdentity
    ) -> dict[str, str | bool | None]:
        """What the session log keeps of it (the ``unit_confirmation`` event)."""
        return {
            "confirmed_serial": self.serial,
            "how": self.how.value,
            "confirmed_by": self.by,
            "device_serial": identity.serial_number,
            "record_label_serial": None if record is None else record.device.label_serial,
            "matches": record is not None and not unit_problems(record, identity, self.serial),
        }


def record_problems(
    record: ValidationRecord,
    profile: DeviceProfile,
    identity: DeviceIdentity,
    *,
    unit_serial: str | None = None,
) -> list[str]:
    """Why ``record`` does not vouch for this profile and this connected unit (empty: it does).

    ``unit_serial``: the connected unit's label serial as a person confirmed it (None:
    not confirmed); required for a unit that reports no serial number
    (:func:`unit_problems`).
    """
    problems = []
    if not record.passed:
        failed = [c.id for c in record.checks if c.outcome is not Outcome.PASS]
        problems.append(f"the bench validation did not pass ({', '.join(failed)})")
    if record.profile_sha256 != profile.sha256:
        problems.append(
            "the profile changed since it was validated "
            f"(record {record.profile_sha256[:12]}..., profile {profile.sha256[:12]}...)"
        )
    if record.device.serial_number != identity.serial_number:
        problems.append(
            f"the record is for serial {record.device.serial_number}, "
            f"the device is {identity.serial_number}"
        )
    else:
        problems.extend(unit_problems(record, identity, unit_serial))
    if record.device.firmware != identity.firmware:
        problems.append(
            f"the record is for firmware {record.device.firmware}, "
            f"the device runs {identity.firmware}"
        )
    if record.device.model != identity.model:
        problems.append(f"the record is for model {record.device.model!r}, not {identity.model!r}")
    # A unit that reports no serial number (ScienceMode2) is told apart from estim's
    # simulator of it only by the simulator's capability: a record made on the
    # simulator must never vouch for real hardware.
    if record.made_on_simulator and SIMULATOR_CAPABILITY not in identity.capabilities:
        problems.append(
            "the record was made on estim's simulator; the connected device is not a simulator"
        )
    return problems


def check_record(
    record: ValidationRecord | None,
    profile: DeviceProfile,
    identity: DeviceIdentity,
    *,
    unit_serial: str | None = None,
) -> None:
    """Refuse (``PreflightBlocked``) unless ``record`` vouches for this profile and unit.

    ``unit_serial`` as for :func:`record_problems`.
    """
    if serial_reported(identity):
        unit = f"{identity.model} serial {identity.serial_number}"
        bench = "`estim profile bench PROFILE --port PORT`"
    else:
        unit = f"this {identity.model} (its serial number is {identity.serial_number})"
        bench = f"`estim profile bench PROFILE --port PORT {UNIT_SERIAL_OPTION} SN` (SN: its label)"
    fix = f"run {bench} on {unit} and keep the record it writes"
    if record is None:
        raise PreflightBlocked(f"no bench validation record for {unit}; {fix}")
    problems = record_problems(record, profile, identity, unit_serial=unit_serial)
    if problems:
        # Which-unit problems say their own fix; the others need a (new) bench record.
        own_fix = unit_problems(record, identity, unit_serial)
        needs_bench = any(p not in own_fix for p in problems)
        raise PreflightBlocked(
            "the bench validation record does not vouch for this device: "
            + "; ".join(problems)
            + (f"; {fix}" if needs_bench else "")
        )


def save_record(record: ValidationRecord, path: Path | str) -> Path:
    """Write ``record`` as JSON (refusing to overwrite an existing record)."""
    target = Path(path)
    try:
        with target.open("x", encoding="utf-8") as handle:
            handle.write(to_json(record) + "\n")
    except FileExistsError as err:
        raise InputError(
            f"{target}: a file is already there; records are evidence, give a new path"
        ) from err
    except OSError as err:
        raise InputError(f"{target}: cannot write the record ({err.strerror})") from err
    return target


def load_record(path: Path | str) -> ValidationRecord:
    """Read and validate a record; a newer format or a malformed file is refused."""
    return load_model(
        ValidationRecord,
        Path(path),
        spec_version=RECORD_SPEC_VERSION,
        what="bench validation record",
    )


def utc_now() -> datetime:
    return datetime.now(UTC)
