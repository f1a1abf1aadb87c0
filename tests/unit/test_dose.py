"""Dose figures with hand-computed expected values (arithmetic in the comments).

Units: charge in pC (uA x us), square integral in uA^2 x us, mean square in uA^2,
energy in uJ (uA^2 x us x 500 ohm x 1e-12).
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from estim.protocols.catalog import get_protocol
from estim.protocols.dose import Dose, dose_at, dose_of, fixed, pulses_in_burst, significant
from estim.protocols.models import MonophasicRectangular, Protocol, PulseTrain
from estim.protocols.prescription import Prescription, ProtocolRef, resolve

D = Decimal


def at_ceiling(protocol_id: str, areas: tuple[Decimal, ...] = ()) -> Dose:
    protocol = get_protocol(protocol_id)
    return dose_at(protocol, protocol.amplitude.ceiling_ua, areas)


def test_stress_at_ceiling() -> None:
    dose = at_ceiling("stress", (D("9.8"), D("9.8")))
    # 50 Hz -> 20_000 us period; cycle 1 + 5 + 1 + 10 = 17 s; 20 min = 1200 s
    assert dose.period_us == 20_000
    assert dose.bursts == dose.contractions == 70  # floor(1200 / 17) = 70 (1190 s)
    assert dose.session_us == 1_190_000_000
    assert dose.stimulating_us == 70 * 7_000_000  # 490 s
    assert dose.plateau_us == 70 * 5_000_000  # 350 s
    assert dose.pulses_per_burst == 350  # 7 s x 50 Hz
    assert dose.pulses == 24_500
    # 50_000 uA x 300 us = 15_000_000 pC = 15 uC
    assert dose.max_phase_charge_pc == 15_000_000
    assert dose.net_charge_pc == 0
    assert dose.dc_component_ua == 0
    # square: 50_000^2 x 600 = 1.5e12; mean square = 1.5e12 / 20_000 = 7.5e7 uA^2
    assert dose.mean_square_ua2 == 75_000_000
    assert dose.rms_ua == pytest.approx(8660.254, abs=1e-3)  # 50 mA x sqrt(0.03)
    # energy: 1.5e12 x 500 / 1e12 = 750 uJ
    assert dose.energy_per_pulse_uj == 750
    # 50 pulses in any 1 s: 750 uJ x 50 = 37.5 mW
    assert dose.pulses_per_second_max == 50
    assert dose.average_power_w == Fraction(375, 10_000)
    # on 9.8 cm2: 7.5e7 / 9.8^2 ; 0.0375 W / 9.8 cm2
    assert dose.contact_area_cm2 == D("9.8")
    assert dose.current_density_sq == Fraction(75_000_000) / Fraction(98, 10) ** 2
    assert dose.current_density_ma_per_cm2 == pytest.approx(0.88370, abs=1e-5)
    assert dose.power_density_w_per_cm2 == Fraction(375, 10_000) / Fraction(98, 10)
    # 15 uC / 9.8 cm2 per phase
    assert dose.charge_density_uc_per_cm2 == Fraction(15) / Fraction(98, 10)


def test_urge_continuous_at_ceiling() -> None:
    dose = at_ceiling("urge")
    # 10 Hz, continuous 20 min: one burst of 1200 s, ramps 2 s + 2 s
    assert dose.continuous
    assert dose.contractions == 0
    assert dose.bursts == 1
    assert dose.stimulating_us == 1_200_000_000
    assert dose.plateau_us == 1_196_000_000
    assert dose.pulses_per_burst == dose.pulses == 12_000  # 1200 s x 10 Hz
    # square: 50_000^2 x 400 = 1e12; mean square = 1e12 / 100_000 = 1e7 uA^2
    assert dose.mean_square_ua2 == 10_000_000
    assert dose.energy_per_pulse_uj == 500  # 1e12 x 500 / 1e12
    assert dose.current_density_sq is None
    assert dose.power_density_w_per_cm2 is None
    assert dose.charge_density_uc_per_cm2 is None


def test_mixed_at_ceiling() -> None:
    dose = at_ceiling("mixed")
    # 20 Hz -> 50_000 us; burst 7 s -> 140 pulses; 70 cycles
    assert dose.pulses_per_burst == 140
    assert dose.pulses == 9_800
    assert dose.mean_square_ua2 == 30_000_000  # 1.5e12 / 50_000
    assert dose.energy_per_pulse_uj == 750


def test_partial_denervation_at_ceiling() -> None:
    dose = at_ceiling("partial-denervation")
    # cycle 2 + 5 + 1 + 15 = 23 s; floor(1200 / 23) = 52 cycles (1196 s)
    assert dose.bursts == 52
    assert dose.session_us == 1_196_000_000
    # burst 8 s at 35 Hz: onsets k x 28571.43 us < 8 s: k = 0..279 -> 280
    assert dose.pulses_per_burst == 280
    assert dose.pulses == 14_560
    # square: 50_000^2 x 800 = 2e12; x 35 / 1e6 = 7e7 uA^2
    assert dose.mean_square_ua2 == 70_000_000
    assert dose.energy_per_pulse_uj == 1_000  # 1 mJ
    assert dose.pulses_per_second_max == 35


def test_complete_denervation_at_ceiling() -> None:
    dose = at_ceiling("complete-denervation", (D(180), D(180)))
    # 650 ms period; cycle 1 + 2.5 + 0.5 + 2 = 6 s -> 200 cycles in 20 min
    assert dose.bursts == 200
    # burst 4 s: onsets 0, 0.65, ..., 3.9 s -> 7
    assert dose.pulses_per_burst == 7
    assert dose.pulses == 1_400
    # 100_000 uA x 75_000 us = 7.5e9 pC = 7500 uC per phase
    assert dose.max_phase_charge_pc == 7_500_000_000
    # square: 1e10 x 150_000 = 1.5e15; / 650_000 -> 2.3077e9 uA^2 (48.04 mA rms)
    assert dose.mean_square_ua2 == Fraction(1_500_000_000_000_000, 650_000)
    assert dose.rms_ua / 1000 == pytest.approx(48.038, abs=1e-3)
    # energy: 1.5e15 x 500 / 1e12 = 750_000 uJ = 750 mJ
    assert dose.energy_per_pulse_uj == 750_000
    # two onsets fit in 1 s (0 and 0.65 s): 2 x 0.75 J = 1.5 W; / 180 cm2
    assert dose.pulses_per_second_max == 2
    assert dose.average_power_w == Fraction(3, 2)
    assert dose.power_density_w_per_cm2 == Fraction(3, 2) / 180
    assert dose.duty == Fraction(150_000, 650_000)


def test_triangular_at_ceiling() -> None:
    dose = at_ceiling("partial-denervation-triangular")
    # 80 mA triangular 100 ms phases: charge 80_000 x 100_000 / 2 = 4e9 pC per phase
    assert dose.max_phase_charge_pc == 4_000_000_000
    # square: 6.4e9 x 1e5 / 3 x 2 = 1.28e15 / 3; energy x 500 / 1e12 = 213_333.3 uJ
    assert dose.pulse_square_integral == Fraction(1_280_000_000_000_000, 3)
    assert dose.energy_per_pulse_uj == Fraction(640_000, 3)
    # 9 s cycle -> 133 cycles; 5 s burst at 1 Hz -> 5 pulses
    assert (dose.bursts, dose.pulses_per_burst) == (133, 5)


def test_dose_scales_with_square_of_amplitude() -> None:
    protocol = get_protocol("stress")
    full = dose_at(protocol, 40_000)
    half = dose_at(protocol, 20_000)
    assert half.mean_square_ua2 * 4 == full.mean_square_ua2
    assert half.energy_per_pulse_uj * 4 == full.energy_per_pulse_uj
    assert half.max_phase_charge_pc * 2 == full.max_phase_charge_pc
    assert dose_at(protocol, 0).mean_square_ua2 == 0


def test_negative_ceiling_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        dose_at(get_protocol("stress"), -1)


def test_dc_component_of_interrupted_dc() -> None:
    data = get_protocol("complete-denervation").model_dump()
    data["pulse"] = PulseTrain(
        shape=MonophasicRectangular(phase_width_us=100_000), pulse_interval_ms=D(2000)
    ).model_dump()
    data["adjustable"] = {}
    protocol = Protocol.model_validate(data)
    dose = dose_at(protocol, 50_000)
    # 50 mA x 100 ms = 5e9 pC every 2 s: mean 5e9 / 2e6 us = 2500 uA = 2.5 mA
    assert dose.net_charge_pc == 5_000_000_000
    assert dose.dc_component_ua == 2_500


def test_dose_of_prescription_uses_patient_ceiling_and_adjustments() -> None:
    protocol = get_protocol("stress")
    rx = Prescription(
        patient_code="P-1",
        protocol=ProtocolRef.of(protocol),
        max_amplitude_ma=D(30),
        adjustments={"frequency_hz": D(35)},
        prescriber="Dr Test",
        start_date="2026-01-01",  # type: ignore[arg-type]
    )
    dose = dose_of(resolve(rx, protocol))
    # 30 mA, 600 us per pulse, 35 Hz: 9e8 x 600 x 35 / 1e6 = 1.89e7 uA^2
    assert dose.ceiling_ua == 30_000
    assert dose.mean_square_ua2 == 18_900_000
    assert dose.pulses_per_burst == 245  # 7 s x 35 Hz, exactly


@pytest.mark.parametrize(
    ("burst_us", "period_us", "expected"),
    [
        (1_000_000, Fraction(250_000), 4),  # 0, .25, .5, .75 (1.0 is outside)
        (1_000_001, Fraction(250_000), 5),  # 1.0 s now inside
        (1_000_000, Fraction(1_000_000, 3), 3),  # 0, 1/3, 2/3
        (1, Fraction(650_000), 1),  # the onset at 0 always counts
        (0, Fraction(1), 0),
    ],
)
def test_pulses_in_burst(burst_us: int, period_us: Fraction, expected: int) -> None:
    assert pulses_in_burst(burst_us, period_us) == expected
    onsets, t = 0, Fraction(0)
    while burst_us and t < burst_us:  # brute force: walk the onsets
        onsets, t = onsets + 1, t + period_us
    assert onsets == expected


def test_one_second_window_rounds_up_for_fractional_rates() -> None:
    data = get_protocol("stress").model_dump()
    data["pulse"]["frequency_hz"] = D("35.5")
    data["adjustable"] = {}
    dose = dose_at(Protocol.model_validate(data), 10_000)
    # onsets at k / 35.5 s, k = 0..35 lie inside [0, 1 s): 36 pulses
    assert dose.pulses_per_second_max == 36


def test_to_dict_is_json_ready() -> None:
    figures = at_ceiling("stress", (D("9.8"),)).to_dict()
    assert figures["pulses"] == 24_500
    assert figures["energy_per_pulse_mj"] == pytest.approx(0.75)
    assert figures["rms_ma"] == pytest.approx(8.660254, abs=1e-6)
    assert figures["smallest_contact_cm2"] == "9.8"
    assert figures["mean_square_ua2"] == "75000000"


def test_display_helpers() -> None:
    assert fixed(Fraction(2, 3), 3) == "0.667"
    assert fixed(Fraction(5, 2), 0) == "2"  # half-even
    assert fixed(1.25, 1) == "1.2"
    assert significant(Fraction(1_000_000, 650_000), 4) == "1.538"
    assert significant(50, 4) == "50"
    assert significant(0.000123456) == "0.000123"
    assert significant(0) == "0"
    assert significant(12345.6, 3) == "12346"
