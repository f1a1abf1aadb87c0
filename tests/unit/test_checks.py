"""Every static check, with hand-computed figures at and just past each limit.

Conventions: amplitudes in uA, times in us. ``run(protocol, ceiling_ua, ...)`` evaluates
on a device profile and returns the findings by code.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel

from estim.device.profile import DeviceProfile, builtin_profile
from estim.errors import InputError
from estim.protocols.catalog import get_protocol
from estim.protocols.models import Protocol
from estim.protocols.prescription import Prescription, ProtocolRef, resolve
from estim.safety.checks import (
    CHECK_TITLES,
    PRESCRIPTION_CHECKS,
    Category,
    Finding,
    Severity,
    Verdict,
    check,
    check_profile,
    evaluate,
)
from estim.safety.limits import LimitId, Limits

D = Decimal
M = TypeVar("M", bound=BaseModel)

PF2 = builtin_profile("estim-pf2")
LP1 = builtin_profile("estim-lp1")


def edit(model: M, changes: dict[str, Any]) -> M:
    """A copy of ``model`` with dotted-path fields replaced, re-validated."""
    data = model.model_dump()
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        target = data
        for part in parents:
            target = target[part]
        target[leaf] = value
    return type(model).model_validate(data)


def protocol(protocol_id: str, changes: dict[str, Any] | None = None) -> Protocol:
    base = get_protocol(protocol_id)
    return edit(base, {"adjustable": {}, **(changes or {})})


# A generous bench device: every shape, 0-250 mA in 1 uA, 1 us - 500 ms, 0.1 Hz-10 kHz.
BENCH = edit(
    PF2,
    {
        "output.amplitude_max_ma": D(250),
        "output.amplitude_resolution_ma": D("0.001"),
        "output.phase_width_min_us": 1,
        "output.phase_width_max_us": 500_000,
        "output.phase_width_resolution_us": 1,
        "output.frequency_min_hz": D("0.1"),
        "output.frequency_max_hz": D(10_000),
        "output.supported_shapes": [
            "symmetric_biphasic",
            "asymmetric_biphasic",
            "long_biphasic_rectangular",
            "long_biphasic_triangular",
            "monophasic_rectangular",
        ],
        "output.compliance_voltage_v": D(500),
    },
)

# 1250 us phases at 100 Hz: 2500 us of every 10_000 us -> mean square = I^2 / 4.
QUARTER_DUTY = protocol(
    "stress", {"pulse.shape.phase_width_us": 1250, "pulse.frequency_hz": D(100)}
)


def run(
    subject: Protocol,
    ceiling_ua: int | None = None,
    step_ua: int | None = None,
    profile: DeviceProfile = PF2,
    limits: Limits | None = None,
) -> Verdict:
    ceiling = subject.amplitude.ceiling_ua if ceiling_ua is None else ceiling_ua
    step = subject.amplitude.titration_step_ua if step_ua is None else step_ua
    return evaluate(subject, ceiling, step, profile, limits or Limits())


def one(verdict: Verdict, code: str) -> Finding:
    found = [f for f in verdict.results if f.code == code]
    assert len(found) == 1, (code, found)
    return found[0]


def severity(verdict: Verdict, code: str) -> Severity:
    return one(verdict, code).severity


# --- the library on its intended devices ------------------------------------------


@pytest.mark.parametrize("protocol_id", ["stress", "urge", "mixed", "partial-denervation"])
def test_probe_protocols_pass_on_pf2(protocol_id: str) -> None:
    verdict = check(None, get_protocol(protocol_id), PF2)
    assert not verdict.errors
    assert not verdict.warnings
    assert verdict.exit_code == 0


def test_complete_denervation_on_lp1_needs_acknowledgement() -> None:
    verdict = check(None, get_protocol("complete-denervation"), LP1)
    assert verdict.exit_code == 0
    assert verdict.codes(Severity.WARNING) == {"DEVICE_COMPLIANCE", "IEC_ENERGY_PER_PULSE"}
    assert verdict.codes(Severity.INFO) == {"LONG_PULSE_REGIME"}
    assert verdict.needs_acknowledgement
    # r.m.s. at 100 mA: 100 x sqrt(150 / 650) = 48.04 mA: within 50 mA, a pass
    assert severity(verdict, "IEC_RMS_CURRENT") is Severity.PASS


def test_complete_denervation_on_pf2_cannot_be_delivered() -> None:
    verdict = check(None, get_protocol("complete-denervation"), PF2)
    assert verdict.exit_code == 2
    assert {
        "DEVICE_LONG_PULSE",
        "DEVICE_PHASE_WIDTH",
        "DEVICE_RATE",
        "DEVICE_AMPLITUDE",
        "DEVICE_ELECTRODE_AREA",
    } <= verdict.codes(Severity.ERROR)
    long_pulse = one(verdict, "DEVICE_LONG_PULSE")
    assert "estim-lp1" in (long_pulse.fix or "")
    assert "DEVICE_SHAPE" not in verdict.codes()  # the clearer reason replaces it


# --- device capability ---------------------------------------------------------------


def test_channels() -> None:
    assert severity(run(protocol("stress", {"channels": 2})), "DEVICE_CHANNELS") is Severity.PASS
    verdict = run(protocol("stress", {"channels": 3}))
    assert severity(verdict, "DEVICE_CHANNELS") is Severity.ERROR
    assert verdict.exit_code == 2


def test_shape_not_supported() -> None:
    asymmetric = protocol(
        "stress",
        {
            "pulse.shape": {
                "kind": "asymmetric_biphasic",
                "lead_phase_width_us": 200,
                "recovery_phase_width_us": 800,
            }
        },
    )
    assert severity(run(asymmetric), "DEVICE_SHAPE") is Severity.PASS  # pf2 has it
    assert severity(run(asymmetric, profile=LP1), "DEVICE_SHAPE") is Severity.ERROR
    # both phases are range-checked: 800 us recovery is above pf2's 450 us
    widths = [f for f in run(asymmetric).results if f.code == "DEVICE_PHASE_WIDTH"]
    assert [(f.field, f.severity) for f in widths] == [
        ("pulse.shape.lead_phase_width_us", Severity.PASS),
        ("pulse.shape.recovery_phase_width_us", Severity.ERROR),
    ]


def test_phase_width_range_and_grid() -> None:
    assert (
        severity(run(protocol("stress", {"pulse.shape.phase_width_us": 450})), "DEVICE_PHASE_WIDTH")
        is Severity.PASS
    )
    assert (
        severity(run(protocol("stress", {"pulse.shape.phase_width_us": 460})), "DEVICE_PHASE_WIDTH")
        is Severity.ERROR
    )
    assert (
        severity(run(protocol("stress", {"pulse.shape.phase_width_us": 40})), "DEVICE_PHASE_WIDTH")
        is Severity.ERROR
    )
    off_grid = one(
        run(protocol("stress", {"pulse.shape.phase_width_us": 305})),
        "DEVICE_PHASE_WIDTH_RESOLUTION",
    )
    assert off_grid.severity is Severity.ERROR
    assert off_grid.fix == "use 300 or 310 us"


def test_rate_range() -> None:
    assert (
        severity(run(protocol("stress", {"pulse.frequency_hz": D(100)})), "DEVICE_RATE")
        is Severity.PASS
    )
    over = one(run(protocol("stress", {"pulse.frequency_hz": D(101)})), "DEVICE_RATE")
    assert over.severity is Severity.ERROR
    assert over.limit == "2-100 Hz"
    assert over.field == "pulse.frequency_hz"


def test_rate_resolution_is_information_only() -> None:
    # 35 Hz: 28571.43 us is delivered as 28572 us (34.9995 Hz), never faster
    info = one(run(get_protocol("partial-denervation")), "DEVICE_RATE_RESOLUTION")
    assert info.severity is Severity.INFO
    assert "28572 us" in info.message
    assert "DEVICE_RATE_RESOLUTION" not in run(get_protocol("stress")).codes()


def test_amplitude_range() -> None:
    stress = protocol("stress", {"amplitude.ceiling_ma": D(100)})
    assert severity(run(stress, 90_000), "DEVICE_AMPLITUDE") is Severity.PASS
    verdict = run(stress, 90_100)
    assert severity(verdict, "DEVICE_AMPLITUDE") is Severity.ERROR
    assert verdict.exit_code == 2


def test_amplitude_off_grid_is_information() -> None:
    info = one(run(get_protocol("stress"), 40_050), "DEVICE_AMPLITUDE_RESOLUTION")
    assert info.severity is Severity.INFO
    assert "40 mA" in info.message  # the highest step at or below 40.05 mA


def test_step_on_device_grid() -> None:
    assert (
        severity(run(get_protocol("stress"), step_ua=300), "DEVICE_STEP_RESOLUTION")
        is Severity.PASS
    )
    assert (
        severity(run(get_protocol("stress"), step_ua=250), "DEVICE_STEP_RESOLUTION")
        is Severity.ERROR
    )


def test_electrode_kind_missing() -> None:
    surface_only = protocol(
        "stress", {"electrode.kinds": ["surface"], "electrode.min_contact_area_cm2": D(4)}
    )
    probe_device = edit(PF2, {"electrodes": [PF2.electrodes[0].model_dump()]})
    verdict = run(surface_only, profile=probe_device)
    assert severity(verdict, "DEVICE_ELECTRODE") is Severity.ERROR
    assert verdict.dose is not None
    assert verdict.dose.contact_area_cm2 is None
    assert "IEC_CURRENT_DENSITY" not in verdict.codes(Severity.PASS)


def test_electrode_area_uses_smallest_matching_contact() -> None:
    urge = get_protocol("urge")  # vaginal 9.8 or anal 3.4 cm2 on pf2
    assert severity(run(urge), "DEVICE_ELECTRODE_AREA") is Severity.PASS
    assert run(urge).dose.contact_area_cm2 == D("3.4")  # type: ignore[union-attr]
    bigger = protocol("urge", {"electrode.min_contact_area_cm2": D(5)})
    finding = one(run(bigger), "DEVICE_ELECTRODE_AREA")
    assert finding.severity is Severity.ERROR
    assert finding.value == "3.4 cm2"


def test_compliance_voltage() -> None:
    lp = protocol("complete-denervation")
    # lp1: 80 V compliance, good contacts up to 1000 ohm: 80 mA x 1000 ohm = 80 V exactly
    assert severity(run(lp, 80_000, profile=LP1), "DEVICE_COMPLIANCE") is Severity.PASS
    over = one(run(lp, 80_500, profile=LP1), "DEVICE_COMPLIANCE")
    assert over.severity is Severity.WARNING
    assert over.value == "80.5 V"
    assert "80 mA" in (over.fix or "")


def test_device_that_cannot_measure() -> None:
    blind = edit(
        PF2, {"measurement.measures_current": False, "measurement.measures_impedance": False}
    )
    verdict = run(get_protocol("stress"), profile=blind)
    assert severity(verdict, "DEVICE_NO_CURRENT_MEASUREMENT") is Severity.WARNING
    assert severity(verdict, "DEVICE_NO_IMPEDANCE_MEASUREMENT") is Severity.WARNING
    assert verdict.exit_code == 0
    assert "interlock cannot run" in one(verdict, "DEVICE_NO_CURRENT_MEASUREMENT").message


# --- standards -----------------------------------------------------------------------


def test_rms_limit_up_to_400_hz() -> None:
    # quarter duty: I_rms = I / 2; 100 mA -> exactly 50 mA rms
    assert severity(run(QUARTER_DUTY, 100_000, profile=BENCH), "IEC_RMS_CURRENT") is Severity.PASS
    over = one(run(QUARTER_DUTY, 100_001, profile=BENCH), "IEC_RMS_CURRENT")
    assert over.severity is Severity.ERROR
    assert over.limit_id is LimitId.IEC_RMS_CURRENT_400HZ
    assert over.limit == "<= 50 mA rms"
    assert "[C]" in (over.source or "")


def test_rms_limit_400_to_1500_hz() -> None:
    # 250 us phases at 500 Hz: 500 of 2000 us -> quarter duty; 80 mA rms at 160 mA
    fast = protocol("stress", {"pulse.shape.phase_width_us": 250, "pulse.frequency_hz": D(500)})
    assert severity(run(fast, 160_000, profile=BENCH), "IEC_RMS_CURRENT") is Severity.PASS
    over = one(run(fast, 160_001, profile=BENCH), "IEC_RMS_CURRENT")
    assert (over.severity, over.limit_id) == (Severity.ERROR, LimitId.IEC_RMS_CURRENT_1500HZ)


def test_rms_limit_above_1500_hz() -> None:
    # 125 us phases at 4 kHz fill the whole 250 us period: I_rms = I; 100 mA limit
    fastest = protocol("stress", {"pulse.shape.phase_width_us": 125, "pulse.frequency_hz": D(4000)})
    assert severity(run(fastest, 100_000, profile=BENCH), "IEC_RMS_CURRENT") is Severity.PASS
    over = one(run(fastest, 100_001, profile=BENCH), "IEC_RMS_CURRENT")
    assert over.limit_id is LimitId.IEC_RMS_CURRENT_ABOVE_1500HZ


def test_long_pulse_rms_is_a_warning_on_a_long_pulse_device() -> None:
    lp = protocol("complete-denervation", {"amplitude.ceiling_ma": D(120)})
    # 110 mA x sqrt(150/650) = 52.8 mA rms > 50
    assert severity(run(lp, 110_000, profile=LP1), "IEC_RMS_CURRENT") is Severity.WARNING
    strict = Limits(long_pulse_as_warnings=False)
    assert (
        severity(run(lp, 110_000, profile=LP1, limits=strict), "IEC_RMS_CURRENT") is Severity.ERROR
    )
    # any long-pulse-capable device gets the warning; one without long pulses, an error
    assert severity(run(lp, 110_000, profile=BENCH), "IEC_RMS_CURRENT") is Severity.WARNING
    no_long = edit(BENCH, {"output.supported_shapes": ["symmetric_biphasic"]})
    assert severity(run(lp, 110_000, profile=no_long), "IEC_RMS_CURRENT") is Severity.ERROR


def test_energy_per_pulse() -> None:
    # 30 ms phases: (0.1 A)^2 x 500 ohm x 0.06 s = 0.3 J at 100 mA exactly
    lp = protocol("complete-denervation", {"pulse.shape.phase_width_us": 30_000})
    strict = Limits(long_pulse_as_warnings=False)
    assert (
        severity(run(lp, 100_000, profile=LP1, limits=strict), "IEC_ENERGY_PER_PULSE")
        is Severity.PASS
    )
    over = one(run(lp, 100_500, profile=LP1, limits=strict), "IEC_ENERGY_PER_PULSE")
    assert over.severity is Severity.ERROR
    assert over.value == "303 mJ"  # 0.1005^2 x 500 x 0.06 = 0.3030 J
    assert severity(run(lp, 100_500, profile=LP1), "IEC_ENERGY_PER_PULSE") is Severity.WARNING
    # a site may tighten the [C2] figure
    tight = Limits(energy_per_pulse_mj=D(200))
    assert (
        severity(run(lp, 100_000, profile=LP1, limits=tight), "IEC_ENERGY_PER_PULSE")
        is Severity.WARNING
    )


def test_dc_component_and_charge_balance() -> None:
    # monophasic 5 ms every 5 ms: interrupted DC at 100 % duty, mean current = I
    dc = protocol(
        "stress",
        {
            "pulse": {
                "shape": {"kind": "monophasic_rectangular", "phase_width_us": 5000},
                "pulse_interval_ms": D(5),
            }
        },
    )
    at_limit = run(dc, 80_000, profile=BENCH)
    assert severity(at_limit, "IEC_DC_COMPONENT") is Severity.PASS
    assert severity(at_limit, "CHARGE_BALANCE") is Severity.WARNING
    assert severity(run(dc, 80_001, profile=BENCH), "IEC_DC_COMPONENT") is Severity.ERROR
    assert severity(run(get_protocol("stress")), "CHARGE_BALANCE") is Severity.PASS


def test_current_density() -> None:
    # quarter duty on 9.8 cm2: 39.2 mA -> 19.6 mA rms -> 2.0 mA rms/cm2 exactly
    vaginal_only = edit(BENCH, {"electrodes": [PF2.electrodes[0].model_dump()]})
    assert (
        severity(run(QUARTER_DUTY, 39_200, profile=vaginal_only), "IEC_CURRENT_DENSITY")
        is Severity.PASS
    )
    over = one(run(QUARTER_DUTY, 39_201, profile=vaginal_only), "IEC_CURRENT_DENSITY")
    assert over.severity is Severity.WARNING
    assert over.value == "2 mA rms/cm2"
    assert "9.8 cm2" in over.message


def test_power_density() -> None:
    # quarter duty: energy per pulse I^2 x 500 x 0.0025 s; 100 pulses/s; on 9.8 cm2
    # 0.25 W/cm2 x 9.8 = 2.45 W = 125 I^2 -> I = 140 mA exactly
    vaginal_only = edit(BENCH, {"electrodes": [PF2.electrodes[0].model_dump()]})
    assert (
        severity(run(QUARTER_DUTY, 140_000, profile=vaginal_only), "FDA_POWER_DENSITY")
        is Severity.PASS
    )
    over = one(run(QUARTER_DUTY, 140_001, profile=vaginal_only), "FDA_POWER_DENSITY")
    assert over.severity is Severity.ERROR
    assert over.limit == "<= 0.25 W/cm2"


def test_long_pulse_report() -> None:
    info = one(run(get_protocol("complete-denervation"), profile=LP1), "LONG_PULSE_REGIME")
    assert info.severity is Severity.INFO
    # 48.04 mA rms; 100 mA x 75 ms = 7500 uC; 48.04 / 180 = 0.267 mA rms/cm2
    assert "48 mA rms" in info.message
    assert "7500 uC" in info.message
    assert "0.267 mA rms/cm2" in info.message
    assert "LONG_PULSE_REGIME" not in run(get_protocol("stress")).codes()


# --- practice ------------------------------------------------------------------------


def test_burst_and_rest() -> None:
    # ramp 0.2 + on 0.6 + ramp 0.2 = 1.0 s burst: passes; 0.5 s on: 0.9 s warns
    ok = protocol(
        "stress",
        {
            "cycle.ramp_up_s": D("0.2"),
            "cycle.on_s": D("0.6"),
            "cycle.ramp_down_s": D("0.2"),
            "cycle.off_s": D(1),
        },
    )
    verdict = run(ok)
    assert severity(verdict, "FDA_MIN_BURST") is Severity.PASS
    assert severity(verdict, "FDA_MIN_REST") is Severity.PASS
    short = edit(ok, {"cycle.on_s": D("0.5"), "cycle.off_s": D("0.9")})
    verdict = run(short)
    assert severity(verdict, "FDA_MIN_BURST") is Severity.WARNING
    assert one(verdict, "FDA_MIN_BURST").value == "0.9 s"
    assert severity(verdict, "FDA_MIN_REST") is Severity.WARNING
    assert "FDA_MIN_BURST" not in run(get_protocol("urge")).codes(Severity.PASS)


def test_ramps() -> None:
    no_ramps = protocol("stress", {"cycle.ramp_up_s": D(0), "cycle.ramp_down_s": D(0)})
    verdict = run(no_ramps)
    assert severity(verdict, "RAMP_UP") is Severity.ERROR
    assert severity(verdict, "RAMP_DOWN") is Severity.WARNING
    assert verdict.exit_code == 1
    short = protocol("stress", {"cycle.ramp_up_s": D("0.05")})
    assert severity(run(short), "RAMP_UP") is Severity.ERROR  # below 0.1 s
    minimal = protocol("stress", {"cycle.ramp_up_s": D("0.1")})
    assert severity(run(minimal), "RAMP_UP") is Severity.PASS
    no_ramp_urge = protocol("urge", {"cycle.ramp_up_s": D(0)})
    assert severity(run(no_ramp_urge), "RAMP_UP") is Severity.ERROR


def test_session_length_and_count() -> None:
    assert (
        severity(run(protocol("stress", {"session_duration_min": D(30)})), "SESSION_MAX")
        is Severity.PASS
    )
    long = run(protocol("stress", {"session_duration_min": D(31)}))
    assert severity(long, "SESSION_MAX") is Severity.ERROR
    assert long.exit_code == 1
    home = run(protocol("stress", {"session_duration_min": D(25)}))
    assert severity(home, "SESSION_HOME_AUTO_OFF") is Severity.WARNING
    assert severity(home, "SESSION_MAX") is Severity.PASS
    twice = run(protocol("stress", {"sessions_per_day": 2}))
    assert severity(twice, "SESSIONS_PER_DAY") is Severity.WARNING
    relaxed = Limits(session_max_min=D(40))
    assert (
        severity(
            run(protocol("stress", {"session_duration_min": D(31)}), limits=relaxed), "SESSION_MAX"
        )
        is Severity.PASS
    )


def test_titration_step() -> None:
    assert severity(run(get_protocol("stress"), step_ua=1_000), "TITRATION_STEP") is Severity.PASS
    coarse = one(run(get_protocol("stress"), step_ua=1_100), "TITRATION_STEP")
    assert coarse.severity is Severity.ERROR
    assert coarse.value == "1.1 mA"


def test_overrides_are_listed() -> None:
    verdict = run(get_protocol("stress"), limits=Limits(session_max_min=D(25)))
    info = one(verdict, "LIMIT_OVERRIDDEN")
    assert info.severity is Severity.INFO
    assert info.limit_id is LimitId.SESSION_MAX
    assert verdict.details["limits_overridden"] == ["SESSION_MAX"]


# --- the check() entry point and the verdict --------------------------------------------


def _rx(ceiling_ma: str = "40", **changes: Any) -> Prescription:
    stress = get_protocol("stress")
    return Prescription(
        patient_code="P-1",
        protocol=ProtocolRef.of(stress),
        max_amplitude_ma=D(ceiling_ma),
        prescriber="Dr Test",
        start_date=date(2026, 1, 1),
        **changes,
    )


def test_check_prescription_uses_patient_ceiling_and_adjustments() -> None:
    stress = get_protocol("stress")
    verdict = check(_rx(adjustments={"frequency_hz": D(35)}), stress, PF2)
    assert verdict.dose is not None
    assert verdict.dose.ceiling_ua == 40_000
    assert verdict.dose.period_us * 35 == 1_000_000
    assert verdict.details["ceiling_ma"] == "40"
    same = check(resolve(_rx(adjustments={"frequency_hz": D(35)}), stress), stress, PF2)
    assert same.results == verdict.results


def test_check_refuses_prescription_that_does_not_fit() -> None:
    with pytest.raises(InputError, match="patient ceiling above"):
        check(_rx("60"), get_protocol("stress"), PF2)
    resolved = resolve(_rx(), get_protocol("stress"))
    with pytest.raises(InputError, match="another protocol"):
        check(resolved, get_protocol("urge"), PF2)


def test_evaluate_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="ceiling_ua"):
        evaluate(get_protocol("stress"), -1, 100, PF2)
    with pytest.raises(ValueError, match="step_ua"):
        evaluate(get_protocol("stress"), 1000, 0, PF2)


def test_verdict_exit_codes_and_order() -> None:
    device = run(protocol("stress", {"channels": 3, "session_duration_min": D(31)}))
    assert device.exit_code == 2  # device error wins
    blocked = run(protocol("stress", {"session_duration_min": D(31)}))
    assert blocked.exit_code == 1
    assert blocked.blocked
    assert not blocked.passed
    warned = run(protocol("stress", {"session_duration_min": D(25)}))
    assert warned.exit_code == 0
    assert warned.needs_acknowledgement
    ranks = [f.severity.rank for f in device.findings]
    assert ranks == sorted(ranks, reverse=True)
    assert device.to_dict()["exit_code"] == 2


def test_finding_text_names_value_limit_source_and_fix() -> None:
    text = str(one(run(QUARTER_DUTY, 100_001, profile=BENCH), "IEC_RMS_CURRENT"))
    assert text.startswith("ERROR IEC_RMS_CURRENT: ")
    assert "value 50 mA rms" in text
    assert "limit <= 50 mA rms (IEC 60601-2-10" in text
    assert "fix: lower the ceiling to 100 mA or below" in text


def test_every_finding_has_a_title_and_passes_have_no_fix() -> None:
    verdicts = [
        check(None, p, profile)
        for p in (get_protocol(i) for i in ("stress", "urge", "complete-denervation"))
        for profile in (PF2, LP1)
    ]
    for verdict in verdicts:
        for finding in verdict.results:
            assert finding.code in CHECK_TITLES
            if finding.severity is Severity.PASS:
                assert finding.fix is None
            elif finding.severity in {Severity.ERROR, Severity.WARNING}:
                assert finding.fix, finding.code
    assert len(PRESCRIPTION_CHECKS) == 19


# --- static profile checks ------------------------------------------------------------


def test_pf2_profile_is_clean() -> None:
    verdict = check_profile(PF2)
    assert not verdict.errors
    assert not verdict.warnings
    # at 90 mA, 80 V drives at most 80 / 0.09 = 888.9 ohm < 1500 ohm good range
    reach = one(verdict, "PROFILE_COMPLIANCE_REACH")
    assert (reach.severity, reach.value) == (Severity.INFO, "889 ohm")
    # worst case into 500 ohm: 90 mA, duty 2 x 450 us x 100 Hz = 9 %: 90 x 0.3 = 27 mA rms
    assert one(verdict, "PROFILE_RMS_CAPABILITY").value == "27 mA rms"
    # energy 0.09^2 x 500 x 900e-6 = 3.645 mJ
    assert one(verdict, "PROFILE_ENERGY_CAPABILITY").value.startswith("3.6")  # type: ignore[union-attr]


def test_lp1_profile_warns_about_its_hardware_reach() -> None:
    verdict = check_profile(LP1)
    assert verdict.exit_code == 0
    assert verdict.codes(Severity.WARNING) == {
        "PROFILE_RMS_CAPABILITY",
        "PROFILE_ENERGY_CAPABILITY",
        "PROFILE_PROBE_AMPLITUDE",
    }
    # 80 V / 500 ohm = 160 mA at up to 100 % duty: 160 mA rms; 0.16^2 x 500 x 0.6 s = 7.68 J
    assert one(verdict, "PROFILE_RMS_CAPABILITY").value == "160 mA rms"
    assert one(verdict, "PROFILE_ENERGY_CAPABILITY").value == "7680 mJ"


@pytest.mark.parametrize(
    ("changes", "code", "expected"),
    [
        (
            {"link.watchdog_timeout_ms": 2000, "link.heartbeat_period_ms": 100},
            "PROFILE_WATCHDOG",
            Severity.WARNING,
        ),
        ({"output.device_ramps": True}, "PROFILE_DEVICE_RAMPS", Severity.ERROR),
        (
            {"measurement.current_tolerance_percent": D(20)},
            "PROFILE_TOLERANCE_PERCENT",
            Severity.WARNING,
        ),
        ({"measurement.current_tolerance_ma": D(3)}, "PROFILE_TOLERANCE_MA", Severity.WARNING),
        (
            {"measurement.measures_current": False},
            "DEVICE_NO_CURRENT_MEASUREMENT",
            Severity.WARNING,
        ),
        (
            {"measurement.measures_impedance": False},
            "DEVICE_NO_IMPEDANCE_MEASUREMENT",
            Severity.WARNING,
        ),
        ({"leakage": None}, "PROFILE_LEAKAGE", Severity.WARNING),
        ({"leakage.normal_ua": D(101)}, "PROFILE_LEAKAGE", Severity.ERROR),
        ({"leakage.normal_ua": D(100)}, "PROFILE_LEAKAGE", Severity.PASS),
        ({"leakage.single_fault_ua": D(501)}, "PROFILE_LEAKAGE_SINGLE_FAULT", Severity.ERROR),
        ({"output.amplitude_resolution_ma": D(2)}, "PROFILE_MINIMUM_OUTPUT", Severity.WARNING),
        ({"output.amplitude_resolution_ma": D("1.8")}, "PROFILE_MINIMUM_OUTPUT", Severity.PASS),
        ({"output.amplitude_max_ma": D(101)}, "PROFILE_PROBE_AMPLITUDE", Severity.WARNING),
    ],
)
def test_profile_checks(changes: dict[str, Any], code: str, expected: Severity) -> None:
    verdict = check_profile(edit(PF2, changes))
    assert severity(verdict, code) is expected
    assert verdict.exit_code == (1 if expected is Severity.ERROR else 0)


def test_profile_open_circuit_voltage_against_configured_limit() -> None:
    verdict = check_profile(PF2, Limits(open_circuit_voltage_max_v=D(70)))
    assert severity(verdict, "PROFILE_OPEN_CIRCUIT_VOLTAGE") is Severity.ERROR
    assert verdict.exit_code == 1
    assert one(verdict, "PROFILE_OPEN_CIRCUIT_VOLTAGE").category is Category.PROFILE
