"""The simulator's trace: what the device received and what its output did, and when.

One JSON object per line, written as it happens (line-buffered, so another process can
tail the file while the simulator runs). Every record carries ``t_ns`` from
:func:`time.monotonic_ns` (the same clock the driver and the bench read, so anyone on
the same machine can measure from outside what the device did and when) and
``clock_ns`` from the simulator's own :class:`~estim.clock.Clock` (equal to ``t_ns``
in real time; the virtual time in a virtual-time run).

Record kinds (the ``event`` key):

- ``frame``: a valid frame received from the host (``protocol``, ``seq``,
  ``command``, ``hex``), or sent when ``direction`` is ``"out"``.
- ``output``: a channel's *delivered* output changed (``channel``, ``amplitude_ua``,
  ``output_on``). This is the truth, whatever the device reports.
- ``fault``: the firmware latched a fault (``channel`` or null, ``flags``, ``detail``).
- ``inject``: a fault was injected (``spec``).
- ``link``: the link misbehaved on purpose (``what``: drop, corrupt, disconnect...).
- ``power``: the device powered up, reset, or shut down.

Subscribers (the bench, tests) get every record in-process as a dict, synchronously,
in the thread that made the change, so a timestamp taken there is not delayed by any
queue.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from estim.clock import Clock, MonotonicClock
from estim.errors import InputError

TraceRecord = dict[str, Any]
TraceListener = Callable[[TraceRecord], None]


class Trace:
    """An append-only log of device events, to a file and/or memory, with listeners.

    ``keep`` bounds the in-memory copy (the newest records are kept); the file, if
    any, receives every record.
    """

    def __init__(
        self,
        path: Path | str | None = None,
        *,
        clock: Clock | None = None,
        keep: int = 100_000,
    ) -> None:
        self._clock: Clock = clock or MonotonicClock()
        self._lock = threading.Lock()
        self._records: deque[TraceRecord] = deque(maxlen=keep)
        self._listeners: tuple[TraceListener, ...] = ()  # replaced, never changed in place
        self._file: IO[str] | None = None
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            try:
                self._file = self.path.open("a", encoding="utf-8", buffering=1)
            except OSError as err:
                raise InputError(f"{self.path}: cannot open trace file ({err.strerror})") from err

    def bind_clock(self, clock: Clock) -> None:
        """Stamp ``clock_ns`` from ``clock`` (the simulator's clock) from now on."""
        self._clock = clock

    def record(self, event: str, **fields: Any) -> TraceRecord:
        """Append one record, stamped now; returns it."""
        entry: TraceRecord = {
            "t_ns": time.monotonic_ns(),
            "clock_ns": self._clock.now_ns(),
            "event": event,
            **fields,
        }
        with self._lock:
            self._records.append(entry)
            listeners = self._listeners
            if self._file is not None:
                self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
        for listener in listeners:
            listener(entry)
        return entry

    def subscribe(self, listener: TraceListener) -> Callable[[], None]:
        """Call ``listener(record)`` for every new record; returns an unsubscribe function."""
        with self._lock:
            self._listeners += (listener,)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    kept = list(self._listeners)
                    kept.remove(listener)
                    self._listeners = tuple(kept)

        return unsubscribe

    def records(self, event: str | None = None) -> list[TraceRecord]:
        """A copy of the records kept in memory, optionally only one ``event`` kind."""
        with self._lock:
            items = list(self._records)
        if event is None:
            return items
        return [r for r in items if r["event"] == event]

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
