"""The hash chain, pure: canonical form, links, and what verification catches."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from estim.errors import RecordsError
from estim.records import chain

GENESIS = chain.header_hash({"uid": "u-1", "patient": "PF-0042"})
T0 = datetime(2024, 5, 20, 9, 0, tzinfo=UTC)


def build(n: int) -> list[chain.ChainedEvent]:
    events, prev = [], GENESIS
    for i in range(n):
        ev = chain.link(
            i,
            prev,
            kind="status",
            state="running",
            monotonic_ns=i * 1000,
            wall_time=T0 + timedelta(seconds=i),
            data={"amplitude_ua": i, "nested": {"ok": True, "list": [1, "a", None]}},
        )
        events.append(ev)
        prev = ev.hash
    return events


def test_a_clean_chain_verifies_and_reports_its_head() -> None:
    events = build(5)
    verdict = chain.verify(GENESIS, events, expected_count=5, expected_head=events[-1].hash)
    assert verdict.ok
    assert verdict.count == 5
    assert verdict.head_hash == events[-1].hash


def test_an_empty_log_verifies_to_the_header_hash() -> None:
    verdict = chain.verify(GENESIS, [], expected_count=0, expected_head=GENESIS)
    assert verdict.ok
    assert verdict.head_hash == GENESIS


def test_the_hash_is_plain_sha256_of_canonical_json_so_anyone_can_recheck_it() -> None:
    ev = build(1)[0]
    body = {
        "sequence": 0,
        "prev_hash": GENESIS,
        "kind": "status",
        "state": "running",
        "monotonic_ns": 0,
        "wall_time": "2024-05-20T09:00:00.000000Z",
        "data": json.loads(ev.data_json),
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert ev.hash == hashlib.sha256(text.encode()).hexdigest()


def test_wall_time_is_normalised_to_utc() -> None:
    cet = timezone(timedelta(hours=2))
    assert chain.wall_time_text(datetime(2024, 5, 20, 11, 0, tzinfo=cet)) == (
        "2024-05-20T09:00:00.000000Z"
    )
    assert chain.parse_wall_time("2024-05-20T09:00:00.000000Z") == T0


def test_naive_wall_time_is_refused() -> None:
    with pytest.raises(RecordsError, match="no time zone"):
        chain.wall_time_text(datetime(2024, 5, 20, 9, 0))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"amplitude_ma": 1.5}, "float"),
        ({"x": [1, 2.0]}, "float"),
        ({"x": {1: "a"}}, "not a string"),
        ({"x": object()}, "not JSON-safe"),
    ],
)
def test_event_data_must_be_json_safe_integers(data: dict[str, object], message: str) -> None:
    with pytest.raises(RecordsError, match=message):
        chain.link(0, GENESIS, kind="k", state="s", monotonic_ns=0, wall_time=T0, data=data)


def test_monotonic_time_must_be_an_integer() -> None:
    with pytest.raises(RecordsError, match="monotonic_ns"):
        chain.link(0, GENESIS, kind="k", state="s", monotonic_ns=1.5, wall_time=T0, data={})  # type: ignore[arg-type]
    with pytest.raises(RecordsError, match="kind"):
        chain.link(0, GENESIS, kind="", state="s", monotonic_ns=1, wall_time=T0, data={})


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("kind", "trip", "altered"),
        ("state", "fault", "altered"),
        ("monotonic_ns", 1, "altered"),
        ("wall_time", "2024-05-20T09:00:09.000000Z", "altered"),
        ("data_json", '{"amplitude_ua":99,"nested":{"list":[1,"a",null],"ok":true}}', "altered"),
        ("data_json", "{not json", "not valid canonical JSON"),
        ("data_json", '{"amplitude_ua":2.5}', "not valid canonical JSON"),
        ("hash", "0" * 64, "altered"),
        ("prev_hash", "0" * 64, "previous-hash"),
        ("sequence", 7, "sequence number"),
    ],
)
def test_any_altered_field_is_named_at_its_event(field: str, value: object, expected: str) -> None:
    events = build(4)
    events[2] = dataclasses.replace(events[2], **{field: value})
    verdict = chain.verify(GENESIS, events)
    assert not verdict.ok
    assert verdict.broken is not None
    assert verdict.broken.sequence == 2
    assert expected in verdict.broken.reason


def test_a_removed_event_breaks_the_next_link() -> None:
    events = build(4)
    del events[1]
    verdict = chain.verify(GENESIS, events)
    assert verdict.broken is not None
    assert verdict.broken.sequence == 1


def test_events_missing_from_the_end_are_caught_by_the_recorded_count() -> None:
    events = build(4)
    verdict = chain.verify(GENESIS, events[:3], expected_count=4, expected_head=events[-1].hash)
    assert verdict.broken is not None
    assert "missing from the end" in verdict.broken.reason


def test_a_different_header_breaks_event_zero() -> None:
    events = build(2)
    other = chain.header_hash({"uid": "u-1", "patient": "PF-0043"})
    verdict = chain.verify(other, events)
    assert verdict.broken is not None
    assert verdict.broken.sequence == 0
    assert "session header" in verdict.broken.reason
