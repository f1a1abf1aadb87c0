"""The session state machine: the transition table, enforced.

A ``transitions`` machine built from :data:`estim.session.table.TABLE` with
``auto_transitions=False``: a trigger the table does not list raises
:class:`~estim.errors.InvalidTransition` and touches nothing; a guard that does not hold
raises :class:`~estim.errors.GuardRefused` and touches nothing. Output effects run in
the order the table fixes: off first (before the state changes), on last (after it).

Two safety nets sit around every event:

- ``on_exception``: a callback that raises (a device error in the middle of switching,
  an interlock refusing a command) zeroes every channel and latches FAULT, then the
  error goes on to the caller. ``transitions`` does not roll back a half-done
  transition; this makes the half-done state a safe one.
- ``finalize_event``: after every event, in any state that is not stimulating, the
  output must be off. If it is not (a bug, or a device that ignored the command), the
  machine zeroes every channel and latches FAULT.

The machine does no I/O of its own. It acts on the output through a :class:`DevicePort`
(the runner's thin wrapper around the driver, or a fake in unit tests), and reports
what happened through an ``emit`` callback. It is not thread-safe: one control loop owns
it (the emergency stop reaches the device directly, not through the machine).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from transitions import EventData, Machine, MachineError

from estim.errors import GuardRefused, InputError, InterlockTripped, InvalidTransition
from estim.events import JsonValue
from estim.safety.interlocks import INTERLOCKS, Trip
from estim.session.states import State, Trigger
from estim.session.table import GUARDS, TABLE, OutputEffect, Rule, allowed_triggers

log = logging.getLogger(__name__)

EXCEPTION_CAUSE = "CONTROLLER-EXCEPTION"
"""The ``interlock_id`` recorded when a callback error, not an interlock, latched FAULT."""

OUTPUT_CHECK_CAUSE = "CONTROLLER-OUTPUT-CHECK"
"""The ``interlock_id`` recorded when the final check found output on where it must be off."""


class DevicePort(Protocol):
    """What the machine may do to the output, and what it knows about it."""

    @property
    def link_up(self) -> bool:
        """The device is connected and identified."""
        ...

    @property
    def output_enabled(self) -> bool:
        """Output has been commanded on, and not since switched off or stopped."""
        ...

    @property
    def commanded_ua(self) -> int:
        """The highest amplitude currently commanded on any channel."""
        ...

    @property
    def device_reports_output(self) -> bool:
        """The device's last status said some output is on (whatever was commanded)."""
        ...

    def zero_all(self) -> None:
        """Emergency: every channel to zero and off, now (STOP ALL)."""
        ...

    def switch_off(self) -> None:
        """Orderly: amplitudes to zero, outputs disabled."""
        ...

    def switch_on(self, amplitude_ua: int) -> None:
        """Set ``amplitude_ua`` on the session's channels first, then enable them."""
        ...

    def set_amplitude(self, amplitude_ua: int) -> None:
        """Change the amplitude of the enabled channels."""
        ...


Emit = Callable[[str, Mapping[str, JsonValue]], None]


@dataclass(frozen=True, slots=True)
class Transition:
    """One completed event, as the machine reports it (``kind="state"`` events)."""

    trigger: Trigger
    source: State
    dest: State


def trip_for_error(error: BaseException) -> Trip:
    """The trip recorded when a callback raised: an interlock's own, or an error cause."""
    if isinstance(error, InterlockTripped):
        cls = INTERLOCKS.get(error.interlock_id)
        hazards = cls.HAZARDS if cls is not None else ("H-UNCONTROLLED",)
        return Trip(error.interlock_id, hazards, error.reason)
    return Trip(EXCEPTION_CAUSE, ("H-UNCONTROLLED",), f"{type(error).__name__}: {error}")


class _Model:
    """Holds ``state`` for ``transitions`` (and the trigger methods it attaches)."""

    state: State
    trigger: Callable[..., bool]
    may_trigger: Callable[..., bool]


class SessionMachine:
    """The transition table enforced on one session.

    ``ceiling_ua`` and ``step_ua`` are the amplitude policy for titration and for target
    changes while running: from zero, by ``step_ua``, never above ``ceiling_ua``.
    """

    def __init__(
        self,
        port: DevicePort,
        *,
        ceiling_ua: int,
        step_ua: int,
        emit: Emit | None = None,
        classify_error: Callable[[BaseException], Trip] | None = None,
    ) -> None:
        if ceiling_ua <= 0:
            raise InputError(f"ceiling_ua must be > 0, got {ceiling_ua}")
        if not 0 < step_ua <= ceiling_ua:
            raise InputError(f"step_ua must be in 1..{ceiling_ua}, got {step_ua}")
        self.port = port
        self.ceiling_ua = ceiling_ua
        self.step_ua = step_ua
        self._emit_cb = emit
        self._classify_error = classify_error or trip_for_error
        self.titration_ua = 0
        self.confirmed_ua: int | None = None
        self.target_ua = 0
        self.preflight_trips: tuple[Trip, ...] | None = None  # None: preflight not run
        self.schedule_done = False
        self.fault: Trip | None = None  # the trip that latched FAULT (first one)
        self.acknowledged_by: str | None = None
        self.emergency_source: str | None = None
        self.stop_requested_by: str | None = None
        self.violations: list[str] = []
        self.history: list[Transition] = []
        self._logged_state = State.IDLE  # the state the last "state" event ended in
        self._refusal: str | None = None
        self._model = _Model()
        self._machine = Machine(
            model=self._model,
            states=State,
            initial=State.IDLE,
            transitions=[self._spec(rule) for rule in TABLE],
            auto_transitions=False,
            ordered_transitions=False,
            ignore_invalid_triggers=False,
            send_event=True,
            queued=False,
            after_state_change=[self._record],
            on_exception=[self._on_exception],
            finalize_event=[self._finalize],
        )

    # --- public -------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._model.state

    def fire(self, trigger: Trigger, **data: Any) -> State:
        """Run ``trigger`` through the table; return the new state.

        Raises :class:`InvalidTransition` if the table has no rule for it here, and
        :class:`GuardRefused` if a guard does not hold; neither changes anything.
        Errors from the output (device errors, interlock refusals) propagate after the
        machine has zeroed every channel and latched FAULT.
        """
        self._refusal = None
        source = self.state
        moved = self._model.trigger(trigger.value, **data)
        if not moved:
            reason = self._refusal or "a guard does not hold"
            self._emit(
                "refused", {"trigger": trigger.value, "from": source.value, "reason": reason}
            )
            raise GuardRefused(f"{trigger.value} refused in state {source.value}: {reason}")
        return self.state

    def allowed(self, trigger: Trigger) -> bool:
        """True if the table has a rule for ``trigger`` here and its guards hold now."""
        try:
            return bool(self._model.may_trigger(trigger.value))
        except MachineError:
            return False

    def record_preflight(self, trips: tuple[Trip, ...]) -> None:
        """The runner's preflight result; ``arm`` needs it to be clear."""
        self.preflight_trips = trips

    def mark_schedule_done(self) -> None:
        self.schedule_done = True

    # --- table -> transitions ------------------------------------------------------------

    def _spec(self, rule: Rule) -> dict[str, Any]:
        before: list[Callable[[EventData], None]] = []
        after: list[Callable[[EventData], None]] = []
        effect = self._effects[rule.output]
        # Bookkeeping (memory only, microseconds) goes first so that the reason for a
        # trip or a stop is on record even if zeroing the output then fails.
        bookkeeping = self._bookkeeping.get(rule.trigger)
        if bookkeeping is not None:
            before.append(bookkeeping)
        if rule.output.before_state_change:
            before.append(effect)
        if rule.output is not OutputEffect.NONE and not rule.output.before_state_change:
            after.append(effect)
        return {
            "trigger": rule.trigger.value,
            "source": list(rule.sources),
            "dest": rule.dest,
            "conditions": [self._guard(name) for name in rule.guards],
            "before": before,
            "after": after,
        }

    @property
    def _effects(self) -> dict[OutputEffect, Callable[[EventData], None]]:
        return {
            OutputEffect.NONE: lambda _: None,
            OutputEffect.ZERO_ALL: lambda _: self.port.zero_all(),
            OutputEffect.SWITCH_OFF: lambda _: self.port.switch_off(),
            OutputEffect.SWITCH_ON: self._switch_on,
            OutputEffect.SET_LEVEL: lambda _: self.port.set_amplitude(self.titration_ua),
        }

    def _switch_on(self, event: EventData) -> None:
        # Titration starts at its first step; a session (start, resume) starts at zero
        # and the runner's envelope ramps it.
        amplitude = self.titration_ua if self.state is State.TITRATING else 0
        self.port.switch_on(amplitude)

    @property
    def _bookkeeping(self) -> dict[Trigger, Callable[[EventData], None]]:
        return {
            Trigger.AMPLITUDE_UP: self._step_up,
            Trigger.AMPLITUDE_DOWN: self._step_down,
            Trigger.CONFIRM_AMPLITUDE: self._confirm,
            Trigger.START: self._starting,
            Trigger.STOP: self._stopping,
            Trigger.EMERGENCY_STOP: self._emergency,
            Trigger.TRIP: self._tripped,
            Trigger.ACKNOWLEDGE_FAULT: self._acknowledged,
        }

    # --- guards (conditions) -------------------------------------------------------------

    def _guard(self, name: str) -> Callable[[EventData], bool]:
        check: Callable[[EventData], str | None] = getattr(self, f"_check_{name}")

        def guard(event: EventData) -> bool:
            problem = check(event)
            if problem is not None:
                self._refusal = f"{problem} (needs: {GUARDS[name]})"
                return False
            return True

        guard.__name__ = name
        return guard

    def _check_link_up(self, _: EventData) -> str | None:
        return None if self.port.link_up else "the device is not connected"

    def _check_preflight_clear(self, _: EventData) -> str | None:
        if self.preflight_trips is None:
            return "preflight has not run"
        if self.preflight_trips:
            return f"preflight tripped: {self.preflight_trips[0]}"
        return None

    def _amplitude_now(self) -> int:
        return self.target_ua if self.state is State.RUNNING else self.titration_ua

    def _check_step_within_ceiling(self, _: EventData) -> str | None:
        new = self.titration_ua + self.step_ua
        if new > self.ceiling_ua:
            return f"{new} uA would exceed the ceiling of {self.ceiling_ua} uA"
        return None

    def _check_titration_above_zero(self, _: EventData) -> str | None:
        return None if self.titration_ua > 0 else "the titration amplitude is already 0"

    def _check_amplitude_confirmed(self, _: EventData) -> str | None:
        confirmed = self.confirmed_ua
        if confirmed is None:
            return "no amplitude has been confirmed (titrate, then confirm)"
        if not 0 < confirmed <= self.ceiling_ua:
            return f"confirmed amplitude {confirmed} uA is outside 1..{self.ceiling_ua} uA"
        return None

    def _check_target_step_within_ceiling(self, _: EventData) -> str | None:
        new = self.target_ua + self.step_ua
        if new > self.ceiling_ua:
            return f"{new} uA would exceed the ceiling of {self.ceiling_ua} uA"
        return None

    def _check_target_above_one_step(self, _: EventData) -> str | None:
        if self.target_ua - self.step_ua < self.step_ua:
            return "the target is already at one step; pause or stop instead"
        return None

    def _check_schedule_done(self, _: EventData) -> str | None:
        return None if self.schedule_done else "the schedule has not ended"

    def _check_ramped_down(self, _: EventData) -> str | None:
        commanded = self.port.commanded_ua
        return None if commanded == 0 else f"{commanded} uA still commanded"

    def _check_acknowledged_by_person(self, event: EventData) -> str | None:
        by = event.kwargs.get("by")
        if not isinstance(by, str) or not by.strip():
            return "name the person acknowledging the fault"
        return None

    def _check_output_off(self, _: EventData) -> str | None:
        if self.port.output_enabled:
            return "output is still commanded on"
        if self.port.device_reports_output:
            return (
                "the device still reports output on although none is commanded (a stuck "
                "output stage?): disconnect the electrodes and switch the device off"
            )
        return None

    # --- bookkeeping (before the state changes; no I/O) ------------------------------------

    def _step_up(self, _: EventData) -> None:
        if self.state is State.RUNNING:
            self.target_ua += self.step_ua
        else:
            self.titration_ua += self.step_ua

    def _step_down(self, _: EventData) -> None:
        if self.state is State.RUNNING:
            self.target_ua -= self.step_ua
        else:
            self.titration_ua = max(0, self.titration_ua - self.step_ua)

    def _confirm(self, _: EventData) -> None:
        self.confirmed_ua = self.titration_ua
        self.target_ua = self.titration_ua
        self.titration_ua = 0

    def _starting(self, _: EventData) -> None:
        self.schedule_done = False
        self.target_ua = self.confirmed_ua or 0

    def _stopping(self, event: EventData) -> None:
        by = event.kwargs.get("by")
        self.stop_requested_by = by if isinstance(by, str) else "clinician"

    def _emergency(self, event: EventData) -> None:
        source = event.kwargs.get("source")
        if self.emergency_source is None:
            self.emergency_source = source if isinstance(source, str) else "unknown"

    def _tripped(self, event: EventData) -> None:
        trip = event.kwargs.get("trip")
        if not isinstance(trip, Trip):
            raise InputError("trip needs trip=Trip(...)")
        if self.fault is None:
            self.fault = trip

    def _acknowledged(self, event: EventData) -> None:
        self.acknowledged_by = str(event.kwargs["by"]).strip()

    # --- safety nets and reporting ----------------------------------------------------------

    def _record(self, event: EventData) -> None:
        trigger = Trigger(event.event.name)
        source = self._source_of(event)
        self.history.append(Transition(trigger, source, self.state))
        self._logged_state = self.state
        data: dict[str, JsonValue] = {
            "trigger": trigger.value,
            "from": source.value,
            "to": self.state.value,
        }
        data.update(self._details(trigger, event))
        self._emit("state", data)

    @staticmethod
    def _source_of(event: EventData) -> State:
        assert event.transition is not None
        name = event.transition.source
        return State[name] if isinstance(name, str) else State(name)

    def _details(self, trigger: Trigger, event: EventData) -> dict[str, JsonValue]:
        if trigger in (Trigger.AMPLITUDE_UP, Trigger.AMPLITUDE_DOWN):
            return {"amplitude_ua": self._amplitude_now()}
        if trigger is Trigger.CONFIRM_AMPLITUDE:
            return {"confirmed_ua": self.confirmed_ua}
        if trigger is Trigger.START:
            return {"target_ua": self.target_ua}
        if trigger is Trigger.TRIP:
            trip = event.kwargs["trip"]
            return {
                "interlock_id": trip.interlock_id,
                "hazards": list(trip.hazards),
                "reason": trip.reason,
            }
        if trigger is Trigger.EMERGENCY_STOP:
            return {"source": str(event.kwargs.get("source", "unknown"))}
        if trigger is Trigger.ACKNOWLEDGE_FAULT:
            return {"by": self.acknowledged_by}
        if trigger is Trigger.STOP:
            return {"by": self.stop_requested_by}
        return {}

    def _on_exception(self, event: EventData) -> None:
        error = event.error
        assert error is not None
        if isinstance(error, MachineError):
            state = self.state.value
            trigger = event.event.name
            raise InvalidTransition(
                f"{trigger} is not allowed in state {state}; allowed here: "
                f"{', '.join(t.value for t in allowed_triggers(self.state))}"
            ) from error
        trigger_name = event.event.name
        trip = self._classify_error(error)
        reason = f"{trip.reason} (during {trigger_name} in state {self.state.value})"
        self._latch(Trip(trip.interlock_id, trip.hazards, reason), trigger_name)
        raise error

    def _finalize(self, event: EventData) -> None:
        if self.state.stimulating or not self.port.output_enabled:
            return
        message = f"output is on in state {self.state.value} after {event.event.name}"
        self.violations.append(message)
        log.error("final check: %s", message)
        self._latch(
            Trip(OUTPUT_CHECK_CAUSE, ("H-UNINTENDED",), message),
            event.event.name,
        )

    def _latch(self, trip: Trip, during: str) -> None:
        """Make safe, then latch FAULT, outside the table's normal path."""
        try:
            self.port.zero_all()
        except Exception as err:  # the error being handled matters more; record both
            log.exception("zeroing output failed while latching FAULT")
            trip = Trip(trip.interlock_id, trip.hazards, f"{trip.reason}; zeroing failed: {err}")
        source = self.state
        if source is not self._logged_state:
            # The transition changed state and then failed: log the half-done step
            # first, so the log still tells the story in order.
            self.history.append(Transition(Trigger(during), self._logged_state, source))
            self._emit(
                "state",
                {
                    "trigger": during,
                    "from": self._logged_state.value,
                    "to": source.value,
                    "incomplete": True,
                },
            )
        if self.fault is None:
            self.fault = trip
        if source is not State.FAULT:
            self._machine.set_state(State.FAULT, model=self._model)
        self.history.append(Transition(Trigger.TRIP, source, State.FAULT))
        self._logged_state = State.FAULT
        self._emit(
            "state",
            {
                "trigger": Trigger.TRIP.value,
                "from": source.value,
                "to": State.FAULT.value,
                "interlock_id": trip.interlock_id,
                "hazards": list(trip.hazards),
                "reason": trip.reason,
                "during": during,
            },
        )

    def _emit(self, kind: str, data: Mapping[str, JsonValue]) -> None:
        if self._emit_cb is not None:
            self._emit_cb(kind, data)
