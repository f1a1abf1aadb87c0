"""``estim demo``: a whole session, start to finish, on the built-in simulator.

Starts the simulator on a pseudo-terminal (or in virtual time, or uses a device or an
``estim sim`` you point it at), takes the demo patient's course from a demo records
database, runs the static checks and the records preflight, connects, measures
electrode impedance, titrates automatically to a demo amplitude, runs a shortened
session with the live display, records every event, and prints a summary and where
the progress report is. Ctrl-C, SIGTERM, space or Esc stop all output at once.

The demo writes only to its own database (``demo.db`` in the user's data directory, or
``--db``), never to the clinic's records, whatever ``ESTIM_DB`` says.
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import platformdirs
import typer
from rich.text import Text

from estim.cli.options import LimitsOpt, PlainOpt, SessionProfileOpt, limits_from
from estim.cli.render import stdout_console
from estim.cli.session_input import length_limits, port_url
from estim.cli.session_record import RecordWhenConnected
from estim.cli.session_run import (
    NarratingSink,
    build_plan,
    dose_reading,
    finding_source,
    limits_line,
    port_device,
    run_recorded,
    session_line,
    show_outcome,
    simulated_device,
    static_check,
    write_report,
)
from estim.clock import NS_PER_US
from estim.device.profile import builtin_profile, load_profile
from estim.errors import InputError, PreflightBlocked
from estim.protocols.catalog import get_protocol
from estim.protocols.schedule import compile_schedule
from estim.records.models import SessionStart
from estim.session.director import AutoSession
from estim.session.plan import truncate_schedule
from estim.session.runner import SessionRunner
from estim.units import ma_to_ua, s_to_us

if TYPE_CHECKING:
    from estim.protocols.models import Protocol
    from estim.records.store import RecordsPreflight, Store

DEMO_PROTOCOL = "stress"
DEMO_PROFILE = "estim-pf2"
DEMO_CLINICIAN = "estim demo (automatic)"
DEMO_TARGET_MA = Decimal(12)
DEMO_CYCLES = 2  # 2 x 17 s: a real-time demo under a minute
DEMO_CODES = 99  # DEMO-0001 .. DEMO-0099: a fresh demo patient once one has had today's dose
TITRATION_STEP_S = Decimal("0.15")
PROFILE_NAME_MAX = length_limits(SessionStart, "profile_name")[1] or 200


def default_demo_db() -> Path:
    return platformdirs.user_data_path("estim", appauthor=False) / "demo.db"


def demo(
    *,
    virtual: Annotated[
        bool,
        typer.Option(
            "--virtual", help="Run the full-length session in virtual time (seconds of wall time)."
        ),
    ] = False,
    port: Annotated[
        str | None,
        typer.Option(
            "--port",
            metavar="URL",
            help="Use this device or running `estim sim` (path or pyserial URL) instead of "
            "starting the simulator.",
        ),
    ] = None,
    profile_file: SessionProfileOpt = None,
    db: Annotated[
        Path | None,
        typer.Option(
            "--db",
            metavar="PATH",
            help="Demo records database (default: demo.db in the user's data directory).",
            show_default=False,
        ),
    ] = None,
    plain: PlainOpt = False,
    limits_file: LimitsOpt = None,
) -> None:
    """Run a whole session on the built-in simulator: checks, titration, stimulation, summary."""
    from estim.records.store import Store

    if virtual and port is not None:
        raise InputError(
            "--virtual runs the built-in simulator in virtual time; it cannot drive --port"
        )
    url = None if port is None else port_url(port)
    started = time.monotonic()
    console = stdout_console()
    plain = plain or not console.is_terminal
    profile = load_profile(profile_file) if profile_file else builtin_profile(DEMO_PROFILE)
    limits = limits_from(limits_file)
    protocol = get_protocol(DEMO_PROTOCOL)
    db_path = db or default_demo_db()
    where = "in virtual time" if virtual else "in real time"
    console.print(
        Text(
            f"estim demo: a {'full-length' if virtual else 'shortened'} {protocol.id} session "
            f"{where}. Research software, not a certified medical device.",
            style="bold",
        ),
        soft_wrap=True,
    )
    with Store.open(db_path) as store:
        store.recover_interrupted()
        code, preflight = _demo_patient(store, protocol)
        resolved = preflight.resolved
        assert resolved is not None
        verdict, warnings = static_check(resolved, profile, limits)
        console.print(Text(limits_line(limits, limits_file)), soft_wrap=True)
        if verdict.blocked:
            for finding in verdict.errors:
                console.print(Text(f"  BLOCKS {finding_source(finding)}: {finding}", style="red"))
            raise PreflightBlocked(
                f"the static checks block {protocol.id} on {profile.identity.model}",
                list(verdict.errors),
            )
        console.print(
            f"static checks: {len(verdict.errors)} errors (prescription and device profile); "
            f"warnings acknowledged by the demo: {', '.join(sorted(warnings)) or 'none'}",
            highlight=False,
            soft_wrap=True,
        )
        for finding in verdict.warnings:
            # A session start would need --acknowledge for each; the demo says what it
            # acknowledged, so nobody takes its run as a clean bill for the device.
            console.print(
                Text(f"  acknowledged {finding_source(finding)}: {finding}", style="yellow"),
                soft_wrap=True,
            )
        dose = dose_reading(preflight)
        console.print(
            f"records preflight: checklist, eligibility and dose clear for {code} "
            f"({dose.sessions_today} today, {dose.sessions_this_week} this week)",
            highlight=False,
            soft_wrap=True,
        )
        schedule = compile_schedule(resolved)
        if not virtual:
            schedule = truncate_schedule(schedule, min(DEMO_CYCLES, schedule.cycles))
        plan = build_plan(
            resolved,
            profile,
            verdict,
            acknowledged=warnings,
            dose=dose,
            schedule=schedule,
            labels={"clinician": DEMO_CLINICIAN, "purpose": "demo"},
            limits=limits,
            validation_skip_reason=(
                "estim demo: a demonstration on a simulator or a bench unit, not a patient "
                "session; `estim session start` requires the bench record"
            ),
        )
        session_start = SessionStart(
            patient_code=code,
            protocol_sha256=resolved.protocol.content_hash,
            profile_name=_profile_name(profile_file),
            profile_sha256=profile.sha256,
            clinician=DEMO_CLINICIAN,
        )
        device_cm = (
            port_device(profile, url)
            if url is not None
            else simulated_device(profile, virtual=virtual)
        )
        with device_cm as device, RecordWhenConnected(store, session_start) as records:
            console.print(
                f"patient {code}: protocol {protocol.id} v{protocol.version}, "
                f"{schedule.cycles} cycles, ceiling {plan.ceiling_ua / 1000:g} mA; "
                f"device {profile.identity.model}: {device.description}",
                highlight=False,
                soft_wrap=True,
            )
            target = min(ma_to_ua(DEMO_TARGET_MA), plan.ceiling_ua)
            sink = NarratingSink(records, console)
            runner = SessionRunner(
                device.driver,
                plan,
                clock=device.clock,
                sink=sink,
                director=AutoSession(
                    target_ua=target,
                    step_interval_ns=s_to_us(TITRATION_STEP_S) * NS_PER_US,
                ),
            )
            summary, record = run_recorded(
                runner,
                sink,
                records,
                console=console,
                plain=plain,
                keys=not plain,
                clinician=DEMO_CLINICIAN,
            )
        report = write_report(store, code, db_path.parent / f"{code}-report.html")
    show_outcome(
        console,
        summary,
        [
            session_line(record, str(db_path)),
            f"progress report: {report}",
            f"or: estim report {code} --db {db_path}",
        ],
        time.monotonic() - started,
    )
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)


def _profile_name(profile_file: Path | None) -> str:
    """The profile as the session record names it (a long path by its file name)."""
    if profile_file is None:
        return DEMO_PROFILE
    name = str(profile_file)
    return name if len(name) <= PROFILE_NAME_MAX else profile_file.name[:PROFILE_NAME_MAX]


def _demo_patient(store: Store, protocol: Protocol) -> tuple[str, RecordsPreflight]:
    """The first demo patient who may have a session today (seeded as needed)."""
    from estim.records.seed import seed_demo_patient

    skipped: list[str] = []
    for number in range(1, DEMO_CODES + 1):
        code = f"DEMO-{number:04d}"
        seed_demo_patient(store, protocol, code=code)
        preflight = store.preflight(code)
        blocking = {f.code for f in preflight.blocking}
        if not blocking:
            if skipped:
                stdout_console().print(
                    f"{', '.join(skipped)} already had today's session (the dose cap refuses "
                    f"another); the demo uses a new demo patient, {code}",
                    highlight=False,
                    soft_wrap=True,
                )
            return code, preflight
        if not blocking <= {"DOSE-DAY", "DOSE-WEEK"}:
            raise PreflightBlocked(
                f"demo patient {code} is blocked: " + "; ".join(str(f) for f in preflight.blocking),
                list(preflight.blocking),
            )
        skipped.append(code)
    raise PreflightBlocked(
        f"every demo patient has had today's session; remove {store.location} or use --db"
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
