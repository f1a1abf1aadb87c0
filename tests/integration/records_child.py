"""The process the crash test kills: it opens a session and records events until killed.

Run as ``python records_child.py DB CODE``. It prints ``session N`` once the session is
open, then ``committed SEQ`` after each append has returned (so the event is durable by
the sink's contract). The parent SIGKILLs it at an arbitrary moment.

To run the real controller here instead, replace the ``produce_events(recorder)`` line
in :func:`main` with the controller run that takes ``recorder`` as its event sink; the
test reads the same lines (the controller's events are printed by ``ReportingSink``).
"""

from __future__ import annotations

import sys
import time

from estim.events import EventSink, SessionEvent
from estim.records.models import DeviceRecord, SessionStart
from estim.records.store import Store


class ReportingSink:
    """Passes events to the recorder, then tells the parent which one is committed."""

    def __init__(self, inner: EventSink, first_sequence: int) -> None:
        self._inner = inner
        self._next = first_sequence

    def append(self, event: SessionEvent) -> None:
        self._inner.append(event)
        print(f"committed {self._next}", flush=True)
        self._next += 1


def produce_events(sink: EventSink) -> None:
    """Stand-in for a running controller: a status event as fast as they can be made durable."""
    n = 0
    while True:
        sink.append(
            SessionEvent(
                kind="status",
                state="running",
                monotonic_ns=time.monotonic_ns(),
                data={"n": n, "amplitude_ua": 500 * (n % 40)},
            )
        )
        n += 1


def main(db: str, code: str) -> None:
    store = Store.open(db)
    record = store.active_prescription(code)
    assert record is not None, f"{code} has no active course in {db}"
    recorder = store.begin_session(
        SessionStart(
            patient_code=code,
            protocol_sha256=record.effective_protocol.content_hash,
            profile_name="estim-pf2",
            profile_sha256="a" * 64,
            device=DeviceRecord(model="PF2", serial_number="SN-CRASH", firmware="1.0.0"),
            clinician="Nurse B",
        )
    )
    print(f"session {recorder.session_id}", flush=True)
    sink = ReportingSink(recorder, recorder.event_count)
    produce_events(sink)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
