"""The progress report: its numbers, its flags, and its renderings."""

from __future__ import annotations

import re
from datetime import timedelta

from records_helpers import (
    CODE,
    TODAY,
    Clock,
    clock_fixture,  # noqa: F401  (fixture "clock")
    ready_course,
    run_session,
    store_fixture,  # noqa: F401  (fixture "store")
)
from rich.console import Console

from estim.records.diary import DiaryEntry
from estim.records.models import EligibilityOverride, Outcome
from estim.records.report import Report, build_report
from estim.records.report_html import render_html
from estim.records.report_text import render, sparkline
from estim.records.store import Store


def history(store: Store, clock: Clock) -> Report:
    """Two weeks lived day by day: the diary improves from nothing to 4 s x 6 on day 10;
    sessions on days 2, 5, 8 and 11 end completed, fault, interrupted and stopped."""
    start = TODAY - timedelta(days=14)
    clock.now = clock.now - timedelta(days=14)
    record = ready_course(store)  # stress, 5 a week, from TODAY - 14
    override = EligibilityOverride(
        reason="EMG: partial denervation <i>&</i>", clinician="Dr. A. Visser"
    )
    outcomes = {2: Outcome.COMPLETED, 5: Outcome.FAULT, 8: Outcome.INTERRUPTED, 11: Outcome.STOPPED}
    for n in range(15):
        assert clock.today() == start + timedelta(days=n)
        if n < 14:
            hold, reps = (0, 0) if n < 10 else (4, 6)
            entry = DiaryEntry(
                day=clock.today(), hold_s=hold, repetitions=reps, blocks_done=3 + n % 4,
                leakage_episodes=1 if n % 5 == 0 else 0, notes="<b>not html</b>",
            )  # fmt: skip
            store.add_diary(CODE, [entry])
        if n in outcomes:
            run_session(
                store, record, outcome=outcomes[n], amplitude_ua=10_000 + 500 * n,
                eligibility_override=override if n >= 10 else None,
            )  # fmt: skip
        if n < 14:
            clock.advance(days=1)
    return build_report(
        patient=store.patient(CODE),
        courses=store.prescriptions(CODE),
        diary=store.diary(CODE),
        sessions=store.sessions(CODE),
        overrides=store.overrides(CODE),
        generated_at=clock.now,
        end=TODAY,
    )


def test_adherence_trend_amplitude_and_incidents(store: Store, clock: Clock) -> None:
    report = history(store, clock)
    assert report.period_start == TODAY - timedelta(days=14)  # the course's first day
    [course] = report.courses
    assert (course.completed, course.stopped, course.incomplete) == (1, 1, 2)
    assert course.days_in_period == 15
    assert str(course.expected_sessions) == "10.7"  # 5 a week over 15 days
    assert course.adherence_pct == 19  # completed + stopped: 2 of 10.7
    assert report.exercise.days_recorded == 14
    assert report.exercise.days_on_target == sum(1 for n in range(14) if 3 + n % 4 >= 4)
    assert [w.max_hold_s for w in report.trend] == [0, 4]  # ISO weeks of 6 and 13 May
    assert [str(p.amplitude_ma) for p in report.amplitude] == ["11", "12.5", "14", "15.5"]
    assert {i.outcome for i in report.incidents} == {Outcome.FAULT, Outcome.INTERRUPTED}


def test_flags(store: Store, clock: Clock) -> None:
    report = history(store, clock)
    codes = [f.code for f in report.flags]
    assert "ELIGIBILITY-CHANGED" in codes
    changed = next(f for f in report.flags if f.code == "ELIGIBILITY-CHANGED")
    assert changed.day == TODAY - timedelta(days=4)  # day 10 of the fortnight
    assert "4 s x 6" in changed.message
    [missed] = [f for f in report.flags if f.code == "MISSED-SESSIONS"]
    assert "2 weeks in a row below the prescribed 5 a week" in missed.message  # one flag
    assert "REPEATED-INCIDENTS" in codes
    [override] = [f for f in report.flags if f.code == "ELIGIBILITY-OVERRIDE"]
    assert "overrode ELIG-VOLUNTARY once on" in override.message


def test_terminal_rendering(store: Store, clock: Clock) -> None:
    report = history(store, clock)
    console = Console(record=True, width=120)
    console.print(render(report))
    text = console.export_text()
    assert f"Progress report: {CODE}" in text
    assert "ELIGIBILITY-CHANGED" in text
    assert "Faults and interruptions" in text


def test_sparklines() -> None:
    assert sparkline([0, 5, 10, None], 10) == " ▅█·"
    assert sparkline([20], 10) == "█"


def test_html_is_one_self_contained_file(store: Store, clock: Clock) -> None:
    page = render_html(history(store, clock))
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg ") == 4
    assert "EMG: partial denervation &lt;i&gt;&amp;&lt;/i&gt;" in page  # text, not markup
    # Nothing to fetch: no scripts, links, imports, external URLs or images by reference.
    for pattern in (
        r"<script",
        r"<link",
        r"@import",
        r"url\((?!#)",
        r"\bsrc=",
        r"<img",
        r"<iframe",
    ):
        assert not re.search(pattern, page, re.IGNORECASE), pattern
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert all(h.startswith("#") for h in hrefs), hrefs
    urls = set(re.findall(r"https?://[^\s\"'<>]+", page))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls
    assert "@media print" in page
    assert "@page" in page


def test_html_is_reproducible(store: Store, clock: Clock) -> None:
    report = history(store, clock)
    assert render_html(report) == render_html(report)


def test_an_empty_history_still_renders(store: Store, clock: Clock) -> None:
    store.add_patient(CODE, 1980)
    report = build_report(
        patient=store.patient(CODE), courses=[], diary=[], sessions=[],
        generated_at=clock.now, end=TODAY,
    )  # fmt: skip
    assert report.period_start == TODAY
    assert "No diary days to plot" in render_html(report)
    Console(record=True).print(render(report))
