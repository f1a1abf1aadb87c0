"""Display pieces shared by the commands: rich tables a clinician can read, and JSON.

Every function returns a rich renderable (or plain data for JSON) and prints nothing
itself, so the protocol, profile and demo commands (and the later session console)
compose them. Text that comes from data is wrapped in :class:`rich.text.Text`, never
parsed as markup: a citation such as ``[C2]`` must print as written.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from decimal import Decimal
from fractions import Fraction
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from estim.device.profile import DeviceProfile
from estim.protocols.dose import PC_PER_UC, Dose, significant
from estim.protocols.models import Continuous, CycledDuty, Protocol, PulseTrain, ShapeKind
from estim.protocols.schedule import Schedule
from estim.safety.checks import Finding, Severity, Verdict
from estim.units import US_PER_S, ua_to_ma

SEVERITY_STYLE = {
    Severity.ERROR: "bold red",
    Severity.WARNING: "yellow",
    Severity.INFO: "cyan",
    Severity.PASS: "green",
}
SEVERITY_LABEL = {
    Severity.ERROR: "BLOCKS",
    Severity.WARNING: "ACKNOWLEDGE",
    Severity.INFO: "info",
    Severity.PASS: "ok",
}


PIPE_WIDTH = 100
"""Width of tables when stdout is not a terminal (files, pipes, tests)."""


def stdout_console() -> Console:
    """A console on the current ``sys.stdout`` (so tests that capture it see output).

    A terminal sets its own width; output to a pipe or file gets :data:`PIPE_WIDTH`
    columns (unless ``COLUMNS`` says otherwise) so tables stay readable.
    """
    width = None
    if not sys.stdout.isatty() and "COLUMNS" not in os.environ:
        width = PIPE_WIDTH
    return Console(file=sys.stdout, highlight=False, soft_wrap=False, width=width)


def print_json(data: Any) -> None:
    """Machine output: indented JSON on stdout, Decimals and Fractions as strings."""
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: object) -> object:
    if isinstance(value, Decimal | Fraction):
        return str(value)
    return str(value)


def _t(value: object, style: str = "") -> Text:
    return Text(str(value), style=style)


# --- protocol descriptions -----------------------------------------------------------


def ma_text(value_ua: int | Fraction) -> str:
    return f"{ua_to_ma(value_ua).normalize():f} mA"


def dec(value: Decimal) -> str:
    """A Decimal as typed, without trailing zeros or exponent (``1.0`` -> ``1``)."""
    return "0" if value.is_zero() else f"{value.normalize():f}"


def seconds_text(value_us: int | Fraction) -> str:
    """A duration for people: ``0.65 s``, ``17 s``, ``19 min 50 s``, ``1 h 5 min``."""
    seconds = Fraction(value_us) / US_PER_S
    if seconds < 60:
        return f"{significant(seconds, 4)} s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{hours} h")
    if minutes:
        parts.append(f"{minutes} min")
    if secs or seconds != whole:
        parts.append(f"{significant(seconds - whole + secs, 4)} s")
    return " ".join(parts)


def describe_pulse(train: PulseTrain) -> str:
    """``symmetric biphasic 300 us/phase at 50 Hz`` and the like."""
    shape = train.shape
    kind = shape.kind.value.replace("_", " ")
    if shape.kind is ShapeKind.ASYMMETRIC_BIPHASIC:
        lead, recovery = shape.phases
        width = f"{lead.width_us} us lead + {recovery.width_us} us recovery"
    else:
        phase_us = shape.phases[0].width_us
        width = f"{phase_us / 1000:g} ms/phase" if phase_us >= 10_000 else f"{phase_us} us/phase"
    if shape.interphase_gap_us:
        width += f", gap {shape.interphase_gap_us} us"
    if train.frequency_hz is not None:
        rate = f"{dec(train.frequency_hz)} Hz"
    else:
        assert train.pulse_interval_ms is not None
        rate = f"every {dec(train.pulse_interval_ms)} ms ({significant(train.rate_hz, 3)} Hz)"
    return f"{kind} {width} at {rate}"


def describe_cycle(cycle: CycledDuty | Continuous) -> str:
    if isinstance(cycle, CycledDuty):
        return (
            f"ramp up {dec(cycle.ramp_up_s)} s, on {dec(cycle.on_s)} s, "
            f"ramp down {dec(cycle.ramp_down_s)} s, off {dec(cycle.off_s)} s"
        )
    return f"continuous, ramp {dec(cycle.ramp_up_s)} s in / {dec(cycle.ramp_down_s)} s out"


def protocols_table(protocols: Iterable[Protocol]) -> Table:
    table = Table(title="Protocol library", title_justify="left")
    table.add_column("id", no_wrap=True, style="bold")
    table.add_column("indication")
    table.add_column("pulse", ratio=2)
    table.add_column("cycle and course", ratio=2)
    table.add_column("ceiling", no_wrap=True)
    table.add_column("source", no_wrap=True)
    for p in protocols:
        table.add_row(
            _t(p.id),
            _t(p.indication.value.replace("_", " ")),
            _t(describe_pulse(p.pulse)),
            _t(
                f"{describe_cycle(p.cycle)}; {dec(p.session_duration_min)} min, "
                f"{p.sessions_per_week}/week, {p.programme_weeks} weeks"
            ),
            _t(f"{dec(p.amplitude.ceiling_ma)} mA"),
            _t(f"[{p.source.confidence.value}]"),
        )
    return table


def protocol_details(protocol: Protocol) -> RenderableType:
    """Every parameter of a protocol, with its eligibility and source."""
    p = protocol
    table = Table(title=f"{p.id} v{p.version}: {p.title}", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows: list[tuple[str, str]] = [
        ("indication", p.indication.value.replace("_", " ")),
        ("summary", p.summary),
        ("eligibility", "\n".join(f"- {item}" for item in p.eligibility)),
        ("pulse", describe_pulse(p.pulse)),
        ("cycle", describe_cycle(p.cycle)),
        ("channels", str(p.channels)),
        ("session", f"{p.session_duration_min} min"),
        (
            "course",
            f"{p.sessions_per_day}/day, {p.sessions_per_week}/week, {p.programme_weeks} weeks",
        ),
        (
            "amplitude",
            f"ceiling {dec(p.amplitude.ceiling_ma)} mA, "
            f"titration step {dec(p.amplitude.titration_step_ma)} mA",
        ),
        (
            "electrodes",
            ", ".join(k.value.replace("_", " ") for k in p.electrode.kinds)
            + f"; contacts >= {p.electrode.min_contact_area_cm2} cm2"
            + (f" ({p.electrode.note})" if p.electrode.note else ""),
        ),
        (
            "adjustable",
            "\n".join(f"{name.value}: {r.min} to {r.max}" for name, r in p.adjustable.items())
            or "nothing",
        ),
        ("source", f"{p.source.citation} [{p.source.confidence.value}]"),
    ]
    if p.source.note:
        rows.append(("source note", p.source.note))
    # The full hash goes on its own line below the table (see protocol_hash_line):
    # a 64-character cell would wrap in an 80-column terminal and could not be copied.
    rows.append(("sha256", f"{p.content_hash[:12]}..."))
    for name, value in rows:
        table.add_row(_t(name), _t(value))
    return table


def protocol_hash_line(p: Protocol) -> Text:
    """The protocol's full content hash, unwrapped, for pinning in a prescription."""
    return Text(f"content sha256: {p.content_hash}", no_wrap=True, overflow="ignore")


# --- dose, schedule, verdict --------------------------------------------------------------


def dose_rows(dose: Dose) -> list[tuple[str, str]]:
    """Label / value pairs of the dose figures, for tables and plain text alike."""
    rows = [
        ("amplitude ceiling", ma_text(dose.ceiling_ua)),
        ("pulse rate", f"{significant(dose.rate_hz, 4)} Hz"),
        ("session (scheduled)", seconds_text(dose.session_us)),
        ("stimulating time", seconds_text(dose.stimulating_us)),
        ("plateau time", seconds_text(dose.plateau_us)),
        ("contractions", "continuous" if dose.continuous else str(dose.contractions)),
        ("pulses per burst", str(dose.pulses_per_burst)),
        ("pulses per session", str(dose.pulses)),
        ("charge per phase (max)", f"{significant(dose.max_phase_charge_pc / PC_PER_UC)} uC"),
        ("net charge per pulse", f"{significant(dose.net_charge_pc / PC_PER_UC)} uC"),
        ("r.m.s. current (plateau)", f"{significant(dose.rms_ua / 1000)} mA rms"),
        ("energy per pulse (500 ohm)", f"{significant(dose.energy_per_pulse_uj / 1000)} mJ"),
        ("average power (500 ohm, 1 s)", f"{significant(dose.average_power_w * 1000)} mW"),
    ]
    if dose.contact_area_cm2 is not None:
        density = dose.current_density_ma_per_cm2
        power = dose.power_density_w_per_cm2
        rows += [
            ("smallest contact", f"{dose.contact_area_cm2} cm2"),
            ("current density", f"{significant(density or 0)} mA rms/cm2"),
            ("power density", f"{significant(power or 0)} W/cm2"),
        ]
    return rows


def dose_table(dose: Dose, title: str | None = None) -> Table:
    table = Table(
        title=title or f"Dose at the ceiling ({ma_text(dose.ceiling_ua)})",
        title_justify="left",
        show_header=False,
    )
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    for label, value in dose_rows(dose):
        table.add_row(_t(label), _t(value))
    return table


def schedule_table(schedule: Schedule, cycles: int = 1) -> Table:
    """The first ``cycles`` cycles of a schedule, segment by segment."""
    table = Table(
        title=f"Schedule: {schedule.cycles} cycle(s) in {seconds_text(schedule.duration_us)}",
        title_justify="left",
        caption=(
            f"stimulating {seconds_text(schedule.stimulating_us)}, "
            f"plateau {seconds_text(schedule.plateau_us)}"
        ),
        caption_justify="left",
    )
    for name in ("cycle", "phase", "start", "end", "envelope"):
        table.add_column(name)
    shown = [s for s in schedule.segments if s.cycle < cycles]
    for seg in shown:
        table.add_row(
            _t(seg.cycle + 1),
            _t(seg.phase.value.replace("_", " ")),
            _t(seconds_text(seg.start_us)),
            _t(seconds_text(seg.end_us)),
            _t(f"{seg.start_level / 10:g} % -> {seg.end_level / 10:g} %"),
        )
    if schedule.cycles > cycles:
        table.add_row(_t("..."), _t(f"{schedule.cycles - cycles} more cycle(s)"), "", "", "")
    return table


def schedule_to_dict(schedule: Schedule) -> dict[str, Any]:
    return {
        "cycles": schedule.cycles,
        "continuous": schedule.continuous,
        "duration_us": schedule.duration_us,
        "stimulating_us": schedule.stimulating_us,
        "plateau_us": schedule.plateau_us,
        "segments": [
            {
                "index": s.index,
                "cycle": s.cycle,
                "phase": s.phase.value,
                "start_us": s.start_us,
                "end_us": s.end_us,
                "start_level_permille": s.start_level,
                "end_level_permille": s.end_level,
            }
            for s in schedule.segments
        ],
    }


def verdict_headline(verdict: Verdict) -> Text:
    errors, warnings = len(verdict.errors), len(verdict.warnings)
    if verdict.exit_code == 2:
        text = f"CANNOT DELIVER: {errors} blocking problem(s) - the device cannot do this"
        return Text(text, style="bold red")
    if errors:
        return Text(f"BLOCKED: {errors} blocking finding(s), {warnings} warning(s)", "bold red")
    if warnings:
        return Text(
            f"ALLOWED AFTER ACKNOWLEDGEMENT: {warnings} warning(s) to acknowledge", "bold yellow"
        )
    return Text("PASS: no blocking findings, nothing to acknowledge", "bold green")


def verdict_table(verdict: Verdict, show_passes: bool = True) -> Table:
    """One row per check: result, what was checked, the value and the limit."""
    table = Table(title=f"Safety check: {verdict.subject}", title_justify="left")
    table.add_column("result", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("limit", overflow="fold")
    rows: list[Finding] = list(verdict.findings)
    if show_passes:
        rows += list(verdict.passes)
    for f in rows:
        table.add_row(
            _t(SEVERITY_LABEL[f.severity], SEVERITY_STYLE[f.severity]),
            _t(f.title),
            _t(f.value or ""),
            _t(f.limit or ""),
        )
    return table


def finding_text(f: Finding) -> Text:
    """A finding in full: what, value, limit with its source, and what to change."""
    text = Text()
    text.append(f"{SEVERITY_LABEL[f.severity]} {f.code}", style=SEVERITY_STYLE[f.severity])
    text.append(f": {f.message}.")
    if f.field:
        text.append(f" Field: {f.field}.")
    if f.value is not None:
        text.append(f" Value: {f.value}.")
    if f.limit is not None:
        text.append(f" Limit: {f.limit}")
        text.append(f" ({f.source})." if f.source else ".")
    if f.fix:
        text.append(" What to change: ", style="bold")
        text.append(f"{f.fix}.")
    return text


def verdict_report(verdict: Verdict, show_passes: bool = True) -> RenderableType:
    """The table, every non-passing finding in full, then the overall result."""
    parts: list[RenderableType] = [verdict_table(verdict, show_passes)]
    parts += [finding_text(f) for f in verdict.findings]
    parts.append(verdict_headline(verdict))
    return Group(*parts)


def profile_table(profile: DeviceProfile) -> Table:
    out = profile.output
    table = Table(
        title=f"Device profile: {profile.identity.manufacturer} {profile.identity.model}",
        title_justify="left",
        show_header=False,
    )
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows = [
        (
            "firmware",
            f"{profile.identity.firmware_min} to {profile.identity.firmware_max}",
        ),
        ("wire protocol", f"{profile.link.wire_protocol} at {profile.link.baudrate} baud"),
        (
            "watchdog",
            f"{profile.link.watchdog_timeout_ms} ms "
            f"(heartbeat {profile.link.heartbeat_period_ms} ms)",
        ),
        ("channels", str(out.channels)),
        ("amplitude", f"0-{out.amplitude_max_ma} mA in {out.amplitude_resolution_ma} mA steps"),
        (
            "phase width",
            f"{out.phase_width_min_us}-{out.phase_width_max_us} us in "
            f"{out.phase_width_resolution_us} us steps",
        ),
        ("pulse rate", f"{out.frequency_min_hz}-{out.frequency_max_hz} Hz"),
        ("shapes", ", ".join(s.value for s in out.supported_shapes)),
        ("long pulses", "yes" if out.long_pulse_capable else "no"),
        ("compliance", f"{out.compliance_voltage_v} V"),
        (
            "measures",
            ", ".join(
                name
                for name, has in (
                    ("current", profile.measurement.measures_current),
                    ("impedance", profile.measurement.measures_impedance),
                )
                if has
            )
            or "nothing",
        ),
        (
            "good contact",
            f"{profile.impedance.good_min_ohm}-{profile.impedance.good_max_ohm} ohm "
            f"(open above {profile.impedance.open_circuit_ohm} ohm)",
        ),
        (
            "electrodes",
            "\n".join(
                f"{e.name} ({e.kind.value}): " + ", ".join(f"{a} cm2" for a in e.contact_areas_cm2)
                for e in profile.electrodes
            ),
        ),
        ("sha256", profile.sha256),
    ]
    for name, value in rows:
        table.add_row(_t(name), _t(value))
    return table
