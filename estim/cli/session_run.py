"""Wiring a session together for the command line: device, plan, records, report.

Shared by ``estim demo`` and ``estim session start``. The controller knows nothing of
records, simulators or screens; this module hands it a driver, a plan and an event
sink, runs it on the clinician's console, and files the outcome.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from estim.cli.session_record import RecordWhenConnected
from estim.clock import Clock, MonotonicClock, VirtualClock
from estim.device.base import Stimulator
from estim.device.profile import DeviceProfile
from estim.device.registry import create_stimulator
from estim.errors import DeviceDisconnected, InputError, SessionError
from estim.events import EventSink, JsonValue, SessionEvent
from estim.protocols.prescription import ResolvedPrescription
from estim.protocols.schedule import Schedule
from estim.safety.checks import Category as CheckCategory
from estim.safety.checks import Finding as CheckFinding
from estim.safety.checks import Severity as CheckSeverity
from estim.safety.checks import Verdict, check, check_profile
from estim.safety.interlocks import CommunicationLoss, DoseReading
from estim.safety.limits import DEFAULT_LIMITS, Limits
from estim.session.plan import SessionPlan, ValidationCheck, findings_from_verdict
from estim.session.runner import SessionRunner
from estim.session.summary import SessionSummary
from estim.units import ua_to_ma

if TYPE_CHECKING:
    from estim.records.models import SessionRecord
    from estim.records.store import RecordsPreflight, Store

log = logging.getLogger(__name__)


@dataclass
class Device:
    """A driver ready to open, the clock it runs on, and how to describe it."""

    driver: Stimulator
    clock: Clock
    description: str


@contextlib.contextmanager
def simulated_device(profile: DeviceProfile, *, virtual: bool, seed: int = 0) -> Iterator[Device]:
    """The built-in simulator: on a real pty (real time) or in-process (virtual time).

    On exit the simulator is closed, which powers its output stage off.
    """
    from estim.device.simulator import PtyServer, SimulatedDevice

    if virtual:
        clock = VirtualClock()
        device = SimulatedDevice(profile, clock=clock, seed=seed)
        try:
            driver = create_stimulator(profile, device.url, clock=clock)
            yield Device(driver, clock, f"built-in simulator in virtual time ({device.url})")
        finally:
            device.close()
        return
    real_clock = MonotonicClock()
    device = SimulatedDevice(profile, clock=real_clock, seed=seed)
    server = PtyServer(device)
    path = server.start()
    try:
        driver = create_stimulator(profile, path, clock=real_clock)
        yield Device(driver, real_clock, f"built-in simulator on {path}")
    finally:
        server.stop()


@contextlib.contextmanager
def port_device(profile: DeviceProfile, url: str) -> Iterator[Device]:
    """A device (or an ``estim sim``) at a serial port or pyserial URL, in real time."""
    clock = MonotonicClock()
    yield Device(create_stimulator(profile, url, clock=clock), clock, url)


def static_check(
    resolved: ResolvedPrescription, profile: DeviceProfile, limits: Limits = DEFAULT_LIMITS
) -> tuple[Verdict, frozenset[str]]:
    """The static checks, and the codes of their warnings (to be acknowledged).

    Both sets: the prescription x protocol x profile x limits checks, and the profile's
    own validation (``estim profile check``: watchdog, leakage, tolerances ...). A
    profile warning is as much the clinician's to acknowledge as a prescription's, and
    a profile error blocks the session as it blocks the profile. ``limits``: a site's
    overrides (``--limits``), else the defaults.
    """
    verdict = combined_verdict(
        check(resolved, resolved.library_protocol, profile, limits),
        check_profile(profile, limits),
    )
    return verdict, verdict.codes(CheckSeverity.WARNING)


def limits_line(limits: Limits, source: Path | None) -> str:
    """Which limits a session is checked against, for the clinician to see."""
    if source is None:
        return "limits: the built-in defaults"
    overrides = limits.overrides()
    if not overrides:
        return f"limits: {source} (no figure differs from the defaults)"
    changed = ", ".join(f"{limit.id} = {limit}" for limit in overrides)
    return f"limits: {source}, overriding {changed}"


def combined_verdict(prescription: Verdict, profile: Verdict) -> Verdict:
    """The prescription's verdict with the profile's findings added.

    A finding both report (the same code and message, e.g. a device that does not
    measure current) is kept once.
    """
    seen = {(f.code, f.message) for f in prescription.results}
    extra = tuple(f for f in profile.results if (f.code, f.message) not in seen)
    return Verdict(
        prescription.subject,
        prescription.results + extra,
        prescription.dose,
        {**prescription.details, "profile_check": profile.subject},
    )


def finding_source(finding: CheckFinding) -> str:
    """Where a finding comes from, for a person: the profile, or the static checks."""
    return "profile check" if finding.category is CheckCategory.PROFILE else "static check"


def build_plan(
    resolved: ResolvedPrescription,
    profile: DeviceProfile,
    verdict: Verdict,
    *,
    acknowledged: frozenset[str],
    dose: DoseReading,
    schedule: Schedule | None = None,
    labels: dict[str, str] | None = None,
    validation: ValidationCheck | None = None,
    validation_skip_reason: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> SessionPlan:
    return SessionPlan.build(
        resolved,
        profile,
        findings=findings_from_verdict(verdict, acknowledged),
        dose=dose,
        schedule=schedule,
        labels=labels,
        validation=validation,
        validation_skip_reason=validation_skip_reason,
        limits=limits,
    )


def dose_reading(preflight: RecordsPreflight) -> DoseReading:
    if preflight.dose is None:
        raise InputError("the records could not count this patient's sessions")
    return DoseReading(preflight.dose.sessions_today, preflight.dose.sessions_this_week)


def run_recorded(
    runner: SessionRunner,
    sink: NarratingSink,
    records: RecordWhenConnected,
    *,
    console: Console,
    plain: bool,
    keys: bool,
    clinician: str,
) -> tuple[SessionSummary, SessionRecord]:
    """Run the session on the console and close its record; refuse what was not one.

    - The display failed (a closed pipe ...): the session was stopped at once (by the
      console, or by the sink for a narration line); the record is closed from the
      controller's summary, and :class:`~estim.errors.SessionError` says so (exit 4).
    - The port could not be opened or the device never answered: nothing was
      stimulated and nothing recorded; :class:`~estim.errors.DeviceDisconnected`
      (exit 3), like ``estim profile bench``.
    - The records refused to open the session when the device answered (they changed
      since the preflight): that refusal, as the records gave it.
    """
    from estim.cli.console import run_console, signals_as_emergency_stop, stop_for_display_failure

    # Held until the record is closed, not only while the loop runs: a second Ctrl-C or
    # a SIGTERM while the record is being finished is one more (harmless) stop, never a
    # KeyboardInterrupt or a kill half-way through closing the record.
    with signals_as_emergency_stop(runner):
        sink.on_display_failure = lambda _err: stop_for_display_failure(runner)
        try:
            summary = run_console(
                runner, console=console, plain=plain, keys=keys, clinician=clinician
            )
        except Exception as err:
            # The loop has ended (run_console joins it): close the record from what the
            # controller says was delivered, so the dose counts what the patient received.
            records.finish_after_error(runner.summary(), err)
            if isinstance(err, OSError):
                raise display_failed(err, records) from err
            raise
        return summary, _close_record(summary, sink, records)


def _close_record(
    summary: SessionSummary, sink: NarratingSink, records: RecordWhenConnected
) -> SessionRecord:
    if records.open_error is not None:
        raise records.open_error
    if records.recorder is None:
        nothing = "nothing was stimulated and no session was recorded"
        if records.not_connected is not None:
            raise DeviceDisconnected(f"{records.not_connected}; {nothing}")
        raise SessionError(
            f"the session ended before the device answered ({summary.reason}); {nothing}"
        )
    record = records.finish(summary)
    assert record is not None
    if sink.display_error is not None:
        raise display_failed(sink.display_error, records, record)
    return record


def display_failed(
    err: BaseException, records: RecordWhenConnected, record: SessionRecord | None = None
) -> SessionError:
    """The error for a session stopped because its display failed (said on stderr)."""
    if isinstance(err, BrokenPipeError):
        # stdout is gone: send what is left of it nowhere, so the interpreter's final
        # flush does not add a second error to the message on stderr.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
    where = ""
    if record is not None:
        where = f"; recorded as session #{record.id} ({record.outcome})"
    elif records.recorder is not None:
        where = f"; recorded as session #{records.recorder.session_id}"
    return SessionError(
        f"the display failed ({type(err).__name__}: {err}): nobody could see or steer the "
        f"session, so it was stopped at once (emergency stop, output zeroed){where}"
    )


def show_outcome(
    console: Console, summary: SessionSummary, lines: list[str], wall_s: float
) -> None:
    """The summary table and the lines to copy (paths), on stdout."""
    console.print(summary_table(summary, [("wall time", f"{wall_s:.1f} s")]))
    for line in lines:
        # Paths on lines of their own (never wrapped inside a table), to copy and paste.
        console.print(line, highlight=False, soft_wrap=True)


def write_report(store: Store, code: str, path: Path) -> Path:
    """The patient's progress report as one self-contained HTML file."""
    from estim.records.report import build_report
    from estim.records.report_html import render_html

    report = build_report(
        patient=store.patient(code),
        courses=store.prescriptions(code),
        diary=store.diary(code),
        sessions=store.sessions(code),
        overrides=store.overrides(code),
        active_findings=[],
        generated_at=store._now(),
        start=None,
        end=store.today(),
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_html(report), encoding="utf-8")
    except OSError as err:
        raise InputError(f"{path}: cannot write the report ({err.strerror})") from err
    return path


class NarratingSink:
    """Passes every event on to the real sink (durable first), then says the notable ones
    in a line a person can read: connection, preflight, confirmed amplitude, start,
    pause, stop, trips, emergency stops.

    The durable append alone decides whether ``append`` succeeded: its failure is the
    controller's to handle (it stops the session: what cannot be recorded must not go
    on). A failure to *show* the line afterwards (a closed pipe, a broken terminal) is
    not a records failure: it is a display failure, and ends the session the way the
    console ends it when its display fails (``on_display_failure``, e.g.
    :func:`~estim.cli.console.stop_for_display_failure`). Nothing more is printed after one.
    """

    def __init__(
        self,
        inner: EventSink,
        console: Console,
        on_display_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.inner = inner
        self.console = console
        self.on_display_failure = on_display_failure
        self.display_error: BaseException | None = None
        self._connected = False

    def append(self, event: SessionEvent) -> None:
        self.inner.append(event)  # durable: this alone decides success
        if event.kind == "connected":
            self._connected = True
        if self.display_error is not None:
            return
        try:
            text = narrate(event, connected=self._connected)
            if text is not None:
                self.console.print(text, soft_wrap=True)
        except Exception as err:
            self.display_error = err
            log.warning("the session display failed: %s: %s", type(err).__name__, err)
            if self.on_display_failure is not None:
                try:
                    self.on_display_failure(err)
                except Exception:
                    log.exception("stopping after a display failure failed")


def narrate(event: SessionEvent, *, connected: bool = True) -> Text | None:
    """The line a person reads for an event (None: nothing to say).

    ``connected``: whether the device has answered yet; a communication trip before it
    has means the session never connected (no output was ever on to zero).
    """
    data = event.data
    if event.kind == "trip" and not connected:
        trips = data.get("trips")
        if isinstance(trips, list) and trips and isinstance(trips[0], dict):
            first = trips[0]
            if first.get("interlock_id") == CommunicationLoss.ID:
                return Text(f"NOT CONNECTED: {first.get('reason')}", style="bold red")
    if event.kind == "connected":
        return Text(
            f"connected: {data.get('model')} serial {data.get('serial_number')} "
            f"firmware {data.get('firmware')}"
        )
    if event.kind == "unit_confirmation":
        matches = data.get("matches") is True
        return Text(
            f"unit confirmed by {data.get('confirmed_by')}: label serial "
            f"{data.get('confirmed_serial')} ({data.get('how')}); "
            + ("matches" if matches else "DOES NOT MATCH the bench record or the device"),
            style="" if matches else "bold red",
        )
    if event.kind == "preflight":
        impedance = data.get("impedance_ohm")
        shown = (
            ", ".join(
                f"channel {ch} {z} ohm" if z is not None else f"channel {ch} not measurable"
                for ch, z in impedance.items()
            )
            if isinstance(impedance, dict)
            else "-"
        )
        tripped = data.get("trips")
        verdict = f"tripped {tripped}" if tripped else "clear"
        return Text(f"preflight: electrode impedance {shown}; {verdict}")
    if event.kind == "interlock_skipped":
        return Text(f"interlock skipped: {data.get('interlock_id')}: {data.get('reason')}", "dim")
    if event.kind == "trip":
        trips = data.get("trips")
        if isinstance(trips, list) and trips and isinstance(trips[0], dict):
            first = trips[0]
            return Text(
                f"TRIP {first.get('interlock_id')}: {first.get('reason')} (output zeroed)",
                style="bold red",
            )
    if event.kind == "emergency_stop":
        sources = data.get("sources")
        return Text(f"EMERGENCY STOP ({sources}): all output zeroed", style="bold red")
    if event.kind == "state":
        return _narrate_state(data)
    return None


def _narrate_state(data: Mapping[str, JsonValue]) -> Text | None:
    trigger = data.get("trigger")
    if trigger == "confirm_amplitude" and isinstance(data.get("confirmed_ua"), int):
        return Text(f"amplitude confirmed: {ma(int(data['confirmed_ua']))}")  # type: ignore[arg-type]
    if trigger == "start":
        return Text("stimulation started: ramping up from zero")
    if trigger in ("pause", "resume", "stop", "finish", "acknowledge_fault"):
        return Text(f"{str(trigger).replace('_', ' ')}: now {data.get('to')}")
    return None


# --- what people read --------------------------------------------------------------------


def ma(value_ua: int | None) -> str:
    return "-" if value_ua is None else f"{ua_to_ma(value_ua).normalize():f} mA"


def seconds(value_us: int) -> str:
    whole, rest = divmod(value_us, 1_000_000)
    minutes, secs = divmod(whole, 60)
    text = f"{secs}.{rest // 100_000} s" if rest else f"{secs} s"
    return f"{minutes} min {text}" if minutes else text


def summary_table(summary: SessionSummary, extra: list[tuple[str, str]] | None = None) -> Table:
    table = Table(title="Session summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    style = {"completed": "green", "stopped": "yellow"}.get(summary.outcome.value, "bold red")
    table.add_row("outcome", Text(summary.outcome.value.replace("_", " "), style=style))
    table.add_row("reason", Text(summary.reason))
    table.add_row("confirmed amplitude", ma(summary.confirmed_ua))
    table.add_row(
        "stimulation on-time",
        f"{seconds(summary.on_time_us)} of {seconds(summary.planned_on_time_us)} planned",
    )
    table.add_row(
        "contractions", f"{summary.contractions} of {summary.planned_contractions} planned"
    )
    table.add_row("session time", seconds(summary.schedule_elapsed_us))
    for trip in summary.trips:
        table.add_row("trip", Text(str(trip), style="red"))
    if summary.fault_acknowledged_by:
        table.add_row("fault acknowledged by", summary.fault_acknowledged_by)
    confirmed = {True: "yes", False: "NO", None: "not known (link lost)"}
    table.add_row("device confirmed output off", confirmed[summary.output_confirmed_off])
    for interlock_id, reason in summary.skipped_interlocks:
        table.add_row("skipped interlock", Text(f"{interlock_id}: {reason}", style="dim"))
    table.add_row("events logged", str(summary.events))
    for label, value in extra or []:
        table.add_row(label, Text(value))
    return table


def session_line(record: SessionRecord | None, db: str) -> str:
    if record is None:
        return f"records: {db}"
    return f"session #{record.id} recorded in {db}"


def is_interactive() -> bool:
    return sys.stdout.isatty() and sys.stdin.isatty()
