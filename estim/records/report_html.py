"""The progress report as one self-contained, printable HTML file.

Plots are drawn with matplotlib's object API (no pyplot global state) as SVG and
inlined, with text kept as text; styles are inline, there are no scripts, fonts,
images or links to fetch: the file opens offline, prints on A4, and can be archived
as it is. The SVGs carry no creation date, so the same records give the same file.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Sequence
from datetime import date
from typing import Any

from estim.records.models import Outcome
from estim.records.report import FlagLevel, Report

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1b1f24; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.4; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
h2 { font-size: 1.15rem; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem;
     margin-top: 1.8rem; }
.meta { color: #57606a; }
table { border-collapse: collapse; width: 100%; margin: .6rem 0; font-size: .92rem; }
th, td { border: 1px solid #d0d7de; padding: .25rem .5rem; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.attention { color: #b42318; font-weight: 600; }
.note { color: #0b5cad; }
.ok { color: #1a7f37; }
.warn { color: #9a6700; }
figure { margin: .8rem 0; break-inside: avoid; page-break-inside: avoid; }
figure svg { width: 100%; height: auto; }
figcaption { color: #57606a; font-size: .85rem; }
footer { margin-top: 2rem; color: #57606a; font-size: .8rem; }
@page { size: A4; margin: 14mm; }
@media print {
  body { margin: 0; max-width: none; font-size: 10pt; }
  h2 { break-after: avoid; page-break-after: avoid; }
  section, table, figure { break-inside: avoid; page-break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
}
"""

_OUTCOME_COLOUR = {
    Outcome.COMPLETED: "#1a7f37",
    Outcome.STOPPED: "#9a6700",
    Outcome.ABORTED: "#b42318",
    Outcome.FAULT: "#b42318",
    Outcome.INTERRUPTED: "#cf222e",
    None: "#0b5cad",
}


_LEVEL_TEXT = {FlagLevel.ATTENTION: "attention", FlagLevel.NOTE: "note"}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def render_html(report: Report) -> str:
    """The whole report as one HTML document."""
    charts = _charts(report)
    p = report.patient
    body = [
        f"<h1>Progress report: {_e(p.code)}</h1>",
        f'<p class="meta">Born {_e(p.year_of_birth)} &middot; period {_e(report.period_start)}'
        f" to {_e(report.period_end)} &middot; generated "
        f"{_e(report.generated_at.strftime('%Y-%m-%d %H:%M'))} UTC</p>",
        _flags(report),
        '<section id="stimulation"><h2>Stimulation sessions against the prescription</h2>',
        _courses(report),
        charts["sessions"],
        "</section>",
        '<section id="exercise"><h2>Exercise diary</h2>',
        _exercise(report),
        charts["blocks"],
        "</section>",
        '<section id="trend"><h2>Starting block over the weeks</h2>',
        charts["trend"],
        _trend_table(report),
        "</section>",
        '<section id="amplitude"><h2>Tolerated amplitude</h2>',
        charts["amplitude"],
        "</section>",
        '<section id="incidents"><h2>Faults and interruptions</h2>',
        _incidents(report),
        "</section>",
        "<footer>estim research software, not a certified medical device. Targets from the "
        "patient leaflet: hold up to 10 s, 8-12 repetitions, the starting block 4-6 times a "
        "day. Session counts include every session that may have delivered stimulation."
        "</footer>",
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>estim report {_e(p.code)} {_e(report.period_end)}</title>"
        f"<style>{_CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _flags(report: Report) -> str:
    if not report.flags:
        return '<section id="flags"><h2>Flags</h2><p class="ok">None.</p></section>'
    rows = "".join(
        f'<tr><td class="{f.level.value}">{_LEVEL_TEXT[f.level]}</td>'
        f"<td>{_e(f.day or '')}</td><td>{_e(f.code)}</td><td>{_e(f.message)}</td></tr>"
        for f in report.flags
    )
    return (
        '<section id="flags"><h2>Flags</h2><table><thead><tr><th></th><th>day</th>'
        f"<th>flag</th><th>what</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _courses(report: Report) -> str:
    if not report.courses:
        return "<p>No course in this period.</p>"
    rows = []
    for c in report.courses:
        pct = c.adherence_pct
        cls = "ok" if pct is not None and pct >= 80 else "warn"
        rows.append(
            f"<tr><td>#{c.course_id}</td><td>{_e(c.protocol)}</td>"
            f"<td>{_e(c.start_date)} to {_e(c.end_date or 'open')}</td>"
            f'<td class="num">{c.days_in_period}</td>'
            f'<td class="num">{_e(c.expected_sessions)} ({c.sessions_per_week}/week)</td>'
            f'<td class="num">{c.completed}</td><td class="num">{c.stopped}</td>'
            f'<td class="num">{c.incomplete}</td>'
            f'<td class="num {cls}">{"-" if pct is None else f"{pct} %"}</td></tr>'
        )
    return (
        "<table><thead><tr><th>course</th><th>protocol</th><th>dates</th><th>days</th>"
        "<th>expected</th><th>completed</th><th>stopped early</th><th>incomplete</th>"
        f"<th>adherence</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _exercise(report: Report) -> str:
    e = report.exercise
    t = report.targets
    mean = "-" if e.mean_blocks_per_day is None else _e(e.mean_blocks_per_day)
    return (
        f"<p>{e.days_recorded} of {e.days_in_period} days recorded; "
        f"<strong>{e.days_on_target}</strong> on target ({t.blocks_min}-{t.blocks_max} "
        f"blocks a day, or 3 maintenance sets), {e.days_above_target} above; "
        f"mean {mean} blocks a day.</p>"
    )


def _trend_table(report: Report) -> str:
    if not report.trend:
        return "<p>No diary entries in this period.</p>"
    rows = "".join(
        f"<tr><td>{_e(w.week_start)}</td><td class='num'>{w.days_recorded}</td>"
        f"<td class='num'>{_e(w.mean_hold_s)} / {w.max_hold_s}</td>"
        f"<td class='num'>{_e(w.mean_repetitions)} / {w.max_repetitions}</td>"
        f"<td class='num'>{_e(w.mean_blocks)}</td><td class='num'>{w.leakage_episodes}</td></tr>"
        for w in report.trend
    )
    return (
        "<table><thead><tr><th>week of</th><th>days</th><th>hold s (mean / max)</th>"
        "<th>repetitions (mean / max)</th><th>blocks a day</th><th>leakage episodes</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def _incidents(report: Report) -> str:
    if not report.incidents:
        return '<p class="ok">None in this period.</p>'
    rows = "".join(
        f"<tr><td>#{i.session_id}</td><td>{_e(i.day)}</td>"
        f'<td style="color:{_OUTCOME_COLOUR[i.outcome]}">{_e(i.outcome.value)}</td>'
        f"<td>{_e(i.reason)}</td></tr>"
        for i in report.incidents
    )
    return (
        "<table><thead><tr><th>session</th><th>day</th><th>outcome</th><th>reason</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


# --- plots -------------------------------------------------------------------------------


def _charts(report: Report) -> dict[str, str]:
    import matplotlib as mpl

    with mpl.rc_context(
        {
            "svg.fonttype": "none",  # text stays text: searchable, crisp when printed
            "svg.hashsalt": "estim-report",  # stable element ids
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    ):
        return {
            "trend": _trend_chart(report),
            "blocks": _blocks_chart(report),
            "sessions": _sessions_chart(report),
            "amplitude": _amplitude_chart(report),
        }


def _figure(width_in: float = 7.5, height_in: float = 2.6, rows: int = 1) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)
    return fig, [row[0] for row in axes]


def _svg(fig: Any, caption: str, label: str) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": "estim"})
    text = buffer.getvalue()
    text = re.sub(r"^<\?xml[^>]*>\s*", "", text)
    text = re.sub(r"<!DOCTYPE[^>]*>\s*", "", text)
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.DOTALL)
    text = text.replace("<svg ", f'<svg role="img" aria-label="{_e(label)}" ', 1)
    return f"<figure>{text}<figcaption>{_e(caption)}</figcaption></figure>"


def _empty(message: str) -> str:
    return f"<p>{_e(message)}</p>"


def _target_label(ax: Any, text: str, y: float) -> None:
    """Label a target line at the right edge of the plot, clear of the data legend."""
    ax.annotate(
        text,
        xy=(1.0, y),
        xycoords=("axes fraction", "data"),
        xytext=(0, 2),
        textcoords="offset points",
        ha="right",
        va="bottom",
        color="#1a7f37",
        fontsize=8,
    )


def _trend_chart(report: Report) -> str:
    trend = report.trend
    if not trend:
        return _empty("No starting-block entries to plot.")
    t = report.targets
    fig, (hold_ax, reps_ax) = _figure(height_in=3.8, rows=2)
    weeks = [w.week_start for w in trend]
    blue, purple = "#0b5cad", "#8250df"
    hold_ax.axhline(t.hold_s, color="#1a7f37", linestyle="--", linewidth=1)
    _target_label(hold_ax, f"target {t.hold_s} s", t.hold_s)
    hold_ax.plot(
        weeks, [float(w.mean_hold_s) for w in trend], marker="o", color=blue, label="mean hold"
    )
    hold_ax.plot(
        weeks,
        [w.max_hold_s for w in trend],
        marker=".",
        linestyle=":",
        color=blue,
        label="best hold",
    )
    hold_ax.set_ylim(0, t.hold_s + 2)
    hold_ax.set_ylabel("hold (s)")
    hold_ax.legend(loc="upper left", fontsize=7, frameon=False, ncols=2)
    reps_ax.axhspan(t.repetitions_min, t.repetitions_max, color="#1a7f37", alpha=0.12, linewidth=0)
    _target_label(reps_ax, f"target {t.repetitions_min}-{t.repetitions_max}", t.repetitions_max)
    reps_ax.plot(
        weeks,
        [float(w.mean_repetitions) for w in trend],
        marker="o",
        color=purple,
        label="mean repetitions",
    )
    reps_ax.plot(
        weeks,
        [w.max_repetitions for w in trend],
        marker=".",
        linestyle=":",
        color=purple,
        label="best",
    )
    reps_ax.set_ylim(0, t.repetitions_max + 3)
    _integer_ticks(hold_ax)
    _integer_ticks(reps_ax)
    reps_ax.set_ylabel("repetitions")
    reps_ax.set_xlabel("week starting")
    reps_ax.legend(loc="upper left", fontsize=7, frameon=False, ncols=2)
    _week_axis(reps_ax, weeks)
    return _svg(
        fig,
        "Starting block per week: hold time and repetitions (mean and best day), with the "
        "leaflet's targets (hold 10 s; 8-12 repetitions).",
        "starting block trend",
    )


def _blocks_chart(report: Report) -> str:
    days = report.daily_blocks
    if not any(d.blocks_done is not None for d in days):
        return _empty("No diary days to plot.")
    t = report.targets
    fig, (ax,) = _figure(height_in=2.2)
    ax.axhspan(t.blocks_min, t.blocks_max, color="#1a7f37", alpha=0.12, linewidth=0)
    recorded = [d for d in days if d.blocks_done is not None]
    colours = ["#1a7f37" if (d.blocks_done or 0) >= t.blocks_min else "#9a6700" for d in recorded]
    ax.bar(
        [d.day for d in recorded], [d.blocks_done or 0 for d in recorded], width=0.8, color=colours
    )
    ax.set_ylabel("blocks")
    _integer_ticks(ax)
    ax.set_ylim(0, max([t.blocks_max + 1] + [d.blocks_done or 0 for d in recorded]) + 0.5)
    _date_axis(ax, [d.day for d in days])
    return _svg(
        fig,
        f"Blocks done per day (target band {t.blocks_min}-{t.blocks_max}); days without a bar "
        "were not recorded.",
        "blocks per day",
    )


def _sessions_chart(report: Report) -> str:
    weeks = report.session_weeks
    if not weeks:
        return ""
    fig, (ax,) = _figure(height_in=2.2)
    starts = [w.week_start for w in weeks]
    ax.bar(starts, [w.sessions for w in weeks], width=5, color="#0b5cad", label="sessions")
    ax.step(
        starts,
        [w.prescribed for w in weeks],
        where="mid",
        color="#1a7f37",
        linestyle="--",
        label="prescribed",
    )
    ax.set_ylabel("sessions / week")
    _integer_ticks(ax)
    ax.set_ylim(0, max([w.sessions for w in weeks] + [w.prescribed for w in weeks] + [1]) + 1)
    ax.legend(loc="upper left", fontsize=7, frameon=False, ncols=2)
    _week_axis(ax, starts)
    return _svg(
        fig,
        "Stimulation sessions per week (every session that may have delivered stimulation) "
        "against the prescribed number.",
        "sessions per week",
    )


def _amplitude_chart(report: Report) -> str:
    points = report.amplitude
    if not points:
        return _empty("No confirmed amplitude recorded yet.")
    fig, (ax,) = _figure(height_in=2.4)
    x = list(range(1, len(points) + 1))
    ax.plot(x, [float(p.amplitude_ma) for p in points], color="#57606a", linewidth=1)
    ax.scatter(
        x,
        [float(p.amplitude_ma) for p in points],
        c=[_OUTCOME_COLOUR[p.outcome] for p in points],
        zorder=3,
        s=18,
    )
    ceilings = [float(p.ceiling_ma) if p.ceiling_ma is not None else float("nan") for p in points]
    ax.step(
        x,
        ceilings,
        where="mid",
        color="#b42318",
        linestyle="--",
        linewidth=1,
        label="prescribed ceiling",
    )
    ax.set_xlabel("session")
    ax.set_ylabel("confirmed amplitude (mA)")
    known = [c for c in ceilings if not math.isnan(c)]  # nan: a session without a ceiling
    top = max(known + [float(p.amplitude_ma) for p in points])
    ax.set_ylim(0, top * 1.15 + 0.5)
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    if len(points) <= 20:
        ax.set_xticks(x, [f"#{p.session_id}" for p in points], fontsize=7)
    return _svg(
        fig,
        "Amplitude confirmed with the patient at each session, against the prescribed "
        "ceiling (colour: green completed, amber stopped early, red aborted, fault or "
        "interrupted).",
        "tolerated amplitude",
    )


def _date_axis(ax: Any, days: Sequence[date]) -> None:
    from matplotlib import dates as mdates

    span_days = (max(days) - min(days)).days if days else 0
    # A diary is kept by the day: never tick hours, even for a report of one day.
    locator: Any
    if span_days <= 14:
        locator = mdates.DayLocator(interval=max(1, (span_days + 6) // 7))  # type: ignore[no-untyped-call]
    else:
        locator = mdates.AutoDateLocator(minticks=3, maxticks=8)  # type: ignore[no-untyped-call]
    formatter = mdates.ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(formatter)
    if days:
        first = mdates.date2num(min(days))  # type: ignore[no-untyped-call]
        last = mdates.date2num(max(days))  # type: ignore[no-untyped-call]
        pad = max(0.6, (3 - span_days) / 2)  # a single day still gets a readable axis
        ax.set_xlim(first - pad, last + pad)


def _week_axis(ax: Any, weeks: Sequence[date]) -> None:
    """Ticks on the weeks themselves while they fit; a date axis beyond that."""
    if len(weeks) > 12:
        _date_axis(ax, weeks)
        return
    from matplotlib import dates as mdates

    ax.set_xticks(list(weeks), [f"{w:%d %b}" for w in weeks])
    first = mdates.date2num(min(weeks))  # type: ignore[no-untyped-call]
    last = mdates.date2num(max(weeks))  # type: ignore[no-untyped-call]
    ax.set_xlim(first - 3.5, last + 3.5)


def _integer_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
