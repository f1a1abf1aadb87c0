"""The records store on PostgreSQL: the same operations as on SQLite, by configuration only.

Runs when ``ESTIM_TEST_POSTGRES_URL`` names an empty database the test may fill and
clear (e.g. ``postgresql+psycopg://estim:estim@localhost/estim_test``, with the psycopg
driver installed); skipped otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta

import pytest
from records_helpers import (
    CODE,
    TODAY,
    Clock,
    checklist,
    event,
    prescription,
    ready_course,
    run_session,
    session_start,
    stress,
)

from estim.errors import InputError, PreflightBlocked
from estim.records.diary import DiaryEntry
from estim.records.models import EligibilityOverride, Outcome
from estim.records.store import Store

URL = os.environ.get("ESTIM_TEST_POSTGRES_URL", "")
pytestmark = pytest.mark.skipif(
    not URL, reason="set ESTIM_TEST_POSTGRES_URL to an empty PostgreSQL database to run"
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> Iterator[Store]:
    from sqlalchemy import create_engine, text

    opened = Store.open(URL, now=clock, today=clock.today, host="pg-test")
    try:
        yield opened
    finally:
        opened.close()
        engine = create_engine(URL)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()


def test_courses_diary_sessions_and_verification(store: Store, clock: Clock) -> None:
    assert store.schema_version() == 2
    record = ready_course(store)
    with pytest.raises(InputError, match="already has a course"):
        store.prescribe(prescription(start=TODAY), stress(), checklist())
    store.add_diary(
        CODE, [DiaryEntry(day=TODAY - timedelta(days=1), hold_s=2, repetitions=3, blocks_done=4)]
    )
    with pytest.raises(PreflightBlocked, match="ELIG-VOLUNTARY"):
        store.begin_session(session_start(record))
    override = EligibilityOverride(reason="EMG: partial denervation", clinician="Dr. A. Visser")
    done = run_session(store, record, events=5, eligibility_override=override)
    assert done.outcome is Outcome.COMPLETED
    assert store.verify(done.id).ok
    assert store.session(done.uid[:8]).id == done.id
    assert [f.code for f in store.preflight(CODE, eligibility_override=override).blocking] == [
        "DOSE-DAY"
    ]


def test_events_are_append_only_and_edits_are_found(store: Store) -> None:
    from sqlalchemy import text

    done = run_session(store, ready_course(store), events=4)
    with pytest.raises(Exception, match="append-only"), store.engine.begin() as conn:
        conn.execute(text("UPDATE session_event SET kind='x' WHERE sequence=1"))
    with store.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER session_event_append_only ON session_event"))
        conn.execute(text("UPDATE session_event SET state='x' WHERE sequence=3"))
    verdict = store.verify(done.id)
    assert verdict.broken is not None
    assert verdict.broken.sequence == 3


def test_an_abandoned_session_is_recovered(store: Store, clock: Clock) -> None:
    record = ready_course(store)
    recorder = store.begin_session(session_start(record))
    recorder.append(event(1))
    with Store.open(URL, now=clock, today=clock.today, host="pg-test") as other:
        assert other.recover_interrupted() == []  # alive
        recorder._lease.release(remove=False)  # as the kernel does when the process dies
        [recovered] = other.recover_interrupted()
        assert recovered.outcome is Outcome.INTERRUPTED
        assert other.verify(recovered.id).ok
