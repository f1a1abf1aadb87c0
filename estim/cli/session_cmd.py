"""``estim session ...``: prescribed sessions from the records, and the state diagram.

``estim session start CODE --port URL`` runs one prescribed session for a patient:

1. records preflight (before any port is opened): an active course, a complete and
   recent contraindication checklist, eligibility from the diary (a clinician may
   override with a reason), and the dose so far against the prescription;
2. static checks of prescription x protocol x profile x standard limits, and the
   profile's own validation (``estim profile check``): errors block, each warning
   must be acknowledged by name (``--acknowledge CODE``);
3. the controller connects; once the device answers, the session opens in the
   records (the same records checks again, inside the transaction). A port that
   cannot be opened or a device that never answers ends the command with exit code 3
   and no session record: nothing was stimulated. The controller then checks the
   device's identity and its bench validation record (``--validation FILE``) and, for
   a device that reports no serial number, the clinician's confirmation of the serial
   on the connected unit's label (``--unit-serial SN``, or typed when asked in a
   terminal), measures electrode impedance, arms, and waits for the clinician:
   ``+``/``-`` titrate from zero by the prescribed step, ``c`` confirms, ``s``
   starts, ``p`` pauses and resumes, ``q`` stops in order, space or Esc is the
   emergency stop (so are Ctrl-C and SIGTERM), ``a`` acknowledges a fault.

Without a keyboard (``--plain`` or piped), ``--titrate-to MA`` titrates automatically
to that amplitude (never above the prescription's ceiling) and starts.

Every option is checked before the records are opened or a port is touched
(:mod:`estim.cli.session_input`): bad input gets a message naming the option, the
value, the limit and the fix, exit code 2, and nothing is written.
"""

from __future__ import annotations

import getpass
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.text import Text

from estim.cli.options import LimitsOpt, PlainOpt, SessionProfileOpt, limits_from
from estim.errors import EXIT_STOPPED, InputError, PreflightBlocked, Problem

if TYPE_CHECKING:
    from estim.device.base import DeviceIdentity
    from estim.device.profile import DeviceProfile
    from estim.session.plan import ValidationCheck
    from estim.validation.record import UnitConfirmation, ValidationRecord


session_app = typer.Typer(
    help="Run a prescribed session; show the session state machine.",
    no_args_is_help=True,
)


@session_app.command("diagram")
def diagram(
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="Write the page here instead of printing it."),
    ] = None,
) -> None:
    """The state machine as Markdown with a Mermaid diagram, generated from the table."""
    from estim.session.diagram import render_markdown

    text = render_markdown()
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as err:
        raise InputError(f"{out}: cannot write ({err.strerror})") from err
    typer.echo(f"wrote {out}")


@session_app.command("start")
def start(
    code: Annotated[str, typer.Argument(help="Pseudonymous patient code, e.g. PF-0042.")],
    *,
    port: Annotated[
        str,
        typer.Option(
            "--port", metavar="URL", help="The stimulator: a serial port path or pyserial URL."
        ),
    ],
    profile_file: SessionProfileOpt = None,
    validation_file: Annotated[
        Path | None,
        typer.Option(
            "--validation",
            metavar="FILE",
            help="The unit's bench validation record (estim profile bench --out FILE). "
            "Without one the session is refused at connect.",
        ),
    ] = None,
    unit_serial: Annotated[
        str | None,
        typer.Option(
            "--unit-serial",
            metavar="SN",
            help="The serial number on the label of the unit connected, confirming which "
            "unit it is. Needed for a device that reports no serial number (the RehaStim2; "
            "asked for when stdin is a terminal): it must be the label serial the bench "
            "record names. For a device that reports its serial, it must match that.",
        ),
    ] = None,
    clinician: Annotated[
        str | None,
        typer.Option(
            "--clinician", metavar="NAME", help="Who runs the session (default: your user name)."
        ),
    ] = None,
    acknowledge: Annotated[
        list[str] | None,
        typer.Option(
            "--acknowledge",
            metavar="CODE",
            help="Acknowledge a warning of the static checks or of the device profile "
            "(estim profile check) by its code (repeat for each).",
        ),
    ] = None,
    override_eligibility: Annotated[
        str | None,
        typer.Option(
            "--override-eligibility",
            metavar="REASON",
            help="Stimulate although the diary shows voluntary contraction: the reason (logged).",
        ),
    ] = None,
    titrate_to: Annotated[
        str | None,
        typer.Option(
            "--titrate-to",
            metavar="MA",
            help="Titrate automatically to this many mA and start (no keyboard needed); "
            "within the prescription's ceiling, in its titration steps.",
        ),
    ] = None,
    plain: PlainOpt = False,
    limits_file: LimitsOpt = None,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="PATH",
            envvar="ESTIM_DB",
            help="Records database (default: records.db in the user's data directory).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a prescribed session for a patient: preflight, titration, stimulation, record."""
    from estim.cli.records_cmd import open_store
    from estim.cli.render import stdout_console
    from estim.cli.session_input import (
        acknowledged_codes,
        check_titration_target,
        checked_model,
        clinician_name,
        eligibility_reason,
        port_url,
        titration_target_ua,
    )
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
        static_check,
    )
    from estim.device.profile import builtin_profile, load_profile
    from estim.records.models import (
        EligibilityOverride,
        SessionStart,
        ValidationRef,
        normalize_code,
    )
    from estim.session.director import AutoSession, SetUpForClinician
    from estim.session.runner import Director, SessionRunner
    from estim.validation.record import load_record, parse_label_serial

    started = time.monotonic()
    console = stdout_console()
    interactive = console.is_terminal and not plain
    plain = not interactive
    # Everything typed is checked before the records are opened or a port is touched.
    who = clinician_name(clinician, _user_name())
    url = port_url(port)
    target_ua = titration_target_ua(titrate_to)
    if target_ua is None and not interactive:
        raise InputError(
            "no keyboard to titrate with (plain or piped output): give --titrate-to MA, or "
            "run in a terminal without --plain"
        )
    acknowledged = acknowledged_codes(acknowledge)
    reason = eligibility_reason(override_eligibility)
    code = normalize_code(code)
    given_serial = None if unit_serial is None else parse_label_serial(unit_serial)
    profile = load_profile(profile_file) if profile_file else builtin_profile("estim-pf2")
    profile_name = str(profile_file) if profile_file else "estim-pf2"
    bench_record = None if validation_file is None else load_record(validation_file)
    validation_ref = None if validation_file is None else ValidationRef.from_file(validation_file)
    limits = limits_from(limits_file)
    options = {
        "clinician": "--clinician",
        "reason": "--override-eligibility",
        "profile_name": "--profile",
        "validation": "--validation",
    }
    override = (
        None
        if reason is None
        else checked_model(EligibilityOverride, options, reason=reason, clinician=who)
    )
    with open_store(db) as store:
        preflight = store.preflight(code, eligibility_override=override)
        for finding in preflight.findings:
            console.print(Text(f"records: {finding}"))
        if preflight.blocking or preflight.resolved is None:
            raise PreflightBlocked(
                f"session for {code} not started: the records block it",
                list(preflight.blocking),
            )
        resolved = preflight.resolved
        verdict, warnings = static_check(resolved, profile, limits)
        console.print(Text(limits_line(limits, limits_file)), soft_wrap=True)
        for check_finding in (*verdict.errors, *verdict.warnings):
            console.print(Text(f"{finding_source(check_finding)}: {check_finding}"))
        _check_acknowledged(acknowledged, warnings, frozenset(f.code for f in verdict.errors))
        if verdict.blocked:
            raise PreflightBlocked(
                f"the static checks block {resolved.protocol.id} on {profile.identity.model}",
                list(verdict.errors),
            )
        pending = warnings - acknowledged
        if pending:
            flags = " ".join(f"--acknowledge {c}" for c in sorted(pending))
            raise PreflightBlocked(
                f"warnings need a clinician's acknowledgement before a session: "
                f"{', '.join(sorted(pending))}; read them above, then add {flags}"
            )
        plan = build_plan(
            resolved,
            profile,
            verdict,
            acknowledged=acknowledged,
            dose=dose_reading(preflight),
            labels={"clinician": who},
            validation=_validation_check(validation_file, bench_record, profile, None),
            limits=limits,
        )
        if target_ua is not None and titrate_to is not None:
            check_titration_target(target_ua, titrate_to, plan.ceiling_ua, plan.step_ua)
        session_start = checked_model(
            SessionStart,
            options,
            patient_code=code,
            protocol_sha256=resolved.protocol.content_hash,
            profile_name=profile_name,
            profile_sha256=profile.sha256,
            clinician=who,
            validation=validation_ref,
            eligibility_override=override,
        )
        # Asked last: the confirmation is of the unit about to be connected.
        confirmation = _confirm_unit(bench_record, validation_file, given_serial, who, console)
        if confirmation is not None:
            plan = replace(
                plan,
                validation=_validation_check(validation_file, bench_record, profile, confirmation),
            )
        with (
            port_device(profile, url) as device,
            RecordWhenConnected(store, session_start) as records,
        ):
            director: Director = (
                SetUpForClinician() if target_ua is None else AutoSession(target_ua=target_ua)
            )
            sink = NarratingSink(records, console)
            runner = SessionRunner(
                device.driver, plan, clock=device.clock, sink=sink, director=director
            )
            summary, record = run_recorded(
                runner, sink, records, console=console, plain=plain, keys=interactive, clinician=who
            )
    show_outcome(
        console, summary, [session_line(record, store.location)], time.monotonic() - started
    )
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name in the environment or the passwd file
        return ""


def _check_acknowledged(
    acknowledged: frozenset[str], warnings: frozenset[str], errors: frozenset[str]
) -> None:
    """Every ``--acknowledge`` must name a warning of this session (a typo acknowledges
    nothing, and an error cannot be acknowledged away)."""
    unknown = acknowledged - warnings
    if not unknown:
        return
    problems = [
        Problem(
            "--acknowledge",
            "an error blocks: it cannot be acknowledged"
            if code in errors
            else "names no warning of this session",
            value=code,
            limit=f"one of the warnings: {', '.join(sorted(warnings)) or 'none'}",
            fix="fix what the error says" if code in errors else "drop it, or correct the code",
        )
        for code in sorted(unknown)
    ]
    raise InputError(
        f"--acknowledge names no current warning: {', '.join(sorted(unknown))}; "
        f"the warnings are: {', '.join(sorted(warnings)) or 'none'}",
        problems,
    )


def _validation_check(
    path: Path | None,
    record: ValidationRecord | None,
    profile: DeviceProfile,
    confirmation: UnitConfirmation | None,
) -> ValidationCheck:
    """The plan's check of the bench record against the connected unit.

    The check runs at connect (IL-DEVICE-VALIDATION); the clinician's confirmation of
    the unit, if any, goes with it into the session log whether it matches or not.
    """
    from estim.safety.interlocks import ValidationReading
    from estim.validation.record import record_problems

    def logged(identity: DeviceIdentity) -> dict[str, str | bool | None] | None:
        return None if confirmation is None else confirmation.event_data(record, identity)

    if path is None or record is None:
        return lambda identity: ValidationReading(None, unit_confirmation=logged(identity))
    serial = None if confirmation is None else confirmation.serial

    def check(identity: DeviceIdentity) -> ValidationReading:
        return ValidationReading(
            str(path),
            tuple(record_problems(record, profile, identity, unit_serial=serial)),
            unit_confirmation=logged(identity),
        )

    return check


def _confirm_unit(
    record: ValidationRecord | None,
    path: Path | None,
    given: str | None,
    clinician: str,
    console: Console,
) -> UnitConfirmation | None:
    """The clinician's statement of which unit is connected, if any.

    ``--unit-serial`` when given. Otherwise, for a record made on a unit that reports
    no serial number, the clinician is asked in a terminal (stdin a TTY) to type the
    serial on the connected unit's label. Nobody to ask, or the input ended: None, and
    the session is refused at connect (IL-DEVICE-VALIDATION) for such a unit.
    """
    from estim.validation.record import (
        ConfirmedHow,
        UnitConfirmation,
        parse_label_serial,
        serial_reported,
    )

    if given is not None:
        return UnitConfirmation(given, ConfirmedHow.OPTION, clinician)
    if record is None or serial_reported(record.device) or not sys.stdin.isatty():
        return None
    device = record.device
    # The prompt does not show the serial the record expects: a confirmation typed off
    # the screen would prove nothing about the unit on the desk.
    console.print(
        Text(
            f"The {device.model} reports no serial number: confirm which unit is connected. "
            f"Read the serial number on the label of the unit connected now and type it; "
            f"it is checked against the bench record {path} (Ctrl-D if you cannot: the "
            "session will then be refused).",
            style="bold",
        ),
        soft_wrap=True,
    )
    while True:
        try:
            answer = console.input("Serial number on the connected unit's label: ")
        except EOFError:
            console.print(Text("no unit confirmed (input ended)"))
            return None
        except KeyboardInterrupt:
            console.print(Text("stopped at the unit confirmation: nothing was connected"))
            raise typer.Exit(EXIT_STOPPED) from None
        try:
            serial = parse_label_serial(answer, what="the label serial")
        except InputError as err:
            console.print(Text(str(err), style="red"))
            continue
        return UnitConfirmation(serial, ConfirmedHow.PROMPT, clinician)


def register(app: typer.Typer) -> None:
    app.add_typer(session_app, name="session")
