"""How a session ended, in figures a clinician and the records store can use."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from enum import Enum

from estim.events import JsonValue
from estim.protocols.schedule import Schedule, SegmentPhase
from estim.safety.interlocks import Trip
from estim.session.states import State


class Outcome(Enum):
    """The one-word answer to "how did it end?"."""

    COMPLETED = "completed"  # the whole schedule ran
    STOPPED = "stopped"  # a person ended it early, in order (ramped down)
    EMERGENCY_STOP = "emergency_stop"  # immediate zero on someone's command
    FAULT = "fault"  # an interlock or an error ended it
    NOT_STARTED = "not_started"  # ended before any stimulation

    @property
    def exit_code(self) -> int:
        """0 for an orderly end, 4 for an interlock or an emergency stop (architecture)."""
        return 4 if self in (Outcome.EMERGENCY_STOP, Outcome.FAULT) else 0


@dataclass(frozen=True, slots=True)
class SessionSummary:
    outcome: Outcome
    final_state: State
    reason: str
    confirmed_ua: int | None
    final_target_ua: int | None
    on_time_us: int  # stimulating schedule time delivered (ramps + plateaus)
    contractions: int  # plateaus delivered in full
    planned_on_time_us: int
    planned_contractions: int
    schedule_elapsed_us: int
    wall_ns: int
    trips: tuple[Trip, ...] = ()
    fault_acknowledged_by: str | None = None
    output_confirmed_off: bool | None = None  # the device's last status said all off
    events: int = 0
    skipped_interlocks: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def exit_code(self) -> int:
        return self.outcome.exit_code

    def to_dict(self) -> dict[str, JsonValue]:
        return {
            "outcome": self.outcome.value,
            "final_state": self.final_state.value,
            "reason": self.reason,
            "confirmed_ua": self.confirmed_ua,
            "final_target_ua": self.final_target_ua,
            "on_time_us": self.on_time_us,
            "contractions": self.contractions,
            "planned_on_time_us": self.planned_on_time_us,
            "planned_contractions": self.planned_contractions,
            "schedule_elapsed_us": self.schedule_elapsed_us,
            "wall_ns": self.wall_ns,
            "trips": [
                {"interlock_id": t.interlock_id, "hazards": list(t.hazards), "reason": t.reason}
                for t in self.trips
            ],
            "fault_acknowledged_by": self.fault_acknowledged_by,
            "output_confirmed_off": self.output_confirmed_off,
            "events": self.events,
            "skipped_interlocks": [{"id": i, "reason": r} for i, r in self.skipped_interlocks],
        }


class DeliveredCounter:
    """(stimulating time, whole plateaus) in the first ``elapsed_us`` of a schedule,
    asked many times (once a second in a session): totals up to each segment are summed
    once, then each question is a bisection."""

    def __init__(self, schedule: Schedule) -> None:
        self._segments = schedule.segments
        self._starts = [seg.start_us for seg in schedule.segments]
        self._on_before: list[int] = []  # stimulating time before segment i
        self._plateaus_before: list[int] = []  # whole plateaus before segment i
        on_time = plateaus = 0
        for seg in schedule.segments:
            self._on_before.append(on_time)
            self._plateaus_before.append(plateaus)
            if seg.phase.stimulating:
                on_time += seg.end_us - seg.start_us
            if seg.phase is SegmentPhase.ON:
                plateaus += 1

    def at(self, elapsed_us: int) -> tuple[int, int]:
        # The last segment that started before elapsed_us is the one it falls in.
        index = bisect_left(self._starts, elapsed_us) - 1
        if index < 0:
            return 0, 0
        seg = self._segments[index]
        on_time = self._on_before[index]
        plateaus = self._plateaus_before[index]
        if seg.phase.stimulating:
            on_time += min(seg.end_us, elapsed_us) - seg.start_us
        if seg.phase is SegmentPhase.ON and seg.end_us <= elapsed_us:
            plateaus += 1
        return on_time, plateaus
