"""Compile a resolved prescription into a schedule: timed segments with amplitude envelopes.

Pure and exact. Times are integer microseconds from session start. An envelope level
is an integer in per-mille of the session's target amplitude (0..1000), so the
amplitude at any instant is ``target_ua * level // 1000`` - an integer that can never
exceed the target, whatever the target is. The runner asks :meth:`Schedule.level_at`
for the level at a time; ramps are linear and monotonic.

Only whole cycles are scheduled: a session never ends in the middle of a contraction,
so it may end slightly before ``session_duration_min`` (never after).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from enum import StrEnum

from estim.protocols.models import Continuous, CycledDuty, Protocol
from estim.protocols.prescription import ResolvedPrescription
from estim.units import s_to_us

FULL_LEVEL = 1000
"""Envelope level of the plateau: per-mille of the target amplitude."""


class SegmentPhase(StrEnum):
    RAMP_UP = "ramp_up"
    ON = "on"
    RAMP_DOWN = "ramp_down"
    OFF = "off"

    @property
    def stimulating(self) -> bool:
        return self is not SegmentPhase.OFF


@dataclass(frozen=True, slots=True)
class Segment:
    """One phase of one cycle: from ``start_us`` (inclusive) to ``end_us`` (exclusive)."""

    index: int
    cycle: int  # 0-based contraction number
    phase: SegmentPhase
    start_us: int
    end_us: int
    start_level: int  # per-mille of the target at start_us
    end_level: int  # per-mille of the target at end_us

    @property
    def duration_us(self) -> int:
        return self.end_us - self.start_us

    def level_at(self, t_us: int) -> int:
        """Envelope level at ``t_us`` (clamped into the segment), linear, floor-rounded.

        Floor rounding of a linear ramp is monotonic in ``t_us``, and never exceeds
        ``max(start_level, end_level)``.
        """
        if self.duration_us == 0:
            return self.end_level
        elapsed = min(max(t_us - self.start_us, 0), self.duration_us)
        rise = (self.end_level - self.start_level) * elapsed
        return self.start_level + rise // self.duration_us

    def amplitude_ua_at(self, t_us: int, target_ua: int) -> int:
        return target_ua * self.level_at(t_us) // FULL_LEVEL


@dataclass(frozen=True, slots=True)
class Schedule:
    segments: tuple[Segment, ...]
    cycles: int
    duration_us: int
    continuous: bool
    _starts_us: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts_us", tuple(s.start_us for s in self.segments))

    def segment_at(self, t_us: int) -> Segment | None:
        """The segment containing ``t_us``, or None outside the session.

        Zero-length segments (a protocol without ramps) share their start with the
        next segment; ``bisect_right`` picks the last of equal starts, the one that
        actually lasts.
        """
        if t_us < 0 or t_us >= self.duration_us:
            return None
        return self.segments[bisect.bisect_right(self._starts_us, t_us) - 1]

    def level_at(self, t_us: int) -> int:
        seg = self.segment_at(t_us)
        return 0 if seg is None else seg.level_at(t_us)

    def amplitude_ua_at(self, t_us: int, target_ua: int) -> int:
        return target_ua * self.level_at(t_us) // FULL_LEVEL

    def boundaries_us(self) -> list[int]:
        """Every segment start, plus the end: the instants the runner must hit."""
        return [s.start_us for s in self.segments if s.duration_us > 0] + [self.duration_us]

    @property
    def stimulating_us(self) -> int:
        return sum(s.duration_us for s in self.segments if s.phase.stimulating)

    @property
    def plateau_us(self) -> int:
        return sum(s.duration_us for s in self.segments if s.phase is SegmentPhase.ON)


def compile_schedule(resolved: ResolvedPrescription) -> Schedule:
    """The schedule of the effective protocol of a resolved prescription."""
    return compile_protocol(resolved.protocol)


def compile_protocol(protocol: Protocol) -> Schedule:
    cycle = protocol.cycle
    session_us = protocol.session_us
    if isinstance(cycle, CycledDuty):
        return _compile_cycled(cycle, session_us)
    return _compile_continuous(cycle, session_us)


def _compile_cycled(cycle: CycledDuty, session_us: int) -> Schedule:
    ramp_up, on = s_to_us(cycle.ramp_up_s), s_to_us(cycle.on_s)
    ramp_down, off = s_to_us(cycle.ramp_down_s), s_to_us(cycle.off_s)
    count = session_us // cycle.period_us
    segments: list[Segment] = []
    t = 0
    plan = (
        (SegmentPhase.RAMP_UP, ramp_up, 0, FULL_LEVEL),
        (SegmentPhase.ON, on, FULL_LEVEL, FULL_LEVEL),
        (SegmentPhase.RAMP_DOWN, ramp_down, FULL_LEVEL, 0),
        (SegmentPhase.OFF, off, 0, 0),
    )
    for n in range(count):
        for phase, length, start_level, end_level in plan:
            segments.append(Segment(len(segments), n, phase, t, t + length, start_level, end_level))
            t += length
    return Schedule(tuple(segments), cycles=count, duration_us=t, continuous=False)


def _compile_continuous(cycle: Continuous, session_us: int) -> Schedule:
    ramp_up, ramp_down = s_to_us(cycle.ramp_up_s), s_to_us(cycle.ramp_down_s)
    on = session_us - ramp_up - ramp_down
    segments = (
        Segment(0, 0, SegmentPhase.RAMP_UP, 0, ramp_up, 0, FULL_LEVEL),
        Segment(1, 0, SegmentPhase.ON, ramp_up, ramp_up + on, FULL_LEVEL, FULL_LEVEL),
        Segment(2, 0, SegmentPhase.RAMP_DOWN, ramp_up + on, session_us, FULL_LEVEL, 0),
    )
    return Schedule(segments, cycles=1, duration_us=session_us, continuous=True)
