"""``estim profile bench``: validate a device profile on a device unit at the bench.

Connects to the device (or the simulator), runs the checks of
:mod:`estim.validation.bench`, prints a pass/fail table, writes the validation record
(JSON), and exits 0 when every check passed, 1 when any did not, 3 when the device
could not be reached.
"""

from __future__ import annotations

import getpass
import inspect
import logging
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from estim.cli.profile_cmd import find_profile, profile_app
from estim.cli.render import print_json, stdout_console
from estim.device.base import Stimulator
from estim.device.profile import DeviceProfile
from estim.device.registry import driver_class
from estim.device.simulator import SimulatedDevice
from estim.errors import InputError
from estim.validation.bench import BenchValidation
from estim.validation.record import Outcome, ValidationRecord, save_record

_OUTCOME_STYLE = {
    Outcome.PASS: ("PASS", "bold green"),
    Outcome.FAIL: ("FAIL", "bold red"),
    Outcome.NOT_VERIFIED: ("NOT VERIFIED", "bold yellow"),
}


def bench_command(  # noqa: PLR0917 - one parameter per option
    profile: Annotated[
        str, typer.Argument(help="The profile to prove: a file or a built-in name (estim-pf2).")
    ],
    port: Annotated[
        str,
        typer.Option(
            "--port",
            help="The device: /dev/ttyUSB0, a pty from `estim sim`, any pyserial URL, "
            "or `sim` for an in-process simulator of this profile.",
        ),
    ],
    technician: Annotated[
        str | None,
        typer.Option("--technician", help="Who ran the bench (default: your login name)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Where to write the record (default: bench-SERIAL-TIME.json here)."
        ),
    ] = None,
    interactive: Annotated[
        bool | None,
        typer.Option(
            "--interactive/--no-interactive",
            help="Prompt for manual steps on a real device (default: when stdin is a terminal).",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the record as JSON instead of a table.")
    ] = False,
) -> None:
    """Prove a device profile true on one device unit and write a validation record.

    Checks identity, amplitude accuracy, that the device refuses over-limit commands by
    itself, the watchdog, STOP ALL latency and open-circuit detection. Exit code 0 when
    every check passed, 1 when any did not, 3 when the device could not be reached.
    """
    # Device events and stops are in the table; keep the driver's log lines off stderr.
    logging.getLogger("estim").addHandler(logging.NullHandler())
    loaded = find_profile(profile)
    who = technician or _login_name()
    ask = sys.stdin.isatty() if interactive is None else interactive
    simulator: SimulatedDevice | None = None
    url = port
    if port == "sim":
        simulator = SimulatedDevice(loaded)
        url = simulator.url
    try:
        stim = _open(loaded, url)
        try:
            record = BenchValidation(
                loaded,
                stim,
                technician=who,
                port=port,
                profile_source=profile,
                prompt=_confirm if ask else None,
                progress=_say,
            ).run()
        finally:
            stim.close()
    finally:
        if simulator is not None:
            simulator.close()
    path = save_record(record, out or _default_path(record))
    if json_out:
        print_json(record.model_dump(mode="json"))
    else:
        console = stdout_console()
        console.print(record_table(record))
        verdict = "PASSED" if record.passed else "FAILED"
        style = "bold green" if record.passed else "bold red"
        console.print(Text(f"Bench validation {verdict}; record written to {path}", style=style))
    _say(f"record: {path}")
    if not record.passed:
        raise typer.Exit(1)


def record_table(record: ValidationRecord) -> Table:
    """The checks and every measurement, readable at the bench."""
    device = record.device
    table = Table(
        title=f"{device.manufacturer} {device.model}, serial {device.serial_number}, "
        f"firmware {device.firmware} - profile {record.profile_sha256[:12]}",
        show_lines=False,
    )
    table.add_column("check")
    table.add_column("result")
    table.add_column("measurement")
    table.add_column("value", justify="right")
    table.add_column("limit")
    for check in record.checks:
        label, style = _OUTCOME_STYLE[check.outcome]
        rows = check.measurements or ()
        table.add_row(
            Text(check.title, style="bold"),
            Text(label, style=style),
            Text(check.detail),
            "",
            "",
            end_section=not rows,
        )
        for index, m in enumerate(rows):
            mark = "" if m.passed is None else ("ok" if m.passed else "FAIL")
            table.add_row(
                "",
                Text(mark, style="green" if m.passed else "red"),
                Text(m.name),
                Text(m.shown),
                Text(m.limit or ""),
                end_section=index == len(rows) - 1,
            )
    return table


def _open(profile: DeviceProfile, url: str) -> Stimulator:
    cls = driver_class(profile.link.wire_protocol)
    options: dict[str, Any] = {"keepalive": True, "check_identity": False}
    accepted = inspect.signature(cls).parameters
    stim = cls(profile, url, **{k: v for k, v in options.items() if k in accepted})
    stim.open()
    return stim


def _default_path(record: ValidationRecord) -> Path:
    serial = re.sub(r"[^A-Za-z0-9_.-]+", "_", record.device.serial_number)
    stamp = record.finished_at.strftime("%Y%m%dT%H%M%SZ")
    return Path(f"bench-{serial}-{stamp}.json")


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError) as err:
        raise InputError("cannot tell who you are: give --technician NAME") from err


def _confirm(text: str) -> bool:
    return typer.confirm(text, default=True, err=True)


def _say(text: str) -> None:
    sys.stderr.write(f"bench: {text}\n")
    sys.stderr.flush()


def register(app: typer.Typer) -> None:
    profile_app.command("bench")(bench_command)
