"""Named safety limits, each with its figure, unit, source and confidence.

Every number the static checks compare against lives here, named, with the place it
was read (``reference/safety-facts.md``) and a confidence mark:

- **C**: read in the named source. These are fixed: :class:`Limits` does not let a
  caller change them.
- **C2** (secondary or manufacturer source), **U** (commonly cited, unconfirmed) and
  **I** (our inference): *configurable*. :class:`Limits` holds them with their
  defaults; a site may override them (``Limits(session_max_min=Decimal(25))``), the
  overrides are validated at construction, and every verdict lists which were changed.

Figures are exact :class:`~decimal.Decimal`; the checks turn them into integers or
:class:`~fractions.Fraction` before comparing.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from estim.files import load_model
from estim.protocols.models import Confidence

IEC_60601_2_10_1987 = "IEC 60601-2-10:1987"
IEC_60601_2_10_2012 = "IEC 60601-2-10:2012 cl. 201.12.4.104"
FDA_PMS_1999 = "FDA guidance for powered muscle stimulator 510(k)s (1999)"
NHS_LEAFLET = "NHS pelvic-floor electrical stimulation patient leaflet"
COMMERCIAL = "commercial pelvic stimulator practice (facts sheet)"
OUR_INFERENCE = "estim design inference (facts sheet [I])"


LIMITS_SPEC_VERSION = 1
"""The limits-file format this code reads (a TOML table of overrides)."""


class LimitId(StrEnum):
    """Stable identifiers of every limit; findings and docs refer to limits by these."""

    IEC_REFERENCE_LOAD = "IEC_REFERENCE_LOAD"
    IEC_RMS_CURRENT_400HZ = "IEC_RMS_CURRENT_400HZ"
    IEC_RMS_CURRENT_1500HZ = "IEC_RMS_CURRENT_1500HZ"
    IEC_RMS_CURRENT_ABOVE_1500HZ = "IEC_RMS_CURRENT_ABOVE_1500HZ"
    IEC_DC_COMPONENT = "IEC_DC_COMPONENT"
    IEC_ENERGY_PER_PULSE = "IEC_ENERGY_PER_PULSE"
    IEC_OPEN_CIRCUIT_VOLTAGE = "IEC_OPEN_CIRCUIT_VOLTAGE"
    IEC_CURRENT_DENSITY_ATTENTION = "IEC_CURRENT_DENSITY_ATTENTION"
    IEC_MINIMUM_OUTPUT = "IEC_MINIMUM_OUTPUT"
    FDA_POWER_DENSITY = "FDA_POWER_DENSITY"
    FDA_MIN_BURST = "FDA_MIN_BURST"
    FDA_MIN_REST = "FDA_MIN_REST"
    FDA_LEAKAGE_NORMAL = "FDA_LEAKAGE_NORMAL"
    FDA_LEAKAGE_SINGLE_FAULT = "FDA_LEAKAGE_SINGLE_FAULT"
    SESSION_MAX = "SESSION_MAX"
    SESSION_HOME_AUTO_OFF = "SESSION_HOME_AUTO_OFF"
    SESSIONS_PER_DAY_MAX = "SESSIONS_PER_DAY_MAX"
    TITRATION_STEP_MAX = "TITRATION_STEP_MAX"
    TITRATION_TIME_MAX = "TITRATION_TIME_MAX"
    RAMP_MIN = "RAMP_MIN"
    PROBE_AMPLITUDE_MAX = "PROBE_AMPLITUDE_MAX"
    WATCHDOG_TIMEOUT_MAX = "WATCHDOG_TIMEOUT_MAX"
    CURRENT_TOLERANCE_PERCENT_MAX = "CURRENT_TOLERANCE_PERCENT_MAX"
    CURRENT_TOLERANCE_MA_MAX = "CURRENT_TOLERANCE_MA_MAX"
    LONG_PULSE_AS_WARNINGS = "LONG_PULSE_AS_WARNINGS"


@dataclass(frozen=True, slots=True)
class Limit:
    """One named limit with its current figure (the default or a site override)."""

    id: LimitId
    title: str
    figure: Decimal
    unit: str
    source: str
    confidence: Confidence
    field: str | None  # the Limits attribute that overrides it; None: fixed ([C])
    note: str = ""

    @property
    def configurable(self) -> bool:
        return self.field is not None

    @property
    def citation(self) -> str:
        """``source [mark]``, as findings and docs print it."""
        return f"{self.source} [{self.confidence.value}]"

    def __str__(self) -> str:
        return f"{self.figure} {self.unit}".strip()


@dataclass(frozen=True, slots=True)
class _Spec:
    title: str
    default: Decimal
    unit: str
    source: str
    confidence: Confidence
    field: str | None = None
    note: str = ""


D = Decimal
C, C2, U, I = Confidence.C, Confidence.C2, Confidence.U, Confidence.I  # noqa: E741

_SPECS: dict[LimitId, _Spec] = {
    LimitId.IEC_REFERENCE_LOAD: _Spec(
        "reference load for output, energy and r.m.s. figures",
        D(500),
        "ohm",
        IEC_60601_2_10_1987,
        C,
    ),
    LimitId.IEC_RMS_CURRENT_400HZ: _Spec(
        "r.m.s. output current into 500 ohm, pulse rate up to 400 Hz",
        D(50),
        "mA rms",
        f"{IEC_60601_2_10_1987}; {IEC_60601_2_10_2012}",
        C,
        note="a symmetric biphasic pulse counts both phases",
    ),
    LimitId.IEC_RMS_CURRENT_1500HZ: _Spec(
        "r.m.s. output current into 500 ohm, pulse rate 400-1500 Hz",
        D(80),
        "mA rms",
        IEC_60601_2_10_1987,
        C,
    ),
    LimitId.IEC_RMS_CURRENT_ABOVE_1500HZ: _Spec(
        "r.m.s. output current into 500 ohm, pulse rate above 1500 Hz",
        D(100),
        "mA rms",
        IEC_60601_2_10_1987,
        C,
    ),
    LimitId.IEC_DC_COMPONENT: _Spec(
        "DC component (mean current) into 500 ohm",
        D(80),
        "mA",
        IEC_60601_2_10_1987,
        C,
    ),
    LimitId.IEC_ENERGY_PER_PULSE: _Spec(
        "energy per pulse into 500 ohm",
        D(300),
        "mJ",
        "IEC 60601-2-10",
        C2,
        field="energy_per_pulse_mj",
    ),
    LimitId.IEC_OPEN_CIRCUIT_VOLTAGE: _Spec(
        "open-circuit peak output voltage",
        D(500),
        "V",
        "IEC 60601-2-10",
        C2,
        field="open_circuit_voltage_max_v",
        note="checked against the profile's compliance voltage",
    ),
    LimitId.IEC_CURRENT_DENSITY_ATTENTION: _Spec(
        "current density that needs the operator's special attention",
        D(2),
        "mA rms/cm2",
        "IEC 60601-2-10",
        C2,
        field="current_density_attention_ma_per_cm2",
        note="computed on the smallest contact of the electrodes used (FDA 1999)",
    ),
    LimitId.IEC_MINIMUM_OUTPUT: _Spec(
        "output at the minimum setting, as a share of the maximum",
        D(2),
        "%",
        "IEC 60601-2-10",
        C2,
        field="minimum_output_percent",
        note="checked as the smallest non-zero amplitude step of the profile",
    ),
    LimitId.FDA_POWER_DENSITY: _Spec(
        "maximum average power density, averaged over 1 s at maximum duty cycle",
        D("0.25"),
        "W/cm2",
        FDA_PMS_1999,
        C,
    ),
    LimitId.FDA_MIN_BURST: _Spec(
        "stimulation per burst for effective muscle work",
        D(1),
        "s",
        FDA_PMS_1999,
        C,
    ),
    LimitId.FDA_MIN_REST: _Spec(
        "rest between bursts for effective muscle work",
        D(1),
        "s",
        FDA_PMS_1999,
        C,
    ),
    LimitId.FDA_LEAKAGE_NORMAL: _Spec(
        "leakage current, normal condition",
        D(100),
        "uA",
        FDA_PMS_1999,
        C,
    ),
    LimitId.FDA_LEAKAGE_SINGLE_FAULT: _Spec(
        "leakage current, single-fault condition",
        D(500),
        "uA",
        FDA_PMS_1999,
        C,
    ),
    LimitId.SESSION_MAX: _Spec(
        "session duration (stress protocols use 15-30 min)",
        D(30),
        "min",
        "pelvic-floor stimulation parameters (facts sheet)",
        C2,
        field="session_max_min",
    ),
    LimitId.SESSION_HOME_AUTO_OFF: _Spec(
        "home devices switch off automatically after this long",
        D(20),
        "min",
        NHS_LEAFLET,
        C,
    ),
    LimitId.SESSIONS_PER_DAY_MAX: _Spec(
        "sessions per day on a home device",
        D(1),
        "sessions/day",
        NHS_LEAFLET,
        C,
    ),
    LimitId.TITRATION_STEP_MAX: _Spec(
        "largest amplitude step per press while titrating",
        D(1),
        "mA",
        COMMERCIAL,
        C2,
        field="titration_step_max_ma",
        note="commercial units step 0.1 mA or 1 % a press, without auto-repeat",
    ),
    LimitId.TITRATION_TIME_MAX: _Spec(
        "longest titration: output on while the amplitude is being found",
        D(5),
        "min",
        OUR_INFERENCE,
        I,
        field="titration_time_max_min",
        note="a titration takes a minute or two at one press a second; time in it is "
        "stimulation outside the prescribed session, so it is capped separately",
    ),
    LimitId.RAMP_MIN: _Spec(
        "shortest ramp: output starts at zero and ramps up",
        D("0.1"),
        "s",
        COMMERCIAL,
        C2,
        field="ramp_min_s",
        note="commercial ramps are 0.1-9.9 s",
    ),
    LimitId.PROBE_AMPLITUDE_MAX: _Spec(
        "typical maximum amplitude with an intravaginal or anal probe",
        D(100),
        "mA",
        "typical probe current range 0-90 / 0-100 mA (facts sheet)",
        U,
        field="probe_amplitude_max_ma",
    ),
    LimitId.WATCHDOG_TIMEOUT_MAX: _Spec(
        "device communication-loss watchdog timeout",
        D(1000),
        "ms",
        "ScienceMode2 keep-alive 0.8 s, ScienceMode4 1.5 s, ventilators 120 ms; "
        "no stimulator figure found",
        U,
        field="watchdog_timeout_max_ms",
    ),
    LimitId.CURRENT_TOLERANCE_PERCENT_MAX: _Spec(
        "measured-vs-commanded current tolerance, relative",
        D(10),
        "%",
        OUR_INFERENCE,
        I,
        field="current_tolerance_percent_max",
    ),
    LimitId.CURRENT_TOLERANCE_MA_MAX: _Spec(
        "measured-vs-commanded current tolerance, absolute",
        D(2),
        "mA",
        OUR_INFERENCE,
        I,
        field="current_tolerance_ma_max",
    ),
    LimitId.LONG_PULSE_AS_WARNINGS: _Spec(
        "long-pulse protocol on a long-pulse device: IEC r.m.s. and energy figures are "
        "warnings needing acknowledgement, not errors (1 = yes, 0 = no)",
        D(1),
        "",
        "denervated-muscle regimes exceed 50 mA r.m.s. easily; allowed only on a device "
        "that declares long-pulse capability (facts sheet flag)",
        I,
        field="long_pulse_as_warnings",
    ),
}


class Limits(BaseModel):
    """The configurable limits with their defaults; the fixed ([C]) ones are not here.

    Construct with keyword overrides; a value outside the sanity range is refused
    (:class:`pydantic.ValidationError`, or :class:`~estim.errors.InputError` through
    :func:`estim.files.validate` when loaded from a file). Never clamped.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec_version: int = Field(default=LIMITS_SPEC_VERSION, ge=1)
    energy_per_pulse_mj: Decimal = Field(default=D(300), gt=0, le=10_000)
    open_circuit_voltage_max_v: Decimal = Field(default=D(500), gt=0, le=1_000)
    current_density_attention_ma_per_cm2: Decimal = Field(default=D(2), gt=0, le=20)
    minimum_output_percent: Decimal = Field(default=D(2), gt=0, le=20)
    session_max_min: Decimal = Field(default=D(30), gt=0, le=120)
    titration_step_max_ma: Decimal = Field(default=D(1), gt=0, le=10)
    titration_time_max_min: Decimal = Field(default=D(5), gt=0, le=30)
    ramp_min_s: Decimal = Field(default=D("0.1"), gt=0, le=10)
    probe_amplitude_max_ma: Decimal = Field(default=D(100), gt=0, le=250)
    watchdog_timeout_max_ms: Decimal = Field(default=D(1000), gt=0, le=10_000)
    current_tolerance_percent_max: Decimal = Field(default=D(10), ge=0, le=50)
    current_tolerance_ma_max: Decimal = Field(default=D(2), ge=0, le=20)
    long_pulse_as_warnings: bool = True

    def get(self, limit_id: LimitId) -> Limit:
        """The limit with its figure as configured here."""
        spec = _SPECS[limit_id]
        figure = spec.default
        if spec.field is not None:
            value: Any = getattr(self, spec.field)
            figure = D(int(value)) if isinstance(value, bool) else D(value)
        return Limit(
            limit_id,
            spec.title,
            figure,
            spec.unit,
            spec.source,
            spec.confidence,
            spec.field,
            spec.note,
        )

    def overrides(self) -> tuple[Limit, ...]:
        """Limits whose figure differs from the default, in :class:`LimitId` order."""
        return tuple(
            self.get(limit_id)
            for limit_id, spec in _SPECS.items()
            if self.get(limit_id).figure != spec.default
        )

    def all(self) -> tuple[Limit, ...]:
        return tuple(self.get(limit_id) for limit_id in LimitId)


DEFAULT_LIMITS = Limits()


def default_limit(limit_id: LimitId) -> Limit:
    return DEFAULT_LIMITS.get(limit_id)


def load_limits(path: Path | str) -> Limits:
    """Site overrides from a TOML / JSON file (only the configurable limits)."""
    return load_model(Limits, Path(path), spec_version=LIMITS_SPEC_VERSION, what="limits")


def rms_limit_id(rate_hz: Fraction) -> LimitId:
    """The IEC r.m.s. band of a pulse rate: up to 400 Hz, up to 1500 Hz, above."""
    if rate_hz > 1500:
        return LimitId.IEC_RMS_CURRENT_ABOVE_1500HZ
    if rate_hz > 400:
        return LimitId.IEC_RMS_CURRENT_1500HZ
    return LimitId.IEC_RMS_CURRENT_400HZ


def limits_markdown_table(limits: Limits = DEFAULT_LIMITS) -> str:
    """The table of ``docs/safety/limits.md`` (kept in step by a test)."""
    rows = [
        "| ID | limit | figure | source | mark | configurable as |",
        "|---|---|---|---|---|---|",
    ]
    for limit in limits.all():
        field = f"`{limit.field}`" if limit.field else "fixed"
        title = limit.title + (f" ({limit.note})" if limit.note else "")
        rows.append(
            f"| `{limit.id.value}` | {title} | {limit} | {limit.source} | "
            f"[{limit.confidence.value}] | {field} |"
        )
    return "\n".join(rows) + "\n"
