"""What happened, to whom: patients, courses, the training diary, sessions, event logs.

The records layer knows no controller: the command line hands the controller a
:class:`SessionRecorder` as its :class:`~estim.events.EventSink`.

Using it from the controller (``estim session start``, ``estim demo``)::

    from estim.records import Store, SessionStart, EligibilityOverride, ValidationRef

    with Store.open(db) as store:                # db: path, URL, or None ($ESTIM_DB / default)
        store.recover_interrupted()              # sessions left open by a dead process
        check = store.preflight(code, eligibility_override=override)
        # check.findings: checklist, eligibility, dose, course (Finding: code, severity,
        #   message, fix); check.blocking / check.ok
        # check.resolved: ResolvedPrescription (effective protocol, ceiling_ua, step_ua)
        # check.dose.sessions_today / .sessions_this_week -> safety DoseReading
        recorder = store.begin_session(
            SessionStart(
                patient_code=code,
                protocol_sha256=check.resolved.protocol.content_hash,
                profile_name="estim-pf2",
                profile_sha256=profile.sha256,
                clinician="...",
                validation=ValidationRef.from_file(path),   # bench record, if any
                eligibility_override=override,              # EligibilityOverride | None
                # device=DeviceRecord.of(identity) if already connected; otherwise the
                # controller's "connected" event (model, serial_number, firmware) fills it
            ),
            monotonic_ns=clock.now_ns(),
        )                                        # PreflightBlocked if anything blocks
        with recorder:                           # an exception closes it as "aborted"
            runner = SessionRunner(driver, plan, clock=clock, sink=recorder)
            summary = runner.run()
            recorder.finish_from_summary(summary.to_dict())
            # or: recorder.finish(Outcome.COMPLETED, reason, SessionSummary(...))

``append`` commits one transaction (SQLite ``synchronous=FULL``) before it returns:
what the controller has appended survives a SIGKILL. Each event is hash-chained to
the one before and the first to the session header; ``Store.verify(session_id)``
names the first broken link. A session whose process died is closed as
``interrupted`` (with its last event named) by the next ``recover_interrupted()``,
which every records command calls; a session still running in another process holds
a lock and is left alone.

Event data must be JSON-safe with integers, never floats (``amplitude_ua``, not
``amplitude_ma``); a float is refused with :class:`~estim.errors.RecordsError`, and so
is any append that cannot be made durable: the controller should treat a sink error
as a reason to stop output.

Modules: :mod:`~estim.records.store` (the store),
:mod:`~estim.records.recorder` (the open session's sink),
:mod:`~estim.records.sessionlog` (session header, end and device checks, pure),
:mod:`~estim.records.chain` (hashing and verification, pure),
:mod:`~estim.records.checklist`, :mod:`~estim.records.diary` (models, CSV),
:mod:`~estim.records.decisions` (eligibility and dose, pure),
:mod:`~estim.records.report` (+ ``report_text``, ``report_html``),
:mod:`~estim.records.engine` (the only database-specific code),
:mod:`~estim.records.migrations`, :mod:`~estim.records.schema`,
:mod:`~estim.records.lease` (is a session's process alive),
:mod:`~estim.records.seed` (a demo patient for ``estim demo`` and tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from estim.records.checklist import ContraindicationChecklist, checklist_findings
from estim.records.decisions import DoseCount, dose_count, eligibility_findings
from estim.records.diary import DiaryEntry, Programme
from estim.records.findings import Finding, Severity
from estim.records.models import (
    DeviceRecord,
    EligibilityOverride,
    Outcome,
    Patient,
    PrescriptionRecord,
    SessionRecord,
    SessionStart,
    SessionSummary,
    ValidationRef,
)

if TYPE_CHECKING:
    from estim.records.recorder import SessionRecorder
    from estim.records.store import RecordsPreflight, Store

_LAZY = {"RecordsPreflight", "SessionRecorder", "Store"}


def __getattr__(name: str) -> Any:
    # The store pulls in SQLAlchemy; load it on first use so that every ``estim``
    # command does not pay for it at start-up.
    if name in _LAZY:
        from estim.records import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ContraindicationChecklist",
    "DeviceRecord",
    "DiaryEntry",
    "DoseCount",
    "EligibilityOverride",
    "Finding",
    "Outcome",
    "Patient",
    "PrescriptionRecord",
    "Programme",
    "RecordsPreflight",
    "SessionRecord",
    "SessionRecorder",
    "SessionStart",
    "SessionSummary",
    "Severity",
    "Store",
    "ValidationRef",
    "checklist_findings",
    "dose_count",
    "eligibility_findings",
]
