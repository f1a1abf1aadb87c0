"""The session event record and the sink the controller writes it to.

Neutral ground between the controller (:mod:`estim.session`), which produces events,
and the records store (:mod:`estim.records`), which makes them durable and
hash-chains them. Neither imports the other: the command line hands the controller a
sink. A sink's :meth:`EventSink.append` returns only once the event is durable, so an
event the controller has seen appended survives a SIGKILL of the process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

JsonScalar = str | int | bool | None
JsonValue = JsonScalar | list["JsonValue"] | dict[str, "JsonValue"]

DELIVERED_KEY = "delivered"
"""Where a controller's status event carries the dose delivered so far:
``{"confirmed_ua", "on_time_us", "contractions"}`` (the records keep it on the session's
row, so a session whose process dies still says what was given)."""


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """One thing that happened in a session.

    ``kind`` is a short stable name (``"state"``, ``"amplitude"``, ``"trip"``,
    ``"status"``, ``"emergency_stop"`` ...); ``state`` is the controller state after
    the event; ``data`` holds JSON-safe details (integers for currents and times,
    never floats, so a log hashes the same everywhere).
    """

    kind: str
    state: str
    monotonic_ns: int
    data: Mapping[str, JsonValue] = field(default_factory=dict)
    wall_time: datetime = field(default_factory=lambda: datetime.now(UTC))


@runtime_checkable
class EventSink(Protocol):
    """Where a session's events go. ``append`` is durable before it returns."""

    def append(self, event: SessionEvent) -> None: ...


class MemorySink:
    """Keeps events in a list: for tests, dry runs and the virtual-time demo."""

    def __init__(self) -> None:
        self.events: list[SessionEvent] = []

    def append(self, event: SessionEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]
