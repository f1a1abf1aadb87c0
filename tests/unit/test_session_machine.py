"""The state machine against a recording port: the table, guards, and safety nets."""

from __future__ import annotations

import pytest

from estim.errors import DeviceRejected, GuardRefused, InterlockTripped, InvalidTransition
from estim.safety.interlocks import Trip
from estim.session.machine import EXCEPTION_CAUSE, OUTPUT_CHECK_CAUSE, SessionMachine
from estim.session.states import State, Trigger
from estim.session.table import TABLE, OutputEffect, allowed_triggers, rules_for
from estim.testing.session import TRIGGER_DATA, RecordingPort

CEILING_UA = 3000
STEP_UA = 1000

T = Trigger


def machine(port: RecordingPort | None = None) -> tuple[SessionMachine, RecordingPort, list]:
    port = port or RecordingPort()
    events: list[tuple[str, dict]] = []
    m = SessionMachine(
        port, ceiling_ua=CEILING_UA, step_ua=STEP_UA, emit=lambda k, d: events.append((k, dict(d)))
    )
    return m, port, events


def fire(m: SessionMachine, trigger: Trigger) -> State:
    return m.fire(trigger, **TRIGGER_DATA.get(trigger, {}))


PATHS: dict[State, list[Trigger]] = {
    State.IDLE: [],
    State.CONNECTING: [T.CONNECT],
    State.PREFLIGHT: [T.CONNECT, T.PREFLIGHT],
    State.ARMED: [T.CONNECT, T.PREFLIGHT, T.ARM],
    State.TITRATING: [T.CONNECT, T.PREFLIGHT, T.ARM, T.AMPLITUDE_UP],
    State.RUNNING: [T.CONNECT, T.PREFLIGHT, T.ARM, T.AMPLITUDE_UP, T.CONFIRM_AMPLITUDE, T.START],
    State.PAUSED: [
        *[T.CONNECT, T.PREFLIGHT, T.ARM, T.AMPLITUDE_UP, T.CONFIRM_AMPLITUDE, T.START],
        T.PAUSE,
    ],
    State.STOPPING: [
        *[T.CONNECT, T.PREFLIGHT, T.ARM, T.AMPLITUDE_UP, T.CONFIRM_AMPLITUDE, T.START],
        T.STOP,
    ],
    State.COMPLETED: [
        *[T.CONNECT, T.PREFLIGHT, T.ARM, T.AMPLITUDE_UP, T.CONFIRM_AMPLITUDE, T.START],
        T.STOP,
        T.FINISH,
    ],
    State.ABORTED: [T.EMERGENCY_STOP],
    State.FAULT: [T.CONNECT, T.TRIP],
}


def at(state: State) -> tuple[SessionMachine, RecordingPort, list]:
    """A machine brought to ``state`` by legal triggers only."""
    m, port, events = machine()
    m.record_preflight(())
    for trigger in PATHS[state]:
        fire(m, trigger)
    assert m.state is state
    return m, port, events


def test_every_state_is_reachable_by_legal_triggers() -> None:
    for state in State:
        assert at(state)[0].state is state


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
@pytest.mark.parametrize("trigger", list(Trigger), ids=lambda t: t.value)
def test_state_x_trigger_follows_the_table_or_raises_without_touching_output(
    state: State, trigger: Trigger
) -> None:
    m, port, _ = at(state)
    port.calls.clear()
    before = (port.output_enabled, port.commanded_ua)
    rules = rules_for(state, trigger)
    if not rules:
        with pytest.raises(InvalidTransition) as info:
            fire(m, trigger)
        assert not isinstance(info.value, GuardRefused)
        assert m.state is state
        assert port.calls == []
        assert (port.output_enabled, port.commanded_ua) == before
        return
    (rule,) = rules
    try:
        new_state = fire(m, trigger)
    except GuardRefused:
        assert rule.guards, "only a guarded rule may refuse"
        assert m.state is state
        assert port.calls == []
        assert (port.output_enabled, port.commanded_ua) == before
        return
    assert new_state is (rule.dest or state)
    if not new_state.stimulating:
        assert not port.output_enabled
    if rule.output is OutputEffect.ZERO_ALL:
        assert port.calls[0] == ("zero_all", None), "zero comes first"
    if rule.output is OutputEffect.NONE:
        assert port.calls == []


def test_auto_transitions_are_off() -> None:
    m, _, _ = machine()
    assert not hasattr(m._model, "to_RUNNING")
    assert not hasattr(m._model, "to_running")


def test_allowed_triggers_in_fault_are_only_stop_trip_and_acknowledge() -> None:
    assert set(allowed_triggers(State.FAULT)) == {
        T.EMERGENCY_STOP,
        T.TRIP,
        T.ACKNOWLEDGE_FAULT,
    }


def test_emergency_stop_is_accepted_in_every_state_and_zeroes_first() -> None:
    for state in State:
        m, port, _ = at(state)
        port.calls.clear()
        new = m.fire(T.EMERGENCY_STOP, source="key")
        assert port.calls[0] == ("zero_all", None)
        assert not port.output_enabled
        expected = (
            state if state in (State.FAULT, State.COMPLETED, State.ABORTED) else State.ABORTED
        )
        assert new is expected


def test_fault_latches_until_a_named_person_acknowledges() -> None:
    m, _port, _ = at(State.RUNNING)
    trip = Trip("IL-OPEN-CIRCUIT", ("H-SURGE",), "electrode open")
    m.fire(T.TRIP, trip=trip)
    assert m.state is State.FAULT
    assert m.fault == trip
    for trigger in (T.START, T.RESUME, T.AMPLITUDE_UP, T.ARM, T.CONNECT, T.STOP, T.FINISH):
        with pytest.raises(InvalidTransition):
            fire(m, trigger)
    with pytest.raises(GuardRefused, match="name the person"):
        m.fire(T.ACKNOWLEDGE_FAULT)
    with pytest.raises(GuardRefused, match="name the person"):
        m.fire(T.ACKNOWLEDGE_FAULT, by="   ")
    m.fire(T.TRIP, trip=Trip("IL-COMM-LOSS", ("H-UNCONTROLLED",), "later"))
    assert m.fault == trip, "the first trip is the one that latched"
    assert m.fire(T.ACKNOWLEDGE_FAULT, by="Dr Who") is State.ABORTED
    assert m.acknowledged_by == "Dr Who"


def test_acknowledge_refused_while_output_is_commanded_on() -> None:
    m, port, _ = at(State.RUNNING)
    port.ignore_off = True  # a stuck output: the stop does not take
    m.fire(T.TRIP, trip=Trip("IL-X", ("H-BURN",), "x"))
    assert m.state is State.FAULT
    with pytest.raises(GuardRefused, match="output is still commanded on"):
        m.fire(T.ACKNOWLEDGE_FAULT, by="Dr Who")


def test_acknowledge_refused_while_the_device_reports_output_on() -> None:
    m, port, _ = at(State.RUNNING)
    m.fire(T.TRIP, trip=Trip("IL-UNEXPECTED-OUTPUT", ("H-BURN",), "stuck stage"))
    port.device_reports_output = True  # commanded off, but the stage is still on
    with pytest.raises(GuardRefused, match="the device still reports output on"):
        m.fire(T.ACKNOWLEDGE_FAULT, by="Dr Who")
    assert m.state is State.FAULT
    port.device_reports_output = False  # switched off and back, or the stage let go
    assert m.fire(T.ACKNOWLEDGE_FAULT, by="Dr Who") is State.ABORTED


def test_titration_starts_at_zero_moves_by_step_and_never_above_ceiling() -> None:
    m, port, events = at(State.ARMED)
    assert m.titration_ua == 0
    m.fire(T.AMPLITUDE_UP)
    assert port.calls[-1] == ("switch_on", STEP_UA)
    m.fire(T.AMPLITUDE_UP)
    m.fire(T.AMPLITUDE_UP)
    assert m.titration_ua == CEILING_UA
    with pytest.raises(GuardRefused, match="exceed the ceiling"):
        m.fire(T.AMPLITUDE_UP)
    assert port.commanded_ua == CEILING_UA
    m.fire(T.AMPLITUDE_DOWN)
    assert port.calls[-1] == ("set_amplitude", 2000)
    m.fire(T.CONFIRM_AMPLITUDE)
    assert m.confirmed_ua == 2000
    assert m.state is State.ARMED
    assert not port.output_enabled
    assert (
        "state",
        {"trigger": "confirm_amplitude", "from": "titrating", "to": "armed", "confirmed_ua": 2000},
    ) in events


def test_titration_down_to_zero_then_confirm_is_refused() -> None:
    m, _, _ = at(State.TITRATING)
    m.fire(T.AMPLITUDE_DOWN)
    assert m.titration_ua == 0
    with pytest.raises(GuardRefused):
        m.fire(T.AMPLITUDE_DOWN)
    with pytest.raises(GuardRefused):
        m.fire(T.CONFIRM_AMPLITUDE)


def test_start_needs_a_confirmed_amplitude() -> None:
    m, _, _ = at(State.ARMED)
    with pytest.raises(GuardRefused, match="no amplitude has been confirmed"):
        m.fire(T.START)


def test_running_target_changes_stay_within_one_step_and_the_ceiling() -> None:
    m, _, _ = at(State.RUNNING)
    assert m.target_ua == STEP_UA
    with pytest.raises(GuardRefused, match="already at one step"):
        m.fire(T.AMPLITUDE_DOWN)
    m.fire(T.AMPLITUDE_UP)
    m.fire(T.AMPLITUDE_UP)
    with pytest.raises(GuardRefused):
        m.fire(T.AMPLITUDE_UP)
    assert m.target_ua == CEILING_UA
    m.fire(T.AMPLITUDE_DOWN)
    assert m.target_ua == 2000


def test_arm_needs_a_clear_preflight() -> None:
    m, _, _ = machine()
    m.fire(T.CONNECT)
    m.fire(T.PREFLIGHT)
    with pytest.raises(GuardRefused, match="preflight has not run"):
        m.fire(T.ARM)
    m.record_preflight((Trip("IL-DOSE-CAP", ("H-OVERDOSE",), "enough today"),))
    with pytest.raises(GuardRefused, match="enough today"):
        m.fire(T.ARM)


def test_preflight_needs_the_link() -> None:
    m, _, _ = machine(RecordingPort(link_up=False))
    m.fire(T.CONNECT)
    with pytest.raises(GuardRefused, match="not connected"):
        m.fire(T.PREFLIGHT)


def test_finish_needs_the_schedule_done_or_ramped_down() -> None:
    m, port, _ = at(State.RUNNING)
    with pytest.raises(GuardRefused, match="schedule has not ended"):
        m.fire(T.FINISH)
    m.mark_schedule_done()
    assert m.fire(T.FINISH) is State.COMPLETED
    m, port, _ = at(State.STOPPING)
    port.commanded_ua = 500
    with pytest.raises(GuardRefused, match="still commanded"):
        m.fire(T.FINISH)


def test_pause_switches_off_before_the_state_changes() -> None:
    m, port, _ = at(State.RUNNING)
    seen: list[State] = []
    original = port.switch_off

    def switch_off() -> None:
        seen.append(m.state)
        original()

    port.switch_off = switch_off  # type: ignore[method-assign]
    m.fire(T.PAUSE)
    assert seen == [State.RUNNING]


def test_resume_switches_on_after_the_state_changes_from_zero() -> None:
    m, port, _ = at(State.PAUSED)
    seen: list[tuple[State, int]] = []
    original = port.switch_on

    def switch_on(amplitude_ua: int) -> None:
        seen.append((m.state, amplitude_ua))
        original(amplitude_ua)

    port.switch_on = switch_on  # type: ignore[method-assign]
    m.fire(T.RESUME)
    assert seen == [(State.RUNNING, 0)]


@pytest.mark.parametrize(
    ("failing", "trigger_path", "trigger"),
    [
        ("switch_on", PATHS[State.ARMED], T.AMPLITUDE_UP),
        ("set_amplitude", PATHS[State.TITRATING], T.AMPLITUDE_UP),
        ("switch_off", PATHS[State.RUNNING], T.PAUSE),
        ("switch_on", PATHS[State.PAUSED], T.RESUME),
        ("switch_off", PATHS[State.TITRATING], T.CONFIRM_AMPLITUDE),
    ],
)
def test_a_failing_callback_zeroes_output_and_latches_fault(
    failing: str, trigger_path: list[Trigger], trigger: Trigger
) -> None:
    m, port, events = machine()
    m.record_preflight(())
    for t in trigger_path:
        fire(m, t)
    port.fail_on = failing
    port.error = DeviceRejected("device says no", code=3)
    with pytest.raises(DeviceRejected):
        fire(m, trigger)
    assert m.state is State.FAULT
    assert ("zero_all", None) in port.calls
    assert not port.output_enabled
    assert m.fault is not None
    assert m.fault.interlock_id == EXCEPTION_CAUSE
    assert "device says no" in m.fault.reason
    assert events[-1][1]["to"] == "fault"


def test_an_interlock_refusing_a_command_latches_its_own_id() -> None:
    m, port, _ = at(State.TITRATING)
    port.fail_on = "set_amplitude"
    port.error = InterlockTripped("IL-AMPLITUDE-LIMIT", "too much")
    with pytest.raises(InterlockTripped):
        m.fire(T.AMPLITUDE_UP)
    assert m.state is State.FAULT
    assert m.fault is not None
    assert m.fault.interlock_id == "IL-AMPLITUDE-LIMIT"
    assert "H-BURN" in m.fault.hazards


def test_a_failure_while_zeroing_still_latches_fault() -> None:
    m, port, _ = at(State.RUNNING)
    port.fail_on = "zero_all"
    port.error = DeviceRejected("link dead", code=1)
    with pytest.raises(DeviceRejected):
        m.fire(T.EMERGENCY_STOP, source="key")
    assert m.state is State.FAULT
    assert m.fault is not None
    assert "zeroing failed" in m.fault.reason


def test_final_check_catches_output_left_on_in_a_non_stimulating_state() -> None:
    m, port, events = at(State.RUNNING)
    port.ignore_off = True  # the off command "works" but output stays on
    m.fire(T.PAUSE)
    assert m.state is State.FAULT
    assert m.violations
    assert "output is on in state paused" in m.violations[0]
    assert m.fault is not None
    assert m.fault.interlock_id == OUTPUT_CHECK_CAUSE
    assert port.calls[-1] == ("zero_all", None)
    kinds = [(k, d.get("to")) for k, d in events]
    assert kinds[-2:] == [("state", "paused"), ("state", "fault")]


def test_a_half_done_transition_is_logged_before_the_fault() -> None:
    m, port, events = at(State.ARMED)
    m.fire(T.AMPLITUDE_UP)
    m.fire(T.CONFIRM_AMPLITUDE)
    port.fail_on = "switch_on"  # START: state becomes running, then switching on fails
    with pytest.raises(RuntimeError):
        m.fire(T.START)
    tail = [d for k, d in events if k == "state"][-2:]
    assert tail[0] == {"trigger": "start", "from": "armed", "to": "running", "incomplete": True}
    assert tail[1]["from"] == "running"
    assert tail[1]["to"] == "fault"


def test_invalid_trigger_message_lists_what_is_allowed() -> None:
    m, _, _ = at(State.PAUSED)
    with pytest.raises(InvalidTransition, match="pause is not allowed in state paused") as info:
        m.fire(T.PAUSE)
    assert "resume" in str(info.value)


def test_trip_without_a_trip_object_still_ends_in_fault() -> None:
    m, port, _ = at(State.RUNNING)
    with pytest.raises(Exception, match="trip needs"):
        m.fire(T.TRIP)
    assert m.state is State.FAULT
    assert not port.output_enabled


def test_bad_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="ceiling_ua"):
        SessionMachine(RecordingPort(), ceiling_ua=0, step_ua=1)
    with pytest.raises(ValueError, match="step_ua"):
        SessionMachine(RecordingPort(), ceiling_ua=100, step_ua=200)


def test_every_rule_in_the_table_is_exercised_by_the_paths() -> None:
    """Each rule's trigger fires from each of its sources somewhere above."""
    exercised: set[tuple[State, Trigger]] = set()
    for path in PATHS.values():
        m, _, _ = machine()
        m.record_preflight(())
        for trigger in path:
            exercised.add((m.state, trigger))
            fire(m, trigger)
    # the exhaustive test covers the rest; this one checks the happy paths are real
    assert (State.ARMED, T.START) in exercised
    assert (State.STOPPING, T.FINISH) in exercised
    assert len(TABLE) >= 20
