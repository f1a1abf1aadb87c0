"""A patient's progress report, as data: adherence, trends, amplitude, incidents, flags.

Pure: :func:`build_report` turns records into a :class:`Report`; the terminal
(:mod:`estim.records.report_text`) and HTML (:mod:`estim.records.report_html`)
renderings only draw it, and ``--json`` prints it as it is. Targets come from the
leaflet: hold 10 s, 8-12 repetitions, the starting block 4-6 times a day.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from pydantic import Field

from estim.protocols.models import Frozen
from estim.records.decisions import counts_toward_dose, eligibility_changes
from estim.records.diary import (
    BLOCKS_TARGET_MAX,
    BLOCKS_TARGET_MIN,
    HOLD_MAX_S,
    MAINTENANCE_SETS,
    REPETITIONS_TARGET_MAX,
    REPETITIONS_TARGET_MIN,
    DiaryEntry,
    Programme,
)
from estim.records.findings import Finding
from estim.records.models import (
    Outcome,
    OverrideRecord,
    Patient,
    PrescriptionRecord,
    SessionRecord,
)
from estim.units import ua_to_ma

REPORT_FORMAT = "estim-report/1"
DIARY_GAP_DAYS = 3
"""A run of this many days without a diary entry is flagged [I]: the leaflet's programme
is daily, and three missing days is more than a forgotten evening."""
REPEATED_INCIDENTS = 2
INCIDENT_WINDOW_DAYS = 14
INCOMPLETE = (Outcome.ABORTED, Outcome.FAULT, Outcome.INTERRUPTED)


def _one_decimal(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def week_start(day: date) -> date:
    """The Monday of the ISO week a day falls in."""
    return day - timedelta(days=day.weekday())


class Targets(Frozen):
    hold_s: int = HOLD_MAX_S
    repetitions_min: int = REPETITIONS_TARGET_MIN
    repetitions_max: int = REPETITIONS_TARGET_MAX
    blocks_min: int = BLOCKS_TARGET_MIN
    blocks_max: int = BLOCKS_TARGET_MAX


class CourseAdherence(Frozen):
    course_id: int
    protocol: str
    start_date: date
    end_date: date | None
    days_in_period: int
    sessions_per_day: int
    sessions_per_week: int
    max_amplitude_ma: Decimal
    expected_sessions: Decimal
    completed: int
    stopped: int
    incomplete: int  # aborted, fault, interrupted
    open: int

    @property
    def done(self) -> int:
        return self.completed + self.stopped

    @property
    def adherence_pct(self) -> int | None:
        if self.expected_sessions <= 0:
            return None
        return int((Decimal(100) * self.done / self.expected_sessions).to_integral_value())


class ExerciseAdherence(Frozen):
    days_in_period: int
    days_recorded: int
    days_on_target: int  # at least the leaflet's 4 blocks (or 3 maintenance sets)
    days_above_target: int
    mean_blocks_per_day: Decimal | None


class WeekTrend(Frozen):
    week_start: date
    days_recorded: int
    mean_hold_s: Decimal
    max_hold_s: int
    mean_repetitions: Decimal
    max_repetitions: int
    mean_blocks: Decimal
    leakage_episodes: int


class DayBlocks(Frozen):
    day: date
    blocks_done: int | None  # None: nothing recorded


class SessionWeek(Frozen):
    week_start: date
    sessions: int  # counted toward the dose
    prescribed: int  # sessions_per_week of the course(s) active that week (0: none)


class AmplitudePoint(Frozen):
    session_id: int
    day: date
    amplitude_ma: Decimal
    ceiling_ma: Decimal | None
    outcome: Outcome | None


class Incident(Frozen):
    session_id: int
    day: date
    outcome: Outcome
    reason: str


class FlagLevel(StrEnum):
    ATTENTION = "attention"
    NOTE = "note"


class Flag(Frozen):
    code: str
    level: FlagLevel
    day: date | None
    message: str


class Report(Frozen):
    format: str = REPORT_FORMAT
    patient: Patient
    generated_at: datetime
    period_start: date
    period_end: date
    targets: Targets = Field(default_factory=Targets)
    courses: list[CourseAdherence]
    exercise: ExerciseAdherence
    trend: list[WeekTrend]
    daily_blocks: list[DayBlocks]
    session_weeks: list[SessionWeek]
    amplitude: list[AmplitudePoint]
    incidents: list[Incident]
    flags: list[Flag]
    sessions_total: int


def build_report(
    *,
    patient: Patient,
    courses: Sequence[PrescriptionRecord],
    diary: Sequence[DiaryEntry],
    sessions: Sequence[SessionRecord],
    overrides: Sequence[OverrideRecord] = (),
    active_findings: Sequence[Finding] = (),
    generated_at: datetime,
    start: date | None = None,
    end: date,
) -> Report:
    """Everything the report shows, for ``start``..``end`` (default: since the first record)."""
    if start is None:
        firsts = [e.day for e in diary] + [s.diary_day for s in sessions]
        firsts += [c.prescription.start_date for c in courses]
        start = min([d for d in firsts if d <= end], default=end)
    if start > end:
        raise ValueError(f"report period starts {start}, after it ends {end}")
    diary = [e for e in diary if start <= e.day <= end]
    sessions = [s for s in sessions if start <= s.diary_day <= end]
    course_rows = [_course(c, sessions, start, end) for c in courses]
    course_rows = [c for c in course_rows if c is not None]
    return Report(
        patient=patient,
        generated_at=generated_at,
        period_start=start,
        period_end=end,
        courses=course_rows,
        exercise=_exercise(diary, start, end),
        trend=_trend(diary),
        daily_blocks=_daily_blocks(diary, start, end),
        session_weeks=_session_weeks(courses, sessions, start, end),
        amplitude=_amplitude(courses, sessions),
        incidents=[
            Incident(session_id=s.id, day=s.diary_day, outcome=s.outcome, reason=s.reason or "")
            for s in sessions
            if s.outcome in INCOMPLETE and s.outcome is not None
        ],
        flags=_flags(
            courses,
            diary=diary,
            sessions=sessions,
            overrides=overrides,
            active_findings=active_findings,
            start=start,
            end=end,
        ),
        sessions_total=len(sessions),
    )


def _course(
    record: PrescriptionRecord, sessions: Sequence[SessionRecord], start: date, end: date
) -> CourseAdherence | None:
    p = record.prescription
    first = max(p.start_date, start)
    last = min(p.end_date or end, end)
    if first > last:
        return None
    days = (last - first).days + 1
    protocol = record.effective_protocol
    mine = [s for s in sessions if s.prescription_id == record.id]
    expected = min(
        Decimal(protocol.sessions_per_week * days) / 7, Decimal(protocol.sessions_per_day * days)
    )
    return CourseAdherence(
        course_id=record.id,
        protocol=f"{protocol.id} v{protocol.version}",
        start_date=p.start_date,
        end_date=p.end_date,
        days_in_period=days,
        sessions_per_day=protocol.sessions_per_day,
        sessions_per_week=protocol.sessions_per_week,
        max_amplitude_ma=p.max_amplitude_ma,
        expected_sessions=_one_decimal(expected),
        completed=sum(1 for s in mine if s.outcome is Outcome.COMPLETED),
        stopped=sum(1 for s in mine if s.outcome is Outcome.STOPPED),
        incomplete=sum(1 for s in mine if s.outcome in INCOMPLETE),
        open=sum(1 for s in mine if s.outcome is None),
    )


def _on_target(e: DiaryEntry) -> bool:
    if e.programme is Programme.MAINTENANCE:
        return e.blocks_done >= MAINTENANCE_SETS
    return e.blocks_done >= BLOCKS_TARGET_MIN


def _exercise(diary: Sequence[DiaryEntry], start: date, end: date) -> ExerciseAdherence:
    recorded = len(diary)
    mean = None
    if recorded:
        mean = _one_decimal(Decimal(sum(e.blocks_done for e in diary)) / recorded)
    return ExerciseAdherence(
        days_in_period=(end - start).days + 1,
        days_recorded=recorded,
        days_on_target=sum(1 for e in diary if _on_target(e)),
        days_above_target=sum(1 for e in diary if e.blocks_done > BLOCKS_TARGET_MAX),
        mean_blocks_per_day=mean,
    )


def _trend(diary: Sequence[DiaryEntry]) -> list[WeekTrend]:
    weeks: dict[date, list[DiaryEntry]] = {}
    for e in diary:
        weeks.setdefault(week_start(e.day), []).append(e)
    trend = []
    for monday in sorted(weeks):
        days = weeks[monday]
        n = len(days)
        trend.append(
            WeekTrend(
                week_start=monday,
                days_recorded=n,
                mean_hold_s=_one_decimal(Decimal(sum(e.hold_s for e in days)) / n),
                max_hold_s=max(e.hold_s for e in days),
                mean_repetitions=_one_decimal(Decimal(sum(e.repetitions for e in days)) / n),
                max_repetitions=max(e.repetitions for e in days),
                mean_blocks=_one_decimal(Decimal(sum(e.blocks_done for e in days)) / n),
                leakage_episodes=sum(e.leakage_episodes for e in days),
            )
        )
    return trend


def _daily_blocks(diary: Sequence[DiaryEntry], start: date, end: date) -> list[DayBlocks]:
    by_day = {e.day: e.blocks_done for e in diary}
    out = []
    day = start
    while day <= end:
        out.append(DayBlocks(day=day, blocks_done=by_day.get(day)))
        day += timedelta(days=1)
    return out


def _session_weeks(
    courses: Sequence[PrescriptionRecord],
    sessions: Sequence[SessionRecord],
    start: date,
    end: date,
) -> list[SessionWeek]:
    weeks = []
    monday = week_start(start)
    while monday <= end:
        sunday = monday + timedelta(days=6)
        count = sum(
            1 for s in sessions if monday <= s.diary_day <= sunday and counts_toward_dose(s)
        )
        prescribed = max(
            (
                c.effective_protocol.sessions_per_week
                for c in courses
                if c.prescription.start_date <= sunday
                and (c.prescription.end_date or date.max) >= monday
            ),
            default=0,
        )
        weeks.append(SessionWeek(week_start=monday, sessions=count, prescribed=prescribed))
        monday += timedelta(days=7)
    return weeks


def _amplitude(
    courses: Sequence[PrescriptionRecord], sessions: Sequence[SessionRecord]
) -> list[AmplitudePoint]:
    ceilings = {c.id: c.prescription.max_amplitude_ma for c in courses}
    return [
        AmplitudePoint(
            session_id=s.id,
            day=s.diary_day,
            amplitude_ma=ua_to_ma(s.confirmed_amplitude_ua),
            ceiling_ma=ceilings.get(s.prescription_id),
            outcome=s.outcome,
        )
        for s in sessions
        if s.confirmed_amplitude_ua is not None
    ]


def _flags(
    courses: Sequence[PrescriptionRecord],
    *,
    diary: Sequence[DiaryEntry],
    sessions: Sequence[SessionRecord],
    overrides: Sequence[OverrideRecord],
    active_findings: Sequence[Finding],
    start: date,
    end: date,
) -> list[Flag]:
    flags: list[Flag] = []
    for e in eligibility_changes(diary):
        flags.append(
            Flag(
                code="ELIGIBILITY-CHANGED",
                level=FlagLevel.ATTENTION,
                day=e.day,
                message=f"the diary first shows voluntary contraction ({e.starting_block}) "
                "after days without: review whether stimulation is still indicated",
            )
        )
    if diary and not eligibility_changes(diary) and diary[0].shows_voluntary_contraction:
        first = diary[0]
        flags.append(
            Flag(
                code="ELIGIBILITY-CHANGED",
                level=FlagLevel.ATTENTION,
                day=first.day,
                message=f"the diary shows voluntary contraction ({first.starting_block}) from "
                "its first day in this period: review the indication",
            )
        )
    flags.extend(_override_flags([o for o in overrides if start <= o.recorded_at.date() <= end]))
    flags.extend(_missed_sessions(courses, sessions, end))
    flags.extend(_diary_gaps(diary, end))
    recent = [
        s
        for s in sessions
        if s.outcome in INCOMPLETE and (end - s.diary_day).days < INCIDENT_WINDOW_DAYS
    ]
    if len(recent) >= REPEATED_INCIDENTS:
        flags.append(
            Flag(
                code="REPEATED-INCIDENTS",
                level=FlagLevel.ATTENTION,
                day=recent[-1].diary_day,
                message=f"{len(recent)} sessions aborted, faulted or interrupted in the last "
                f"{INCIDENT_WINDOW_DAYS} days: check the device, the electrode and the patient",
            )
        )
    for f in active_findings:
        if f.blocks:
            message = f"a session today is blocked: {f.message}"
            flags.append(Flag(code=f.code, level=FlagLevel.ATTENTION, day=None, message=message))
    flags.sort(key=lambda f: (f.level != FlagLevel.ATTENTION, f.day or date.max))
    return flags


def _override_flags(overrides: Sequence[OverrideRecord]) -> list[Flag]:
    """One flag per decision (same clinician, finding and reason), however many sessions
    it let go ahead."""
    groups: dict[tuple[str, str, str], list[OverrideRecord]] = {}
    for o in overrides:
        groups.setdefault((o.clinician, o.finding_code, o.reason), []).append(o)
    flags = []
    for (clinician, code, reason), items in groups.items():
        first, last = items[0].recorded_at.date(), items[-1].recorded_at.date()
        span = f"on {first}" if first == last else f"from {first} to {last}"
        times = "once" if len(items) == 1 else f"for {len(items)} sessions"
        flags.append(
            Flag(
                code="ELIGIBILITY-OVERRIDE",
                level=FlagLevel.NOTE,
                day=first,
                message=f"{clinician} overrode {code} {times} {span}: {reason}",
            )
        )
    return flags


def _missed_sessions(
    courses: Sequence[PrescriptionRecord], sessions: Sequence[SessionRecord], end: date
) -> list[Flag]:
    """Whole weeks of a course with fewer sessions than prescribed; a run of such weeks
    is one flag."""
    flags = []
    for c in courses:
        p = c.prescription
        per_week = c.effective_protocol.sessions_per_week
        monday = week_start(p.start_date)
        if monday < p.start_date:
            monday += timedelta(days=7)  # only whole weeks inside the course
        last = min(p.end_date or end, end)
        short: list[tuple[date, int]] = []
        while monday + timedelta(days=6) <= last:
            sunday = monday + timedelta(days=6)
            done = sum(
                1
                for s in sessions
                if s.prescription_id == c.id
                and monday <= s.diary_day <= sunday
                and s.outcome in (Outcome.COMPLETED, Outcome.STOPPED)
            )
            if done < per_week:
                short.append((monday, done))
            monday += timedelta(days=7)
        for run in _consecutive_weeks(short):
            first = run[0][0]
            if len(run) == 1:
                message = f"week of {first}: {run[0][1]} of {per_week} prescribed sessions"
            else:
                counts = ", ".join(str(done) for _, done in run)
                message = (
                    f"{len(run)} weeks in a row below the prescribed {per_week} a week, from "
                    f"{first} to {run[-1][0] + timedelta(days=6)}: {counts} sessions"
                )
            flags.append(
                Flag(
                    code="MISSED-SESSIONS",
                    level=FlagLevel.ATTENTION,
                    day=first,
                    message=f"{message} (course #{c.id})",
                )
            )
    return flags


def _consecutive_weeks(weeks: list[tuple[date, int]]) -> list[list[tuple[date, int]]]:
    runs: list[list[tuple[date, int]]] = []
    for week in weeks:
        if runs and week[0] - runs[-1][-1][0] == timedelta(days=7):
            runs[-1].append(week)
        else:
            runs.append([week])
    return runs


def _diary_gaps(diary: Sequence[DiaryEntry], end: date) -> list[Flag]:
    if not diary:
        return []
    days = [*sorted(e.day for e in diary), end + timedelta(days=1)]
    flags = []
    for before, after in itertools.pairwise(days):
        missing = (after - before).days - 1
        if missing >= DIARY_GAP_DAYS:
            flags.append(
                Flag(
                    code="DIARY-GAP",
                    level=FlagLevel.NOTE,
                    day=before + timedelta(days=1),
                    message=f"no diary entries for {missing} days from "
                    f"{before + timedelta(days=1)}",
                )
            )
    return flags
