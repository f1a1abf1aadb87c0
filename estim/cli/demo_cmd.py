"""``estim demo`` (interim): the protocol library, one prescription checked against one
device profile, its schedule and its dose. Needs no stimulator and writes nothing.

The session controller will replace this with the full demo; the display pieces live
in :mod:`estim.cli.render` so that it can reuse them.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import typer
from rich.rule import Rule

from estim.cli.render import (
    dose_table,
    protocols_table,
    schedule_table,
    stdout_console,
    verdict_report,
)
from estim.device.profile import builtin_profile
from estim.protocols.catalog import get_protocol, list_protocols
from estim.protocols.prescription import Prescription, ProtocolRef, resolve
from estim.protocols.schedule import compile_schedule
from estim.safety.checks import check

DEMO_PROTOCOL = "stress"
DEMO_PROFILE = "estim-pf2"
DEMO_CEILING_MA = Decimal(40)


def demo_prescription(today: date) -> Prescription:
    """The example prescription the demo checks: stress protocol, 40 mA ceiling."""
    protocol = get_protocol(DEMO_PROTOCOL)
    return Prescription(
        patient_code="DEMO-001",
        protocol=ProtocolRef.of(protocol),
        max_amplitude_ma=DEMO_CEILING_MA,
        prescriber="Demo clinician",
        start_date=today,
        notes="example prescription shown by `estim demo`",
    )


def demo() -> None:
    """Show the protocol library, check one prescription on one device, print its schedule."""
    console = stdout_console()
    console.print(protocols_table(list_protocols()))
    prescription = demo_prescription(date.today())
    protocol = get_protocol(DEMO_PROTOCOL)
    profile = builtin_profile(DEMO_PROFILE)
    console.print(Rule("Prescription", characters="-"))
    console.print(
        f"Patient {prescription.patient_code}: protocol {protocol.id} v{protocol.version}, "
        f"ceiling {prescription.max_amplitude_ma} mA, on device profile {DEMO_PROFILE}",
        markup=False,
    )
    resolved = resolve(prescription, protocol)
    verdict = check(resolved, protocol, profile)
    console.print(verdict_report(verdict))
    console.print(schedule_table(compile_schedule(resolved)))
    if verdict.dose is not None:
        console.print(dose_table(verdict.dose))
    console.print(
        "Research software, not a certified medical device. "
        "Next: estim protocol check complete-denervation --profile estim-lp1",
        markup=False,
    )
    if verdict.exit_code:
        raise typer.Exit(verdict.exit_code)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
