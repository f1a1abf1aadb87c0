"""Directors: scripted people, for the demo, dry runs and tests.

A director is called by the control loop at the start of every step and issues the
commands a clinician would: the same commands, through the same queue and the same
table, as a person at the keyboard. It never touches the device.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import MappingProxyType

from estim.clock import NS_PER_MS
from estim.errors import InputError
from estim.session.runner import SessionRunner
from estim.session.states import State, Trigger

SET_UP: Mapping[State, Trigger] = MappingProxyType(
    {
        State.IDLE: Trigger.CONNECT,
        State.CONNECTING: Trigger.PREFLIGHT,
        State.PREFLIGHT: Trigger.ARM,
    }
)
"""The steps to an armed session that need no judgement: connect, preflight, arm."""


@dataclass
class AutoSession:
    """Connect, preflight, arm, titrate step by step to ``target_ua``, confirm, start.

    Titration raises the amplitude by the prescription's step every ``step_interval_ns``
    (time for the patient to feel each step) and stops at the largest whole number of
    steps not above ``target_ua``. A latched FAULT is left for a person: the director
    asks the loop to close, and the summary says the fault was not acknowledged.
    """

    target_ua: int
    step_interval_ns: int = 250 * NS_PER_MS
    close_on_fault: bool = True
    _pending: Future[State] | None = field(default=None, init=False)
    _next_step_ns: int = field(default=0, init=False)
    failures: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.target_ua <= 0:
            raise InputError(f"titration target must be > 0 uA, got {self.target_ua}")
        if self.step_interval_ns <= 0:
            raise InputError("the titration step interval must be > 0")

    def act(self, runner: SessionRunner, now_ns: int) -> int | None:
        if self._pending is not None:
            if not self._pending.done():
                return None
            error = self._pending.exception()
            if error is not None:
                self.failures.append(str(error))
            self._pending = None
        machine = runner.machine
        state = machine.state
        if state is State.FAULT:
            if self.close_on_fault:
                runner.request_close()
            return None
        trigger = self._next(runner, state, now_ns)
        if trigger is None:
            return self._next_step_ns if state in (State.ARMED, State.TITRATING) else None
        self._pending = runner.submit(trigger)
        if trigger is Trigger.AMPLITUDE_UP:
            self._next_step_ns = now_ns + self.step_interval_ns
        return None

    def _next(self, runner: SessionRunner, state: State, now_ns: int) -> Trigger | None:
        machine = runner.machine
        goal = min(self.target_ua, machine.ceiling_ua)
        goal -= goal % machine.step_ua
        if state in SET_UP:
            return SET_UP[state]
        match state:
            case State.ARMED if machine.confirmed_ua is not None:
                return Trigger.START
            case State.ARMED if goal < machine.step_ua:
                # Not one step fits under the target: there is nothing to titrate to,
                # and waiting would never change that. End the session before it starts.
                self.failures.append(
                    f"titration target {self.target_ua} uA is below one titration step "
                    f"({machine.step_ua} uA, ceiling {machine.ceiling_ua} uA): not started"
                )
                return Trigger.STOP
            case State.ARMED | State.TITRATING:
                if now_ns < self._next_step_ns:
                    return None
                if machine.titration_ua + machine.step_ua <= goal:
                    return Trigger.AMPLITUDE_UP
                if state is State.TITRATING:
                    return Trigger.CONFIRM_AMPLITUDE
                return None
            case _:
                return None


class SetUpForClinician:
    """Connects, runs the device preflight and arms, once each; then leaves titration,
    start and everything after to the clinician's keys (a scripted person for the part
    of a session that needs no judgement).

    A fault during set-up (the port, the device's identity or validation, electrode
    impedance, the preflight checks) ends the session: the summary gives the reason,
    the fault stays unacknowledged, and the clinician starts again once it is fixed.
    A fault after arming waits for the clinician (``a`` acknowledges it).
    """

    def __init__(self) -> None:
        self._issued: set[Trigger] = set()
        self._pending: Future[State] | None = None

    @property
    def armed(self) -> bool:
        return Trigger.ARM in self._issued and self._pending is None

    def act(self, runner: SessionRunner, now_ns: int) -> int | None:
        if self._pending is not None:
            if not self._pending.done():
                return None
            self._pending = None
        state = runner.machine.state
        if state is State.FAULT and not self.armed:
            runner.request_close()
            return None
        trigger = SET_UP.get(state)
        if trigger is None or trigger in self._issued:
            return None
        self._issued.add(trigger)
        self._pending = runner.submit(trigger)
        return None
