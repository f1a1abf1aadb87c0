"""The controller's states, the triggers that move it, and the running phases.

Plain data with no behaviour beyond classification. Which states may have output on
(``stimulating``), which end a session (``terminal``), and which are latched until a
person acts (``latched``) are properties of the state itself, so every check (the
machine's final check after each event, the interlocks, the tests) asks the same
question the same way.
"""

from __future__ import annotations

from enum import Enum

from estim.protocols.schedule import SegmentPhase


class State(Enum):
    """Where a session is. Values are the names used in events, logs and the diagram."""

    IDLE = "idle"
    CONNECTING = "connecting"
    PREFLIGHT = "preflight"
    ARMED = "armed"
    TITRATING = "titrating"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    COMPLETED = "completed"
    ABORTED = "aborted"
    FAULT = "fault"

    @property
    def stimulating(self) -> bool:
        """True only where output may be on. Everywhere else it must be off."""
        return self in _STIMULATING

    @property
    def terminal(self) -> bool:
        """The session is over; only an emergency stop or a trip is still accepted."""
        return self in (State.COMPLETED, State.ABORTED)

    @property
    def latched(self) -> bool:
        """Stays put until a person acknowledges it (FAULT)."""
        return self is State.FAULT

    @property
    def connected(self) -> bool:
        """States in which the controller holds an open link to the device."""
        return self not in (State.IDLE, State.CONNECTING)

    def __str__(self) -> str:
        return self.value


_STIMULATING = frozenset({State.TITRATING, State.RUNNING, State.STOPPING})


class Trigger(Enum):
    """Everything that can move the machine. Values are the method names on the machine."""

    CONNECT = "connect"
    PREFLIGHT = "preflight"
    ARM = "arm"
    AMPLITUDE_UP = "amplitude_up"
    AMPLITUDE_DOWN = "amplitude_down"
    CONFIRM_AMPLITUDE = "confirm_amplitude"
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    FINISH = "finish"
    EMERGENCY_STOP = "emergency_stop"
    TRIP = "trip"
    ACKNOWLEDGE_FAULT = "acknowledge_fault"

    @property
    def from_person(self) -> bool:
        """Triggers a clinician (or patient) issues, as opposed to the controller itself."""
        return self not in (Trigger.FINISH, Trigger.TRIP)

    def __str__(self) -> str:
        return self.value


Phase = SegmentPhase
"""A running session's phase: ramp-up, on, ramp-down, off (the schedule's own names)."""

PHASE_ORDER: dict[Phase, Phase] = {
    Phase.RAMP_UP: Phase.ON,
    Phase.ON: Phase.RAMP_DOWN,
    Phase.RAMP_DOWN: Phase.OFF,
    Phase.OFF: Phase.RAMP_UP,
}
"""Within RUNNING, time (the schedule) moves the phase along this cycle and no other way.

A phase the protocol gives zero length (no ramps; a continuous protocol has no off
phase) is passed over. The runner reports each phase with its schedule segment, and
the event-log check holds the sequence against the schedule itself.
"""
