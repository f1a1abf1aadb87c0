"""``estim patient add | list | show``: patients by pseudonymous code."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from estim.cli.records_cmd import (
    DbOpt,
    JsonOpt,
    finding_dicts,
    findings_table,
    open_store,
    out,
    print_json,
)

patient_app = typer.Typer(
    name="patient",
    help="Patients, known by a pseudonymous code (never a name).",
    no_args_is_help=True,
)

CodeArg = Annotated[str, typer.Argument(help="Pseudonymous patient code, e.g. PF-0042.")]


@patient_app.command("add")
def add_command(
    code: CodeArg,
    born: Annotated[int, typer.Option("--born", help="Year of birth (four digits).")],
    notes: Annotated[str, typer.Option("--notes", help="Clinical notes (no names).")] = "",
    db: DbOpt = None,
) -> None:
    """Add a patient."""
    with open_store(db, create=True) as store:
        patient = store.add_patient(code, born, notes)
    out().print(f"added patient {patient.code} (born {patient.year_of_birth})")


@patient_app.command("list")
def list_command(db: DbOpt = None, json_out: JsonOpt = False) -> None:
    """List patients with their active course and last activity."""
    with open_store(db) as store:
        rows = []
        for p in store.patients():
            active = store.active_prescription(p.code)
            diary = store.diary(p.code)
            sessions = store.sessions(p.code)
            rows.append(
                {
                    "code": p.code,
                    "year_of_birth": p.year_of_birth,
                    "active_course": None if active is None else active.describe(),
                    "last_diary_day": diary[-1].day.isoformat() if diary else None,
                    "sessions": len(sessions),
                    "last_session_day": sessions[-1].diary_day.isoformat() if sessions else None,
                }
            )
    if json_out:
        print_json(rows)
        return
    table = Table(title=f"{len(rows)} patient(s)", title_justify="left")
    for column in ("code", "born", "active course", "last diary day", "sessions", "last session"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            Text(str(r["code"]), style="bold"),
            str(r["year_of_birth"]),
            Text(str(r["active_course"] or "-")),
            str(r["last_diary_day"] or "-"),
            str(r["sessions"]),
            str(r["last_session_day"] or "-"),
        )
    out().print(table)


@patient_app.command("show")
def show_command(code: CodeArg, db: DbOpt = None, json_out: JsonOpt = False) -> None:
    """A patient: courses, checklist state, what the records say about a session today."""
    with open_store(db) as store:
        patient = store.patient(code)
        courses = store.prescriptions(patient.code)
        checklists = {c.id: store.latest_checklist(c.id) for c in courses}
        preflight = store.preflight(patient.code)
        sessions = store.sessions(patient.code)
        diary = store.diary(patient.code)
    if json_out:
        print_json(
            {
                "patient": patient.model_dump(mode="json"),
                "courses": [
                    {
                        "id": c.id,
                        "revision": c.revision,
                        "prescription": c.prescription.model_dump(mode="json"),
                        "protocol_sha256": c.protocol.content_hash,
                        "checklist_answered_at": None
                        if checklists[c.id] is None
                        else checklists[c.id].checklist.answered_at.isoformat(),  # type: ignore[union-attr]
                    }
                    for c in courses
                ],
                "today": {
                    "day": preflight.day.isoformat(),
                    "may_start": preflight.ok,
                    "findings": finding_dicts(preflight.findings),
                    "sessions_today": None
                    if preflight.dose is None
                    else preflight.dose.sessions_today,
                    "sessions_this_week": None
                    if preflight.dose is None
                    else preflight.dose.sessions_this_week,
                },
                "sessions": len(sessions),
                "diary_days": len(diary),
            }
        )
        return
    console = out()
    console.print(
        Text(f"{patient.code}", style="bold")
        + Text(f"  born {patient.year_of_birth}, added {patient.created_at:%Y-%m-%d}")
    )
    if patient.notes:
        console.print(Text(f"notes: {patient.notes}"))
    table = Table(title="Courses", title_justify="left")
    for column in ("#", "protocol", "max mA", "from", "to", "rev", "prescriber", "checklist"):
        table.add_column(column)
    for c in courses:
        p = c.prescription
        chk = checklists[c.id]
        table.add_row(
            str(c.id),
            f"{p.protocol.id} v{p.protocol.version}",
            str(p.max_amplitude_ma),
            p.start_date.isoformat(),
            p.end_date.isoformat() if p.end_date else "open",
            str(c.revision),
            Text(p.prescriber),
            "none" if chk is None else f"answered {chk.checklist.answered_at}",
        )
    console.print(table if courses else Text("no courses prescribed"))
    console.print(
        f"diary: {len(diary)} day(s)"
        + (f", last {diary[-1].day}" if diary else "")
        + f"; sessions: {len(sessions)}"
    )
    if preflight.dose is not None:
        console.print(
            f"today ({preflight.day}): {preflight.dose.sessions_today} session(s) today, "
            f"{preflight.dose.sessions_this_week} in the last seven days"
        )
    if preflight.findings:
        console.print(findings_table(preflight.findings, "Before a session today"))
    verdict = "may start" if preflight.ok else "BLOCKED"
    console.print(
        Text(f"a session today: {verdict}", style="green" if preflight.ok else "bold red")
    )


def register(app: typer.Typer) -> None:
    app.add_typer(patient_app, name="patient")
