"""``estim prescribe``, ``estim prescription ...`` and ``estim checklist ...``.

A course is a prescription (protocol pinned by content hash, the patient's ceiling,
step and adjustments, dates) plus the contraindication checklist its prescriber
answered. Everything is checked before anything is written: a prescription that does
not fit its protocol, dates that overlap another course, or an incomplete checklist
exit with code 2 and leave the records as they were; a checklist that blocks the
course exits with code 1, also writing nothing.
"""

from __future__ import annotations

import sys
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
    parse_date,
    parse_decimal,
    print_json,
    write_text_file,
)
from estim.errors import InputError, Problem
from estim.files import load_model, validate
from estim.protocols.models import Adjustable, CycledDuty, Protocol
from estim.protocols.prescription import Prescription, ProtocolRef
from estim.records.checklist import (
    CHECKLIST_SPEC_VERSION,
    ITEMS,
    ContraindicationChecklist,
    ItemClass,
    PrecautionOverride,
    checklist_findings,
    checklist_template,
)
from estim.records.findings import Finding, blocking
from estim.records.models import normalize_code

if TYPE_CHECKING:
    from estim.records.models import PrescriptionRecord
    from estim.records.store import Store

CodeArg = Annotated[str, typer.Argument(help="Pseudonymous patient code, e.g. PF-0042.")]


# --- parsing -----------------------------------------------------------------------------


def parse_adjustments(pairs: list[str]) -> dict[Adjustable, Decimal]:
    """``name=value`` pairs (``--adjust frequency_hz=40``) as adjustments."""
    problems = []
    found: dict[Adjustable, Decimal] = {}
    names = ", ".join(a.value for a in Adjustable)
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip()
        if not sep:
            problems.append(
                Problem("--adjust", "expected name=value", value=pair, fix=f"names: {names}")
            )
            continue
        try:
            key = Adjustable(name)
        except ValueError:
            problems.append(
                Problem(
                    f"--adjust {name}", "not an adjustable parameter", fix=f"use one of: {names}"
                )
            )
            continue
        if key in found:
            problems.append(Problem(f"--adjust {name}", "given twice"))
            continue
        found[key] = parse_decimal(raw, f"--adjust {name}", key.value.rsplit("_", 1)[-1])
    if problems:
        raise InputError("invalid --adjust", problems)
    return found


def load_checklist(path: Path) -> ContraindicationChecklist:
    return load_model(
        ContraindicationChecklist, path, spec_version=CHECKLIST_SPEC_VERSION, what="checklist"
    )


def ask_checklist(answered_by: str) -> ContraindicationChecklist:
    """Ask every checklist item on the terminal; a precaution answered yes asks for a reason."""
    console = out()
    console.print(
        Text("Contraindication checklist: answer each item y (yes) or n (no).", style="bold")
    )
    answers: dict[str, bool] = {}
    overrides: dict[str, Any] = {}
    for item, spec in ITEMS.items():
        label = "contraindication" if spec.item_class is ItemClass.ABSOLUTE else "precaution"
        answer = typer.confirm(f"  [{label}] {spec.question}", default=None)
        answers[item.value] = answer
        if answer and spec.item_class is ItemClass.PRECAUTION:
            reason = typer.prompt(
                "    override: why may the course go ahead? (empty: no override; "
                "sessions stay blocked)",
                default="",
                show_default=False,
            ).strip()
            if reason:
                overrides[item.value] = {"reason": reason}
    data = {
        "answered_by": answered_by,
        "answered_at": date.today(),
        "answers": answers,
        "overrides": overrides,
    }
    return validate(ContraindicationChecklist, data, "checklist", "checklist")


def _interactive() -> bool:
    return sys.stdin.isatty()


def get_checklist(path: Path | None, answered_by: str, *, ask: bool) -> ContraindicationChecklist:
    if path is not None:
        return load_checklist(path)
    if ask or _interactive():
        return ask_checklist(answered_by)
    raise InputError(
        "no contraindication checklist",
        [
            Problem(
                "--checklist",
                "missing, and there is no terminal to ask the questions on",
                fix="give --checklist FILE (estim checklist template writes one to fill in), "
                "or run in a terminal",
            )
        ],
    )


def need_person(value: str | None, option: str, question: str) -> str:
    if value is not None and value.strip():
        return value.strip()
    if _interactive():
        answer: str = typer.prompt(question).strip()
        if answer:
            return answer
    raise InputError(
        f"{option} is required", [Problem(option, "missing", fix=f"give {option} NAME")]
    )


# --- display -----------------------------------------------------------------------------


def course_table(record: PrescriptionRecord) -> Table:
    p = record.prescription
    effective = record.effective_protocol
    table = Table(show_header=False, box=None, title=f"Course #{record.id}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("patient", p.patient_code)
    table.add_row("protocol", Text(f"{effective.id} v{effective.version}: {effective.title}"))
    table.add_row("protocol sha256", p.protocol.sha256)
    table.add_row("max amplitude", f"{p.max_amplitude_ma} mA")
    step = p.titration_step_ma or effective.amplitude.titration_step_ma
    table.add_row("titration step", f"{step} mA")
    if p.adjustments:
        table.add_row(
            "adjustments", ", ".join(f"{k.value}={v}" for k, v in sorted(p.adjustments.items()))
        )
    table.add_row("pulse", _pulse_text(effective))
    table.add_row("cycle", _cycle_text(effective))
    table.add_row(
        "session",
        f"{effective.session_duration_min} min, at most {effective.sessions_per_day}/day and "
        f"{effective.sessions_per_week}/week",
    )
    table.add_row("dates", f"{p.start_date} to {p.end_date or 'open-ended'}")
    table.add_row("prescriber", Text(p.prescriber))
    table.add_row("revision", str(record.revision))
    if p.notes:
        table.add_row("notes", Text(p.notes))
    return table


def _pulse_text(protocol: Protocol) -> str:
    pulse = protocol.pulse
    shape = pulse.shape.kind.value.replace("_", " ")
    widths = "/".join(str(ph.width_us) for ph in pulse.shape.phases)
    rate = (
        f"{pulse.frequency_hz} Hz"
        if pulse.frequency_hz is not None
        else f"every {pulse.pulse_interval_ms} ms"
    )
    return f"{shape}, {widths} us, {rate}"


def _cycle_text(protocol: Protocol) -> str:
    c = protocol.cycle
    if isinstance(c, CycledDuty):
        return f"ramp {c.ramp_up_s} s, on {c.on_s} s, ramp {c.ramp_down_s} s, off {c.off_s} s"
    return f"continuous, ramps {c.ramp_up_s} s / {c.ramp_down_s} s"


def show_findings(findings: list[Finding], title: str) -> None:
    if findings:
        out().print(findings_table(findings, title))


# --- estim prescribe ----------------------------------------------------------------------


def prescribe_command(
    code: CodeArg,
    *,
    protocol: Annotated[
        str | None,
        typer.Option("--protocol", help="Library protocol id (estim protocol list) or a file."),
    ] = None,
    max_ma: Annotated[
        str | None, typer.Option("--max-ma", help="The patient's amplitude ceiling, mA.")
    ] = None,
    step_ma: Annotated[
        str | None,
        typer.Option("--step-ma", help="Titration step, mA (default: the protocol's)."),
    ] = None,
    adjust: Annotated[
        list[str] | None,
        typer.Option(
            "--adjust", help="name=value for a parameter the protocol declares adjustable."
        ),
    ] = None,
    prescriber: Annotated[
        str | None, typer.Option("--prescriber", help="Who prescribes (asked if omitted).")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--start", help="First day, YYYY-MM-DD (default: today).")
    ] = None,
    end: Annotated[str | None, typer.Option("--end", help="Last day (default: open).")] = None,
    notes: Annotated[str, typer.Option("--notes", help="Notes on the course.")] = "",
    checklist: Annotated[
        Path | None,
        typer.Option("--checklist", help="The answered checklist (TOML); asked if omitted."),
    ] = None,
    checklist_later: Annotated[
        bool,
        typer.Option(
            "--checklist-later",
            help="Record the course now; sessions stay blocked until "
            "the checklist is answered (estim checklist answer).",
        ),
    ] = False,
    ask: Annotated[
        bool, typer.Option("--ask", help="Ask the checklist questions even without a terminal.")
    ] = False,
    replace: Annotated[
        bool,
        typer.Option("--replace", help="End the overlapping open course the day before --start."),
    ] = False,
    amend: Annotated[
        bool,
        typer.Option(
            "--amend",
            help="Change the course active today (or --course) instead of adding one; "
            "options left out keep their values.",
        ),
    ] = False,
    course: Annotated[
        int | None, typer.Option("--course", help="The course to amend (its number).")
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why the course is amended (with --amend).")
    ] = None,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Prescribe a course of stimulation for a patient (or amend one with --amend).

    The prescription must fit its protocol (ceiling, step, declared adjustments) and
    the checklist must be complete. Exit 0 recorded, 1 the checklist blocks, 2 invalid.
    """
    from estim.protocols.catalog import find_protocol

    code = normalize_code(code)
    if checklist is not None and checklist_later:
        raise InputError("give either --checklist FILE or --checklist-later, not both")
    with open_store(db, create=False) as store:
        current = _course_to_amend(store, code, course) if amend else None
        if not amend and (course is not None or reason is not None):
            raise InputError("--course and --reason go with --amend")
        if current is None and (protocol is None or max_ma is None):
            raise InputError(
                "a new course needs --protocol and --max-ma",
                [
                    Problem(opt, "missing", fix=f"give {opt}")
                    for opt, v in (("--protocol", protocol), ("--max-ma", max_ma))
                    if v is None
                ],
            )
        loaded = (
            find_protocol(protocol) if protocol is not None else current.protocol  # type: ignore[union-attr]
        )
        base: dict[str, Any] = (
            current.prescription.model_dump() if current is not None else {"adjustments": {}}
        )
        data: dict[str, Any] = {
            **base,
            "patient_code": code,
            "protocol": ProtocolRef.of(loaded).model_dump(),
        }
        if max_ma is not None:
            data["max_amplitude_ma"] = parse_decimal(max_ma, "--max-ma", "mA")
        if step_ma is not None:
            data["titration_step_ma"] = parse_decimal(step_ma, "--step-ma", "mA")
        if adjust:
            data["adjustments"] = parse_adjustments(adjust)
        if prescriber is not None or current is None:
            data["prescriber"] = need_person(prescriber, "--prescriber", "Prescriber")
        if start is not None or current is None:
            data["start_date"] = parse_date(start or "today", "--start")
        if end is not None:
            data["end_date"] = parse_date(end, "--end")
        if notes or current is None:
            data["notes"] = notes
        prescription = validate(Prescription, data, "prescription", "prescription")
        answered: ContraindicationChecklist | None = None
        if not checklist_later and not (current is not None and checklist is None and not ask):
            answered = get_checklist(checklist, prescription.prescriber, ask=ask)
        if current is None:
            record = store.prescribe(prescription, loaded, answered, replace=replace)
        else:
            why = (reason or "").strip()
            if not why:
                raise InputError(
                    "--amend needs --reason", [Problem("--reason", "missing", fix="say why")]
                )
            record = store.amend(
                current.id,
                prescription,
                loaded,
                changed_by=prescription.prescriber,
                reason=why,
                checklist=answered,
            )
        chk = store.latest_checklist(record.id)
        findings = checklist_findings(
            None if chk is None else chk.checklist,
            today=store.today(),
            recorded_at=None if chk is None else chk.recorded_at,
            prescription_changed_at=record.changed_at,
        )
    if json_out:
        print_json(
            {
                "course": record.id,
                "revision": record.revision,
                "prescription": record.prescription.model_dump(mode="json"),
                "effective_protocol_sha256": record.effective_protocol.content_hash,
                "checklist_findings": finding_dicts(findings),
            }
        )
        return
    verb = "amended" if current is not None else "prescribed"
    out().print(Text(f"{verb} course #{record.id} for {record.patient_code}", style="green"))
    out().print(course_table(record))
    show_findings(findings, "Checklist")
    if blocking(findings):
        out().print(
            Text(
                "sessions are blocked until the checklist is answered: "
                f"estim checklist answer {record.patient_code}",
                style="bold yellow",
            )
        )


def _course_to_amend(store: Store, code: str, course: int | None) -> PrescriptionRecord:
    if course is not None:
        record = store.prescription(course)
        if record.patient_code != code:
            raise InputError(f"course #{course} is {record.patient_code}'s, not {code}'s")
        return record
    active = store.active_prescription(code)
    if active is None:
        raise InputError(
            f"{code} has no course active today to amend",
            [Problem("--course", "missing", fix="give --course N (estim prescription list CODE)")],
        )
    return active


# --- estim prescription ... ---------------------------------------------------------------

prescription_app = typer.Typer(
    name="prescription",
    help="Courses already prescribed: list, show with history, end.",
    no_args_is_help=True,
)


@prescription_app.command("list")
def list_command(code: CodeArg, db: DbOpt = None, json_out: JsonOpt = False) -> None:
    """A patient's courses, oldest first."""
    with open_store(db) as store:
        courses = store.prescriptions(code)
    if json_out:
        print_json(
            [
                {
                    "course": c.id,
                    "revision": c.revision,
                    "prescription": c.prescription.model_dump(mode="json"),
                }
                for c in courses
            ]
        )
        return
    for c in courses:
        out().print(Text(c.describe() + f" (revision {c.revision})"))
    if not courses:
        out().print(f"no courses for {normalize_code(code)}")


@prescription_app.command("show")
def show_command(
    course: Annotated[int, typer.Argument(help="Course number.")],
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A course: what the patient gets (adjustments applied) and every revision."""
    with open_store(db) as store:
        record = store.prescription(course)
        revisions = store.revisions(course)
    if json_out:
        print_json(
            {
                "course": record.id,
                "prescription": record.prescription.model_dump(mode="json"),
                "effective_protocol": record.effective_protocol.model_dump(mode="json"),
                "revisions": [r.model_dump(mode="json") for r in revisions],
            }
        )
        return
    out().print(course_table(record))
    table = Table(title="Revisions", title_justify="left")
    for column in ("rev", "when (UTC)", "by", "reason", "sha256"):
        table.add_column(column)
    for r in revisions:
        table.add_row(
            str(r.revision),
            f"{r.changed_at:%Y-%m-%d %H:%M}",
            Text(r.changed_by),
            Text(r.reason),
            r.prescription_sha256[:12],
        )
    out().print(table)


@prescription_app.command("end")
def end_command(
    course: Annotated[int, typer.Argument(help="Course number.")],
    on: Annotated[str, typer.Option("--on", help="The course's last day, YYYY-MM-DD.")],
    reason: Annotated[str, typer.Option("--reason", help="Why the course ends.")],
    by: Annotated[str | None, typer.Option("--by", help="Who ends it.")] = None,
    db: DbOpt = None,
) -> None:
    """End a course on a day (kept as a revision; its checklist stays valid until then)."""
    last_day = parse_date(on, "--on")
    who = need_person(by, "--by", "Ended by")
    with open_store(db) as store:
        record = store.end_course(course, last_day, changed_by=who, reason=reason)
    out().print(f"course {record.describe()}")


# --- estim checklist ... -----------------------------------------------------------------

checklist_app = typer.Typer(
    name="checklist",
    help="The contraindication checklist a prescriber answers for each course.",
    no_args_is_help=True,
)


@checklist_app.command("template")
def template_command(
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write it here instead of printing it.")
    ] = None,
) -> None:
    """A checklist file to fill in: every item, with its class and question."""
    text = checklist_template()
    if out_file is None:
        sys.stdout.write(text)
        return
    write_text_file(out_file, text)
    out().print(f"wrote {out_file}")


@checklist_app.command("answer")
def answer_command(
    code: CodeArg,
    *,
    file: Annotated[
        Path | None, typer.Option("--file", help="The answered checklist (TOML); asked if omitted.")
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who answers (the prescriber).")] = None,
    course: Annotated[
        int | None, typer.Option("--course", help="Course number (default: active today).")
    ] = None,
    ask: Annotated[
        bool, typer.Option("--ask", help="Ask the questions even without a terminal.")
    ] = False,
    db: DbOpt = None,
) -> None:
    """Record a newly answered checklist for a course (renews a stale one).

    Exit 0 when sessions may go ahead, 1 when the answers block them (they are
    recorded either way: they are the truth about the patient today).
    """
    code = normalize_code(code)
    with open_store(db) as store:
        record = _course_to_amend(store, code, course)
        if file is not None:
            answered = load_checklist(file)
        else:
            answered = get_checklist(None, need_person(by, "--by", "Answered by"), ask=ask)
        stored, findings = store.record_checklist(record.id, answered)
    out().print(
        f"recorded the checklist for course #{record.id} ({code}), answered "
        f"{stored.checklist.answered_at} by {stored.checklist.answered_by}"
    )
    show_findings(findings, "Checklist")
    if blocking(findings):
        raise typer.Exit(1)


@checklist_app.command("show")
def checklist_show_command(
    code: CodeArg,
    course: Annotated[
        int | None, typer.Option("--course", help="Course number (default: active today).")
    ] = None,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The latest checklist of a course and what it means for a session today.

    Exit 0 when it lets sessions go ahead, 1 when it blocks them.
    """
    code = normalize_code(code)
    with open_store(db) as store:
        record = _course_to_amend(store, code, course)
        stored = store.latest_checklist(record.id)
        findings = checklist_findings(
            None if stored is None else stored.checklist,
            today=store.today(),
            recorded_at=None if stored is None else stored.recorded_at,
            prescription_changed_at=record.changed_at,
        )
    if json_out:
        print_json(
            {
                "course": record.id,
                "checklist": None if stored is None else stored.checklist.model_dump(mode="json"),
                "recorded_at": None if stored is None else stored.recorded_at.isoformat(),
                "findings": finding_dicts(findings),
            }
        )
    else:
        if stored is not None:
            c = stored.checklist
            table = Table(
                title=f"Checklist for course #{record.id}, answered {c.answered_at} by "
                f"{c.answered_by}",
                title_justify="left",
            )
            for column in ("class", "question", "answer", "override"):
                table.add_column(column)
            for item, spec in ITEMS.items():
                answer = c.answers.get(item)
                override = c.overrides.get(item)
                table.add_row(
                    spec.item_class.value,
                    spec.question,
                    Text(
                        "-" if answer is None else ("yes" if answer else "no"),
                        style="bold red" if answer else "",
                    ),
                    Text(override.reason if isinstance(override, PrecautionOverride) else ""),
                )
            out().print(table)
        show_findings(findings, "Findings")
        if not findings:
            out().print(Text("the checklist lets sessions go ahead", style="green"))
    if blocking(findings):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("prescribe")(prescribe_command)
    app.add_typer(prescription_app, name="prescription")
    app.add_typer(checklist_app, name="checklist")
