"""``estim log list | show | verify | export``: session records and their event logs.

``verify`` recomputes every hash of a session's chain and names the first broken
link; it exits 1 when the log does not verify (a check found a problem), 0 when it
does. ``export`` writes a self-contained JSON file that anyone can re-check with any
SHA-256 tool (see docs/records.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from estim.cli.records_cmd import DbOpt, JsonOpt, open_store, out, print_json, write_text_file
from estim.errors import InputError
from estim.records.chain import ChainedEvent
from estim.records.models import SessionRecord
from estim.safety.limits import DEFAULT_LIMITS, LimitId
from estim.units import ua_to_ma

SessionArg = Annotated[
    str, typer.Argument(help="Session number (estim log list) or the start of its uid.")
]

log_app = typer.Typer(
    name="log",
    help="Session records and their hash-chained event logs.",
    no_args_is_help=True,
)


def _ma(value_ua: int | None) -> str:
    return "-" if value_ua is None else f"{ua_to_ma(value_ua).normalize():f} mA"


@log_app.command("list")
def list_command(
    code: Annotated[str | None, typer.Argument(help="Only this patient's sessions.")] = None,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Sessions, oldest first."""
    with open_store(db) as store:
        sessions = store.sessions(code)
    if json_out:
        print_json([s.model_dump(mode="json") for s in sessions])
        return
    table = Table(title=f"{len(sessions)} session(s)", title_justify="left")
    for column in ("#", "patient", "day", "started (UTC)", "outcome", "amplitude", "events"):
        table.add_column(column)
    for s in sessions:
        table.add_row(
            str(s.id),
            s.patient_code,
            s.diary_day.isoformat(),
            f"{s.started_at:%Y-%m-%d %H:%M:%S}",
            Text(s.outcome.value if s.outcome else "open"),
            _ma(s.confirmed_amplitude_ua),
            str(s.event_count),
        )
    out().print(table)


def _data_text(data: object) -> str:
    """``key=value`` pairs, values as JSON: compact and unambiguous."""
    if isinstance(data, dict):
        return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in data.items())
    return json.dumps(data, ensure_ascii=False)


def _device_text(s: SessionRecord) -> str:
    if s.device is None:
        return "- (never connected)"
    return f"{s.device.model} s/n {s.device.serial_number} fw {s.device.firmware}"


def _limits_text(events: Sequence[ChainedEvent]) -> str:
    """The limits a session ran with, from its ``session`` event: a site's overrides."""
    for event in events:
        if event.kind == "session":
            overrides = event.data.get("limits_overrides")
            if overrides is None:
                return "- (not recorded)"
            if not overrides:
                return "the built-in defaults"
            return ", ".join(_override_text(key, value) for key, value in overrides.items())
    return "-"  # the controller never started (no session event)


def _override_text(key: str, figure: object) -> str:
    try:
        unit = DEFAULT_LIMITS.get(LimitId(key)).unit
    except ValueError:  # an ID this version of estim does not know: show it as logged
        unit = ""
    return f"{key} = {figure} {unit}".rstrip()


def session_table(s: SessionRecord, events: Sequence[ChainedEvent] = ()) -> Table:
    table = Table(show_header=False, box=None, title=f"Session #{s.id}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("uid", s.uid),
        ("patient", s.patient_code),
        ("diary day", s.diary_day.isoformat()),
        ("course", f"#{s.prescription_id} revision {s.prescription_revision}"),
        ("prescription sha256", s.prescription_sha256),
        ("protocol sha256", s.protocol_sha256),
        ("device profile", f"{s.profile_name} ({s.profile_sha256[:12]})"),
        ("validation record", "-" if s.validation is None else str(s.validation.get("path"))),
        ("validation sha256", s.validation_sha256 or "-"),
        ("device", _device_text(s)),
        ("clinician", s.clinician),
        ("started (UTC)", f"{s.started_at:%Y-%m-%d %H:%M:%S}"),
        ("ended (UTC)", "-" if s.ended_at is None else f"{s.ended_at:%Y-%m-%d %H:%M:%S}"),
        ("outcome", s.outcome.value if s.outcome else "open"),
        ("reason", s.reason or "-"),
        ("confirmed amplitude", _ma(s.confirmed_amplitude_ua)),
        ("on-time", "-" if s.on_time_us is None else f"{s.on_time_us / 1e6:.1f} s"),
        ("contractions", "-" if s.contractions is None else str(s.contractions)),
        ("events", str(s.event_count)),
        ("eligibility override", "-" if s.override_id is None else f"#{s.override_id}"),
        ("limits", _limits_text(events)),
    ]
    for key, value in rows:
        table.add_row(key, Text(value))
    return table


@log_app.command("show")
def show_command(
    session: SessionArg,
    db: DbOpt = None,
    json_out: JsonOpt = False,
    limit: Annotated[
        int | None, typer.Option("--tail", help="Only the last N events.", min=1)
    ] = None,
) -> None:
    """A session record and its events."""
    with open_store(db) as store:
        record = store.session(session)
        events = store.events(record.id)
    shown = events[-limit:] if limit else events
    if json_out:
        print_json(
            {
                "session": record.model_dump(mode="json"),
                "events": [
                    {
                        "sequence": e.sequence,
                        "kind": e.kind,
                        "state": e.state,
                        "monotonic_ns": e.monotonic_ns,
                        "wall_time": e.wall_time,
                        "data": e.data,
                        "sha256": e.hash,
                    }
                    for e in shown
                ],
            }
        )
        return
    console = out()
    console.print(session_table(record, events))
    table = Table(title=f"Events ({len(shown)} of {len(events)})", title_justify="left")
    for column in ("#", "wall time (UTC)", "t (s)", "kind", "state", "data"):
        table.add_column(column)
    # Time from the controller's first event: events the records write themselves may
    # carry another clock's reading (the process clock, not the controller's).
    controller = [e for e in events if not e.kind.startswith("records.")]
    t0 = controller[0].monotonic_ns if controller else 0
    for e in shown:
        relative = "" if e.kind.startswith("records.") else f"{(e.monotonic_ns - t0) / 1e9:.3f}"
        table.add_row(
            str(e.sequence),
            e.wall_time[11:23],
            relative,
            Text(e.kind),
            Text(e.state),
            Text(_data_text(e.data)),
        )
    console.print(table)


@log_app.command("verify")
def verify_command(
    session: Annotated[
        str | None, typer.Argument(help="Session number or uid prefix; omit with --all.")
    ] = None,
    all_sessions: Annotated[bool, typer.Option("--all", help="Verify every session.")] = False,
    db: DbOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Recompute a session's hash chain; name the first broken link. Exit 1 if broken."""
    if (session is None) == (not all_sessions):
        raise InputError("give a SESSION or --all (not both)")
    with open_store(db) as store:
        if all_sessions:
            results = store.verify_all()
        else:
            record = store.session(session or "")
            results = [(record.id, store.verify(record.id))]
    broken = [(r, v) for r, v in results if not v.ok]
    if json_out:
        print_json(
            [
                {
                    "session": r,
                    "ok": v.ok,
                    "events": v.count,
                    "head_sha256": v.head_hash,
                    "broken": None if v.broken is None else str(v.broken),
                    "broken_sequence": None if v.broken is None else v.broken.sequence,
                }
                for r, v in results
            ]
        )
    else:
        console = out()
        for r, v in results:
            if v.ok:
                console.print(
                    Text(f"session #{r}: ok, {v.count} events, head {v.head_hash}", "green")
                )
            else:
                console.print(Text(f"session #{r}: BROKEN at {v.broken}", style="bold red"))
    if broken:
        raise typer.Exit(1)


@log_app.command("export")
def export_command(
    session: SessionArg,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the JSON here instead of printing it.")
    ] = None,
    db: DbOpt = None,
) -> None:
    """Export a session with its header, every event and hash, and the verdict, as JSON."""
    with open_store(db) as store:
        record = store.session(session)
        data = store.export_session(record.id)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if out_file is None:
        typer.echo(text, nl=False)
        return
    write_text_file(out_file, text)
    out().print(f"wrote {out_file} ({len(data['events'])} events, verified: {data['verified']})")


def register(app: typer.Typer) -> None:
    app.add_typer(log_app, name="log")
