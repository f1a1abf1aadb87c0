"""Unit tests of the protocol, prescription and profile models, with hand-computed figures."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from fractions import Fraction

import pytest
from pydantic import ValidationError

from estim.device.profile import builtin_profile
from estim.errors import InputError
from estim.protocols.catalog import get_protocol
from estim.protocols.models import (
    AdjustableRange,
    AmplitudePolicy,
    AsymmetricBiphasic,
    Continuous,
    CycledDuty,
    LongBiphasicRectangular,
    LongBiphasicTriangular,
    MonophasicRectangular,
    Protocol,
    PulseTrain,
    SymmetricBiphasic,
    canonical_decimal,
    canonical_hash,
)
from estim.protocols.prescription import Prescription, ProtocolRef, resolve

D = Decimal


# --- shapes: charge and square integral (uA, us) -----------------------------------


def test_symmetric_biphasic_charge_and_square_integral() -> None:
    shape = SymmetricBiphasic(phase_width_us=300)
    # 40 mA = 40_000 uA for 300 us: 12_000_000 pC = 12 uC per phase, +12 then -12.
    assert shape.max_phase_charge_pc(40_000) == 12_000_000
    assert shape.net_charge_pc(40_000) == 0
    # (40_000 uA)^2 x 300 us x 2 phases = 1.6e9 x 600 = 9.6e11 uA^2 us
    assert shape.square_integral(40_000) == 960_000_000_000
    assert shape.pulse_duration_us == 600
    assert not shape.is_long_pulse


def test_interphase_gap_counts_in_duration_only() -> None:
    shape = SymmetricBiphasic(phase_width_us=200, interphase_gap_us=50)
    assert shape.pulse_duration_us == 450  # 200 + 50 + 200
    assert shape.square_integral(1000) == 1000**2 * 400


def test_asymmetric_biphasic_is_charge_balanced() -> None:
    shape = AsymmetricBiphasic(lead_phase_width_us=200, recovery_phase_width_us=800)
    lead, recovery = shape.phases
    # recovery amplitude = peak x 200 / 800 = a quarter of the peak
    assert recovery.peak_ratio == Fraction(1, 4)
    # charge: +10_000 uA x 200 us = 2_000_000 pC; -2_500 uA x 800 us = -2_000_000 pC
    assert lead.charge_pc(10_000) == 2_000_000
    assert recovery.charge_pc(10_000) == -2_000_000
    assert shape.net_charge_pc(10_000) == 0
    # square: 10_000^2 x 200 + 2_500^2 x 800 = 2e10 + 5e9 = 2.5e10
    assert shape.square_integral(10_000) == 25_000_000_000
    assert shape.max_phase_charge_pc(10_000) == 2_000_000


def test_asymmetric_recovery_shorter_than_lead_is_refused() -> None:
    with pytest.raises(ValidationError, match="recovery_phase_width_us must be at least"):
        AsymmetricBiphasic(lead_phase_width_us=400, recovery_phase_width_us=200)


def test_long_rectangular_pulse() -> None:
    shape = LongBiphasicRectangular(phase_width_us=75_000)
    assert shape.is_long_pulse
    # 100 mA x 75 ms = 7.5 mC = 7_500_000_000 pC per phase
    assert shape.max_phase_charge_pc(100_000) == 7_500_000_000
    # 100_000^2 x 75_000 x 2 = 1.5e15 uA^2 us
    assert shape.square_integral(100_000) == 1_500_000_000_000_000


def test_triangular_phase_has_half_the_charge_and_a_third_of_the_square() -> None:
    shape = LongBiphasicTriangular(phase_width_us=100_000)
    # triangle area: peak x width / 2 = 60_000 x 100_000 / 2 = 3e9 pC
    assert shape.max_phase_charge_pc(60_000) == 3_000_000_000
    # integral of (p t / w)^2 over w = p^2 w / 3 per phase: 3.6e9 x 1e5 / 3 x 2 = 2.4e14
    assert shape.square_integral(60_000) == 240_000_000_000_000
    assert shape.net_charge_pc(60_000) == 0


def test_monophasic_carries_net_charge_and_is_long_above_5_ms() -> None:
    short = MonophasicRectangular(phase_width_us=5_000)
    long = MonophasicRectangular(phase_width_us=100_000)
    assert not short.is_long_pulse
    assert long.is_long_pulse
    # 50 mA x 100 ms = 5 mC
    assert long.net_charge_pc(50_000) == 5_000_000_000


@pytest.mark.parametrize(
    ("cls", "width"),
    [(SymmetricBiphasic, 5_001), (SymmetricBiphasic, 0), (LongBiphasicRectangular, 500_001)],
)
def test_phase_width_out_of_range_is_refused(cls: type, width: int) -> None:
    with pytest.raises(ValidationError):
        cls(phase_width_us=width)


# --- trains --------------------------------------------------------------------------


def test_train_period_from_frequency_is_exact() -> None:
    train = PulseTrain(shape=SymmetricBiphasic(phase_width_us=300), frequency_hz=D(35))
    assert train.period_us == Fraction(1_000_000, 35)  # 28571.428... us, no rounding
    assert train.rate_hz == 35


def test_train_period_from_interval() -> None:
    train = PulseTrain(
        shape=LongBiphasicRectangular(phase_width_us=75_000), pulse_interval_ms=D(650)
    )
    assert train.period_us == 650_000
    assert train.rate_hz == Fraction(1_000_000, 650_000)  # 1.538 Hz


def test_train_needs_exactly_one_rate() -> None:
    shape = SymmetricBiphasic(phase_width_us=300)
    with pytest.raises(ValidationError, match="exactly one"):
        PulseTrain(shape=shape)
    with pytest.raises(ValidationError, match="exactly one"):
        PulseTrain(shape=shape, frequency_hz=D(50), pulse_interval_ms=D(20))


def test_overlapping_pulses_are_refused() -> None:
    # 2 x 75 ms = 150 ms pulse cannot repeat every 100 ms (10 Hz)
    with pytest.raises(ValidationError, match="pulses overlap"):
        PulseTrain(shape=LongBiphasicRectangular(phase_width_us=75_000), frequency_hz=D(10))


# --- cycles and protocols ------------------------------------------------------------


def test_cycled_duty_times() -> None:
    cycle = CycledDuty(ramp_up_s=D(1), on_s=D(5), ramp_down_s=D(1), off_s=D(10))
    assert cycle.burst_us == 7_000_000
    assert cycle.period_us == 17_000_000


def test_cycle_refuses_negative_and_zero_on() -> None:
    with pytest.raises(ValidationError):
        CycledDuty(ramp_up_s=D(-1), on_s=D(5), ramp_down_s=D(1), off_s=D(1))
    with pytest.raises(ValidationError):
        CycledDuty(ramp_up_s=D(1), on_s=D(0), ramp_down_s=D(1), off_s=D(1))


def test_amplitude_policy_step_not_above_ceiling() -> None:
    with pytest.raises(ValidationError, match="titration_step_ma cannot exceed"):
        AmplitudePolicy(ceiling_ma=D("0.5"), titration_step_ma=D(1))
    policy = AmplitudePolicy(ceiling_ma=D("12.3"), titration_step_ma=D("0.1"))
    assert (policy.ceiling_ua, policy.titration_step_ua) == (12_300, 100)


def _stress_data() -> dict[str, object]:
    return get_protocol("stress").model_dump()


def test_protocol_session_shorter_than_one_cycle_is_refused() -> None:
    data = _stress_data()
    data["session_duration_min"] = D("0.2")  # 12 s < 17 s cycle
    with pytest.raises(ValidationError, match="shorter than one cycle"):
        Protocol.model_validate(data)


def test_protocol_adjustable_range_must_hold_own_value() -> None:
    data = _stress_data()
    data["adjustable"] = {"frequency_hz": {"min": 10, "max": 20}}  # own value is 50
    with pytest.raises(ValidationError, match="lies outside"):
        Protocol.model_validate(data)


def test_protocol_adjustable_must_apply() -> None:
    data = get_protocol("urge").model_dump()
    data["adjustable"] = {"on_s": {"min": 1, "max": 5}}  # continuous: no on_s
    with pytest.raises(ValidationError, match="does not apply"):
        Protocol.model_validate(data)


def test_protocol_sessions_per_week_bounded_by_day() -> None:
    data = _stress_data()
    data["sessions_per_week"] = 8  # > 7 x 1
    with pytest.raises(ValidationError, match="exceeds 7 x sessions_per_day"):
        Protocol.model_validate(data)


def test_protocol_unknown_key_refused() -> None:
    data = _stress_data()
    data["colour"] = "blue"
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Protocol.model_validate(data)


def test_adjustable_range_order_and_membership() -> None:
    with pytest.raises(ValidationError, match="above max"):
        AdjustableRange(min=D(5), max=D(1))
    allowed = AdjustableRange(min=D(1), max=D(5))
    assert D(5) in allowed
    assert D("5.01") not in allowed
    assert "3" not in allowed  # not a number


def test_continuous_session() -> None:
    protocol = get_protocol("urge")
    assert isinstance(protocol.cycle, Continuous)
    assert protocol.session_us == 20 * 60 * 1_000_000
    assert protocol.minimum_session_us == 4_000_000  # ramps 2 s + 2 s


# --- canonical hash ------------------------------------------------------------------


def test_canonical_decimal_is_by_value() -> None:
    assert canonical_decimal(D("50")) == canonical_decimal(D("50.0")) == "50"
    assert canonical_decimal(D("5E+1")) == "50"
    assert canonical_decimal(D("0.50")) == "0.5"
    assert canonical_decimal(D("-0.0")) == "0"


def test_content_hash_ignores_number_spelling() -> None:
    data = _stress_data()
    a = Protocol.model_validate(data)
    data["amplitude"] = {"ceiling_ma": D("50.000"), "titration_step_ma": D("1.0")}
    b = Protocol.model_validate(data)
    assert a.content_hash == b.content_hash
    data["amplitude"] = {"ceiling_ma": D("49.9"), "titration_step_ma": D("1")}
    c = Protocol.model_validate(data)
    assert c.content_hash != a.content_hash


def test_profile_hash_is_stable() -> None:
    profile = builtin_profile("estim-pf2")
    assert profile.sha256 == canonical_hash(profile)
    assert len(profile.sha256) == 64


# --- prescriptions -------------------------------------------------------------------


def _rx(**changes: object) -> Prescription:
    protocol = get_protocol("stress")
    data: dict[str, object] = {
        "patient_code": "P-001",
        "protocol": ProtocolRef.of(protocol),
        "max_amplitude_ma": D(40),
        "prescriber": "Dr Test",
        "start_date": date(2026, 1, 5),
    }
    data.update(changes)
    return Prescription.model_validate(data)


def test_prescription_resolves_with_adjustments() -> None:
    protocol = get_protocol("stress")
    rx = _rx(adjustments={"frequency_hz": D(35), "on_s": D(8)}, titration_step_ma=D("0.2"))
    resolved = resolve(rx, protocol)
    assert resolved.ceiling_ua == 40_000
    assert resolved.step_ua == 200
    assert resolved.protocol.pulse.frequency_hz == 35
    assert isinstance(resolved.protocol.cycle, CycledDuty)
    assert resolved.protocol.cycle.on_s == 8
    assert resolved.library_protocol is protocol


def test_prescription_step_defaults_to_protocol() -> None:
    resolved = resolve(_rx(), get_protocol("stress"))
    assert resolved.step_ua == 1_000


def test_prescription_above_protocol_ceiling_lists_every_problem() -> None:
    rx = _rx(
        max_amplitude_ma=D(60),
        titration_step_ma=D(2),
        adjustments={"frequency_hz": D(80), "off_s": D(2)},
    )
    with pytest.raises(InputError) as info:
        resolve(rx, get_protocol("stress"))
    locations = [p.location for p in info.value.problems]
    assert locations == [
        "max_amplitude_ma",
        "titration_step_ma",
        "adjustments.frequency_hz",
        "adjustments.off_s",
    ]
    text = str(info.value)
    assert "<= 50 mA (stress)" in text
    assert "[35, 50]" in text


def test_prescription_for_changed_protocol_is_refused() -> None:
    protocol = get_protocol("stress")
    rx = _rx(protocol=ProtocolRef(id="stress", version=protocol.version, sha256="0" * 64))
    with pytest.raises(InputError, match="content changed"):
        resolve(rx, protocol)


def test_prescription_for_other_protocol_is_refused() -> None:
    with pytest.raises(InputError, match="different protocol"):
        resolve(_rx(), get_protocol("urge"))


def test_prescription_adjusting_undeclared_parameter() -> None:
    urge = get_protocol("urge")
    rx = _rx(protocol=ProtocolRef.of(urge), adjustments={"off_s": D(12)})
    with pytest.raises(InputError) as info:
        resolve(rx, urge)
    assert [p.location for p in info.value.problems] == ["adjustments.off_s"]
    assert "does not declare this parameter" in str(info.value)


def test_prescription_dates() -> None:
    with pytest.raises(ValidationError, match="before start_date"):
        _rx(end_date=date(2025, 1, 1))
    rx = _rx(end_date=date(2026, 3, 1))
    assert rx.is_active_on(date(2026, 2, 1))
    assert not rx.is_active_on(date(2026, 3, 2))
    assert not rx.is_active_on(date(2026, 1, 4))


def test_prescription_patient_code_pattern() -> None:
    with pytest.raises(ValidationError):
        _rx(patient_code="has spaces")


def test_amplitudes_are_whole_microamps() -> None:
    # 0.0001 mA would be a tenth of a microamp: refused at load, not later
    with pytest.raises(ValidationError, match="not a whole number of uA"):
        _rx(max_amplitude_ma=D("0.0001"))
    with pytest.raises(ValidationError, match="not a whole number of uA"):
        AmplitudePolicy(ceiling_ma=D("1.0005"), titration_step_ma=D("0.1"))
    data = builtin_profile("estim-pf2").model_dump()
    data["output"]["amplitude_max_ma"] = D("90.0001")
    with pytest.raises(ValidationError, match="not a whole number of uA"):
        type(builtin_profile("estim-pf2")).model_validate(data)
