"""The wall-clock timer behind the session and titration caps."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from estim.session.states import State
from estim.session.stimulation_time import StimulationTimer

S = 1_000_000_000  # ns


def test_titration_and_stimulation_are_counted_apart_and_pause_not_at_all() -> None:
    timer = StimulationTimer(0)
    timer.enter(State.ARMED, 5 * S)
    timer.enter(State.TITRATING, 10 * S)
    assert timer.titration_us(40 * S) == 30_000_000  # an open interval counts as it runs
    timer.enter(State.ARMED, 40 * S)
    timer.enter(State.RUNNING, 50 * S)
    timer.enter(State.PAUSED, 70 * S)
    timer.enter(State.RUNNING, 170 * S)
    timer.enter(State.STOPPING, 180 * S)
    timer.enter(State.COMPLETED, 182 * S)
    assert timer.titration_us(999 * S) == 30_000_000
    assert timer.stimulation_us(999 * S) == 32_000_000  # 20 + 10 running, 2 stopping


@given(
    st.lists(
        st.tuples(st.sampled_from(list(State)), st.integers(min_value=0, max_value=10 * S)),
        max_size=30,
    )
)
def test_counted_time_never_exceeds_the_wall_time(steps: list[tuple[State, int]]) -> None:
    timer = StimulationTimer(0)
    now = 0
    for state, gap_ns in steps:
        now += gap_ns
        timer.enter(state, now)
    counted = timer.titration_us(now) + timer.stimulation_us(now)
    assert 0 <= counted <= now // 1_000
