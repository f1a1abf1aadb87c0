"""``estim records ...``, and what every records command shares.

Every records command takes ``--db PATH`` (or ``$ESTIM_DB``; default: the user's data
directory) and opens the store through :func:`open_store`, which migrates an older
database and marks sessions whose process died as interrupted, and says so on stderr.
Parsing helpers turn a person's text (dates, milliamps) into values or one clear
:class:`~estim.errors.InputError`.
"""

from __future__ import annotations

import json
import sys
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from estim.errors import InputError, Problem
from estim.records.findings import Finding, Severity
from estim.records.models import EARLIEST_RECORD_DAY

if TYPE_CHECKING:
    from estim.records.store import Store

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="ESTIM_DB",
        help="Records database: a file path or a database URL "
        "(default: records.db in the user's data directory).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]

FINDING_STYLE = {Severity.BLOCK: "bold red", Severity.WARN: "yellow", Severity.INFO: "cyan"}
FINDING_LABEL = {Severity.BLOCK: "BLOCKS", Severity.WARN: "warning", Severity.INFO: "info"}


def out() -> Console:
    """A console on the current stdout (so tests that capture it see the output)."""
    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


def err() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def open_store(db: str | None, *, create: bool = False) -> Store:
    """Open the records, migrate, recover interrupted sessions, and say what happened.

    ``create`` is for commands that add records; the others refuse a missing file
    rather than leave an empty database behind a mistyped ``--db``.
    """
    from estim.records.store import Store

    store = Store.open(db, create=create)
    for warning in store.warnings:
        err().print(Text(f"warning: {warning}", style="yellow"))
    for rec in store.recover_interrupted():
        err().print(
            Text(
                f"session #{rec.id} ({rec.patient_code}, {rec.diary_day}) was left open by a "
                f"process that ended; marked interrupted: {rec.reason}",
                style="yellow",
            )
        )
    return store


def parse_date(text: str, option: str) -> date:
    """``YYYY-MM-DD``, or ``today``."""
    value = text.strip().lower()
    if value == "today":
        return date.today()
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"{option}: {text!r} is not a date",
            [Problem(option, "not a date", value=text, fix="write it as YYYY-MM-DD")],
        ) from None
    if day < EARLIEST_RECORD_DAY:
        raise InputError(
            f"{option}: {day} is before any record could have been kept",
            [
                Problem(
                    option,
                    "before any record could have been kept",
                    value=text,
                    limit=f"on or after {EARLIEST_RECORD_DAY}",
                    fix="check the year",
                )
            ],
        )
    return day


def parse_decimal(text: str, option: str, unit: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise InputError(
            f"{option}: {text!r} is not a number",
            [Problem(option, "not a number", value=text, fix=f"give a number of {unit}")],
        ) from None
    if not value.is_finite():
        raise InputError(f"{option}: {text!r} is not a finite number of {unit}")
    return value


def print_json(data: Any) -> None:
    """Machine output: indented JSON on stdout (Decimals, dates as strings)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def findings_table(findings: list[Finding], title: str = "Findings") -> Table:
    table = Table(title=title, title_justify="left", show_header=True, expand=False)
    table.add_column("", no_wrap=True)
    table.add_column("code", no_wrap=True)
    table.add_column("finding")
    for f in findings:
        text = Text(f.message)
        if f.fix:
            text.append(f"\nfix: {f.fix}", style="dim")
        table.add_row(
            Text(FINDING_LABEL[f.severity], style=FINDING_STYLE[f.severity]), Text(f.code), text
        )
    return table


def finding_dicts(findings: list[Finding]) -> list[dict[str, Any]]:
    return [
        {
            "code": f.code,
            "severity": f.severity.value,
            "message": f.message,
            "fix": f.fix,
            "overridable": f.overridable,
        }
        for f in findings
    ]


records_app = typer.Typer(
    name="records",
    help="The records database: where it is, its schema version, what it holds.",
    no_args_is_help=True,
)


@records_app.command("info")
def info_command(db: DbOpt = None, json_out: JsonOpt = False) -> None:
    """Where the records are, their schema version, durability settings and counts."""
    from estim.records import engine

    with open_store(db) as store:
        settings: dict[str, Any] = {}
        if engine.sqlite_path(store.location) is not None:
            settings = engine.sqlite_settings(store.engine)
        open_sessions = [s for s in store.sessions() if s.is_open]
        store_counts = store.counts()
        data = {
            "location": store.location,
            "schema_version": store.schema_version(),
            "settings": settings,
            "counts": store_counts,
            "open_sessions": [s.id for s in open_sessions],
        }
    if json_out:
        print_json(data)
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("location", Text(str(data["location"])))
    table.add_row("schema version", str(data["schema_version"]))
    for key, value in settings.items():
        table.add_row(key, str(value))
    for key, value in store_counts.items():
        table.add_row(key, str(value))
    if open_sessions:
        table.add_row("open sessions", ", ".join(f"#{s.id}" for s in open_sessions))
    out().print(table)


def write_text_file(path: Path, text: str) -> None:
    """Write an output file (created owner-only: it holds patient data)."""
    import os

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
    except OSError as error:
        raise InputError(f"{path}: cannot write ({error.strerror})") from error


def register(app: typer.Typer) -> None:
    app.add_typer(records_app, name="records")
