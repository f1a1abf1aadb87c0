"""What a stimulator can do: a versioned device profile, loaded from ``profiles/*.toml``.

A profile is the technician's statement about one model of stimulator: identity,
serial settings and wire protocol, output ranges and resolution, supported pulse
shapes, compliance voltage, watchdog, measurement tolerance, the impedance range of a
good electrode contact, and the contact areas of the probes used with it. The static
checks hold protocols against it; the simulator impersonates it; the bench validation
proves it true on a real unit.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from estim.errors import NotFoundError
from estim.files import load_model
from estim.protocols.models import (
    ElectrodeKind,
    Frozen,
    NonNegativeDecimal,
    PositiveDecimal,
    ShapeKind,
    canonical_hash,
)
from estim.units import ma_to_ua, ms_to_us

PROFILE_SPEC_VERSION = 1
"""The newest device-profile format this code understands; newer files are refused."""

VersionText = Annotated[str, Field(pattern=r"^\d+(\.\d+){0,3}$")]


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


class Identity(Frozen):
    manufacturer: str = Field(min_length=1)
    model: str = Field(min_length=1)
    firmware_min: VersionText
    firmware_max: VersionText

    @model_validator(mode="after")
    def _range_ordered(self) -> Identity:
        if version_tuple(self.firmware_min) > version_tuple(self.firmware_max):
            raise ValueError("firmware_min is above firmware_max")
        return self

    def accepts_firmware(self, firmware: str) -> bool:
        try:
            version = version_tuple(firmware)
        except ValueError:
            return False
        return version_tuple(self.firmware_min) <= version <= version_tuple(self.firmware_max)


class Link(Frozen):
    """Serial settings and the wire protocol the driver registry looks up."""

    wire_protocol: str = Field(min_length=1)
    baudrate: int = Field(gt=0, le=4_000_000)
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: Literal[1, 2] = 1
    reply_timeout_ms: int = Field(default=100, ge=1, le=10_000)
    heartbeat_period_ms: int = Field(gt=0, le=10_000)
    watchdog_timeout_ms: int = Field(gt=0, le=10_000)

    @model_validator(mode="after")
    def _heartbeat_beats_watchdog(self) -> Link:
        # Two heartbeats must fit in the watchdog window, or one lost frame trips it.
        if 2 * self.heartbeat_period_ms > self.watchdog_timeout_ms:
            raise ValueError(
                f"heartbeat_period_ms {self.heartbeat_period_ms} must be at most half of "
                f"watchdog_timeout_ms {self.watchdog_timeout_ms}"
            )
        return self


class Output(Frozen):
    """Hardware output ranges. The device enforces these itself; so does the simulator."""

    channels: int = Field(ge=1, le=16)
    amplitude_max_ma: PositiveDecimal = Field(le=500)
    amplitude_resolution_ma: PositiveDecimal
    phase_width_min_us: int = Field(gt=0)
    phase_width_max_us: int = Field(gt=0)
    phase_width_resolution_us: int = Field(default=1, gt=0)
    frequency_min_hz: PositiveDecimal
    frequency_max_hz: PositiveDecimal
    pulse_period_resolution_us: int | None = Field(default=None, gt=0)
    supported_shapes: tuple[ShapeKind, ...] = Field(min_length=1)
    compliance_voltage_v: PositiveDecimal = Field(le=500)
    # Whether the device can ramp by itself. estim never hands it a ramp (the wire
    # protocols cannot say how long); a profile that sets this is refused by the
    # profile check (PROFILE_DEVICE_RAMPS) so a session never relies on it.
    device_ramps: bool = False

    @model_validator(mode="after")
    def _ranges_ordered(self) -> Output:
        if self.phase_width_min_us > self.phase_width_max_us:
            raise ValueError("phase_width_min_us is above phase_width_max_us")
        if self.frequency_min_hz > self.frequency_max_hz:
            raise ValueError("frequency_min_hz is above frequency_max_hz")
        if self.amplitude_resolution_ma > self.amplitude_max_ma:
            raise ValueError("amplitude_resolution_ma is above amplitude_max_ma")
        ma_to_ua(self.amplitude_resolution_ma)  # must be a whole number of uA
        ma_to_ua(self.amplitude_max_ma)
        return self

    @property
    def amplitude_max_ua(self) -> int:
        return ma_to_ua(self.amplitude_max_ma)

    @property
    def amplitude_resolution_ua(self) -> int:
        return ma_to_ua(self.amplitude_resolution_ma)

    @property
    def long_pulse_capable(self) -> bool:
        return any(
            kind in self.supported_shapes
            for kind in (ShapeKind.LONG_BIPHASIC_RECTANGULAR, ShapeKind.LONG_BIPHASIC_TRIANGULAR)
        )


class Measurement(Frozen):
    """What the device measures and how closely measured current tracks commanded."""

    measures_current: bool
    measures_impedance: bool
    current_tolerance_ma: NonNegativeDecimal
    current_tolerance_percent: NonNegativeDecimal = Field(le=50)
    status_period_ms: int = Field(default=100, gt=0, le=10_000)

    @model_validator(mode="after")
    def _whole_microamps(self) -> Measurement:
        ma_to_ua(self.current_tolerance_ma)  # a whole number of uA, like every current
        return self

    def tolerance_ua(self, commanded_ua: int) -> Fraction:
        """Allowed |measured - commanded|: the larger of the absolute and relative bounds."""
        absolute = Fraction(ma_to_ua(self.current_tolerance_ma))
        relative = Fraction(commanded_ua) * Fraction(self.current_tolerance_percent) / 100
        return max(absolute, relative)


class Impedance(Frozen):
    """Load impedance of a good electrode contact, and the open-circuit threshold."""

    good_min_ohm: PositiveDecimal
    good_max_ohm: PositiveDecimal
    open_circuit_ohm: PositiveDecimal

    @model_validator(mode="after")
    def _ordered(self) -> Impedance:
        if not self.good_min_ohm < self.good_max_ohm < self.open_circuit_ohm:
            raise ValueError("need good_min_ohm < good_max_ohm < open_circuit_ohm")
        return self


class ElectrodeSet(Frozen):
    """A probe or electrode set used with this device, with its contact areas."""

    name: str = Field(min_length=1)
    kind: ElectrodeKind
    contact_areas_cm2: tuple[PositiveDecimal, ...] = Field(min_length=1)

    @property
    def smallest_contact_cm2(self) -> Decimal:
        return min(self.contact_areas_cm2)


class Leakage(Frozen):
    """Hardware leakage current (FDA 1999: <= 100 uA normal, <= 500 uA single fault)."""

    normal_ua: NonNegativeDecimal
    single_fault_ua: NonNegativeDecimal


class DeviceProfile(Frozen):
    spec_version: int = Field(default=PROFILE_SPEC_VERSION, ge=1)
    identity: Identity
    link: Link
    output: Output
    measurement: Measurement
    impedance: Impedance
    electrodes: tuple[ElectrodeSet, ...] = Field(min_length=1)
    leakage: Leakage | None = None
    notes: str = ""

    @property
    def sha256(self) -> str:
        return canonical_hash(self)

    @property
    def watchdog_timeout_us(self) -> int:
        return ms_to_us(self.link.watchdog_timeout_ms)

    def electrodes_of(self, kinds: tuple[ElectrodeKind, ...]) -> tuple[ElectrodeSet, ...]:
        return tuple(e for e in self.electrodes if e.kind in kinds)


def load_profile(path: Path | str) -> DeviceProfile:
    """Load and validate a profile file (TOML or JSON); refuse newer spec versions."""
    return load_model(
        DeviceProfile, Path(path), spec_version=PROFILE_SPEC_VERSION, what="device profile"
    )


def builtin_profiles_dir() -> Path:
    return Path(str(resources.files("estim.device") / "profiles"))


def builtin_profile(name: str) -> DeviceProfile:
    """A profile shipped with estim, by file stem (e.g. ``estim-pf2``)."""
    path = builtin_profiles_dir() / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in builtin_profiles_dir().glob("*.toml")))
        raise NotFoundError(f"no built-in profile {name!r}; known: {known}")
    return load_profile(path)
