"""The runner against the in-process simulator in virtual time: whole sessions, every
command, and every interlock the simulator can provoke, deterministically.

The simulator's trace is the ground truth of what the output stage delivered.
"""

from __future__ import annotations

import dataclasses
import itertools
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from estim.device.profile import builtin_profile
from estim.device.simulator import SimulatedDevice
from estim.errors import (
    ControllerError,
    DeviceTimeout,
    GuardRefused,
    InputError,
    InvalidTransition,
)
from estim.events import MemorySink, SessionEvent
from estim.safety.checks import Severity, check_profile
from estim.safety.interlocks import (
    DoseReading,
    FindingsReading,
    FindingSummary,
    ValidationReading,
)
from estim.safety.limits import Limits
from estim.session.director import AutoSession
from estim.session.runner import POLL_MERGE_NS, RunnerSettings, SessionRunner
from estim.session.states import State, Trigger
from estim.session.story import check_story
from estim.session.summary import Outcome
from estim.testing.session import VirtualRig, make_plan, virtual_rig

T = Trigger


class _AnyText(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)

    __hash__ = str.__hash__


ANY_TEXT = _AnyText("any text")
MS = 1_000_000
S = 1_000_000_000


def outputs(rig: VirtualRig) -> list[dict]:
    device = rig.device
    assert isinstance(device, SimulatedDevice)
    return list(device.trace.records("output"))


def delivered_now(rig: VirtualRig) -> int:
    device = rig.device
    assert isinstance(device, SimulatedDevice)
    return max(o.amplitude_ua for o in device.hardware.outputs())


def output_on_now(rig: VirtualRig) -> bool:
    device = rig.device
    assert isinstance(device, SimulatedDevice)
    return device.hardware.any_output_on


def titrate(rig: VirtualRig, steps: int) -> None:
    rig.command(T.CONNECT)
    rig.command(T.PREFLIGHT)
    rig.command(T.ARM)
    for _ in range(steps):
        rig.command(T.AMPLITUDE_UP)
    rig.command(T.CONFIRM_AMPLITUDE)


def start_session(rig: VirtualRig, steps: int = 24) -> None:
    titrate(rig, steps)
    rig.command(T.START)


def assert_story(events: list[SessionEvent]) -> None:
    problems = check_story(events)
    assert not problems, "\n".join(map(str, problems))


# --- whole sessions ------------------------------------------------------------------


def test_a_directed_session_runs_to_completion() -> None:
    with virtual_rig(director=AutoSession(target_ua=12_000)) as rig:
        summary = rig.runner.run()
        assert summary.outcome is Outcome.COMPLETED
        assert summary.confirmed_ua == 12_000
        assert summary.contractions == 2 == summary.planned_contractions
        assert summary.on_time_us == 14_000_000
        assert summary.output_confirmed_off is True
        assert summary.exit_code == 0
        assert_story(rig.sink.events)
        assert max(o["amplitude_ua"] for o in outputs(rig)) == 12_000
        assert not output_on_now(rig)
        assert rig.sink.kinds()[-1] == "summary"


def test_commands_the_loop_will_never_run_are_answered_not_left_waiting() -> None:
    with virtual_rig() as rig:
        start_session(rig)
        queued = rig.runner.submit(T.PAUSE)  # queued, then the loop ends without a step
        rig.runner.close()
        after = rig.runner.submit(T.STOP)
        for future in (queued, after):
            with pytest.raises(InvalidTransition, match="the session has ended"):
                future.result(timeout=0)
        assert not output_on_now(rig)
        assert rig.sink.kinds()[-1] == "summary"


def test_an_emergency_stop_just_before_close_is_logged_in_any_state() -> None:
    """Ctrl-C: emergency_stop() then request_close(); in FAULT the loop is already
    done, so close() itself must log the press and stop again."""
    with virtual_rig(faults=("open:ch=1",)) as rig:
        rig.command(T.CONNECT)
        assert rig.runner.machine.state is State.FAULT
        rig.runner.emergency_stop("SIGINT")
        rig.runner.request_close()
        summary = rig.runner.run()
        stops = [e for e in rig.sink.events if e.kind == "emergency_stop"]
        assert [e.data["sources"] for e in stops] == [["SIGINT"]]
        assert summary.outcome is Outcome.FAULT
        assert not output_on_now(rig)


def test_a_bug_in_the_final_stop_still_releases_the_port_and_answers_everyone() -> None:
    with virtual_rig() as rig:
        for trigger in (T.CONNECT, T.PREFLIGHT, T.ARM):
            rig.command(trigger)
        queued = rig.runner.submit(T.AMPLITUDE_UP)

        def buggy_status() -> None:
            raise RuntimeError("bug in status (test)")

        rig.driver.status = buggy_status  # type: ignore[method-assign]
        rig.runner.close()
        with pytest.raises(InvalidTransition, match="the session has ended"):
            queued.result(timeout=0)
        assert not rig.driver.is_open
        kinds = rig.sink.kinds()
        assert "close_failed" in kinds
        assert kinds[-1] == "summary"
        assert not output_on_now(rig)


def test_a_directed_target_below_one_step_ends_the_session_before_it_starts() -> None:
    director = AutoSession(target_ua=100)  # the plan's step is 500 uA
    with virtual_rig(director=director) as rig:
        summary = rig.runner.run()  # used to spin at one instant for ever
        assert rig.runner.machine.state is State.ABORTED
        assert summary.outcome is Outcome.NOT_STARTED
        assert "below one titration step" in director.failures[0]
        assert outputs(rig) == [] or not any(o["output_on"] for o in outputs(rig))


def test_ctrl_c_with_no_handler_is_an_emergency_stop() -> None:
    """run() on a script's main thread, no signal handler: Ctrl-C raises
    KeyboardInterrupt wherever the loop is; the session ends as an emergency stop."""

    class CtrlCWhileRunning(AutoSession):
        def act(self, runner: SessionRunner, now_ns: int) -> int | None:
            if runner.machine.state is State.RUNNING and now_ns > runner.schedule_origin_ns + S:
                raise KeyboardInterrupt
            return super().act(runner, now_ns)

    with virtual_rig(director=CtrlCWhileRunning(target_ua=12_000)) as rig:
        with pytest.raises(KeyboardInterrupt):
            rig.runner.run()
        summary = rig.runner.summary()
        assert summary.outcome is Outcome.EMERGENCY_STOP
        assert "KeyboardInterrupt" in summary.reason
        assert rig.sink.kinds()[-1] == "summary"
        assert "emergency_stop" in rig.sink.kinds()
        assert not output_on_now(rig)
        assert_story(rig.sink.events)


def test_phase_boundaries_fall_exactly_on_the_schedule_in_virtual_time() -> None:
    plan = make_plan(cycles=2)
    with virtual_rig(plan) as rig:
        titrate(rig, steps=24)
        rig.step()
        already = len(outputs(rig))
        rig.command(T.START)
        started = rig.clock.now_ns()
        rig.step(periods=40 * 20)
        assert rig.runner.machine.state is State.COMPLETED
        trace = outputs(rig)[already:]
        # ramp-up ends (full amplitude) and ramp-down ends (zero) exactly on boundaries
        full = [o["clock_ns"] - started for o in trace if o["amplitude_ua"] == 12_000]
        assert full[0] == 1 * S
        zero_after_full = [
            o["clock_ns"] - started
            for o in trace
            if o["amplitude_ua"] == 0 and o["clock_ns"] - started > 1 * S
        ]
        assert zero_after_full[0] <= 7 * S
        second_full = [t for t in full if t > 17 * S]
        assert second_full[0] == 18 * S


@settings(max_examples=20)
@given(
    start_offset=st.integers(0, 49),
    run_ms=st.integers(0, 50_000),
    pause_ms=st.integers(0, 3_000),
    resume_offset=st.integers(0, 49),
)
def test_phase_boundaries_fall_on_poll_ticks_and_polls_never_fall_behind(
    start_offset: int, run_ms: int, pause_ms: int, resume_offset: int
) -> None:
    """The poll grid follows the schedule, after a start and a resume anywhere off the
    grid: the step that commands a phase boundary also polls the status, right after
    it, and two polls are never more than a period (plus the merge allowance for a
    poll due just before a boundary) apart."""
    plan = make_plan(cycles=3)
    period_ns = RunnerSettings.for_plan(plan).control_period_ns
    with virtual_rig(plan) as rig:
        titrate(rig, steps=24)
        rig.run_for(start_offset * MS)
        rig.command(T.START)
        rig.run_for(run_ms * MS)
        if rig.runner.machine.state is State.RUNNING:
            rig.command(T.PAUSE)
            rig.run_for(pause_ms * MS + resume_offset * MS)
            rig.command(T.RESUME)
        rig.step(periods=40 * 30)
        assert rig.runner.machine.state is State.COMPLETED
        device = rig.device
        assert isinstance(device, SimulatedDevice)
        polls = [
            r["clock_ns"]
            for r in device.trace.records("frame")
            if r["direction"] == "in" and r["command"] == "STATUS"
        ]
        phases = [e for e in rig.sink.events if e.kind == "phase"]
    segments = plan.schedule.segments
    # (a phase event on resuming mid-segment is no boundary)
    boundaries = [e for e in phases if e.data["t_us"] == segments[e.data["segment"]].start_us]
    assert {e.data["segment"] for e in boundaries} == set(range(len(segments)))
    assert {e.monotonic_ns for e in boundaries} <= set(polls), "a boundary's step did not poll"
    assert max(b - a for a, b in itertools.pairwise(polls)) <= period_ns + POLL_MERGE_NS


def test_ramps_are_smooth_and_never_exceed_the_target() -> None:
    with virtual_rig() as rig:
        titrate(rig, steps=24)
        already = len(outputs(rig))
        rig.command(T.START)
        rig.step(periods=20)  # one second: the ramp-up
        ramp = [o["amplitude_ua"] for o in outputs(rig)[already:] if o["output_on"]]
        assert ramp == sorted(ramp)
        assert len(ramp) >= 20
        steps = [b - a for a, b in itertools.pairwise(ramp)]
        assert max(steps) <= 12_000 // 20 + 100
        assert max(ramp) == 12_000


def test_pause_drops_output_at_once_and_resume_ramps_from_zero() -> None:
    with virtual_rig() as rig:
        start_session(rig, steps=24)
        rig.step(periods=60)  # 3 s: on the plateau
        assert delivered_now(rig) == 12_000
        rig.command(T.PAUSE)
        assert delivered_now(rig) == 0
        assert not output_on_now(rig)
        rig.step(periods=40)
        assert not output_on_now(rig)
        already = len(outputs(rig))
        rig.command(T.RESUME)
        rig.step(periods=30)
        after = [o["amplitude_ua"] for o in outputs(rig)[already:]]
        assert after[0] == 0
        assert after[1] < 12_000 // 5
        assert after == sorted(after)
        assert max(after) == 12_000
        summary_state = rig.runner.view()
        assert summary_state.state is State.RUNNING
        assert summary_state.phase is not None


def test_an_orderly_stop_ramps_down_then_completes() -> None:
    with virtual_rig() as rig:
        start_session(rig, steps=24)
        rig.step(periods=60)
        already = len(outputs(rig))
        rig.command(T.STOP, by="Dr Test")
        assert rig.runner.machine.state is State.STOPPING
        rig.step(periods=30)
        assert rig.runner.machine.state is State.COMPLETED
        down = [o["amplitude_ua"] for o in outputs(rig)[already:]]
        assert down == sorted(down, reverse=True)
        assert len(down) > 10
        assert down[-1] == 0
        summary = rig.runner.summary()
        assert summary.outcome is Outcome.STOPPED
        assert "Dr Test" in summary.reason


def test_emergency_stop_zeroes_the_device_before_the_loop_moves() -> None:
    with virtual_rig() as rig:
        start_session(rig, steps=24)
        rig.step(periods=60)
        assert delivered_now(rig) == 12_000
        rig.runner.emergency_stop("space key")
        assert delivered_now(rig) == 0, "STOP ALL went straight to the device"
        assert rig.runner.machine.state is State.RUNNING
        rig.runner.step()
        assert rig.runner.machine.state is State.ABORTED
        summary = rig.runner.summary()
        assert summary.outcome is Outcome.EMERGENCY_STOP
        assert summary.exit_code == 4
        assert "space key" in summary.reason
        assert_story(rig.sink.events)


def test_emergency_stop_before_connecting_aborts_without_a_fault() -> None:
    with virtual_rig() as rig:
        rig.runner.emergency_stop("test")
        rig.runner.step()
        assert rig.runner.machine.state is State.ABORTED
        assert rig.runner.summary().outcome is Outcome.EMERGENCY_STOP


def test_titration_refuses_the_ceiling_and_the_device_never_sees_more() -> None:
    plan = make_plan(max_ma=Decimal(2))
    with virtual_rig(plan) as rig:
        rig.command(T.CONNECT)
        rig.command(T.PREFLIGHT)
        rig.command(T.ARM)
        for _ in range(4):
            rig.command(T.AMPLITUDE_UP)
        with pytest.raises(GuardRefused, match="exceed the ceiling"):
            rig.command(T.AMPLITUDE_UP)
        assert delivered_now(rig) == 2_000
        with pytest.raises(InvalidTransition):
            rig.command(T.PAUSE)
        rig.command(T.CONFIRM_AMPLITUDE)
        assert not output_on_now(rig)
        rig.command(T.START)
        with pytest.raises(GuardRefused):
            rig.command(T.AMPLITUDE_UP)
        rig.step(periods=80)
        assert max(o["amplitude_ua"] for o in outputs(rig)) == 2_000


def test_target_changes_while_running_follow_the_envelope() -> None:
    with virtual_rig() as rig:
        start_session(rig, steps=20)  # 10 mA
        rig.step(periods=60)
        assert delivered_now(rig) == 10_000
        rig.command(T.AMPLITUDE_UP)
        rig.step()
        assert delivered_now(rig) == 10_500
        rig.command(T.AMPLITUDE_DOWN)
        rig.command(T.AMPLITUDE_DOWN)
        rig.step()
        assert delivered_now(rig) == 9_500
        assert rig.runner.summary().confirmed_ua == 10_000


def test_ramps_are_stepped_by_the_host_even_if_a_profile_claims_the_device_ramps() -> None:
    """Such a profile is refused by the profile check (PROFILE_DEVICE_RAMPS); and were
    one run anyway, the controller still steps the ramp up from zero, never a jump."""
    pf2 = builtin_profile("estim-pf2")
    ramping = pf2.model_copy(
        update={"output": pf2.output.model_copy(update={"device_ramps": True})}
    )
    verdict = check_profile(ramping)
    assert "PROFILE_DEVICE_RAMPS" in verdict.codes(Severity.ERROR)
    with virtual_rig(make_plan(profile=ramping)) as rig:
        titrate(rig, steps=24)
        already = len(outputs(rig))
        rig.command(T.START)
        rig.step(periods=17 * 20)  # one whole cycle
        levels = [o["amplitude_ua"] for o in outputs(rig)[already:] if o["output_on"]]
        between = {level for level in levels if 0 < level < 12_000}
        assert len(between) >= 10, "the ramp is stepped, not a jump to the plateau"
        assert max(levels) == 12_000
        assert rig.runner.machine.state is State.RUNNING


def test_a_lost_reply_to_the_stop_ramps_last_zero_is_sent_again_not_a_fault() -> None:
    with virtual_rig() as rig:
        start_session(rig)
        rig.step(periods=60)
        rig.command(T.STOP, by="Dr Test")
        real = rig.driver._set_amplitudes
        dropped: list[dict[int, int]] = []

        def loses_the_first_zero(amplitudes_ua: dict[int, int]) -> None:
            if not dropped and not any(amplitudes_ua.values()):
                dropped.append(amplitudes_ua)
                raise DeviceTimeout("no reply to SET_AMPLITUDE (test)")
            real(amplitudes_ua)

        rig.driver._set_amplitudes = loses_the_first_zero  # type: ignore[method-assign]
        rig.run_for(3 * S)
        assert dropped
        assert rig.runner.machine.state is State.COMPLETED
        assert rig.runner.summary().trips == ()
        assert not output_on_now(rig)


def test_a_device_error_while_the_loop_finishes_is_a_device_fault_not_a_bug() -> None:
    with virtual_rig() as rig:
        start_session(rig)

        def no_reply() -> None:
            raise DeviceTimeout("no reply to OUTPUT_OFF (test)")

        rig.driver._output_off = no_reply  # type: ignore[method-assign]
        rig.run_for(120 * S)  # past the end of the schedule: FINISH switches off
        summary = rig.runner.summary()
        assert rig.runner.machine.state is State.FAULT
        assert [t.interlock_id for t in summary.trips] == ["IL-COMM-LOSS"]
        assert not output_on_now(rig)


def test_a_refused_command_leaves_state_and_output_alone() -> None:
    with virtual_rig() as rig:
        start_session(rig, steps=24)
        rig.step(periods=60)
        before = delivered_now(rig)
        with pytest.raises(InvalidTransition):
            rig.command(T.RESUME)
        with pytest.raises(InvalidTransition):
            rig.command(T.CONFIRM_AMPLITUDE)
        assert rig.runner.machine.state is State.RUNNING
        assert delivered_now(rig) == before
        refused = [e for e in rig.sink.events if e.kind == "refused"]
        assert refused == []  # table refusals are not guard refusals; nothing to log


# --- interlocks through the simulator -------------------------------------------------------


def run_until_fault(rig: VirtualRig, periods: int = 200) -> None:
    for _ in range(periods):
        rig.step()
        if rig.runner.machine.state is State.FAULT:
            return
    raise AssertionError(f"no fault; state {rig.runner.machine.state}")


def assert_tripped(rig: VirtualRig, interlock_id: str) -> None:
    runner = rig.runner
    assert runner.machine.state is State.FAULT
    assert runner.machine.fault is not None
    assert runner.machine.fault.interlock_id == interlock_id, runner.machine.fault
    assert not output_on_now(rig)
    assert delivered_now(rig) == 0
    assert_story(rig.sink.events)


@pytest.mark.trips("IL-OPEN-CIRCUIT")
def test_an_electrode_opening_mid_session_trips_and_zeroes() -> None:
    with virtual_rig() as rig:
        start_session(rig)
        rig.step(periods=60)
        device = rig.device
        assert isinstance(device, SimulatedDevice)
        device.inject("open:ch=1")
        run_until_fault(rig, periods=2)
        assert_tripped(rig, "IL-OPEN-CIRCUIT")


@pytest.mark.trips("IL-OPEN-CIRCUIT")
def test_an_open_electrode_at_preflight_blocks_the_session() -> None:
    with virtual_rig(faults=("open:ch=1",)) as rig:
        rig.runner.submit(T.CONNECT)
        preflight = rig.runner.submit(T.PREFLIGHT)  # before the first status poll
        rig.runner.step()
        assert preflight.result(timeout=0) is State.FAULT
        assert_tripped(rig, "IL-OPEN-CIRCUIT")
        preflight_event = next(e for e in rig.sink.events if e.kind == "preflight")
        assert preflight_event.data["trips"] == ["IL-OPEN-CIRCUIT"]
        with pytest.raises(InvalidTransition):
            rig.command(T.ARM)


@pytest.mark.trips("IL-OPEN-CIRCUIT")
def test_an_open_electrode_is_seen_in_any_connected_state() -> None:
    with virtual_rig(faults=("open:ch=1",)) as rig:
        assert rig.command(T.CONNECT) is State.CONNECTING
        assert rig.runner.machine.state is State.FAULT  # from the first status reading
        assert_tripped(rig, "IL-OPEN-CIRCUIT")


@pytest.mark.trips("IL-IMPEDANCE-RANGE")
def test_impedance_drifting_out_of_range_trips_during_the_session() -> None:
    with virtual_rig() as rig:
        start_session(rig)
        rig.step(periods=20)
        device = rig.device
        assert isinstance(device, SimulatedDevice)
        device.inject("drift:ch=1,ohm_per_s=400")  # 800 ohm -> past 1500 in < 2 s
        run_until_fault(rig, periods=100)
        assert_tripped(rig, "IL-IMPEDANCE-RANGE")


@pytest.mark.trips("IL-IMPEDANCE-RANGE")
def test_poor_contact_at_preflight_blocks_the_session() -> None:
    with virtual_rig(faults=("load:ch=1,ohm=3000",)) as rig:
        rig.runner.submit(T.CONNECT)
        rig.runner.submit(T.PREFLIGHT)
        rig.runner.step()
        assert_tripped(rig, "IL-IMPEDANCE-RANGE")
        preflight_event = next(e for e in rig.sink.events if e.kind == "preflight")
        assert preflight_event.data["trips"] == ["IL-IMPEDANCE-RANGE"]


@pytest.mark.trips("IL-COMM-LOSS")
def test_a_vanished_port_trips_comm_loss_and_the_device_watchdog_stops_output() -> None:
    with virtual_rig() as rig:
        start_session(rig)
        rig.step(periods=60)
        device = rig.device
        assert isinstance(device, SimulatedDevice)
        device.inject("disconnect")
        run_until_fault(rig, periods=20)
        assert rig.runner.machine.fault is not None
        assert rig.runner.machine.fault.interlock_id == "IL-COMM-LOSS"
        rig.step(periods=10)  # the device's own watchdog (250 ms) does the rest
        assert not output_on_now(rig)
        assert "watchdog" in device.hardware.latched_faults().describe()


@pytest.mark.trips("IL-COMM-LOSS")
def test_a_silent_device_trips_comm_loss_within_the_bound() -> None:
    with virtual_rig() as rig:
        start_session(rig)
        rig.step(periods=60)
        device = rig.device
        assert isinstance(device, SimulatedDevice)
        device.inject("drop:p=1,dir=out")  # the device hears but is never heard
        run_until_fault(rig, periods=20)
        assert rig.runner.machine.fault is not None
        assert rig.runner.machine.fault.interlock_id == "IL-COMM-LOSS"
        assert "no reply from the device" in rig.runner.machine.fault.reason


@pytest.mark.trips("IL-DEVICE-FAULT")
def test_a_device_reset_mid_session_trips() -> None:
    with virtual_rig() as rig:
        start_session(rig)
        rig.step(periods=60)
        device = rig.device
        assert isinstance(device, SimulatedDevice)
        device.inject("reset")
        run_until_fault(rig, periods=5)
        assert_tripped(rig, "IL-DEVICE-FAULT")
        assert "reset" in rig.runner.machine.fault.reason  # type: ignore[union-attr]


@pytest.mark.trips("IL-DEVICE-FAULT")
def test_a_device_that_refuses_the_pulse_blocks_at_connect() -> None:
    plan = make_plan("complete-denervation", builtin_profile("estim-pf2"), max_ma=Decimal(50))
    with virtual_rig(plan) as rig:
        assert rig.command(T.CONNECT) is State.FAULT
        assert rig.runner.machine.fault is not None
        assert rig.runner.machine.fault.interlock_id == "IL-DEVICE-FAULT"
        assert "refused" in rig.runner.machine.fault.reason


@pytest.mark.trips("IL-DEVICE-FAULT")
def test_a_stuck_output_stage_is_cut_by_the_device_and_trips_the_controller() -> None:
    with virtual_rig() as rig:
        start_session(rig)
        rig.step(periods=60)
        device = rig.device
        assert isinstance(device, SimulatedDevice)
        device.inject("stuck:ch=1")
        rig.command(T.PAUSE)  # the output stage ignores the off command ...
        run_until_fault(rig, periods=5)  # ... the device's relay cuts it and reports
        assert_tripped(rig, "IL-DEVICE-FAULT")


@pytest.mark.trips("IL-OUTPUT-UNEXPECTED")
def test_a_stage_stuck_below_the_devices_own_trip_is_caught_by_the_controller() -> None:
    with virtual_rig() as rig:
        start_session(rig)
        rig.step(periods=60)
        rig.command(T.PAUSE)
        device = rig.device
        assert isinstance(device, SimulatedDevice)
        # 0.5 mA is inside the device's own over-current tolerance (1 mA): its relay
        # stays closed, but its status says the output is on.
        device.inject("stuck:ch=1,ma=0.5")
        run_until_fault(rig, periods=2)
        fault = rig.runner.machine.fault
        assert fault is not None
        assert fault.interlock_id == "IL-OUTPUT-UNEXPECTED"
        assert "output on while it must be off" in fault.reason
        assert_story(rig.sink.events)
        device.reset()  # power-cycling is the only way to free a stuck stage


@pytest.mark.trips("IL-OUTPUT-UNEXPECTED")
def test_a_stage_that_stays_on_gets_stop_all_again_and_the_fault_cannot_be_acknowledged() -> None:
    with virtual_rig() as rig:
        start_session(rig)
        rig.step(periods=60)
        rig.command(T.PAUSE)
        device = rig.device
        assert isinstance(device, SimulatedDevice)
        device.inject("stuck:ch=1,ma=0.5")
        run_until_fault(rig, periods=2)
        rig.step(periods=70)  # 3.5 s latched, the stage still on
        again = [e for e in rig.sink.events if e.kind == "stop_again"]
        assert 3 <= len(again) <= 4  # once a second while the cause persists
        assert again[0].data["interlocks"] == ["IL-OUTPUT-UNEXPECTED"]
        stops = [r for r in device.trace.records("frame") if r.get("command") == "STOP_ALL"]
        assert len(stops) >= 1 + len(again)
        with pytest.raises(GuardRefused, match="still reports output on"):
            rig.command(T.ACKNOWLEDGE_FAULT, by="Dr Test")
        assert rig.runner.machine.state is State.FAULT
        device.reset()  # power-cycled: the stage is free, the status says off
        rig.step(periods=2)
        assert rig.command(T.ACKNOWLEDGE_FAULT, by="Dr Test") is State.ABORTED
        assert_story(rig.sink.events)


@pytest.mark.trips("IL-CURRENT-DEVIATION")
def test_compliance_limiting_the_current_trips_current_deviation() -> None:
    pf2 = builtin_profile("estim-pf2")
    weak = pf2.model_copy(
        update={"output": pf2.output.model_copy(update={"compliance_voltage_v": Decimal(8)})}
    )
    with virtual_rig(make_plan(profile=weak)) as rig:  # 8 V into 800 ohm: 10 mA at most
        start_session(rig, steps=24)  # 12 mA
        run_until_fault(rig, periods=40)
        assert_tripped(rig, "IL-CURRENT-DEVIATION")
        assert "check the electrode contact" in rig.runner.machine.fault.reason  # type: ignore[union-attr]


@pytest.mark.trips("IL-SESSION-TIME")
def test_a_session_running_past_its_cap_trips() -> None:
    plan = dataclasses.replace(make_plan(), session_cap_us=5_000_000)
    with virtual_rig(plan) as rig:
        start_session(rig)
        run_until_fault(rig, periods=400)
        assert_tripped(rig, "IL-SESSION-TIME")
        # The cap allows an orderly stop begun just before the end, and no more.
        allowed_us = 5_000_000 + rig.runner.settings.stop_ramp_us
        period_us = rig.runner.settings.control_period_ns // 1_000
        assert allowed_us < rig.runner.summary().schedule_elapsed_us <= allowed_us + period_us
        # Latched with the output confirmed off: the cap stays exceeded, but nothing
        # more needs stopping, so no repeated STOP ALL fills the record.
        rig.step(periods=5 * 20)
        assert not output_on_now(rig)
        assert "stop_again" not in rig.sink.kinds()


@pytest.mark.trips("IL-SESSION-TIME")
def test_a_titration_nobody_finishes_trips_at_the_titration_limit() -> None:
    # A site's limits file sets the titration limit; the plan takes it from there.
    plan = make_plan(limits=Limits(titration_time_max_min=Decimal("0.5")))
    assert plan.titration_cap_us == 30_000_000
    with virtual_rig(plan) as rig:
        rig.command(T.CONNECT)
        rig.command(T.PREFLIGHT)
        rig.command(T.ARM)
        rig.command(T.AMPLITUDE_UP)  # output on at the first step; then nobody confirms
        assert rig.runner.machine.state is State.TITRATING
        periods_s = 1_000_000_000 // rig.runner.settings.control_period_ns
        rig.step(periods=29 * periods_s)
        assert rig.runner.machine.state is State.TITRATING
        run_until_fault(rig, periods=2 * periods_s)
        assert_tripped(rig, "IL-SESSION-TIME")
        assert "titration limit of 30 s" in rig.runner.machine.fault.reason  # type: ignore[union-attr]
    (session,) = [e for e in rig.sink.events if e.kind == "session"]
    assert session.data["titration_cap_us"] == 30_000_000
    assert session.data["limits_overrides"] == {"TITRATION_TIME_MAX": "0.5"}


def test_a_session_of_the_longest_length_the_protocols_allow_can_run() -> None:
    plan = dataclasses.replace(make_plan(), session_cap_us=120 * 60 * 1_000_000)
    with virtual_rig(plan) as rig:  # the time cap and its stop allowance are accepted
        start_session(rig)
        rig.step(periods=20)
        assert rig.runner.machine.state is State.RUNNING


def test_the_titration_cap_always_follows_the_plans_limits() -> None:
    plan = make_plan()
    assert plan.titration_cap_us == 5 * 60 * 1_000_000
    site = Limits(titration_time_max_min=Decimal(2))
    assert dataclasses.replace(plan, limits=site).titration_cap_us == 2 * 60 * 1_000_000


def test_a_titration_limit_too_short_to_time_is_refused_when_planning() -> None:
    with pytest.raises(InputError) as refused:
        make_plan(limits=Limits(titration_time_max_min=Decimal("1e-9")))
    (problem,) = refused.value.problems
    assert problem.location == "titration_time_max_min"


def test_without_site_limits_the_log_says_none_were_overridden() -> None:
    with virtual_rig() as rig:
        rig.step()
    (session,) = [e for e in rig.sink.events if e.kind == "session"]
    assert session.data["limits_overrides"] == {}
    assert session.data["titration_cap_us"] == 5 * 60 * 1_000_000


def test_paused_time_does_not_count_toward_the_session_cap() -> None:
    plan = dataclasses.replace(make_plan(), session_cap_us=5_000_000)
    with virtual_rig(plan) as rig:
        start_session(rig)
        rig.step(periods=20)  # 1 s running
        rig.command(T.PAUSE)
        rig.step(periods=200)  # 10 s paused: output off, not stimulation time
        assert rig.runner.machine.state is State.PAUSED
        timer = rig.runner.stimulation_timer
        assert timer.stimulation_us(rig.clock.now_ns()) < 2_000_000


@pytest.mark.trips("IL-DOSE-CAP")
def test_the_days_dose_already_given_blocks_at_preflight() -> None:
    with virtual_rig(make_plan(dose=DoseReading(1, 1))) as rig:
        rig.command(T.CONNECT)
        rig.command(T.PREFLIGHT)
        assert_tripped(rig, "IL-DOSE-CAP")


@pytest.mark.trips("IL-PREFLIGHT-CHECK")
def test_an_unacknowledged_warning_blocks_at_preflight() -> None:
    findings = FindingsReading(warnings=(FindingSummary("W-DENSITY", "density high"),))
    with virtual_rig(make_plan(findings=findings)) as rig:
        rig.command(T.CONNECT)
        rig.command(T.PREFLIGHT)
        assert_tripped(rig, "IL-PREFLIGHT-CHECK")


@pytest.mark.trips("IL-DEVICE-IDENTITY")
def test_a_device_with_other_firmware_is_refused() -> None:
    plan = make_plan()
    from estim.clock import VirtualClock
    from estim.device.registry import create_stimulator
    from estim.session.runner import SessionRunner

    clock = VirtualClock()
    with SimulatedDevice(plan.profile, clock=clock, firmware="2.1") as device:
        for check_identity in (True, False):  # the driver's check, then ours behind it
            driver = create_stimulator(
                plan.profile, device.url, clock=clock, check_identity=check_identity
            )
            runner = SessionRunner(driver, plan, clock=clock, sink=MemorySink())
            future = runner.submit(T.CONNECT)
            runner.step()
            assert future.result(timeout=0) is State.FAULT
            assert runner.machine.fault is not None
            assert runner.machine.fault.interlock_id == "IL-DEVICE-IDENTITY"
            assert "2.1" in runner.machine.fault.reason
            runner.close()
            assert not device.hardware.any_output_on


@pytest.mark.trips("IL-DEVICE-VALIDATION")
def test_a_unit_the_bench_record_does_not_vouch_for_is_refused_at_connect() -> None:
    seen: list[str] = []

    def validation(identity: object) -> ValidationReading:
        seen.append(getattr(identity, "serial_number", ""))
        return ValidationReading("bench.json", ("it is for serial SIM999999",))

    plan = dataclasses.replace(make_plan(), validation=validation)
    with virtual_rig(plan) as rig:
        assert rig.command(T.CONNECT) is State.FAULT
        assert_tripped(rig, "IL-DEVICE-VALIDATION")
        assert seen == ["SIM000000"]


def test_a_bench_record_that_cannot_be_checked_trips_at_connect() -> None:
    def unreadable(identity: object) -> ValidationReading:
        raise InputError("bench-record.json: cannot be read (test)")

    plan = dataclasses.replace(make_plan(), validation=unreadable)
    with virtual_rig(plan) as rig:
        rig.command(T.CONNECT)
        assert rig.runner.machine.state is State.FAULT
        assert rig.runner.machine.fault is not None
        assert rig.runner.machine.fault.interlock_id == "IL-DEVICE-VALIDATION"
        assert "cannot be read" in rig.runner.machine.fault.reason
        assert not output_on_now(rig)


def test_without_a_validation_check_the_skip_is_logged_with_its_reason() -> None:
    with virtual_rig() as rig:
        rig.runner.step()
        skipped = [e.data for e in rig.sink.events if e.kind == "interlock_skipped"]
        assert {"interlock_id": "IL-DEVICE-VALIDATION", "reason": ANY_TEXT} in skipped
        assert ("IL-DEVICE-VALIDATION", rig.runner.plan.validation_skip_reason) in (
            rig.runner.summary().skipped_interlocks
        )


def test_acknowledging_a_fault_ends_the_session_and_says_who() -> None:
    with virtual_rig() as rig:
        start_session(rig)
        rig.step(periods=40)
        device = rig.device
        assert isinstance(device, SimulatedDevice)
        device.inject("open:ch=1")
        run_until_fault(rig, periods=3)
        with pytest.raises(GuardRefused):
            rig.command(T.ACKNOWLEDGE_FAULT)
        assert rig.command(T.ACKNOWLEDGE_FAULT, by="Nurse Kim") is State.ABORTED
        summary = rig.runner.summary()
        assert summary.outcome is Outcome.FAULT
        assert summary.fault_acknowledged_by == "Nurse Kim"
        assert summary.trips[0].interlock_id == "IL-OPEN-CIRCUIT"
        assert rig.runner.done


def test_a_sink_that_cannot_write_stops_the_session() -> None:
    class FailingSink(MemorySink):
        fail = False

        def append(self, event: SessionEvent) -> None:
            if self.fail:
                raise OSError("disk full")
            super().append(event)

    with virtual_rig(sink_factory=FailingSink) as rig:
        start_session(rig)
        rig.step(periods=40)
        assert isinstance(rig.sink, FailingSink)
        rig.sink.fail = True
        rig.step(periods=25)  # the next status event (one a second) cannot be written
        assert rig.runner.machine.state is State.FAULT
        assert rig.runner.machine.fault is not None
        assert rig.runner.machine.fault.interlock_id == "CONTROLLER-RECORDS"
        assert "disk full" in rig.runner.machine.fault.reason
        assert not output_on_now(rig)
        assert rig.runner.unsaved_events


def test_a_bug_under_a_persons_command_is_answered_after_output_is_off() -> None:
    with virtual_rig() as rig:
        for trigger in (T.CONNECT, T.PREFLIGHT, T.ARM, T.AMPLITUDE_UP, T.AMPLITUDE_UP):
            rig.command(trigger)
        assert output_on_now(rig)
        driver = rig.runner.stimulator

        def broken(amplitudes_ua: dict[int, int]) -> None:
            raise RuntimeError("injected bug")

        driver._set_amplitudes = broken  # type: ignore[method-assign]
        future = rig.runner.submit(T.AMPLITUDE_UP)
        rig.runner.step()
        with pytest.raises(ControllerError, match="injected bug") as info:
            future.result(timeout=0)
        assert isinstance(info.value.__cause__, RuntimeError)
        assert "session in fault" in str(info.value)
        assert rig.runner.machine.state is State.FAULT
        assert not output_on_now(rig)
        assert delivered_now(rig) == 0


def test_a_sink_that_fails_once_still_gets_every_event_in_order() -> None:
    """A passing failure (a locked database) trips the session, as any failure of the
    log must; the events it refused are written once it works again: none is lost."""

    class FailsOnce(MemorySink):
        armed = False

        def append(self, event: SessionEvent) -> None:
            if self.armed:
                self.armed = False
                raise OSError("database is locked (test)")
            super().append(event)

    with virtual_rig(sink_factory=FailsOnce) as rig:
        start_session(rig)
        rig.step(periods=40)
        assert isinstance(rig.sink, FailsOnce)
        rig.sink.armed = True
        rig.step(periods=60)
        assert rig.runner.machine.state is State.FAULT
        assert rig.runner.machine.fault is not None
        assert rig.runner.machine.fault.interlock_id == "CONTROLLER-RECORDS"
        rig.runner.close()
        assert rig.runner.unsaved_events == []
        kinds = rig.sink.kinds()
        assert "trip" in kinds
        assert kinds[-1] == "summary"
        times = [e.monotonic_ns for e in rig.sink.events]
        assert times == sorted(times)
        assert_story(rig.sink.events)
        assert not output_on_now(rig)


def test_the_view_reports_progress() -> None:
    with virtual_rig() as rig:
        start_session(rig, steps=24)
        rig.step(periods=25)  # 1.25 s: on the plateau of cycle 1
        view = rig.runner.view()
        assert view.state is State.RUNNING
        assert view.cycle == 1
        assert view.cycles == 2
        assert view.phase is not None
        assert view.phase.value == "on"
        assert view.commanded_ua == 12_000
        assert view.measured_ua is not None
        assert abs(view.measured_ua - 12_000) <= 600
        assert view.output_on
        assert view.time_left_us == 34_000_000 - view.schedule_elapsed_us
