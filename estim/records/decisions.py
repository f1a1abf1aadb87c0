"""Decisions the diary and the session history drive. Pure functions over records.

**Eligibility.** Electrostimulation is for patients who cannot contract the pelvic
floor voluntarily (leaflet: "it does not work for women who can already contract
their pelvic floor somewhat"). The diary is the evidence: a starting block with a hold
time and repetitions is a voluntary contraction, so the preflight blocks and says when
and what was recorded. A clinician may override with a reason; the override is logged.

**Dose.** How many sessions the patient already had today and in the last seven days,
which the controller's dose interlock holds against the prescription's limits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from estim.records.diary import DiaryEntry
from estim.records.findings import Finding, Severity
from estim.records.models import EligibilityOverride, SessionRecord

ELIGIBILITY_LOOKBACK_DAYS = 28
"""Diary days considered for eligibility [I]: four weeks, long enough that a good week
is not missed, short enough that an entry from before the nerve injury is not."""

DOSE_WINDOW_DAYS = 7
"""The week for ``sessions_per_week`` is a rolling seven days ending today [I]: a calendar
week would allow a full week's dose on Sunday and another on Monday."""


@dataclass(frozen=True, slots=True)
class EligibilityEvidence:
    """The diary entries that show voluntary contraction, newest first."""

    entries: tuple[DiaryEntry, ...]

    @property
    def latest(self) -> DiaryEntry | None:
        return self.entries[0] if self.entries else None


def contraction_evidence(
    entries: Iterable[DiaryEntry], *, today: date, lookback_days: int = ELIGIBILITY_LOOKBACK_DAYS
) -> EligibilityEvidence:
    since = today - timedelta(days=lookback_days)
    shown = [e for e in entries if since <= e.day <= today and e.shows_voluntary_contraction]
    shown.sort(key=lambda e: e.day, reverse=True)
    return EligibilityEvidence(tuple(shown))


def eligibility_findings(
    entries: Iterable[DiaryEntry],
    *,
    today: date,
    override: EligibilityOverride | None = None,
    lookback_days: int = ELIGIBILITY_LOOKBACK_DAYS,
) -> list[Finding]:
    """Block when the recent diary shows voluntary contractions, unless overridden."""
    entries = list(entries)
    evidence = contraction_evidence(entries, today=today, lookback_days=lookback_days)
    findings: list[Finding] = []
    latest = evidence.latest
    if latest is not None:
        count = len(evidence.entries)
        days = "day" if count == 1 else "days"
        what = (
            f"on {latest.day} the diary records a starting block of {latest.hold_s} s x "
            f"{latest.repetitions} (voluntary contractions; {count} {days} with a starting "
            f"block in the last {lookback_days} days)"
        )
        if override is None:
            findings.append(
                Finding(
                    "ELIG-VOLUNTARY",
                    Severity.BLOCK,
                    what + "; electrostimulation is indicated only for patients who cannot "
                    "contract voluntarily",
                    fix="review the indication; a clinician may override with a reason "
                    "(it is logged)",
                    overridable=True,
                )
            )
        else:
            findings.append(
                Finding(
                    "ELIG-OVERRIDDEN",
                    Severity.WARN,
                    f"{what}; overridden by {override.clinician}: {override.reason}",
                )
            )
    since = today - timedelta(days=lookback_days)
    fast = [e for e in entries if since <= e.day <= today and e.fast_contractions > 0]
    if fast and latest is None:
        newest = max(fast, key=lambda e: e.day)
        findings.append(
            Finding(
                "ELIG-FAST",
                Severity.WARN,
                f"on {newest.day} the diary records {newest.fast_contractions} fast "
                "contractions but no starting block: check whether the patient can "
                "contract voluntarily",
            )
        )
    return findings


def eligibility_changes(entries: Iterable[DiaryEntry]) -> list[DiaryEntry]:
    """Diary days where voluntary contraction first appears after days without it."""
    changes = []
    previous: bool | None = None
    for e in sorted(entries, key=lambda e: e.day):
        now = e.shows_voluntary_contraction
        if now and previous is False:
            changes.append(e)
        previous = now
    return changes


@dataclass(frozen=True, slots=True)
class DoseCount:
    """Sessions that count toward the dose: today, and in the rolling week ending today.

    The controller's dose interlock takes ``sessions_today`` and ``sessions_this_week``
    as they are (``estim.safety.interlocks.DoseReading``).
    """

    day: date
    sessions_today: int
    sessions_this_week: int
    window_start: date

    def findings(self, *, sessions_per_day: int, sessions_per_week: int) -> list[Finding]:
        found = []
        if self.sessions_today >= sessions_per_day:
            found.append(
                Finding(
                    "DOSE-DAY",
                    Severity.BLOCK,
                    f"{self.sessions_today} session(s) already on {self.day}; the "
                    f"prescription allows {sessions_per_day} a day",
                    fix="the next session can start tomorrow",
                )
            )
        if self.sessions_this_week >= sessions_per_week:
            found.append(
                Finding(
                    "DOSE-WEEK",
                    Severity.BLOCK,
                    f"{self.sessions_this_week} session(s) from {self.window_start} to "
                    f"{self.day}; the prescription allows {sessions_per_week} in seven days",
                    fix="wait until the oldest of them is more than seven days ago",
                )
            )
        return found


def counts_toward_dose(record: SessionRecord) -> bool:
    """Every session counts unless it is known to have delivered nothing.

    An interrupted session's delivery is unknown, so it counts (the safe side); so does
    a session still open in another process.
    """
    return not record.delivered_nothing


def dose_count(sessions: Sequence[SessionRecord], *, day: date) -> DoseCount:
    """Count the patient's sessions by their diary day (all of the patient's courses:
    a course replaced today must not double today's dose)."""
    window_start = day - timedelta(days=DOSE_WINDOW_DAYS - 1)
    counted = [s for s in sessions if counts_toward_dose(s)]
    today = sum(1 for s in counted if s.diary_day == day)
    week = sum(1 for s in counted if window_start <= s.diary_day <= day)
    return DoseCount(
        day=day, sessions_today=today, sessions_this_week=week, window_start=window_start
    )
