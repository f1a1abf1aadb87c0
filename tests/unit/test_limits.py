"""Named limits: figures, sources, configurability and validation."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from pydantic import ValidationError

from estim.errors import InputError, SpecVersionError
from estim.protocols.models import Confidence
from estim.safety.limits import (
    DEFAULT_LIMITS,
    LimitId,
    Limits,
    limits_markdown_table,
    load_limits,
    rms_limit_id,
)

D = Decimal

EXPECTED_DEFAULTS = {
    LimitId.IEC_REFERENCE_LOAD: (D(500), "ohm"),
    LimitId.IEC_RMS_CURRENT_400HZ: (D(50), "mA rms"),
    LimitId.IEC_RMS_CURRENT_1500HZ: (D(80), "mA rms"),
    LimitId.IEC_RMS_CURRENT_ABOVE_1500HZ: (D(100), "mA rms"),
    LimitId.IEC_DC_COMPONENT: (D(80), "mA"),
    LimitId.IEC_ENERGY_PER_PULSE: (D(300), "mJ"),
    LimitId.IEC_OPEN_CIRCUIT_VOLTAGE: (D(500), "V"),
    LimitId.IEC_CURRENT_DENSITY_ATTENTION: (D(2), "mA rms/cm2"),
    LimitId.IEC_MINIMUM_OUTPUT: (D(2), "%"),
    LimitId.FDA_POWER_DENSITY: (D("0.25"), "W/cm2"),
    LimitId.FDA_MIN_BURST: (D(1), "s"),
    LimitId.FDA_MIN_REST: (D(1), "s"),
    LimitId.FDA_LEAKAGE_NORMAL: (D(100), "uA"),
    LimitId.FDA_LEAKAGE_SINGLE_FAULT: (D(500), "uA"),
    LimitId.SESSION_MAX: (D(30), "min"),
    LimitId.SESSION_HOME_AUTO_OFF: (D(20), "min"),
    LimitId.SESSIONS_PER_DAY_MAX: (D(1), "sessions/day"),
    LimitId.TITRATION_STEP_MAX: (D(1), "mA"),
    LimitId.TITRATION_TIME_MAX: (D(5), "min"),
    LimitId.RAMP_MIN: (D("0.1"), "s"),
    LimitId.PROBE_AMPLITUDE_MAX: (D(100), "mA"),
    LimitId.WATCHDOG_TIMEOUT_MAX: (D(1000), "ms"),
    LimitId.CURRENT_TOLERANCE_PERCENT_MAX: (D(10), "%"),
    LimitId.CURRENT_TOLERANCE_MA_MAX: (D(2), "mA"),
    LimitId.LONG_PULSE_AS_WARNINGS: (D(1), ""),
}


def test_every_limit_has_its_facts_sheet_figure() -> None:
    assert set(EXPECTED_DEFAULTS) == set(LimitId)
    for limit_id, (figure, unit) in EXPECTED_DEFAULTS.items():
        limit = DEFAULT_LIMITS.get(limit_id)
        assert (limit.figure, limit.unit) == (figure, unit), limit_id
        assert limit.source
        assert limit.title


def test_confirmed_limits_are_fixed_and_the_rest_configurable() -> None:
    for limit in DEFAULT_LIMITS.all():
        if limit.confidence is Confidence.C:
            assert not limit.configurable, limit.id
        else:
            assert limit.configurable, limit.id
            assert limit.field in Limits.model_fields


def test_confidence_marks() -> None:
    marks = {limit.id: limit.confidence for limit in DEFAULT_LIMITS.all()}
    assert marks[LimitId.IEC_RMS_CURRENT_400HZ] is Confidence.C
    assert marks[LimitId.FDA_POWER_DENSITY] is Confidence.C
    assert marks[LimitId.IEC_ENERGY_PER_PULSE] is Confidence.C2
    assert marks[LimitId.IEC_CURRENT_DENSITY_ATTENTION] is Confidence.C2
    assert marks[LimitId.WATCHDOG_TIMEOUT_MAX] is Confidence.U
    assert marks[LimitId.LONG_PULSE_AS_WARNINGS] is Confidence.I


def test_override_is_reported() -> None:
    limits = Limits(session_max_min=D(25), long_pulse_as_warnings=False)
    assert limits.get(LimitId.SESSION_MAX).figure == 25
    assert limits.get(LimitId.LONG_PULSE_AS_WARNINGS).figure == 0
    assert [limit.id for limit in limits.overrides()] == [
        LimitId.SESSION_MAX,
        LimitId.LONG_PULSE_AS_WARNINGS,
    ]
    assert DEFAULT_LIMITS.overrides() == ()


@pytest.mark.parametrize(
    "bad",
    [
        {"session_max_min": 0},
        {"session_max_min": 121},
        {"energy_per_pulse_mj": -1},
        {"ramp_min_s": 0},
        {"titration_step_max_ma": "lots"},
    ],
)
def test_bad_override_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Limits.model_validate(bad)


def test_confirmed_limit_cannot_be_overridden() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        Limits.model_validate({"fda_power_density": 1})


def test_limits_are_frozen() -> None:
    with pytest.raises(ValidationError):
        DEFAULT_LIMITS.session_max_min = D(90)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        (Fraction(1, 2), LimitId.IEC_RMS_CURRENT_400HZ),
        (Fraction(400), LimitId.IEC_RMS_CURRENT_400HZ),
        (Fraction(40001, 100), LimitId.IEC_RMS_CURRENT_1500HZ),
        (Fraction(1500), LimitId.IEC_RMS_CURRENT_1500HZ),
        (Fraction(1501), LimitId.IEC_RMS_CURRENT_ABOVE_1500HZ),
    ],
)
def test_rms_band(rate: Fraction, expected: LimitId) -> None:
    assert rms_limit_id(rate) is expected


def test_load_limits(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("session_max_min = 25\ntitration_step_max_ma = 0.5\n")
    limits = load_limits(path)
    assert limits.session_max_min == 25
    assert limits.titration_step_max_ma == D("0.5")


def test_load_limits_refuses_unknown_and_newer(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("iec_rms = 60\n")
    with pytest.raises(InputError, match="iec_rms"):
        load_limits(path)
    path.write_text("spec_version = 9\n")
    with pytest.raises(SpecVersionError, match="newer"):
        load_limits(path)


def test_markdown_table_lists_every_limit() -> None:
    table = limits_markdown_table()
    for limit_id in LimitId:
        assert f"`{limit_id.value}`" in table
    assert table.count("\n") == len(LimitId) + 2
