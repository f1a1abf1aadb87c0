"""``estim report CODE [--html FILE] [--json]``: a patient's progress report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
from estim.records.models import normalize_code


def report_command(
    code: Annotated[str, typer.Argument(help="Pseudonymous patient code, e.g. PF-0042.")],
    *,
    html_file: Annotated[
        Path | None,
        typer.Option("--html", help="Also write a self-contained printable HTML report here."),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--from", help="First day (default: the first record).")
    ] = None,
    until: Annotated[str | None, typer.Option("--to", help="Last day (default: today).")] = None,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Adherence, the starting-block trend, tolerated amplitude, incidents and flags."""
    from estim.records.report import build_report

    code = normalize_code(code)
    with open_store(db) as store:
        patient = store.patient(code)
        end = parse_date(until, "--to") if until else store.today()
        start = parse_date(since, "--from") if since else None
        if start is not None and start > end:
            raise InputError(f"--from {start} is after --to {end}")
        active = store.preflight(code, day=end) if end == store.today() else None
        report = build_report(
            patient=patient,
            courses=store.prescriptions(code),
            diary=store.diary(code),
            sessions=store.sessions(code),
            overrides=store.overrides(code),
            active_findings=[] if active is None else active.findings,
            generated_at=store._now(),
            start=start,
            end=end,
        )
    if html_file is not None:
        from estim.records.report_html import render_html

        write_text_file(html_file, render_html(report))
    if json_out:
        print_json(report.model_dump(mode="json"))
        return
    from estim.records.report_text import render

    console = out()
    console.print(render(report))
    if html_file is not None:
        console.print(f"wrote {html_file}")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
