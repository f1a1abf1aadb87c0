"""The progress report in a terminal: rich tables and compact sparklines."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from estim.records.models import Outcome
from estim.records.report import FlagLevel, Report

BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | Decimal | int | None], top: float) -> str:
    """One character per value, scaled to ``top``; a gap (no record) is a middle dot."""
    if top <= 0:
        raise ValueError("top must be positive")
    chars = []
    for v in values:
        if v is None:
            chars.append("·")
            continue
        level = min(max(float(v) / top, 0.0), 1.0)
        chars.append(" " if level == 0 else BARS[min(int(level * len(BARS)), len(BARS) - 1)])
    return "".join(chars)


_OUTCOME_STYLE = {
    Outcome.COMPLETED: "green",
    Outcome.STOPPED: "yellow",
    Outcome.ABORTED: "bold red",
    Outcome.FAULT: "bold red",
    Outcome.INTERRUPTED: "red",
}


def render(report: Report) -> RenderableType:
    parts: list[RenderableType] = [
        Text.assemble(
            (f"Progress report: {report.patient.code}", "bold"),
            f"  born {report.patient.year_of_birth}; {report.period_start} to "
            f"{report.period_end}; generated {report.generated_at:%Y-%m-%d %H:%M} UTC",
        )
    ]
    parts.append(_flags(report))
    parts.append(_stimulation(report))
    parts.append(_exercise(report))
    parts.append(_trend(report))
    parts.append(_amplitude(report))
    if report.incidents:
        parts.append(_incidents(report))
    return Group(*parts)


def _flags(report: Report) -> RenderableType:
    if not report.flags:
        return Text("Flags: none", style="green")
    table = Table(title="Flags", title_justify="left")
    table.add_column("", no_wrap=True)
    table.add_column("day", no_wrap=True)
    table.add_column("flag")
    for f in report.flags:
        attention = f.level is FlagLevel.ATTENTION
        table.add_row(
            Text("!" if attention else "·", style="bold red" if attention else "cyan"),
            "" if f.day is None else f.day.isoformat(),
            Text(f"{f.code}: {f.message}"),
        )
    return table


def _stimulation(report: Report) -> RenderableType:
    table = Table(title="Stimulation sessions against the prescription", title_justify="left")
    for column in ("course", "protocol", "days", "expected", "done", "incomplete", "adherence"):
        table.add_column(column, justify="right" if column not in ("protocol",) else "left")
    for c in report.courses:
        pct = c.adherence_pct
        table.add_row(
            f"#{c.course_id}",
            c.protocol,
            str(c.days_in_period),
            f"{c.expected_sessions} ({c.sessions_per_week}/wk)",
            str(c.done),
            str(c.incomplete),
            Text(
                "-" if pct is None else f"{pct} %",
                style="green" if pct is not None and pct >= 80 else "yellow",
            ),
        )
    weeks = report.session_weeks
    top = max([w.prescribed for w in weeks] + [w.sessions for w in weeks] + [1])
    counts = " ".join(str(w.sessions) for w in weeks[-12:])
    line = Text.assemble(
        "sessions per week  ",
        (sparkline([w.sessions for w in weeks], top), "bold"),
        f"  {counts} (prescribed up to {max((w.prescribed for w in weeks), default=0)} a week)",
    )
    return Group(table if report.courses else Text("no course in this period"), line)


def _exercise(report: Report) -> RenderableType:
    e = report.exercise
    t = report.targets
    mean = "-" if e.mean_blocks_per_day is None else str(e.mean_blocks_per_day)
    blocks = [d.blocks_done for d in report.daily_blocks[-56:]]
    return Group(
        Text("Exercise diary", style="bold italic"),
        Text(
            f"{e.days_recorded} of {e.days_in_period} days recorded; {e.days_on_target} on "
            f"target ({t.blocks_min}-{t.blocks_max} blocks a day), {e.days_above_target} "
            f"above; mean {mean} blocks a day"
        ),
        Text.assemble(
            "blocks per day     ",
            (sparkline(blocks, t.blocks_max), "bold"),
            f"  (last {len(blocks)} days; · = not recorded)",
        ),
    )


def _trend(report: Report) -> RenderableType:
    t = report.targets
    table = Table(
        title=f"Starting block by week (targets: hold {t.hold_s} s, "
        f"{t.repetitions_min}-{t.repetitions_max} repetitions)",
        title_justify="left",
    )
    for column in (
        "week of",
        "days",
        "hold s (mean/max)",
        "reps (mean/max)",
        "blocks/day",
        "leaks",
    ):
        table.add_column(column, justify="left" if column == "week of" else "right")
    for w in report.trend:
        table.add_row(
            w.week_start.isoformat(),
            str(w.days_recorded),
            f"{w.mean_hold_s} / {w.max_hold_s}",
            f"{w.mean_repetitions} / {w.max_repetitions}",
            str(w.mean_blocks),
            str(w.leakage_episodes),
        )
    hold = sparkline([w.mean_hold_s for w in report.trend], t.hold_s)
    reps = sparkline([w.mean_repetitions for w in report.trend], t.repetitions_max)
    lines = Text.assemble(
        "hold (to 10 s)     ", (hold, "bold"), "\nreps (to 12)       ", (reps, "bold")
    )
    if not report.trend:
        return Text("Starting block: no diary entries in this period")
    return Group(table, lines)


def _amplitude(report: Report) -> RenderableType:
    points = report.amplitude
    if not points:
        return Text("Tolerated amplitude: no confirmed amplitude recorded")
    top = max([float(p.amplitude_ma) for p in points] + [float(p.ceiling_ma or 0) for p in points])
    last = points[-1]
    ceiling = "-" if last.ceiling_ma is None else f"{last.ceiling_ma} mA"
    return Text.assemble(
        ("Tolerated (confirmed) amplitude", "bold italic"),
        "\nper session        ",
        (sparkline([p.amplitude_ma for p in points], top or 1), "bold"),
        f"  last {last.amplitude_ma} mA on {last.day}; ceiling {ceiling}; {len(points)} session(s)",
    )


def _incidents(report: Report) -> RenderableType:
    table = Table(title="Faults and interruptions", title_justify="left")
    for column in ("session", "day", "outcome", "reason"):
        table.add_column(column)
    for i in report.incidents:
        table.add_row(
            f"#{i.session_id}",
            i.day.isoformat(),
            Text(i.outcome.value, style=_OUTCOME_STYLE[i.outcome]),
            Text(i.reason),
        )
    return table
