"""``estim diary add | show | import | export``: the patient's training diary.

``show`` puts the exercise diary and the stimulation sessions side by side, one row
per day, so a gap in either is as visible as an entry.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from estim.cli.records_cmd import (
    DbOpt,
    JsonOpt,
    open_store,
    out,
    parse_date,
    print_json,
    write_text_file,
)
from estim.errors import InputError
from estim.files import read_text
from estim.records.diary import (
    BLOCKS_TARGET_MAX,
    BLOCKS_TARGET_MIN,
    DiaryEntry,
    Programme,
    export_csv,
    make_entry,
    parse_csv,
)
from estim.records.models import Outcome, SessionRecord, normalize_code
from estim.units import ua_to_ma

CodeArg = Annotated[str, typer.Argument(help="Pseudonymous patient code, e.g. PF-0042.")]
ReplaceOpt = Annotated[
    bool, typer.Option("--replace", help="Overwrite days already recorded (kept as a revision).")
]
DEFAULT_SHOW_DAYS = 28

diary_app = typer.Typer(
    name="diary",
    help="The training diary: starting block, blocks a day, fast contractions, leakage.",
    no_args_is_help=True,
)


@diary_app.command("add")
def add_command(
    code: CodeArg,
    *,
    hold: Annotated[int, typer.Option("--hold", help="Starting block: hold time, seconds (0-10).")],
    reps: Annotated[int, typer.Option("--reps", help="Starting block: repetitions (0-12).")],
    blocks: Annotated[int, typer.Option("--blocks", help="Blocks done that day (target 4-6).")],
    day: Annotated[str, typer.Option("--date", help="The day, YYYY-MM-DD.")] = "today",
    fast: Annotated[int, typer.Option("--fast", help="Fast contractions.")] = 0,
    leaks: Annotated[int, typer.Option("--leaks", help="Leakage episodes.")] = 0,
    maintenance: Annotated[
        bool, typer.Option("--maintenance", help="Maintenance phase (3 sets of 8-12).")
    ] = False,
    notes: Annotated[str, typer.Option("--notes", help="Notes for the day.")] = "",
    replace: ReplaceOpt = False,
    db: DbOpt = None,
) -> None:
    """Record one day of the diary."""
    entry = make_entry(
        {
            "day": parse_date(day, "--date"),
            "hold_s": hold,
            "repetitions": reps,
            "blocks_done": blocks,
            "fast_contractions": fast,
            "leakage_episodes": leaks,
            "programme": Programme.MAINTENANCE if maintenance else Programme.TRAINING,
            "notes": notes,
        },
        "diary entry",
        {
            "day": "--date",
            "hold_s": "--hold",
            "repetitions": "--reps",
            "blocks_done": "--blocks",
            "fast_contractions": "--fast",
            "leakage_episodes": "--leaks",
            "notes": "--notes",
        },
    )
    with open_store(db) as store:
        store.add_diary(code, [entry], replace=replace)
    out().print(
        f"recorded {entry.day} for {normalize_code(code)}: starting block "
        f"{entry.starting_block}, {entry.blocks_done} block(s)"
    )


@diary_app.command("import")
def import_command(
    code: CodeArg,
    file: Annotated[Path, typer.Argument(help="CSV with a header row (estim diary export).")],
    replace: ReplaceOpt = False,
    db: DbOpt = None,
) -> None:
    """Import diary days from CSV: every row is checked first; all or nothing.

    Columns: date, hold_s, repetitions, blocks_done [, fast_contractions,
    leakage_episodes, programme, notes].
    """
    code = normalize_code(code)
    text = read_text(file)
    with open_store(db) as store:
        entries = parse_csv(text, str(file), store.today())
        if not entries:
            raise InputError(f"{file}: no diary rows below the header; nothing to import")
        count = store.add_diary(code, entries, replace=replace)
    first, last = entries[0].day, entries[-1].day
    out().print(f"imported {count} day(s) for {code} ({min(first, last)} to {max(first, last)})")


@diary_app.command("export")
def export_command(
    code: CodeArg,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the CSV here instead of printing it.")
    ] = None,
    db: DbOpt = None,
) -> None:
    """Export the whole diary as CSV (the format import reads)."""
    with open_store(db) as store:
        text = export_csv(store.diary(code))
    if out_file is None:
        typer.echo(text, nl=False)
        return
    write_text_file(out_file, text)
    out().print(f"wrote {out_file}")


@diary_app.command("show")
def show_command(
    code: CodeArg,
    *,
    since: Annotated[
        str | None,
        typer.Option(
            "--from",
            help=f"First day (default: {DEFAULT_SHOW_DAYS} days ago, or the first record).",
        ),
    ] = None,
    until: Annotated[str | None, typer.Option("--to", help="Last day (default: today).")] = None,
    all_days: Annotated[
        bool, typer.Option("--all", help="From the first record to today.")
    ] = False,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Exercise diary and stimulation sessions side by side, one row per day."""
    code = normalize_code(code)
    with open_store(db) as store:
        store.patient(code)
        last = parse_date(until, "--to") if until else store.today()
        diary = store.diary(code, end=last)
        sessions = store.sessions(code, end=last)
        recorded = [e.day for e in diary] + [s.diary_day for s in sessions]
        if all_days:
            first = min(recorded, default=last)
        elif since:
            first = parse_date(since, "--from")
        else:
            # The last four weeks, but not weeks of empty rows before the first record.
            window_start = last - timedelta(days=DEFAULT_SHOW_DAYS - 1)
            first = max(window_start, min(recorded, default=window_start))
    if first > last:
        raise InputError(f"--from {first} is after --to {last}")
    rows = side_by_side(diary, sessions, first, last)
    if json_out:
        print_json(rows)
        return
    out().print(day_table(code, rows, first, last))


def side_by_side(
    diary: list[DiaryEntry], sessions: list[SessionRecord], first: date, last: date
) -> list[dict[str, Any]]:
    """One row per calendar day from ``first`` to ``last``: its entry and its sessions."""
    by_day = {e.day: e for e in diary}
    sessions_by_day: dict[date, list[SessionRecord]] = {}
    for s in sessions:
        sessions_by_day.setdefault(s.diary_day, []).append(s)
    rows = []
    for offset in range((last - first).days + 1):  # never a day past date.max
        day = first + timedelta(days=offset)
        entry = by_day.get(day)
        rows.append(
            {
                "day": day.isoformat(),
                "diary": None if entry is None else entry.model_dump(mode="json"),
                "sessions": [
                    {
                        "id": s.id,
                        "outcome": None if s.outcome is None else s.outcome.value,
                        "confirmed_amplitude_ua": s.confirmed_amplitude_ua,
                        "on_time_us": s.on_time_us,
                        "contractions": s.contractions,
                    }
                    for s in sessions_by_day.get(day, [])
                ],
            }
        )
    return rows


_OUTCOME_STYLE = {
    Outcome.COMPLETED.value: "green",
    Outcome.STOPPED.value: "yellow",
    Outcome.ABORTED.value: "bold red",
    Outcome.FAULT.value: "bold red",
    Outcome.INTERRUPTED.value: "red",
    None: "cyan",
}


def day_table(code: str, rows: list[dict[str, Any]], first: date, last: date) -> Table:
    table = Table(title=f"{code}: diary and sessions, {first} to {last}", title_justify="left")
    table.add_column("day", no_wrap=True)
    table.add_column("starting block", no_wrap=True)
    table.add_column(f"blocks ({BLOCKS_TARGET_MIN}-{BLOCKS_TARGET_MAX})", justify="right")
    table.add_column("fast", justify="right")
    table.add_column("leaks", justify="right")
    table.add_column("notes", ratio=1)
    table.add_column("stimulation sessions", ratio=1)
    for row in rows:
        day = date.fromisoformat(row["day"])
        entry = row["diary"]
        label = Text(f"{day:%a} {day}", style="dim" if day.weekday() >= 5 else "")
        if entry is None:
            cells = [Text("-", style="dim")] + [Text("")] * 4
        else:
            blocks = entry["blocks_done"]
            on_target = blocks >= BLOCKS_TARGET_MIN
            block_text = (
                f"{entry['hold_s']} s x {entry['repetitions']}"
                if entry["hold_s"] and entry["repetitions"]
                else "none"
            )
            if entry["programme"] == Programme.MAINTENANCE.value:
                block_text += " (maint.)"
            cells = [
                Text(block_text, style="bold" if entry["hold_s"] else ""),
                Text(str(blocks), style="green" if on_target else "yellow"),
                Text(str(entry["fast_contractions"])),
                Text(
                    str(entry["leakage_episodes"]), style="red" if entry["leakage_episodes"] else ""
                ),
                Text(entry["notes"]),
            ]
        sessions = Text()
        for i, s in enumerate(row["sessions"]):
            if i:
                sessions.append("; ")
            outcome = s["outcome"]
            sessions.append(f"#{s['id']} ")
            sessions.append(outcome or "open", style=_OUTCOME_STYLE.get(outcome, ""))
            if s["confirmed_amplitude_ua"] is not None:
                sessions.append(f" {ua_to_ma(s['confirmed_amplitude_ua']).normalize():f} mA")
            if s["on_time_us"]:
                sessions.append(f" {s['on_time_us'] / 1e6 / 60:.1f} min on")
        table.add_row(label, *cells, sessions)
    return table


def register(app: typer.Typer) -> None:
    app.add_typer(diary_app, name="diary")
