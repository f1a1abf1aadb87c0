"""Wall-clock time spent where output may be on, for the session time interlock.

The schedule's own clock only runs while ``running``: a session stuck in titration,
or a schedule timer that stopped advancing, would never reach the schedule's end and
so never trip a cap measured in schedule time. This timer is fed every state change
from the controller's monotonic clock and counts, independently of the schedule:

- titration time (``titrating``: a person is finding the amplitude, output on);
- stimulation time (``running`` and ``stopping``: the prescribed session and its stop
  ramp). ``paused`` is not counted: output is zero there.
"""

from __future__ import annotations

from estim.clock import NS_PER_US
from estim.session.states import State

_STIMULATION = frozenset({State.RUNNING, State.STOPPING})


class StimulationTimer:
    """Time per kind of stimulating state, in integer microseconds of wall clock."""

    def __init__(self, now_ns: int, state: State = State.IDLE) -> None:
        self._state = state
        self._since_ns = now_ns
        self._titration_ns = 0
        self._stimulation_ns = 0

    def enter(self, state: State, now_ns: int) -> None:
        """The machine is in ``state`` from ``now_ns`` on."""
        self._bank(now_ns)
        self._state = state

    def titration_us(self, now_ns: int) -> int:
        open_ns = self._open_ns(now_ns) if self._state is State.TITRATING else 0
        return (self._titration_ns + open_ns) // NS_PER_US

    def stimulation_us(self, now_ns: int) -> int:
        open_ns = self._open_ns(now_ns) if self._state in _STIMULATION else 0
        return (self._stimulation_ns + open_ns) // NS_PER_US

    def _open_ns(self, now_ns: int) -> int:
        return max(0, now_ns - self._since_ns)

    def _bank(self, now_ns: int) -> None:
        spent = self._open_ns(now_ns)
        if self._state is State.TITRATING:
            self._titration_ns += spent
        elif self._state in _STIMULATION:
            self._stimulation_ns += spent
        self._since_ns = max(self._since_ns, now_ns)
