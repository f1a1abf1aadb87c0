"""Eligibility and dose decisions from the diary and the session history (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from estim.records.decisions import (
    contraction_evidence,
    dose_count,
    eligibility_changes,
    eligibility_findings,
)
from estim.records.diary import DiaryEntry
from estim.records.findings import Severity
from estim.records.models import DeviceRecord, EligibilityOverride, Outcome, SessionRecord

TODAY = date(2024, 5, 20)


def day(days_ago: int, hold: int = 0, reps: int = 0, fast: int = 0) -> DiaryEntry:
    return DiaryEntry(
        day=TODAY - timedelta(days=days_ago),
        hold_s=hold,
        repetitions=reps,
        blocks_done=4,
        fast_contractions=fast,
    )


def session(
    days_ago: int, outcome: Outcome | None = Outcome.COMPLETED, on_time_us: int | None = 1
) -> SessionRecord:
    when = datetime(2024, 5, 20, 9, tzinfo=UTC) - timedelta(days=days_ago)
    return SessionRecord(
        id=days_ago,
        uid=f"u{days_ago}",
        patient_code="PF-0042",
        prescription_id=1,
        prescription_revision=1,
        prescription_sha256="a" * 64,
        protocol_sha256="a" * 64,
        profile_name="p",
        profile_sha256="a" * 64,
        validation_sha256=None,
        validation=None,
        device=DeviceRecord(model="m", serial_number="s", firmware="1"),
        clinician="Nurse B",
        diary_day=when.date(),
        started_at=when,
        ended_at=None if outcome is None else when,
        outcome=outcome,
        reason=None,
        confirmed_amplitude_ua=None,
        on_time_us=on_time_us,
        contractions=None,
        event_count=1,
        last_event_kind=None,
        last_event_at=None,
        header_sha256="a" * 64,
        last_event_sha256="a" * 64,
        override_id=None,
        owner_host=None,
    )


def test_no_voluntary_contraction_no_finding() -> None:
    assert eligibility_findings([day(1), day(2)], today=TODAY) == []


def test_a_starting_block_blocks_and_says_when_and_what() -> None:
    [finding] = eligibility_findings([day(9, 2, 3), day(3, 4, 6), day(1)], today=TODAY)
    assert finding.code == "ELIG-VOLUNTARY"
    assert finding.blocks
    assert finding.overridable
    assert "on 2024-05-17" in finding.message
    assert "4 s x 6" in finding.message
    assert "2 days" in finding.message


def test_an_override_turns_the_block_into_a_logged_warning() -> None:
    override = EligibilityOverride(reason="EMG shows partial denervation", clinician="Dr. V")
    [finding] = eligibility_findings([day(3, 4, 6)], today=TODAY, override=override)
    assert finding.code == "ELIG-OVERRIDDEN"
    assert finding.severity is Severity.WARN
    assert "Dr. V" in finding.message
    assert "EMG shows partial denervation" in finding.message


def test_only_the_lookback_window_counts() -> None:
    old = [day(40, 3, 3)]
    assert eligibility_findings(old, today=TODAY) == []
    assert eligibility_findings(old, today=TODAY, lookback_days=60)[0].code == "ELIG-VOLUNTARY"
    assert contraction_evidence(old, today=TODAY).latest is None


def test_fast_contractions_without_a_starting_block_warn() -> None:
    [finding] = eligibility_findings([day(2, fast=10)], today=TODAY)
    assert finding.code == "ELIG-FAST"
    assert finding.severity is Severity.WARN


def test_eligibility_changes_are_the_first_days_with_contraction_after_days_without() -> None:
    entries = [day(5), day(4, 1, 2), day(3, 2, 2), day(2), day(1, 3, 3)]
    assert [e.day for e in eligibility_changes(entries)] == [
        TODAY - timedelta(days=4),
        TODAY - timedelta(days=1),
    ]


def test_dose_counts_today_and_a_rolling_week() -> None:
    count = dose_count([session(0), session(2), session(6), session(7)], day=TODAY)
    assert (count.sessions_today, count.sessions_this_week) == (1, 3)
    assert count.window_start == TODAY - timedelta(days=6)


def test_sessions_of_unknown_delivery_count_and_empty_ones_do_not() -> None:
    sessions = [
        session(0, Outcome.INTERRUPTED, on_time_us=None),
        session(0, Outcome.INTERRUPTED, on_time_us=0),  # checkpointed before it died
        session(0, None, on_time_us=None),  # still open elsewhere
        session(0, Outcome.ABORTED, on_time_us=0),  # delivered nothing
    ]
    assert dose_count(sessions, day=TODAY).sessions_today == 3


def test_dose_findings_block_at_the_limits() -> None:
    count = dose_count([session(0), session(1)], day=TODAY)
    assert [f.code for f in count.findings(sessions_per_day=1, sessions_per_week=5)] == ["DOSE-DAY"]
    assert [f.code for f in count.findings(sessions_per_day=2, sessions_per_week=2)] == [
        "DOSE-WEEK"
    ]
    assert count.findings(sessions_per_day=2, sessions_per_week=3) == []
