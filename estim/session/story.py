"""Does a session's event log tell a consistent story?

Checks a sequence of :class:`~estim.events.SessionEvent` against the transition table:
every ``state`` event starts where the previous one ended and follows a rule of the
table (a forced FAULT after an error is logged as the ``trip`` it is); every event's
``state`` field is the state at that moment; phases only appear while running and only
move forward through the schedule; and nothing follows the end of the session but an
emergency stop, a trip, or the summary. Used by the property tests and available to
anyone auditing a log.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from estim.events import SessionEvent
from estim.session.states import State, Trigger
from estim.session.table import rules_for


@dataclass(frozen=True, slots=True)
class StoryProblem:
    index: int
    message: str

    def __str__(self) -> str:
        return f"event {self.index}: {self.message}"


def check_story(events: Iterable[SessionEvent]) -> list[StoryProblem]:
    """Every inconsistency in the log (empty: the story holds)."""
    problems: list[StoryProblem] = []
    state = State.IDLE
    last_segment = -1
    last_ns: int | None = None
    for index, event in enumerate(events):

        def problem(message: str, index: int = index) -> None:
            problems.append(StoryProblem(index, message))

        if last_ns is not None and event.monotonic_ns < last_ns:
            problem("time went backwards")
        last_ns = event.monotonic_ns
        if event.kind == "state":
            source, dest, trigger = _transition(event)
            if source is None or dest is None or trigger is None:
                problem(f"malformed state event {dict(event.data)}")
                continue
            if source is not state:
                problem(f"starts in {source.value} but the machine was in {state.value}")
            rules = rules_for(source, trigger)
            legal = {r.dest or source for r in rules}
            forced_fault = trigger is Trigger.TRIP and dest is State.FAULT
            if dest not in legal and not forced_fault:
                problem(f"{trigger.value}: {source.value} -> {dest.value} is not in the table")
            if event.state != dest.value:
                problem(f"state field {event.state!r} but the transition ends in {dest.value}")
            if dest is State.RUNNING and source is not State.RUNNING:
                last_segment = -1 if trigger is Trigger.START else last_segment
            state = dest
        elif event.kind == "phase":
            if state is not State.RUNNING:
                problem(f"a phase event in state {state.value}")
            segment = event.data.get("segment")
            if not isinstance(segment, int) or segment < last_segment:
                problem(f"phase went back to segment {segment} after {last_segment}")
            else:
                last_segment = segment
        elif event.state != state.value:
            problem(f"{event.kind} event says {event.state!r}, the machine was in {state.value}")
    return problems


def _transition(event: SessionEvent) -> tuple[State | None, State | None, Trigger | None]:
    data = event.data
    try:
        return (
            State(data.get("from")),
            State(data.get("to")),
            Trigger(data.get("trigger")),
        )
    except ValueError:
        return None, None, None
