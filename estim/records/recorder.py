"""The open session's event sink, handed to the controller."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from estim.errors import RecordsError
from estim.events import SessionEvent
from estim.records.findings import Finding
from estim.records.lease import SessionLease
from estim.records.models import DeviceRecord, Outcome, SessionRecord, SessionSummary
from estim.records.sessionlog import DEVICE_KIND

if TYPE_CHECKING:
    from estim.records.store import Store


class SessionRecorder:
    """The open session's event sink: each :meth:`append` is committed before it returns.

    Hand it to the controller as its :class:`~estim.events.EventSink`. End the session
    with :meth:`finish`; used as a context manager, a session left unfinished by an
    exception is closed as ``aborted`` (or ``interrupted`` without one), so an open
    record is only ever left behind by a process that died.
    """

    def __init__(
        self,
        store: Store,
        session_id: int,
        *,
        uid: str,
        lease: SessionLease,
        head: str,
        findings: list[Finding],
    ) -> None:
        self._store = store
        self.session_id = session_id
        self.uid = uid
        self._lease = lease
        self._head = head
        self._next = 0
        self._last_monotonic_ns = 0
        self._last_state = ""
        self.findings = list(findings)
        self.finished = False

    @property
    def event_count(self) -> int:
        return self._next

    @property
    def head_hash(self) -> str:
        return self._head

    def append(self, event: SessionEvent) -> None:
        if self.finished:
            raise RecordsError(f"session #{self.session_id} is finished; no more events")
        linked = self._store._append(self.session_id, self._next, self._head, event)
        self._head = linked.hash
        self._next += 1
        self._last_monotonic_ns = event.monotonic_ns
        self._last_state = event.state

    def set_device(self, device: DeviceRecord) -> None:
        """Record the connected device (when the controller does not log a
        ``connected`` event naming it): a ``records.device`` event and the session row."""
        self.append(
            SessionEvent(
                kind=DEVICE_KIND,
                state=self._last_state,
                monotonic_ns=self._last_monotonic_ns,
                data=device.as_data(),
            )
        )

    def finish(
        self,
        outcome: Outcome,
        reason: str,
        summary: SessionSummary,
        *,
        monotonic_ns: int | None = None,
        controller_summary: dict[str, Any] | None = None,
    ) -> SessionRecord:
        """Close the session: a ``records.end`` event plus the outcome on the record."""
        if self.finished:
            raise RecordsError(f"session #{self.session_id} is already finished")
        linked = self._store._finish(
            self.session_id,
            self._next,
            self._head,
            outcome=outcome,
            reason=reason,
            summary=summary,
            monotonic_ns=self._last_monotonic_ns if monotonic_ns is None else monotonic_ns,
            state=self._last_state,
            extra=None if controller_summary is None else {"controller": controller_summary},
        )
        self._head = linked.hash
        self._next += 1
        self.finished = True
        self._lease.release()
        return self._store.session(self.session_id)

    def finish_from_summary(self, summary: Mapping[str, Any]) -> SessionRecord:
        """Close the session from the controller's summary (``SessionSummary.to_dict()``):
        its ``outcome``, ``reason``, ``confirmed_ua``, ``on_time_us`` and ``contractions``.
        The whole summary is logged in the end event too."""
        try:
            outcome = Outcome.from_controller(str(summary["outcome"]))
            delivered = SessionSummary(
                confirmed_amplitude_ua=summary["confirmed_ua"],
                on_time_us=summary["on_time_us"],
                contractions=summary["contractions"],
            )
            reason = str(summary["reason"])
        except KeyError as err:
            raise RecordsError(f"the controller's summary has no {err.args[0]!r}") from err
        except ValueError as err:
            raise RecordsError(f"the controller's summary does not fit the record: {err}") from err
        return self.finish(outcome, reason, delivered, controller_summary=dict(summary))

    def __enter__(self) -> SessionRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.finished:
            return
        try:
            # What the last status event put on the row, never zeros: a session that
            # stimulated and then failed to close still counts toward the dose.
            so_far = self._delivered_so_far()
            if exc is None:
                self.finish(
                    Outcome.INTERRUPTED,
                    "the controller ended without recording an outcome",
                    so_far,
                )
            else:
                detail = f": {exc}" if str(exc).strip() else ""
                self.finish(
                    Outcome.ABORTED,
                    f"ended by an error: {type(exc).__name__}{detail}",
                    so_far,
                )
        finally:
            self._lease.release()

    def _delivered_so_far(self) -> SessionSummary:
        try:
            row = self._store.session(self.session_id)
        except RecordsError:  # the row cannot be read now: unknown, which still counts
            return SessionSummary(confirmed_amplitude_ua=None, on_time_us=None, contractions=None)
        return SessionSummary(
            confirmed_amplitude_ua=row.confirmed_amplitude_ua,
            on_time_us=row.on_time_us,
            contractions=row.contractions,
        )
