"""The bench validation record: proof that one device unit matches one profile.

Written by ``estim profile bench`` and kept by the clinic. A record binds the profile
(by its canonical SHA-256, so any edit to the profile invalidates it), the device unit
(serial number and firmware as the device reported them), the technician, the date,
and every measurement with its limit, its verdict and, for output current, how it was
measured (:class:`MeasurementMethod`). Sessions refuse a device that has no passing
record matching both the profile and the connected unit (:func:`check_record`).

Format versions: 1 (no measurement methods) and 2 (``method`` and ``source`` on a
measurement) are read; 2 is written.
"""

from __future__ import annotations

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

RECORD_SPEC_VERSION = 2
"""The newest validation-record format this code understands; newer files are refused."""

SIMULATOR_CAPABILITY = "sim-fault-injection"
"""Capability every estim simulator reports (its simulator-only command)."""

SERIAL_NOT_REPORTED = "not reported"
"""What a device identity's serial number starts with when the protocol carries none
(ScienceMode2: "not reported by ScienceMode2")."""

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
    """The unit on the bench, as it identified itself."""

    manufacturer: str = ""
    model: str
    serial_number: str = Field(min_length=1)
    firmware: str
    protocol_version: int
    capabilities: tuple[str, ...] = ()

    @classmethod
    def from_identity(cls, identity: DeviceIdentity) -> DeviceUnit:
        return cls(
            manufacturer=identity.manufacturer,
            model=identity.model,
            serial_number=identity.serial_number,
            firmware=identity.firmware,
            protocol_version=identity.protocol_version,
            capabilities=tuple(sorted(identity.capabilities)),
        )


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


def record_problems(
    record: ValidationRecord, profile: DeviceProfile, identity: DeviceIdentity
) -> list[str]:
    """Why ``record`` does not vouch for this profile and this connected unit (empty: it does)."""
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
    record: ValidationRecord | None, profile: DeviceProfile, identity: DeviceIdentity
) -> None:
    """Refuse (``PreflightBlocked``) unless ``record`` vouches for this profile and unit."""
    unit = (
        f"{identity.model} serial {identity.serial_number}"
        if serial_reported(identity)
        else f"this {identity.model} (its serial number is {identity.serial_number})"
    )
    fix = f"run `estim profile bench PROFILE --port PORT` on {unit} and keep the record it writes"
    if record is None:
        raise PreflightBlocked(f"no bench validation record for {unit}; {fix}")
    problems = record_problems(record, profile, identity)
    if problems:
        raise PreflightBlocked(
            "the bench validation record does not vouch for this device: "
            + "; ".join(problems)
            + f"; {fix}"
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
