"""Each interlock: what trips it (with its reason), what does not, and bad thresholds.

Tests marked ``trips("IL-...")`` are the evidence ``docs/safety/hazards.md`` cites.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import pytest

from estim.device.profile import builtin_profile
from estim.errors import InputError, InterlockTripped
from estim.safety.hazards import HAZARD_IDS
from estim.safety.interlocks import (
    INTERLOCKS,
    AmplitudeCommand,
    AmplitudeLimit,
    Ceiling,
    ChannelReading,
    CommunicationLoss,
    CurrentDeviation,
    DeviceFault,
    DeviceIdentityCheck,
    DeviceValidation,
    DoseCap,
    DoseReading,
    FindingsReading,
    FindingSummary,
    IdentityReading,
    ImpedanceRange,
    OpenCircuit,
    PreflightFindings,
    RuntimeInterlocks,
    SessionTimeCap,
    StatusReading,
    Trip,
    UnexpectedOutput,
    ValidationReading,
)

MS = 1_000_000
PF2 = builtin_profile("estim-pf2")


def channel(**changes: object) -> ChannelReading:
    base = ChannelReading(
        channel=1,
        commanded_ua=20_000,
        device_set_ua=20_000,
        measured_ua=20_100,
        impedance_ohm=800,
        output_on=True,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def reading(*channels: ChannelReading, **changes: object) -> StatusReading:
    base = StatusReading(
        at_ns=1_000 * MS,
        last_reply_ns=1_000 * MS - 40 * MS,
        output_expected=True,
        channels=channels or (channel(),),
        stimulation_elapsed_us=60_000_000,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


HEALTHY = reading()


def runtime() -> RuntimeInterlocks:
    limit = AmplitudeLimit([Ceiling(30_000, "patient prescription")], 500)
    return RuntimeInterlocks.for_profile(
        PF2,
        limit,
        session_cap_us=20 * 60 * 1_000_000,
        titration_cap_us=300_000_000,
        stop_allowance_us=1_000_000,
    )


def test_a_healthy_reading_trips_nothing() -> None:
    assert runtime().evaluate(HEALTHY) == []


def test_every_interlock_controls_known_hazards_and_has_a_description() -> None:
    assert INTERLOCKS
    for interlock_id, cls in INTERLOCKS.items():
        assert interlock_id.startswith("IL-")
        assert cls.HAZARDS
        assert set(cls.HAZARDS) <= HAZARD_IDS
        assert len(cls.DESCRIPTION) > 40
        assert cls.TITLE


# --- communication loss ------------------------------------------------------------------


@pytest.mark.trips("IL-COMM-LOSS")
def test_comm_loss_trips_after_the_bound_of_silence() -> None:
    interlock = CommunicationLoss.for_profile(PF2)
    assert interlock.bound_ns == 250 * MS
    at_bound = reading(last_reply_ns=0, at_ns=250 * MS)
    assert interlock.should_trip(at_bound) is None
    trip = interlock.should_trip(reading(last_reply_ns=0, at_ns=250 * MS + 1))
    assert trip is not None
    assert trip.interlock_id == "IL-COMM-LOSS"
    assert "no reply from the device for 250 ms (limit 250 ms)" in trip.reason


@pytest.mark.trips("IL-COMM-LOSS")
def test_comm_loss_trips_at_once_when_the_port_fails() -> None:
    trip = CommunicationLoss(100 * MS).should_trip(reading(link_error="port vanished"))
    assert trip is not None
    assert "port vanished" in trip.reason


@pytest.mark.parametrize("bound", [0, -1, 10_001 * MS])
def test_comm_loss_refuses_a_bad_bound(bound: int) -> None:
    with pytest.raises(InputError, match="IL-COMM-LOSS"):
        CommunicationLoss(bound)


# --- open circuit and impedance ------------------------------------------------------------


@pytest.mark.trips("IL-OPEN-CIRCUIT")
def test_open_circuit_trips_at_the_threshold() -> None:
    interlock = OpenCircuit.for_profile(PF2)
    assert interlock.should_trip(reading(channel(impedance_ohm=9_999))) is None
    trip = interlock.should_trip(reading(channel(impedance_ohm=10_000)))
    assert trip is not None
    assert "channel 1: electrode open (10000 ohm" in trip.reason
    assert set(trip.hazards) == {"H-SURGE", "H-BURN"}


@pytest.mark.trips("IL-OPEN-CIRCUIT")
def test_open_circuit_trips_on_the_devices_own_flag_without_impedance() -> None:
    trip = OpenCircuit(10_000).should_trip(
        reading(channel(impedance_ohm=None, faults=frozenset({"open_circuit"})))
    )
    assert trip is not None
    assert "device reports an open circuit" in trip.reason


def test_open_circuit_refuses_a_bad_threshold() -> None:
    with pytest.raises(InputError):
        OpenCircuit(0)


@pytest.mark.trips("IL-IMPEDANCE-RANGE")
@pytest.mark.parametrize("ohm", [99, 1501, 9_999])
def test_impedance_out_of_the_good_range_trips(ohm: int) -> None:
    trip = ImpedanceRange.for_profile(PF2).should_trip(reading(channel(impedance_ohm=ohm)))
    assert trip is not None
    assert trip.interlock_id == "IL-IMPEDANCE-RANGE"
    assert f"{ohm} ohm is outside the good-contact range 100-1500 ohm" in trip.reason


@pytest.mark.parametrize("ohm", [100, 800, 1500, 10_000, None])
def test_impedance_in_range_or_open_or_unknown_is_not_this_interlocks_trip(
    ohm: int | None,
) -> None:
    assert ImpedanceRange.for_profile(PF2).should_trip(reading(channel(impedance_ohm=ohm))) is None


def test_impedance_range_is_skipped_with_a_reason_when_not_measurable() -> None:
    measurement = PF2.measurement.model_copy(update={"measures_impedance": False})
    profile = PF2.model_copy(update={"measurement": measurement})
    interlock = ImpedanceRange.for_profile(profile)
    assert interlock.skip_reason
    assert "cannot measure electrode impedance" in interlock.skip_reason
    assert interlock.should_trip(reading(channel(impedance_ohm=5))) is None


@pytest.mark.parametrize(("low", "high", "open_"), [(0, 10, 20), (10, 10, 20), (10, 20, 20)])
def test_impedance_range_refuses_unordered_thresholds(low: int, high: int, open_: int) -> None:
    with pytest.raises(InputError):
        ImpedanceRange(low, high, open_)


# --- device fault --------------------------------------------------------------------------


@pytest.mark.trips("IL-DEVICE-FAULT")
def test_device_fault_trips_on_a_device_flag() -> None:
    trip = DeviceFault().should_trip(reading(device_faults=frozenset({"watchdog"})))
    assert trip is not None
    assert "the device reports a fault: watchdog" in trip.reason


@pytest.mark.trips("IL-DEVICE-FAULT")
def test_device_fault_trips_on_a_channel_flag_and_on_a_nack() -> None:
    flagged = reading(channel(faults=frozenset({"over_current"})))
    trip = DeviceFault().should_trip(flagged)
    assert trip is not None
    assert "channel 1: the device reports a fault: over current" in trip.reason
    nack = DeviceFault().should_trip(reading(rejected="SET_AMPLITUDE: out of range"))
    assert nack is not None
    assert "refused a command: SET_AMPLITUDE" in nack.reason


def test_device_fault_leaves_open_circuit_to_its_own_interlock() -> None:
    only_open = reading(channel(faults=frozenset({"open_circuit"})))
    assert DeviceFault().should_trip(only_open) is None
    trips = runtime().evaluate(only_open)
    assert trips[0].interlock_id == "IL-OPEN-CIRCUIT"


# --- current deviation ------------------------------------------------------------------


@pytest.mark.trips("IL-CURRENT-DEVIATION")
def test_current_deviation_trips_beyond_the_profile_tolerance() -> None:
    interlock = CurrentDeviation.for_profile(PF2)
    # pf2: 1.0 mA or 5 %, the larger; at 20 mA that is 1.0 mA
    assert interlock.allowed_ua(20_000) == 1_000
    assert interlock.allowed_ua(40_000) == 2_000
    assert interlock.should_trip(reading(channel(measured_ua=21_000))) is None
    assert interlock.should_trip(reading(channel(measured_ua=19_000))) is None
    trip = interlock.should_trip(reading(channel(measured_ua=18_999)))
    assert trip is not None
    assert "measured 18.999 mA against 20 mA commanded (tolerance 1 mA)" in trip.reason


@pytest.mark.trips("IL-CURRENT-DEVIATION")
def test_current_deviation_trips_on_a_set_point_the_controller_did_not_send() -> None:
    trip = CurrentDeviation.for_profile(PF2).should_trip(reading(channel(device_set_ua=25_000)))
    assert trip is not None
    assert "reports 25 mA set, but 20 mA was commanded" in trip.reason


@pytest.mark.trips("IL-CURRENT-DEVIATION")
def test_current_deviation_trips_when_measurement_disappears() -> None:
    trip = CurrentDeviation.for_profile(PF2).should_trip(reading(channel(measured_ua=None)))
    assert trip is not None
    assert "stopped reporting measured current" in trip.reason


@pytest.mark.trips("IL-CURRENT-DEVIATION")
def test_current_deviation_trips_when_the_device_says_off_while_commanded_on() -> None:
    trip = CurrentDeviation.for_profile(PF2).should_trip(reading(channel(output_on=False)))
    assert trip is not None
    assert "reports output off while 20 mA is commanded" in trip.reason


def test_current_deviation_ignores_channels_that_are_off() -> None:
    off = reading(channel(output_on=False, measured_ua=0, commanded_ua=0, device_set_ua=0))
    assert CurrentDeviation.for_profile(PF2).should_trip(off) is None


def test_current_deviation_is_skipped_with_a_reason_when_not_measurable() -> None:
    measurement = PF2.measurement.model_copy(update={"measures_current": False})
    profile = PF2.model_copy(update={"measurement": measurement})
    interlock = CurrentDeviation.for_profile(profile)
    assert interlock.skip_reason
    assert "cannot measure output current" in interlock.skip_reason
    assert interlock.should_trip(reading(channel(measured_ua=0))) is None
    assert ("IL-CURRENT-DEVIATION", interlock.skip_reason) in RuntimeInterlocks(
        (interlock,), AmplitudeLimit([Ceiling(1000, "x")], 100)
    ).skipped


def test_current_deviation_tolerance_is_exact() -> None:
    interlock = CurrentDeviation(0, Fraction(5))
    assert interlock.allowed_ua(333) == Fraction(333 * 5, 100)


@pytest.mark.parametrize(
    ("absolute", "percent"), [(-1, Fraction(5)), (0, Fraction(-1)), (0, Fraction(51)), (0, 0)]
)
def test_current_deviation_refuses_bad_tolerances(absolute: int, percent: Fraction) -> None:
    with pytest.raises(InputError):
        CurrentDeviation(absolute, percent)


# --- unexpected output --------------------------------------------------------------------


@pytest.mark.trips("IL-OUTPUT-UNEXPECTED")
def test_output_reported_on_when_it_must_be_off_trips() -> None:
    trip = UnexpectedOutput.for_profile(PF2).should_trip(reading(output_expected=False))
    assert trip is not None
    assert "channel 1: the device reports output on while it must be off" in trip.reason


@pytest.mark.trips("IL-OUTPUT-UNEXPECTED")
def test_current_measured_when_output_must_be_off_trips_even_if_the_flag_lies() -> None:
    lying = reading(channel(output_on=False, measured_ua=5_000), output_expected=False)
    trip = UnexpectedOutput.for_profile(PF2).should_trip(lying)
    assert trip is not None
    assert "5 mA measured while output must be off" in trip.reason


def test_noise_below_the_tolerance_while_off_is_not_output() -> None:
    quiet = reading(channel(output_on=False, measured_ua=1_000), output_expected=False)
    assert UnexpectedOutput.for_profile(PF2).should_trip(quiet) is None
    assert UnexpectedOutput.for_profile(PF2).should_trip(HEALTHY) is None


# --- time and dose -------------------------------------------------------------------------


@pytest.mark.trips("IL-SESSION-TIME")
def test_session_time_cap_trips_past_the_cap() -> None:
    cap = SessionTimeCap(20 * 60 * 1_000_000, titration_cap_us=300_000_000)
    assert cap.should_trip(reading(stimulation_elapsed_us=20 * 60 * 1_000_000)) is None
    trip = cap.should_trip(reading(stimulation_elapsed_us=20 * 60 * 1_000_000 + 1))
    assert trip is not None
    assert "beyond the session cap of 1200 s" in trip.reason


@pytest.mark.trips("IL-SESSION-TIME")
def test_the_stop_allowance_lets_a_ramp_down_finish_and_no_more() -> None:
    # The longest session the protocol model allows, with the longest ramp down.
    cap = SessionTimeCap(
        SessionTimeCap.MAX_CAP_US,
        titration_cap_us=300_000_000,
        stop_allowance_us=SessionTimeCap.MAX_STOP_ALLOWANCE_US,
    )
    end_us = SessionTimeCap.MAX_CAP_US + SessionTimeCap.MAX_STOP_ALLOWANCE_US
    assert cap.should_trip(reading(stimulation_elapsed_us=end_us)) is None
    trip = cap.should_trip(reading(stimulation_elapsed_us=end_us + 1500))
    assert trip is not None
    assert "has run 7260.001 s, beyond the session cap of 7200 s and its stop ramp of 60 s" in (
        trip.reason
    )


@pytest.mark.trips("IL-SESSION-TIME")
def test_session_time_cap_trips_on_a_titration_nobody_finishes() -> None:
    cap = SessionTimeCap(20 * 60 * 1_000_000, titration_cap_us=300_000_000)
    assert cap.should_trip(reading(titration_elapsed_us=300_000_000)) is None
    trip = cap.should_trip(reading(titration_elapsed_us=300_000_001))
    assert trip is not None
    assert "beyond the titration limit of 300 s" in trip.reason


@pytest.mark.parametrize("cap", [0, -5, 120 * 60 * 1_000_000 + 1])
def test_session_time_cap_refuses_a_bad_cap(cap: int) -> None:
    with pytest.raises(InputError):
        SessionTimeCap(cap, titration_cap_us=300_000_000)


@pytest.mark.parametrize("allowance", [-1, 60 * 1_000_000 + 1])
def test_session_time_cap_refuses_a_bad_stop_allowance(allowance: int) -> None:
    with pytest.raises(InputError):
        SessionTimeCap(60_000_000, titration_cap_us=300_000_000, stop_allowance_us=allowance)


@pytest.mark.parametrize("cap", [0, -1, 30 * 60 * 1_000_000 + 1])
def test_session_time_cap_refuses_a_bad_titration_cap(cap: int) -> None:
    with pytest.raises(InputError):
        SessionTimeCap(60_000_000, titration_cap_us=cap)


@pytest.mark.trips("IL-DOSE-CAP")
def test_dose_cap_trips_on_the_days_and_the_weeks_count() -> None:
    cap = DoseCap(per_day=1, per_week=5)
    assert cap.should_trip(DoseReading(0, 4)) is None
    day = cap.should_trip(DoseReading(1, 1))
    assert day is not None
    assert "1 session(s) already today; the prescription allows 1 a day" in (day.reason)
    week = cap.should_trip(DoseReading(0, 5))
    assert week is not None
    assert "allows 5 a week" in week.reason
    nonsense = cap.should_trip(DoseReading(2, 1))
    assert nonsense is not None
    assert "do not add up" in nonsense.reason


@pytest.mark.parametrize(("day", "week"), [(0, 0), (2, 1), (1, 8)])
def test_dose_cap_refuses_inconsistent_caps(day: int, week: int) -> None:
    with pytest.raises(InputError):
        DoseCap(day, week)


# --- preflight findings and identity --------------------------------------------------------


@pytest.mark.trips("IL-PREFLIGHT-CHECK")
def test_static_check_errors_block() -> None:
    errors = (FindingSummary("RMS-CURRENT", "r.m.s. current above 50 mA"),)
    trip = PreflightFindings().should_trip(FindingsReading(errors=errors))
    assert trip is not None
    assert "static check error RMS-CURRENT" in trip.reason


@pytest.mark.trips("IL-PREFLIGHT-CHECK")
def test_unacknowledged_warnings_block_until_acknowledged() -> None:
    warnings = (FindingSummary("DENSITY", "current density high"), FindingSummary("RAMP", "x"))
    interlock = PreflightFindings()
    trip = interlock.should_trip(
        FindingsReading(warnings=warnings, acknowledged=frozenset({"RAMP"}))
    )
    assert trip is not None
    assert "not acknowledged: DENSITY;" in trip.reason
    acknowledged = FindingsReading(warnings=warnings, acknowledged=frozenset({"RAMP", "DENSITY"}))
    assert interlock.should_trip(acknowledged) is None


@pytest.mark.trips("IL-DEVICE-IDENTITY")
def test_a_different_device_or_firmware_trips() -> None:
    check = DeviceIdentityCheck.for_profile(PF2)
    assert check.should_trip(IdentityReading("PF-2 pelvic NMES", "1.4")) is None
    model = check.should_trip(IdentityReading("Other", "1.0"))
    assert model is not None
    assert "'Other'" in model.reason
    firmware = check.should_trip(IdentityReading("PF-2 pelvic NMES", "2.0"))
    assert firmware is not None
    assert "outside the profile's range 1.0-1.99" in firmware.reason
    garbage = check.should_trip(IdentityReading("PF-2 pelvic NMES", "v1"))
    assert garbage is not None
    assert "not a version number" in garbage.reason


@pytest.mark.trips("IL-DEVICE-VALIDATION")
def test_a_unit_without_a_vouching_bench_record_trips() -> None:
    check = DeviceValidation()
    assert check.should_trip(ValidationReading("bench.json")) is None
    missing = check.should_trip(ValidationReading(None))
    assert missing is not None
    assert "no bench validation record" in missing.reason
    wrong = check.should_trip(ValidationReading("bench.json", ("it is for serial X",)))
    assert wrong is not None
    assert "bench.json does not vouch for this unit: it is for serial X" in wrong.reason


# --- amplitude ------------------------------------------------------------------------------


@pytest.mark.trips("IL-AMPLITUDE-LIMIT")
def test_amplitude_above_the_lowest_ceiling_trips_and_names_it() -> None:
    limit = AmplitudeLimit(
        [Ceiling(90_000, "device profile"), Ceiling(30_000, "patient prescription")], 500
    )
    assert limit.ceiling_ua == 30_000
    assert limit.should_trip(AmplitudeCommand(1, 29_500, 30_000, titration=True)) is None
    trip = limit.should_trip(AmplitudeCommand(1, 0, 30_001, titration=False))
    assert trip is not None
    assert "above the ceiling 30 mA (patient prescription)" in trip.reason


@pytest.mark.trips("IL-AMPLITUDE-LIMIT")
def test_a_titration_step_above_the_prescribed_step_trips_but_an_envelope_jump_does_not() -> None:
    limit = AmplitudeLimit([Ceiling(30_000, "patient prescription")], 500)
    trip = limit.should_trip(AmplitudeCommand(1, 1_000, 1_600, titration=True))
    assert trip is not None
    assert "titration step of 0.6 mA is above the prescribed step 0.5 mA" in (trip.reason)
    assert limit.should_trip(AmplitudeCommand(1, 0, 20_000, titration=False)) is None
    assert limit.should_trip(AmplitudeCommand(1, 20_000, 0, titration=True)) is None


@pytest.mark.trips("IL-AMPLITUDE-LIMIT")
def test_a_device_set_point_above_the_ceiling_trips() -> None:
    limit = AmplitudeLimit([Ceiling(30_000, "patient prescription")], 500)
    trip = limit.should_trip(reading(channel(device_set_ua=31_000)))
    assert trip is not None
    assert "device reports 31 mA set" in trip.reason
    assert (
        runtime()
        .evaluate(reading(channel(device_set_ua=31_000, commanded_ua=31_000)))[0]
        .interlock_id
        == "IL-AMPLITUDE-LIMIT"
    )


def test_amplitude_limit_refuses_bad_policies() -> None:
    with pytest.raises(InputError):
        AmplitudeLimit([], 100)
    with pytest.raises(InputError):
        AmplitudeLimit([Ceiling(0, "x")], 100)
    with pytest.raises(InputError):
        AmplitudeLimit([Ceiling(1_000, "x")], 2_000)
    with pytest.raises(InputError):
        AmplitudeLimit([Ceiling(1_000, "x")], 0)


def test_a_trip_becomes_the_interlock_error() -> None:
    error = Trip("IL-OPEN-CIRCUIT", ("H-SURGE",), "electrode open").as_error()
    assert isinstance(error, InterlockTripped)
    assert error.exit_code == 4
    assert str(error) == "IL-OPEN-CIRCUIT: electrode open"


def test_several_trips_come_most_specific_first() -> None:
    broken = reading(
        channel(impedance_ohm=2_000_000, measured_ua=0, faults=frozenset({"open_circuit"})),
        last_reply_ns=0,
    )
    ids = [t.interlock_id for t in runtime().evaluate(broken)]
    assert ids[0] == "IL-COMM-LOSS"
    assert "IL-OPEN-CIRCUIT" in ids
    assert "IL-CURRENT-DEVIATION" in ids
