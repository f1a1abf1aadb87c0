"""Wiring a session together for the command line: device, plan, records, report.

Shared by ``estim demo`` and ``estim session start``. The controller knows nothing of
records, simulators or screens; this module hands it a driver, a plan and an event
sink, runs it on the clinician's console, and files the outcome.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from estim.clock import Clock, MonotonicClock, VirtualClock
from estim.device.base import Stimulator
from estim.device.profile import DeviceProfile
from estim.device.registry import create_stimulator
from estim.errors import InputError
from estim.events import EventSink, JsonValue, SessionEvent
from estim.protocols.prescription import ResolvedPrescription
from estim.protocols.schedule import Schedule
from estim.safety.checks import Severity as CheckSeverity
from estim.safety.checks import Verdict, check
from estim.safety.interlocks import DoseReading
from estim.session.plan import SessionPlan, ValidationCheck, findings_from_verdict
from estim.session.summary import SessionSummary
from estim.units import ua_to_ma

if TYPE_CHECKING:
    from estim.records.models import SessionRecord
    from estim.records.store import RecordsPreflight, Store


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
    resolved: ResolvedPrescription, profile: DeviceProfile
) -> tuple[Verdict, frozenset[str]]:
    """The static checks, and the codes of their warnings (to be acknowledged)."""
    verdict = check(resolved, resolved.library_protocol, profile)
    return verdict, verdict.codes(CheckSeverity.WARNING)


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
    )


def dose_reading(preflight: RecordsPreflight) -> DoseReading:
    if preflight.dose is None:
        raise InputError("the records could not count this patient's sessions")
    return DoseReading(preflight.dose.sessions_today, preflight.dose.sessions_this_week)


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
    pause, stop, trips, emergency stops."""

    def __init__(self, inner: EventSink, console: Console) -> None:
        self.inner = inner
        self.console = console

    def append(self, event: SessionEvent) -> None:
        self.inner.append(event)
        text = narrate(event)
        if text is not None:
            self.console.print(text, soft_wrap=True)


def narrate(event: SessionEvent) -> Text | None:
    data = event.data
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
