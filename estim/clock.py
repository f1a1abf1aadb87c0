"""Injectable clocks: real monotonic time, or virtual time for tests and dry runs.

Everything that waits or measures time (the control loop, the driver's timeouts, the
simulator's watchdog and load model) takes a :class:`Clock`. With
:class:`MonotonicClock` the code runs in real time against a device or the simulator
on a pty; with :class:`VirtualClock` the same code runs a 30-minute session in a
second, deterministically. Deadlines are absolute nanoseconds on the clock, never
accumulated sleeps, so long sessions do not drift.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

NS_PER_US = 1_000
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000


@runtime_checkable
class Clock(Protocol):
    """A monotonic clock in integer nanoseconds that can wait for a deadline."""

    def now_ns(self) -> int:
        """Current time in nanoseconds (monotonic; the epoch is arbitrary)."""
        ...

    def sleep_until(self, deadline_ns: int) -> None:
        """Return at or after ``deadline_ns`` (immediately if it has passed)."""
        ...

    @property
    def is_virtual(self) -> bool:
        """True when time only moves because code asks it to."""
        ...


class MonotonicClock:
    """Real time from :func:`time.monotonic_ns`, the clock the simulator trace uses too."""

    # Sleep in one go up to this close to the deadline, then spin: OS sleeps overshoot
    # by 50-100 us on an idle Linux box, and phase boundaries are judged to 2 ms.
    _SPIN_NS = 300 * NS_PER_US

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_until(self, deadline_ns: int) -> None:
        while True:
            remaining = deadline_ns - time.monotonic_ns()
            if remaining <= 0:
                return
            if remaining > self._SPIN_NS:
                time.sleep((remaining - self._SPIN_NS) / NS_PER_S)
            else:
                time.sleep(0)  # yield the GIL while spinning the last fraction

    @property
    def is_virtual(self) -> bool:
        return False


class VirtualClock:
    """Time that advances only when told to; listeners see every advance.

    ``sleep_until`` jumps straight to the deadline. Listeners (for example the
    simulator's firmware model) are called with the new time after each advance so
    that timers such as the device watchdog fire at the right virtual moment.
    """

    def __init__(self, start_ns: int = 0) -> None:
        self._now_ns = start_ns
        self._lock = threading.Lock()
        self._listeners: list[Callable[[int], None]] = []

    def now_ns(self) -> int:
        return self._now_ns

    def sleep_until(self, deadline_ns: int) -> None:
        if deadline_ns > self._now_ns:
            self.advance_to(deadline_ns)

    def advance(self, delta_ns: int) -> None:
        if delta_ns < 0:
            raise ValueError("virtual time cannot go backwards")
        self.advance_to(self._now_ns + delta_ns)

    def advance_to(self, when_ns: int) -> None:
        with self._lock:
            if when_ns < self._now_ns:
                raise ValueError("virtual time cannot go backwards")
            self._now_ns = when_ns
            listeners = list(self._listeners)
        for listener in listeners:
            listener(when_ns)

    def subscribe(self, listener: Callable[[int], None]) -> Callable[[], None]:
        """Call ``listener(now_ns)`` after every advance; returns an unsubscribe function."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    @property
    def is_virtual(self) -> bool:
        return True
