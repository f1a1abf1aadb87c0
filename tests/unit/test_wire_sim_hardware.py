"""The simulator's protocol-neutral hardware model, fault specs and link faults."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import pytest

from estim.clock import NS_PER_MS, NS_PER_S, VirtualClock
from estim.device.base import ChannelConfig, FaultFlag
from estim.device.profile import builtin_profile
from estim.device.simulator import (
    FaultKind,
    Refusal,
    RefusalReason,
    SimulatedDevice,
    SimulatedStimulator,
    parse_fault,
    parse_faults,
)
from estim.device.simulator.faults import Direction
from estim.device.simulator.hardware import OPEN_ELECTRODE_OHM
from estim.errors import InputError
from estim.protocols.models import ShapeKind

PF2 = builtin_profile("estim-pf2")
LP1 = builtin_profile("estim-lp1")
CONFIG = ChannelConfig(1, ShapeKind.SYMMETRIC_BIPHASIC, (200, 200), 0, 20_000)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def hw(clock: VirtualClock) -> Iterator[SimulatedStimulator]:
    model = SimulatedStimulator(PF2, clock, seed=3)
    model.clear_faults()
    model.take_events()  # the power-up announcement
    model.configure(CONFIG)
    yield model
    model.shut_down()


def on_at(hw: SimulatedStimulator, amplitude_ua: int, channel: int = 1) -> None:
    hw.set_amplitudes({channel: amplitude_ua})
    hw.output_on([channel])


def test_powers_up_off_at_zero_with_reset_latched(clock: VirtualClock) -> None:
    model = SimulatedStimulator(PF2, clock)
    assert model.latched_faults() == FaultFlag.RESET
    assert all(o.amplitude_ua == 0 and not o.output_on for o in model.outputs())
    assert [e.faults for e in model.take_events()] == [FaultFlag.RESET]
    model.configure(CONFIG)
    with pytest.raises(Refusal) as refused:
        model.output_on([1])
    assert refused.value.reason is RefusalReason.FAULT_LATCHED


def test_measured_current_stays_within_half_the_tolerance(hw: SimulatedStimulator) -> None:
    on_at(hw, 40_000)
    tolerance = PF2.measurement.tolerance_ua(40_000)
    readings = [hw.status().channel(1).measured_ua for _ in range(200)]
    assert all(r is not None and abs(r - 40_000) <= tolerance / 2 for r in readings)
    assert len(set(readings)) > 1  # there is noise
    hw.output_off()
    assert hw.status().channel(1).measured_ua == 0


def test_compliance_limits_delivered_current_and_is_reported(hw: SimulatedStimulator) -> None:
    hw.set_load(1, 2000)  # 80 V / 2000 ohm = 40 mA at most
    on_at(hw, 60_000)
    assert hw.outputs()[0].amplitude_ua == 40_000
    status = hw.status().channel(1)
    assert FaultFlag.COMPLIANCE in status.faults
    assert status.commanded_ua == 60_000
    assert hw.latched_faults() == FaultFlag.NONE  # reported, not latched, no trip
    hw.set_amplitudes({1: 30_000})
    assert FaultFlag.COMPLIANCE not in hw.status().channel(1).faults


def test_open_electrode_trips_every_channel_and_latches(hw: SimulatedStimulator) -> None:
    hw.configure(ChannelConfig(2, ShapeKind.SYMMETRIC_BIPHASIC, (200, 200), 0, 20_000))
    hw.set_amplitudes({1: 20_000, 2: 15_000})
    hw.output_on([1, 2])
    hw.open_electrode(2)
    assert not hw.any_output_on
    assert hw.status().channel(2).faults & FaultFlag.OPEN_CIRCUIT
    assert hw.status().channel(2).impedance_ohm == OPEN_ELECTRODE_OHM
    (event,) = hw.take_events()
    assert (event.faults, event.channel) == (FaultFlag.OPEN_CIRCUIT, 2)
    hw.restore_electrode(2)
    with pytest.raises(Refusal, match="open circuit"):
        hw.output_on([1])
    assert hw.clear_faults() == FaultFlag.NONE
    hw.output_on([1])
    assert hw.any_output_on
    hw.stop_all()


def test_drift_reaches_the_open_circuit_threshold_and_trips(
    hw: SimulatedStimulator, clock: VirtualClock
) -> None:
    start = hw.load_ohm(1)
    hw.drift(1, 1000)
    on_at(hw, 1000)
    clock.advance(5 * NS_PER_S)
    hw.poll(clock.now_ns())
    assert hw.load_ohm(1) == start + 5000
    assert hw.any_output_on
    clock.advance(5 * NS_PER_S)
    hw.poll(clock.now_ns())
    assert not hw.any_output_on
    assert hw.latched_faults() == FaultFlag.OPEN_CIRCUIT


def test_a_stuck_output_is_cut_by_the_over_current_monitor(hw: SimulatedStimulator) -> None:
    on_at(hw, 20_000)
    hw.stick_output(1)
    hw.set_amplitudes({1: 20_000})  # no change: still fine
    assert hw.any_output_on
    hw.stop_all()  # the output stage ignores it; the monitor opens the relay
    assert not hw.any_output_on
    assert hw.latched_faults() == FaultFlag.OVER_CURRENT


def test_a_dead_output_stage_trips_as_hardware_fault(hw: SimulatedStimulator) -> None:
    hw.stick_output(1, 0)
    on_at(hw, 20_000)
    assert hw.latched_faults() == FaultFlag.HARDWARE
    assert not hw.any_output_on


def test_lie_about_output_only_changes_the_report(hw: SimulatedStimulator) -> None:
    on_at(hw, 10_000)
    hw.lie_about_output()
    status = hw.status().channel(1)
    assert not status.output_on
    assert status.measured_ua is not None
    assert status.measured_ua > 9_000
    assert hw.outputs()[0].output_on  # the truth
    hw.stop_all()


def test_watchdog_only_latches_when_output_was_on(
    hw: SimulatedStimulator, clock: VirtualClock
) -> None:
    hw.frame_received()
    clock.advance(300 * NS_PER_MS)
    hw.poll(clock.now_ns())
    assert hw.latched_faults() == FaultFlag.NONE
    assert hw.next_deadline_ns() is None
    hw.frame_received()
    on_at(hw, 5_000)
    assert hw.next_deadline_ns() == clock.now_ns() + 250 * NS_PER_MS
    clock.advance(250 * NS_PER_MS)
    hw.poll(clock.now_ns())
    assert hw.latched_faults() == FaultFlag.WATCHDOG
    assert not hw.any_output_on


def test_power_cycle_forgets_configuration(hw: SimulatedStimulator) -> None:
    on_at(hw, 5_000)
    hw.power_cycle()
    assert not hw.any_output_on
    assert hw.channel_config(1) is None
    assert hw.latched_faults() == FaultFlag.RESET


def test_long_pulse_profile_accepts_its_long_phases(clock: VirtualClock) -> None:
    model = SimulatedStimulator(LP1, clock)
    model.configure(
        ChannelConfig(1, ShapeKind.LONG_BIPHASIC_TRIANGULAR, (150_000, 150_000), 0, 1_000_000)
    )
    with pytest.raises(Refusal) as refused:
        model.configure(
            ChannelConfig(1, ShapeKind.LONG_BIPHASIC_TRIANGULAR, (300_100, 300_100), 0, 5_000_000)
        )
    assert refused.value.limit == 300_000
    model.shut_down()


def test_trace_records_each_output_change(hw: SimulatedStimulator) -> None:
    on_at(hw, 5_000)
    hw.set_amplitudes({1: 6_000})
    hw.stop_all()
    changes = [
        (r["channel"], r["amplitude_ua"], r["output_on"]) for r in hw.trace.records("output")
    ]
    assert changes == [(1, 5_000, True), (1, 6_000, True), (1, 0, False)]
    assert all(isinstance(r["t_ns"], int) for r in hw.trace.records())


# --- fault specs ------------------------------------------------------------------------------


def test_fault_specs_parse() -> None:
    spec = parse_fault("open:ch=1,at=5s,for=250ms")
    assert (spec.kind, spec.channel, spec.at_ns, spec.duration_ns) == (
        FaultKind.OPEN,
        1,
        5 * NS_PER_S,
        250 * NS_PER_MS,
    )
    assert parse_fault("drop:p=0.01").probability == Fraction(1, 100)
    assert parse_fault("delay:ms=20").direction is Direction.OUT
    assert parse_fault("corrupt:p=1,dir=in").direction is Direction.IN
    assert parse_fault("drift:ch=2,ohm_per_s=-12.5").ohm_per_s == Fraction(-25, 2)
    assert parse_fault("stuck:ch=1,ma=20").level_ua == 20_000
    assert parse_fault("lie-output").kind is FaultKind.LIE_OUTPUT
    assert parse_fault("reset:at=1.5").at_ns == 1_500_000_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("explode", "unknown fault kind"),
        ("open", "needs ch="),
        ("open:ch=3", "channel must be 1..2"),
        ("open:ch=one", "channel number"),
        ("drop:p=2", "at most 1"),
        ("drop:p=0", "above 0"),
        ("delay:ms=-3", "must not be negative"),
        ("open:ch=1,colour=red", "takes no 'colour'"),
        ("open:ch=1,ch=2", "given twice"),
        ("reset:at=soon", "must be a number"),
        ("corrupt:p=0.1,dir=up", "dir must be"),
        ("open:ch", "not key=value"),
    ],
)
def test_bad_fault_specs_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_faults([text], channels=2)


def test_all_bad_specs_are_reported_at_once() -> None:
    with pytest.raises(InputError) as err:
        parse_faults(["open", "drop:p=5", "reset"], channels=2)
    assert len(err.value.problems) == 2


# --- link faults and scheduling in the device -------------------------------------------------


def test_scheduled_fault_fires_at_its_virtual_time(clock: VirtualClock) -> None:
    with SimulatedDevice(PF2, clock=clock, faults=["reset:at=2s"]) as dev:
        dev.hardware.clear_faults()
        clock.advance(1999 * NS_PER_MS)
        assert dev.hardware.latched_faults() == FaultFlag.NONE
        assert dev.next_deadline_ns() == 2 * NS_PER_S
        clock.advance(1 * NS_PER_MS)
        assert dev.hardware.latched_faults() == FaultFlag.RESET


def test_open_for_a_while_restores_contact(clock: VirtualClock) -> None:
    with SimulatedDevice(PF2, clock=clock, faults=["open:ch=1,at=1s,for=500ms"]) as dev:
        clock.advance(1 * NS_PER_S)
        assert dev.hardware.load_ohm(1) == OPEN_ELECTRODE_OHM
        clock.advance(500 * NS_PER_MS)
        assert dev.hardware.load_ohm(1) < PF2.impedance.good_max_ohm


def test_delay_holds_replies_back_in_virtual_time(clock: VirtualClock) -> None:
    with SimulatedDevice(PF2, clock=clock, faults=["delay:ms=20"]) as dev:
        dev.tick()
        assert dev.transmit() == b""  # the power-up event is in flight
        clock.advance(20 * NS_PER_MS)
        assert dev.transmit() != b""


def test_drop_and_corrupt_are_reproducible_with_a_seed(clock: VirtualClock) -> None:
    outputs = []
    for _ in range(2):
        with SimulatedDevice(PF2, clock=VirtualClock(), faults=["corrupt:p=0.3"], seed=11) as dev:
            dev.receive(bytes.fromhex("04 01 05 07 03 80 13 00") * 5)
            outputs.append(dev.transmit())
    assert outputs[0] == outputs[1]
    with SimulatedDevice(PF2, clock=clock, faults=["drop:p=1,dir=out"]) as dev:
        dev.receive(bytes.fromhex("04 01 05 07 03 80 13 00"))
        assert dev.transmit() == b""
        assert dev.trace.records("link")


def test_disconnect_notifies_and_silences_the_link(clock: VirtualClock) -> None:
    calls: list[str] = []
    with SimulatedDevice(PF2, clock=clock, faults=["disconnect:at=1s"]) as dev:
        dev.on_disconnect(lambda: calls.append("gone"))
        clock.advance(1 * NS_PER_S)
        assert dev.disconnected
        assert calls == ["gone"]
        dev.receive(bytes.fromhex("04 01 05 07 03 80 13 00"))
        assert dev.transmit() == b""


def test_device_names_are_unique_while_open(clock: VirtualClock) -> None:
    with SimulatedDevice(PF2, clock=clock, name="bench") as dev:
        assert dev.url == "sim://bench"
        with pytest.raises(ValueError, match="already open"):
            SimulatedDevice(PF2, clock=clock, name="bench")
