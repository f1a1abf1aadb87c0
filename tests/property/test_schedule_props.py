"""Compiled schedules never exceed the ceiling, and their ramps are monotonic."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from estim.protocols.models import CycledDuty
from estim.protocols.prescription import resolve
from estim.protocols.schedule import FULL_LEVEL, SegmentPhase, compile_schedule
from estim.testing import strategies as es


@given(st.data())
def test_schedule_never_exceeds_the_ceiling(data: st.DataObject) -> None:
    protocol = data.draw(es.protocols(max_session_min=10))
    resolved = resolve(data.draw(es.prescriptions(protocol)), protocol)
    schedule = compile_schedule(resolved)
    ceiling = resolved.ceiling_ua
    instants = data.draw(st.lists(st.integers(-10, schedule.duration_us + 10), max_size=50))
    instants += [t + d for t in schedule.boundaries_us() for d in (-1, 0, 1)]
    for t in instants:
        amplitude = schedule.amplitude_ua_at(t, ceiling)
        assert 0 <= amplitude <= ceiling
        if t < 0 or t >= schedule.duration_us:
            assert amplitude == 0
    assert schedule.duration_us <= resolved.protocol.session_us


@given(st.data())
def test_segments_tile_the_session_and_ramps_are_monotonic(data: st.DataObject) -> None:
    protocol = data.draw(es.protocols(max_session_min=10, adjustable=False))
    resolved = resolve(data.draw(es.prescriptions(protocol, adjust=False)), protocol)
    schedule = compile_schedule(resolved)
    previous_end = 0
    for segment in schedule.segments:
        assert segment.start_us == previous_end
        previous_end = segment.end_us
        assert 0 <= segment.start_level <= FULL_LEVEL
        assert 0 <= segment.end_level <= FULL_LEVEL
    assert previous_end == schedule.duration_us
    # the first cycle, the last, and one between are sampled densely
    cycles = {0, schedule.cycles - 1, data.draw(st.integers(0, schedule.cycles - 1))}
    for segment in (s for s in schedule.segments if s.cycle in cycles):
        offsets = sorted(data.draw(st.lists(st.integers(0, segment.duration_us), max_size=8)))
        levels = [
            segment.level_at(segment.start_us + dt) for dt in [0, *offsets, segment.duration_us]
        ]
        if segment.phase is SegmentPhase.RAMP_UP:
            assert levels == sorted(levels)
            assert levels[-1] == FULL_LEVEL
        elif segment.phase is SegmentPhase.RAMP_DOWN:
            assert levels == sorted(levels, reverse=True)
            assert levels[-1] == 0
        elif segment.phase is SegmentPhase.ON:
            assert set(levels) == {FULL_LEVEL}
        else:
            assert set(levels) == {0}
    if isinstance(protocol.cycle, CycledDuty):
        assert schedule.cycles == protocol.session_us // protocol.cycle.period_us


@given(st.data())
def test_the_delivered_counter_equals_a_walk_through_every_segment(data: st.DataObject) -> None:
    from estim.session.summary import DeliveredCounter

    protocol = data.draw(es.protocols(max_session_min=10))
    resolved = resolve(data.draw(es.prescriptions(protocol)), protocol)
    schedule = compile_schedule(resolved)
    counter = DeliveredCounter(schedule)
    instants = data.draw(st.lists(st.integers(-10, schedule.duration_us + 10), max_size=30))
    instants += [t + d for t in schedule.boundaries_us() for d in (-1, 0, 1)]
    for elapsed_us in instants:
        on_time = plateaus = 0
        for seg in schedule.segments:
            if seg.start_us >= elapsed_us:
                break
            if seg.phase.stimulating:
                on_time += min(seg.end_us, elapsed_us) - seg.start_us
            if seg.phase is SegmentPhase.ON and seg.end_us <= elapsed_us:
                plateaus += 1
        assert counter.at(elapsed_us) == (on_time, plateaus), elapsed_us
