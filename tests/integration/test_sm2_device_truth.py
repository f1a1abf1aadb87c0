"""The controller on the RehaStim2 judges what the *device* says, not what it commanded.

Every control period the ScienceMode2 driver asks the device its mode
(GetStimulationMode) and waits for the answer; a device that does not answer is a lost
link (IL-COMM-LOSS), a device that stimulates while it must not is unexpected output
(IL-OUTPUT-UNEXPECTED), and "output confirmed off" at the end is the device's answer.
An emergency stop that crosses a command in flight is recorded as the emergency stop
it is, and a device error left over from an earlier session stops a new one at
connect. All in virtual time against the simulator's RehaStim2 personality, whose
output stage is the ground truth.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from estim.clock import NS_PER_MS, NS_PER_S, VirtualClock
from estim.device.profile import builtin_profile
from estim.device.registry import create_stimulator
from estim.device.sciencemode2.codec import FrameDecoder
from estim.device.sciencemode2.driver import ScienceMode2Stimulator
from estim.device.sciencemode2.messages import Command, Message
from estim.device.simulator import SimulatedDevice
from estim.events import MemorySink
from estim.safety.interlocks import CommunicationLoss, DeviceFault, UnexpectedOutput
from estim.session.director import AutoSession
from estim.session.plan import SessionPlan
from estim.session.runner import SessionRunner
from estim.session.states import State, Trigger
from estim.session.story import check_story
from estim.session.summary import Outcome
from estim.testing.session import VirtualRig, make_plan, virtual_rig

REHASTIM2 = builtin_profile("hasomed-rehastim2")
WATCHDOG_NS = REHASTIM2.link.watchdog_timeout_ms * NS_PER_MS


def stress_plan() -> SessionPlan:
    """Two cycles of the library's stress protocol at its own step: 1 mA, whole mA as the
    RehaStim2 sets them."""
    return make_plan(profile=REHASTIM2, step_ma=None)


def driver_of(rig: VirtualRig) -> ScienceMode2Stimulator:
    assert isinstance(rig.driver, ScienceMode2Stimulator)
    return rig.driver


def run_until(rig: VirtualRig, done: Callable[[], bool], limit_s: int = 60) -> None:
    deadline = rig.clock.now_ns() + limit_s * NS_PER_S
    while not done():
        assert rig.clock.now_ns() < deadline, "the condition never came true"
        assert not rig.runner.done, f"the session ended first ({rig.runner.machine.state})"
        rig.step()


def stimulating_at(rig: VirtualRig, amplitude_ua: int) -> None:
    """Run the session until the device really delivers ``amplitude_ua`` on channel 1."""
    device = rig.simulator

    def delivering() -> bool:
        return device.hardware.outputs()[0].amplitude_ua == amplitude_ua

    run_until(rig, lambda: rig.runner.machine.state is State.RUNNING and delivering())


def assert_story(sink: MemorySink) -> None:
    problems = check_story(sink.events)
    assert not problems, "\n".join(map(str, problems))


# --- the status poll is a real exchange ----------------------------------------------------


def test_a_silent_device_trips_communication_loss_within_the_watchdog_time() -> None:
    # The review's reproduction: every byte lost both ways while stimulating at 10 mA.
    # Before the fix the session ran on, showing 10 mA commanded, until FINISH.
    with virtual_rig(stress_plan(), director=AutoSession(target_ua=10_000)) as rig:
        stimulating_at(rig, 10_000)
        device = rig.simulator
        silent_from = rig.clock.now_ns()
        device.inject("drop:p=1,dir=both")
        run_until(rig, lambda: rig.runner.machine.state is State.FAULT)
        tripped_after_ns = rig.clock.now_ns() - silent_from
        summary = rig.runner.summary()
        assert [t.interlock_id for t in summary.trips] == [CommunicationLoss.ID]
        assert "no reply from the device" in summary.trips[0].reason
        # Silence beyond the bound (the watchdog timeout), judged at the next poll.
        period_ns = rig.runner.settings.control_period_ns
        reply_timeout_ns = REHASTIM2.link.reply_timeout_ms * NS_PER_MS
        assert WATCHDOG_NS < tripped_after_ns <= WATCHDOG_NS + 2 * period_ns + reply_timeout_ns
        # Nothing reaches the device: its own watchdog stopped it.
        assert not device.hardware.any_output_on
        assert device.trace.records("watchdog")
        rig.runner.request_close()
        summary = rig.runner.run()
        assert summary.outcome is Outcome.FAULT
        assert summary.output_confirmed_off is not True  # nobody answered: not confirmed
        assert not device.hardware.any_output_on
        assert_story(rig.sink)


def test_a_device_that_hears_but_is_not_heard_is_stopped_when_the_link_is_judged_lost() -> None:
    with virtual_rig(stress_plan(), director=AutoSession(target_ua=10_000)) as rig:
        stimulating_at(rig, 10_000)
        device = rig.simulator
        device.inject("drop:p=1,dir=out")  # the device hears every frame: its watchdog is fed
        run_until(rig, lambda: rig.runner.machine.state is State.FAULT)
        assert [t.interlock_id for t in rig.runner.summary().trips] == [CommunicationLoss.ID]
        # The controller's stop reached the device (its watchdog never fired).
        assert not device.hardware.any_output_on
        assert not device.trace.records("watchdog")
        rig.runner.request_close()
        summary = rig.runner.run()
        assert summary.output_confirmed_off is not True
        assert not device.hardware.any_output_on


def test_a_normal_session_has_its_output_confirmed_off_by_the_device() -> None:
    with virtual_rig(stress_plan(), director=AutoSession(target_ua=12_000)) as rig:
        summary = rig.runner.run()
        assert summary.outcome is Outcome.COMPLETED
        assert summary.output_confirmed_off is True
        assert not rig.simulator.hardware.any_output_on
        # Every status was a question to the device, answered.
        frames = rig.simulator.trace.records("frame")
        asked = [
            f for f in frames if f["direction"] == "in" and f["command"] == "GET_STIMULATION_MODE"
        ]
        answered = [
            f
            for f in frames
            if f["direction"] == "out" and f["command"] == "GET_STIMULATION_MODE_ACK"
        ]
        assert len(asked) > 100
        assert len(answered) == len(asked)
        assert_story(rig.sink)


def test_output_off_is_not_confirmed_when_the_device_does_not_answer_the_last_status() -> None:
    with virtual_rig(stress_plan(), director=AutoSession(target_ua=10_000)) as rig:
        stimulating_at(rig, 10_000)
        device = rig.simulator
        device.inject("drop:p=1,dir=out")  # the stop arrives, its answer does not
        rig.runner.close()
        assert rig.runner.summary().output_confirmed_off is not True
        assert not device.hardware.any_output_on  # it did stop: only the confirmation is lost
        failed = [e for e in rig.sink.events if e.kind == "close_failed"]
        assert failed
        assert "GET_STIMULATION_MODE" in str(failed[0].data["error"])


def test_a_device_that_says_it_stopped_by_itself_faults_the_session() -> None:
    # lie-output: the simulated device reports "initialised, not stimulating" while its
    # output stage stimulates. The driver had it stimulating and sent no stop: the
    # device's answer contradicts that, and the controller stops and latches FAULT.
    with virtual_rig(stress_plan(), director=AutoSession(target_ua=10_000)) as rig:
        stimulating_at(rig, 10_000)
        device = rig.simulator
        device.inject("lie-output")
        rig.step()
        assert rig.runner.machine.state is State.FAULT
        (trip,) = rig.runner.summary().trips
        assert trip.interlock_id == DeviceFault.ID
        assert not device.hardware.any_output_on


def test_an_emergency_stop_lost_on_the_line_is_not_confirmed_off() -> None:
    # Every STOP ALL the session sends (the emergency stop's own, the machine's, the
    # one before the final status) is lost on the line: the device stimulates on. The
    # final status asks the device, which says it is stimulating: the output is NOT
    # confirmed off, IL-OUTPUT-UNEXPECTED trips, and the trip's own stop gets through.
    # (Before, status reported the driver's belief: "confirmed off", device still on.)
    with virtual_rig(stress_plan(), director=AutoSession(target_ua=10_000)) as rig:
        stimulating_at(rig, 10_000)
        device = rig.simulator
        lose_stops(driver_of(rig), device, count=3)
        rig.runner.emergency_stop("patient button")
        assert device.hardware.any_output_on  # the stop was lost
        summary = rig.runner.run()
        assert summary.output_confirmed_off is False
        assert [t.interlock_id for t in summary.trips] == [UnexpectedOutput.ID]
        assert "output still reported on after the final stop" in summary.trips[0].reason
        assert not device.hardware.any_output_on


def test_a_pause_whose_stop_is_lost_is_not_taken_as_output_off() -> None:
    # An orderly stop waits for the device's acknowledgement; without it the
    # controller does not pretend the output is off: FAULT, and stop again.
    with virtual_rig(stress_plan(), director=AutoSession(target_ua=10_000)) as rig:
        stimulating_at(rig, 10_000)
        device = rig.simulator
        lose_stops(driver_of(rig), device, count=1)
        future = rig.runner.submit(Trigger.PAUSE)
        rig.step()
        assert future.exception(timeout=0) is not None
        assert rig.runner.machine.state is State.FAULT
        assert not device.hardware.any_output_on


def lose_stops(driver: ScienceMode2Stimulator, device: SimulatedDevice, count: int) -> None:
    """The next ``count`` StopChannelListMode frames the driver writes never arrive."""
    link = driver._link
    assert link is not None
    port: Any = link.port
    write = port.write
    lost: list[bytes] = []

    def write_losing_stops(data: bytes) -> int:
        (frame,) = FrameDecoder().feed(data)  # the driver writes one frame at a time
        if frame.command == Command.STOP_CHANNEL_LIST_MODE and len(lost) < count:
            lost.append(data)
            device.trace.record("link", what="test lost a StopChannelListMode")
            return len(data)
        return int(write(data))

    port.write = write_losing_stops


# --- an emergency stop that crosses a command in flight ------------------------------------


def cross_next_command(
    rig: VirtualRig, command: Command, source: str = "patient button"
) -> list[str]:
    """The next time the loop is about to send ``command``, an emergency stop is pressed
    (as from another thread: after the loop took its turn, before its frame is written)."""
    driver = driver_of(rig)
    exchange = driver._exchange
    pressed: list[str] = []

    def exchange_crossed(message: Message, *args: Any) -> Message:
        if not pressed and message.COMMAND is command:
            pressed.append(source)
            rig.runner.emergency_stop(source)
        return exchange(message, *args)

    driver._exchange = exchange_crossed  # type: ignore[method-assign]
    return pressed


def assert_recorded_as_an_emergency_stop(rig: VirtualRig) -> None:
    """Aborted as an emergency stop, no trip, output off; then closed, the story holds."""
    assert rig.runner.machine.state is State.ABORTED
    summary = rig.runner.summary()
    assert summary.outcome is Outcome.EMERGENCY_STOP
    assert summary.trips == ()
    assert not rig.simulator.hardware.any_output_on
    rig.runner.close()
    assert_story(rig.sink)


def test_an_emergency_stop_crossing_a_ramp_update_is_recorded_as_an_emergency_stop() -> None:
    with virtual_rig(stress_plan(), director=AutoSession(target_ua=10_000)) as rig:
        stimulating_at(rig, 10_000)
        pressed = cross_next_command(rig, Command.START_CHANNEL_LIST_MODE)
        run_until(rig, lambda: bool(pressed) and rig.runner.machine.state is not State.RUNNING)
        assert_recorded_as_an_emergency_stop(rig)


def test_an_emergency_stop_crossing_a_titration_step_is_recorded_as_an_emergency_stop() -> None:
    with virtual_rig(stress_plan(), director=AutoSession(target_ua=10_000)) as rig:
        run_until(rig, lambda: rig.runner.machine.state is State.TITRATING)
        pressed = cross_next_command(rig, Command.START_CHANNEL_LIST_MODE)
        run_until(rig, lambda: bool(pressed))
        rig.step()
        assert_recorded_as_an_emergency_stop(rig)


def test_an_emergency_stop_crossing_the_set_up_at_connect_is_recorded_as_an_emergency_stop() -> (
    None
):
    with virtual_rig(stress_plan()) as rig:
        cross_next_command(rig, Command.START_CHANNEL_LIST_MODE, source="Esc key")
        rig.runner.submit(Trigger.CONNECT)
        rig.step()
        rig.step()
        assert_recorded_as_an_emergency_stop(rig)


# --- a device error left over from an earlier session -------------------------------------


def session_on(
    device: SimulatedDevice, clock: VirtualClock, target_ua: int = 10_000
) -> SessionRunner:
    driver = create_stimulator(REHASTIM2, device.url, clock=clock)
    return SessionRunner(
        driver, stress_plan(), clock=clock, sink=MemorySink(), director=AutoSession(target_ua)
    )


def first_session_ends_on_an_electrode_error(device: SimulatedDevice, clock: VirtualClock) -> None:
    runner = session_on(device, clock)
    while not (runner.machine.state is State.RUNNING and device.hardware.any_output_on):
        runner.step()
        clock.sleep_until(runner.next_deadline_ns())
    device.inject("open:ch=1")
    summary = runner.run()
    assert summary.outcome is Outcome.FAULT
    assert "electrode" in summary.trips[0].reason


def test_a_new_session_does_not_start_over_an_error_the_device_reported_before() -> None:
    clock = VirtualClock()
    with SimulatedDevice(REHASTIM2, clock=clock) as device:
        first_session_ends_on_an_electrode_error(device, clock)
        device.inject("close:ch=1")  # the electrode is back; nobody has seen to the device
        second = session_on(device, clock)
        summary = second.run()
        assert summary.outcome is Outcome.FAULT
        assert second.machine.history[1].dest is State.FAULT  # at connect, before preflight
        (trip,) = summary.trips
        assert trip.interlock_id == DeviceFault.ID
        assert "electrode" in trip.reason
        # Nothing was switched on: the device delivered no pulse in the second session.
        assert not device.hardware.any_output_on
        assert not any(
            e.data.get("to") == State.TITRATING.value for e in second_sink(second).events
        )


def test_a_device_power_cycled_after_its_error_serves_a_new_session() -> None:
    clock = VirtualClock()
    with SimulatedDevice(REHASTIM2, clock=clock) as device:
        first_session_ends_on_an_electrode_error(device, clock)
        device.inject("close:ch=1")
        device.reset("switched off and on by the clinician")
        summary = session_on(device, clock).run()
        assert summary.outcome is Outcome.COMPLETED
        assert summary.output_confirmed_off is True
        assert not device.hardware.any_output_on


def second_sink(runner: SessionRunner) -> MemorySink:
    assert isinstance(runner.sink, MemorySink)
    return runner.sink
