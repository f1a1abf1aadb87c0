"""The session's transition table, written out as data.

This table *is* the state machine: :class:`~estim.session.machine.SessionMachine` builds
its ``transitions`` machine from it, the diagram in ``docs/state-machine.md`` is
generated from it, and the exhaustive state x trigger test walks it. Anything not in
this table is refused (``InvalidTransition``) and changes nothing.

Each rule also says what it does to the output, so the order is fixed by the table and
not by whoever writes a callback: output goes off *first* (before the state changes)
and comes on *last* (after it), because ``transitions`` does not roll a state change
back when a callback raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from estim.session.states import State, Trigger


class OutputEffect(Enum):
    """What a rule does to the output, and when."""

    NONE = "none"
    ZERO_ALL = "zero all channels now (before)"  # emergency path: STOP ALL
    SWITCH_OFF = "output off (before)"  # orderly: amplitudes to zero, outputs disabled
    SWITCH_ON = "output on (after)"  # amplitude first (from zero), then enable
    SET_LEVEL = "set titration amplitude (after)"

    @property
    def before_state_change(self) -> bool:
        return self in (OutputEffect.ZERO_ALL, OutputEffect.SWITCH_OFF)


@dataclass(frozen=True, slots=True)
class Rule:
    """``trigger`` moves the machine from any of ``sources`` to ``dest`` when every guard
    holds. ``dest`` None is an internal transition: the state stays, the effect runs."""

    trigger: Trigger
    sources: tuple[State, ...]
    dest: State | None
    guards: tuple[str, ...] = ()
    output: OutputEffect = OutputEffect.NONE
    note: str = ""


GUARDS: dict[str, str] = {
    "link_up": "the device is connected and identified",
    "preflight_clear": "preflight ran and no preflight interlock tripped",
    "step_within_ceiling": "titration amplitude + step <= ceiling",
    "titration_above_zero": "titration amplitude > 0",
    "amplitude_confirmed": "a confirmed amplitude within the ceiling",
    "target_step_within_ceiling": "target amplitude + step <= ceiling",
    "target_above_one_step": "target amplitude - step >= one step",
    "schedule_done": "the schedule has ended",
    "ramped_down": "commanded amplitude is zero",
    "acknowledged_by_person": "a person is named (by=...)",
    "output_off": "no output is commanded on, and the device reports none",
}
"""Guard names used in the table, with the condition each stands for."""

_ALL = tuple(State)
_BEFORE_START = (State.IDLE, State.CONNECTING, State.PREFLIGHT, State.ARMED)
_ENDED = (State.COMPLETED, State.ABORTED)
_LIVE = tuple(s for s in State if not s.terminal and not s.latched)

TABLE: tuple[Rule, ...] = (
    # --- set-up ------------------------------------------------------------------------
    Rule(Trigger.CONNECT, (State.IDLE,), State.CONNECTING, note="open the port, handshake"),
    Rule(
        Trigger.PREFLIGHT,
        (State.CONNECTING,),
        State.PREFLIGHT,
        guards=("link_up",),
        note="identity matched; measure impedance, check dose and findings",
    ),
    Rule(Trigger.ARM, (State.PREFLIGHT,), State.ARMED, guards=("preflight_clear",)),
    # --- titration: from zero, by the prescribed step, never above the ceiling -----------
    Rule(
        Trigger.AMPLITUDE_UP,
        (State.ARMED,),
        State.TITRATING,
        guards=("step_within_ceiling",),
        output=OutputEffect.SWITCH_ON,
        note="titration starts from 0: first step",
    ),
    Rule(
        Trigger.AMPLITUDE_UP,
        (State.TITRATING,),
        None,
        guards=("step_within_ceiling",),
        output=OutputEffect.SET_LEVEL,
    ),
    Rule(
        Trigger.AMPLITUDE_DOWN,
        (State.TITRATING,),
        None,
        guards=("titration_above_zero",),
        output=OutputEffect.SET_LEVEL,
    ),
    Rule(
        Trigger.CONFIRM_AMPLITUDE,
        (State.TITRATING,),
        State.ARMED,
        guards=("titration_above_zero",),
        output=OutputEffect.SWITCH_OFF,
        note="record the confirmed amplitude",
    ),
    # --- the session -------------------------------------------------------------------
    Rule(
        Trigger.START,
        (State.ARMED,),
        State.RUNNING,
        guards=("amplitude_confirmed",),
        output=OutputEffect.SWITCH_ON,
        note="output on at 0; the schedule ramps it",
    ),
    Rule(
        Trigger.AMPLITUDE_UP,
        (State.RUNNING,),
        None,
        guards=("target_step_within_ceiling",),
        note="the envelope follows the new target",
    ),
    Rule(
        Trigger.AMPLITUDE_DOWN,
        (State.RUNNING,),
        None,
        guards=("target_above_one_step",),
        note="the envelope follows the new target",
    ),
    Rule(Trigger.PAUSE, (State.RUNNING,), State.PAUSED, output=OutputEffect.SWITCH_OFF),
    Rule(
        Trigger.RESUME,
        (State.PAUSED,),
        State.RUNNING,
        output=OutputEffect.SWITCH_ON,
        note="output on at 0; ramps up again from zero",
    ),
    Rule(
        Trigger.STOP,
        (State.TITRATING, State.RUNNING, State.PAUSED),
        State.STOPPING,
        note="orderly: ramp down to zero",
    ),
    Rule(
        Trigger.STOP,
        _BEFORE_START,
        State.ABORTED,
        note="ended before stimulation",
    ),
    Rule(
        Trigger.FINISH,
        (State.RUNNING,),
        State.COMPLETED,
        guards=("schedule_done",),
        output=OutputEffect.SWITCH_OFF,
    ),
    Rule(
        Trigger.FINISH,
        (State.STOPPING,),
        State.COMPLETED,
        guards=("ramped_down",),
        output=OutputEffect.SWITCH_OFF,
    ),
    # --- making safe: from anywhere ------------------------------------------------------
    Rule(
        Trigger.EMERGENCY_STOP,
        _LIVE,
        State.ABORTED,
        output=OutputEffect.ZERO_ALL,
        note="immediate zero on all channels",
    ),
    Rule(
        Trigger.EMERGENCY_STOP,
        (State.FAULT, *_ENDED),
        None,
        output=OutputEffect.ZERO_ALL,
        note="zero again; a fault stays latched",
    ),
    Rule(
        Trigger.TRIP,
        tuple(s for s in _ALL if s is not State.FAULT),
        State.FAULT,
        output=OutputEffect.ZERO_ALL,
        note="interlock: zero first, then latch",
    ),
    Rule(
        Trigger.TRIP,
        (State.FAULT,),
        None,
        output=OutputEffect.ZERO_ALL,
        note="further trips are recorded",
    ),
    Rule(
        Trigger.ACKNOWLEDGE_FAULT,
        (State.FAULT,),
        State.ABORTED,
        guards=("acknowledged_by_person", "output_off"),
        note="a person unlatches; the session is over",
    ),
)


def rules_for(state: State, trigger: Trigger) -> list[Rule]:
    """The rules a trigger may follow from a state (empty: the trigger is refused)."""
    return [r for r in TABLE if r.trigger is trigger and state in r.sources]


def allowed_triggers(state: State) -> list[Trigger]:
    """Triggers the table accepts in ``state`` (guards may still refuse them)."""
    return [t for t in Trigger if rules_for(state, t)]


def _check_table() -> None:
    """Refuse an ambiguous or unsafe table at import time, not in a session."""
    seen: set[tuple[State, Trigger]] = set()
    for rule in TABLE:
        for guard in rule.guards:
            if guard not in GUARDS:
                raise AssertionError(f"{rule.trigger}: unknown guard {guard!r}")
        for src in rule.sources:
            key = (src, rule.trigger)
            if key in seen:
                raise AssertionError(f"two rules for {rule.trigger} from {src}")
            seen.add(key)
        dest = rule.dest
        if dest is not None and not dest.stimulating and rule.output is OutputEffect.SWITCH_ON:
            raise AssertionError(f"{rule.trigger}: switches output on into {dest}")
    for state in State:
        if (state, Trigger.EMERGENCY_STOP) not in seen:
            raise AssertionError(f"emergency stop missing from {state}")


_check_table()
