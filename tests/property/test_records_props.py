"""Properties of the records: round trips through the store and CSV, and a hash chain
that verifies for any sequence of events and fails for any single alteration."""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from records_helpers import TODAY, Clock, checklist, open_store, prescription, session_start, stress

from estim.events import SessionEvent
from estim.records import chain
from estim.records.diary import (
    MAX_BLOCKS_PER_DAY,
    MAX_FAST_CONTRACTIONS,
    MAX_LEAKAGE_EPISODES,
    DiaryEntry,
    Programme,
    export_csv,
    parse_csv,
)
from estim.records.models import Outcome, SessionSummary
from estim.records.store import Store

# --- strategies ----------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
names = st.text(min_size=1, max_size=chain.NAME_MAX_CHARS)
wall_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)
events = st.builds(
    SessionEvent,
    kind=names,
    state=st.text(max_size=chain.NAME_MAX_CHARS),
    monotonic_ns=st.integers(0, 2**62),
    data=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    wall_time=wall_times,
)


@st.composite
def diary_entries(draw: st.DrawFn, day: date) -> DiaryEntry:
    hold = draw(st.integers(0, 10))
    reps = 0 if hold == 0 else draw(st.integers(1, 12))
    return DiaryEntry(
        day=day,
        hold_s=hold,
        repetitions=reps,
        blocks_done=draw(st.integers(0, MAX_BLOCKS_PER_DAY)),
        fast_contractions=draw(st.integers(0, MAX_FAST_CONTRACTIONS)),
        leakage_episodes=draw(st.integers(0, MAX_LEAKAGE_EPISODES)),
        programme=draw(st.sampled_from(Programme)),
        notes=draw(st.text(max_size=60)),
    )


@st.composite
def diaries(draw: st.DrawFn) -> list[DiaryEntry]:
    offsets = draw(st.lists(st.integers(0, 400), unique=True, max_size=12))
    return [draw(diary_entries(TODAY - timedelta(days=n))) for n in sorted(offsets, reverse=True)]


# --- a store shared by the examples (a new patient per example) ----------------------------

_codes = (f"PF-{n:05d}" for n in itertools.count(1))


@pytest.fixture(scope="module")
def shared_store() -> Iterator[Store]:
    with tempfile.TemporaryDirectory() as tmp, open_store(Path(tmp) / "records.db", Clock()) as s:
        yield s


def new_course(store: Store) -> Any:
    code = next(_codes)
    store.add_patient(code, 1980)
    return store.prescribe(prescription(code), stress(), checklist())


# --- round trips ---------------------------------------------------------------------------


@given(diaries())
def test_diary_round_trips_through_csv(entries: list[DiaryEntry]) -> None:
    assert parse_csv(export_csv(entries), "d.csv", TODAY) == entries


# Store-backed properties commit with fsync (synchronous=FULL): fewer examples keep them
# quick while the pure properties take the profile's full count.
STORE_EXAMPLES = settings(max_examples=min(settings().max_examples, 80))


@STORE_EXAMPLES
@given(entries=diaries())
def test_diary_round_trips_through_the_store(
    shared_store: Store, entries: list[DiaryEntry]
) -> None:
    code = next(_codes)
    shared_store.add_patient(code, 1980)
    shared_store.add_diary(code, entries)
    assert shared_store.diary(code) == entries


@STORE_EXAMPLES
@given(
    recorded=st.lists(events, max_size=8),
    outcome=st.sampled_from(Outcome),
    amplitude=st.none() | st.integers(0, 250_000),
    on_time=st.integers(0, 2**40),
    contractions=st.integers(0, 10_000),
)
def test_sessions_round_trip_and_verify(
    shared_store: Store,
    *,
    recorded: list[SessionEvent],
    outcome: Outcome,
    amplitude: int | None,
    on_time: int,
    contractions: int,
) -> None:
    record = new_course(shared_store)
    recorder = shared_store.begin_session(session_start(record))
    for ev in recorded:
        recorder.append(ev)
    summary = SessionSummary(
        confirmed_amplitude_ua=amplitude, on_time_us=on_time, contractions=contractions
    )
    done = recorder.finish(outcome, "property", summary)
    assert (done.outcome, done.confirmed_amplitude_ua, done.on_time_us, done.contractions) == (
        outcome,
        amplitude,
        on_time,
        contractions,
    )
    stored = shared_store.events(done.id)[1:-1]
    assert [(e.kind, e.state, e.monotonic_ns, e.data) for e in stored] == [
        (ev.kind, ev.state, ev.monotonic_ns, dict(ev.data)) for ev in recorded
    ]
    assert [chain.parse_wall_time(e.wall_time) for e in stored] == [ev.wall_time for ev in recorded]
    verdict = shared_store.verify(done.id)
    assert verdict.ok
    assert verdict.count == len(recorded) + 2


# --- the chain -----------------------------------------------------------------------------

GENESIS = chain.header_hash({"uid": "property"})


def link_all(recorded: list[SessionEvent]) -> list[chain.ChainedEvent]:
    linked, prev = [], GENESIS
    for i, ev in enumerate(recorded):
        c = chain.link(
            i,
            prev,
            kind=ev.kind,
            state=ev.state,
            monotonic_ns=ev.monotonic_ns,
            wall_time=ev.wall_time,
            data=ev.data,
        )
        linked.append(c)
        prev = c.hash
    return linked


@given(st.lists(events, max_size=12))
def test_the_chain_verifies_for_any_sequence_of_events(recorded: list[SessionEvent]) -> None:
    linked = link_all(recorded)
    head = linked[-1].hash if linked else GENESIS
    verdict = chain.verify(GENESIS, linked, expected_count=len(linked), expected_head=head)
    assert verdict.ok
    assert verdict.head_hash == head


FIELDS = [f.name for f in dataclasses.fields(chain.ChainedEvent)]


@st.composite
def alterations(draw: st.DrawFn) -> tuple[list[chain.ChainedEvent], int, str, object]:
    linked = link_all(draw(st.lists(events, min_size=1, max_size=8)))
    index = draw(st.integers(0, len(linked) - 1))
    field = draw(st.sampled_from(FIELDS))
    old = getattr(linked[index], field)
    if isinstance(old, int):
        new: object = draw(st.integers(0, 2**62).filter(lambda v: v != old))
    else:
        new = draw(st.text(max_size=80).filter(lambda v: v != old))
    return linked, index, field, new


@given(alterations())
def test_any_single_alteration_of_any_field_is_found_at_that_event(
    case: tuple[list[chain.ChainedEvent], int, str, object],
) -> None:
    linked, index, field, new = case
    head = linked[-1].hash
    altered = list(linked)
    altered[index] = dataclasses.replace(linked[index], **{field: new})
    verdict = chain.verify(GENESIS, altered, expected_count=len(linked), expected_head=head)
    assert not verdict.ok
    assert verdict.broken is not None
    assert verdict.broken.sequence == index


COLUMNS = {
    "sequence": st.integers(10_000, 20_000),
    "kind": names,
    "state": st.text(max_size=20),
    "monotonic_ns": st.integers(0, 2**62),
    "wall_time": wall_times.map(chain.wall_time_text),
    "data_json": st.text(max_size=40),
    "prev_sha256": st.text("0123456789abcdef", min_size=64, max_size=64),
    "sha256": st.text("0123456789abcdef", min_size=64, max_size=64),
}


@STORE_EXAMPLES
@given(
    recorded=st.lists(events, min_size=1, max_size=5),
    data=st.data(),
)
def test_any_raw_sql_edit_of_a_stored_event_is_named_by_verify(
    shared_store: Store, recorded: list[SessionEvent], data: st.DataObject
) -> None:
    record = new_course(shared_store)
    recorder = shared_store.begin_session(session_start(record))
    for ev in recorded:
        recorder.append(ev)
    done = recorder.finish(Outcome.COMPLETED, "property", SessionSummary())
    stored = shared_store.events(done.id)
    index = data.draw(st.integers(0, len(stored) - 1), label="event")
    column = data.draw(st.sampled_from(sorted(COLUMNS)), label="column")
    mapped = {"prev_sha256": "prev_hash", "sha256": "hash"}.get(column, column)
    old = getattr(stored[index], mapped)
    new = data.draw(COLUMNS[column].filter(lambda v: v != old), label="new value")
    with shared_store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS session_event_no_update")
        conn.exec_driver_sql(
            f"UPDATE session_event SET {column} = ? WHERE session_id = ? AND sequence = ?",
            (new, done.id, stored[index].sequence),
        )
    verdict = shared_store.verify(done.id)
    assert not verdict.ok
    assert verdict.broken is not None
    assert verdict.broken.sequence == index
