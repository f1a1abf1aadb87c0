"""The session's record, opened once the stimulator has answered.

A session that never reached a device is not a session: nobody was stimulated, and a
record of it would sit in the patient's history as a "fault" (or, if the process died
while connecting, as "interrupted", which counts toward the dose). So the command line
hands the controller a :class:`RecordWhenConnected` sink: it holds the first events
(the session's plan, the connect attempt) in memory and opens the record in the
records store only when the device has answered, with the ``connected`` event, or with
a trip that only an answering device can cause (a wrong identity). Everything held is
then written in order, and from then on each event is durable before ``append``
returns, as the :class:`~estim.events.EventSink` contract says.

Holding those first events is safe: before the device answers, its port is not even
open, so no output can be on; if the process dies then, there is nothing to record.
If the port cannot be opened or the device never answers, no record is written and
:attr:`RecordWhenConnected.not_connected` says why (the command exits 3: a device or
communication failure).
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from estim.errors import RecordsError
from estim.events import SessionEvent
from estim.safety.interlocks import CommunicationLoss

if TYPE_CHECKING:
    from estim.records.models import SessionRecord, SessionStart
    from estim.records.recorder import SessionRecorder
    from estim.records.store import Store
    from estim.session.summary import SessionSummary

CONNECTED_KIND = "connected"
TRIP_KIND = "trip"


class RecordWhenConnected:
    """An event sink that opens the session record when the device first answers.

    ``append`` is called from the control loop's thread; :meth:`finish` and
    :meth:`finish_after_error` from the command's thread once the loop has ended.
    """

    def __init__(self, store: Store, start: SessionStart) -> None:
        self._store = store
        self._start = start
        self._held: list[SessionEvent] = []
        self.recorder: SessionRecorder | None = None
        self.open_error: BaseException | None = None
        self.not_connected: str | None = None

    def append(self, event: SessionEvent) -> None:
        if self.recorder is not None:
            retried = any(held is event for held in self._held)
            self._write_held()
            if not retried:  # (a retried event was held: written with the others)
                self.recorder.append(event)
            return
        if self.open_error is not None:
            raise RecordsError(f"the session record could not be opened: {self.open_error}")
        self._held.append(event)
        if event.kind == CONNECTED_KIND or _device_answered(event):
            self._open()
        elif event.kind == TRIP_KIND and self.not_connected is None:
            self.not_connected = _first_reason(event)

    def _open(self) -> None:
        try:
            recorder = self._store.begin_session(
                self._start, monotonic_ns=self._held[0].monotonic_ns
            )
        except BaseException as err:
            # The controller sees the sink fail and stops (nothing is on yet); the
            # command reports this error, the records' own reason, after the loop.
            self.open_error = err
            raise
        self.recorder = recorder
        self._write_held()

    def _write_held(self) -> None:
        """Write the events held until the record opened, oldest first; each leaves
        the queue only once written, so a failed write loses none (the controller
        retries, and the rest follow it)."""
        recorder = self.recorder
        assert recorder is not None
        while self._held:
            recorder.append(self._held[0])
            del self._held[0]

    def finish(self, summary: SessionSummary) -> SessionRecord | None:
        """Close the record from the controller's summary (None: no record was opened)."""
        recorder = self.recorder
        if recorder is None:
            return None
        if recorder.finished:
            return self._store.session(recorder.session_id)
        return recorder.finish_from_summary(summary.to_dict())

    def finish_after_error(self, summary: SessionSummary, error: BaseException) -> None:
        """Close the record after the console or the loop failed, from what the
        controller says was delivered (so the dose counts what the patient received)."""
        recorder = self.recorder
        if recorder is None or recorder.finished:
            return
        data = summary.to_dict()
        data["reason"] = f"{summary.reason}; {type(error).__name__}: {error}"
        recorder.finish_from_summary(data)

    def __enter__(self) -> RecordWhenConnected:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Last resort (normally finish or finish_after_error has run): the recorder
        # closes an unfinished record as aborted or interrupted and frees its lease.
        if self.recorder is not None:
            self.recorder.__exit__(exc_type, exc, tb)


def _trip_ids(event: SessionEvent) -> list[str]:
    trips = event.data.get("trips")
    if not isinstance(trips, list):
        return []
    return [str(t.get("interlock_id")) for t in trips if isinstance(t, dict)]


def _device_answered(event: SessionEvent) -> bool:
    """A trip only an answering device can cause (a wrong identity, a latched fault)."""
    if event.kind != TRIP_KIND:
        return False
    return any(i != CommunicationLoss.ID for i in _trip_ids(event))


def _first_reason(event: SessionEvent) -> str:
    trips = event.data.get("trips")
    if isinstance(trips, list) and trips and isinstance(trips[0], dict):
        return str(trips[0].get("reason"))
    return "the device did not answer"
