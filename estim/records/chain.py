"""The hash chain over a session's events: canonical form, linking, verification.

Pure functions, no database. Each event's hash is the SHA-256 of a canonical JSON
serialization of its sequence number, the previous event's hash, and its own content
(kind, controller state, monotonic nanoseconds, wall time, data). The first event links
to the hash of the session header, so altering the header (patient, prescription,
protocol or device) breaks the chain at event 0 too.

Canonical means: keys sorted, no whitespace, ASCII only, integers only (floats hash
differently across platforms and are refused), wall time as UTC ISO-8601 with
microseconds and a ``Z``. Anyone can re-check an exported log with ``hashlib`` and
``json`` alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from estim.errors import RecordsError

HASH_HEX_LEN = 64
NAME_MAX_CHARS = 64  # kind and state: the width of their columns


def canonical(value: Any) -> str:
    """Canonical JSON text of a JSON-safe value."""
    _check_json_safe(value, "data")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def wall_time_text(moment: datetime) -> str:
    """UTC ISO-8601 with microseconds and ``Z``; naive datetimes are refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise RecordsError(
            f"wall time {moment.isoformat()} has no time zone; give an aware datetime "
            "(e.g. datetime.now(UTC))"
        )
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_wall_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def header_hash(header: Mapping[str, Any]) -> str:
    """Hash of the session header: the genesis link of its event chain."""
    return sha256_hex(canonical({"session_header": dict(header)}))


@dataclass(frozen=True, slots=True)
class ChainedEvent:
    """One event as stored: its content, its place in the chain, and its hashes."""

    sequence: int
    prev_hash: str
    kind: str
    state: str
    monotonic_ns: int
    wall_time: str  # canonical text, see wall_time_text
    data_json: str  # canonical JSON text of the data
    hash: str

    @property
    def data(self) -> Any:
        return json.loads(self.data_json)


def event_hash(
    sequence: int,
    prev_hash: str,
    *,
    kind: str,
    state: str,
    monotonic_ns: int,
    wall_time: str,
    data: Any,
) -> str:
    body = {
        "sequence": sequence,
        "prev_hash": prev_hash,
        "kind": kind,
        "state": state,
        "monotonic_ns": monotonic_ns,
        "wall_time": wall_time,
        "data": data,
    }
    return sha256_hex(canonical(body))


def link(
    sequence: int,
    prev_hash: str,
    *,
    kind: str,
    state: str,
    monotonic_ns: int,
    wall_time: datetime,
    data: Mapping[str, Any],
) -> ChainedEvent:
    """The next link of a chain: canonical content plus its hash."""
    if not isinstance(kind, str) or not 0 < len(kind) <= NAME_MAX_CHARS:
        raise RecordsError(
            f"event kind must be a string of 1-{NAME_MAX_CHARS} characters, got {kind!r}"
        )
    if not isinstance(state, str) or len(state) > NAME_MAX_CHARS:
        raise RecordsError(
            f"event state must be a string of at most {NAME_MAX_CHARS} characters, got {state!r}"
        )
    if isinstance(monotonic_ns, bool) or not isinstance(monotonic_ns, int):
        raise RecordsError(f"monotonic_ns must be an integer, got {monotonic_ns!r}")
    content = dict(data)
    data_json = canonical(content)
    when = wall_time_text(wall_time)
    digest = event_hash(
        sequence,
        prev_hash,
        kind=kind,
        state=state,
        monotonic_ns=monotonic_ns,
        wall_time=when,
        data=content,
    )
    return ChainedEvent(sequence, prev_hash, kind, state, monotonic_ns, when, data_json, digest)


@dataclass(frozen=True, slots=True)
class BrokenLink:
    """The first place the chain fails, and why."""

    sequence: int
    reason: str

    def __str__(self) -> str:
        return f"event #{self.sequence}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ChainVerdict:
    count: int
    head_hash: str  # hash of the last event, or the header hash for an empty log
    broken: BrokenLink | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None


def verify(
    genesis: str,
    events: Sequence[ChainedEvent],
    *,
    expected_count: int | None = None,
    expected_head: str | None = None,
) -> ChainVerdict:
    """Check every link; report the first that fails.

    ``expected_count`` and ``expected_head`` come from the session row, which the store
    updates in the same transaction as each append: they catch events removed from the
    end, which the links alone cannot.
    """
    prev = genesis
    for position, ev in enumerate(events):
        broken = _check_one(position, prev, ev)
        if broken is not None:
            return ChainVerdict(position, prev, broken)
        prev = ev.hash
    count = len(events)
    if expected_count is not None and expected_count != count:
        at = min(count, expected_count)
        return ChainVerdict(
            count,
            prev,
            BrokenLink(
                at,
                f"the session records {expected_count} events but the log holds {count}: "
                + ("events are missing from the end" if count < expected_count else "extra events"),
            ),
        )
    if expected_head is not None and expected_head != prev:
        return ChainVerdict(
            count,
            prev,
            BrokenLink(
                max(count - 1, 0),
                f"the last event's hash {prev[:12]} is not the head hash the session "
                f"recorded ({expected_head[:12]})",
            ),
        )
    return ChainVerdict(count, prev)


def _check_one(position: int, prev: str, ev: ChainedEvent) -> BrokenLink | None:
    if ev.sequence != position:
        return BrokenLink(position, f"sequence number is {ev.sequence}, expected {position}")
    if ev.prev_hash != prev:
        what = "the session header" if position == 0 else f"event #{position - 1}"
        return BrokenLink(
            position,
            f"previous-hash {ev.prev_hash[:12]} does not match {what} ({prev[:12]})",
        )
    try:
        data = json.loads(ev.data_json)
        recomputed = event_hash(
            ev.sequence,
            ev.prev_hash,
            kind=ev.kind,
            state=ev.state,
            monotonic_ns=ev.monotonic_ns,
            wall_time=ev.wall_time,
            data=data,
        )
        if ev.data_json != canonical(data):
            return BrokenLink(position, "data is not in canonical form (edited by hand?)")
    except (ValueError, RecordsError) as err:
        return BrokenLink(position, f"data is not valid canonical JSON ({err})")
    if recomputed != ev.hash:
        return BrokenLink(
            position,
            f"content does not match its hash (stored {ev.hash[:12]}, computed "
            f"{recomputed[:12]}): the event was altered",
        )
    return None


def _check_json_safe(value: Any, where: str) -> None:
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        return
    if isinstance(value, float):
        raise RecordsError(
            f"{where}: float {value!r} in event data; use integers with units in the key "
            "(e.g. amplitude_ua) so the log hashes the same everywhere"
        )
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_json_safe(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise RecordsError(f"{where}: key {key!r} is not a string")
            _check_json_safe(item, f"{where}.{key}")
        return
    raise RecordsError(
        f"{where}: {type(value).__name__} is not JSON-safe; use str, int, bool, None, "
        "lists and dicts"
    )
