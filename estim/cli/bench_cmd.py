"""``estim profile bench``: validate a device profile on a device unit at the bench.

Connects to the device (or the simulator), runs the checks of
:mod:`estim.validation.bench`, prints a pass/fail table, writes the validation record
(JSON), and exits 0 when every check passed, 1 when any did not, 2 on invalid input,
3 when the device could not be reached, 4 when the technician stopped it (Ctrl-C: the
output is stopped first, no record is written).

Output current, on a device that cannot measure its own (``measures_current =
false``), is measured from outside on a known bench load, by the first of:

1. ``--measurements FILE``: readings the technician recorded (checked against the test
   points before anything is switched on; ``--test-points`` prints a file to fill in);
2. estim's simulator: its own instrument (the current its load model delivers);
3. the technician at a terminal (``--interactive``, the default when stdin is one): each
   test point is switched on in turn and the reading typed in;
4. nobody: the check is *not verified*, the bench fails, and says how to supply them.

A device that reports no serial number (the RehaStim2) is named by the serial on its
label: ``--unit-serial SN`` is required for it (refused without, exit code 2, before
any check), and the record keeps it as the unit's label serial.
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

from estim.cli.bench_prompt import BenchTerminal
from estim.cli.profile_cmd import find_profile, profile_app
from estim.cli.render import print_json, stdout_console
from estim.device.base import Stimulator
from estim.device.profile import DeviceProfile
from estim.device.registry import driver_class
from estim.device.simulator import SimulatedDevice
from estim.errors import EXIT_STOPPED, InputError
from estim.validation.bench import BenchValidation, check_label_serial
from estim.validation.current import (
    BENCH_LOAD_OHM,
    AccuracyPoint,
    CurrentSource,
    RecordedMeasurements,
    SimulatorInstrument,
    TechnicianEntry,
    accuracy_plan,
    describe_plan,
    load_measurements,
    measurements_template,
    simulator_instrument_for,
)
from estim.validation.record import (
    UNIT_SERIAL_OPTION,
    Outcome,
    ValidationRecord,
    parse_label_serial,
    save_record,
    serial_reported,
)

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
        str | None,
        typer.Option(
            "--port",
            help="The device: /dev/ttyUSB0, a pty from `estim sim`, any pyserial URL, "
            "or `sim` for an in-process simulator of this profile.",
        ),
    ] = None,
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
    measurements: Annotated[
        Path | None,
        typer.Option(
            "--measurements",
            help="Output current readings you took on the bench load (TOML or JSON; "
            "--test-points prints one to fill in), for a device that cannot measure "
            "its own current.",
        ),
    ] = None,
    load_ohm: Annotated[
        int | None,
        typer.Option(
            "--load-ohm",
            min=1,
            help=f"The bench load on each channel for measuring output current "
            f"(default: {BENCH_LOAD_OHM}, or the measurements file's).",
            show_default=False,
        ),
    ] = None,
    instrument: Annotated[
        str | None,
        typer.Option(
            "--instrument",
            help="What you measure current with, for the record "
            '(e.g. "oscilloscope, 10 ohm shunt").',
        ),
    ] = None,
    test_points: Annotated[
        bool,
        typer.Option(
            "--test-points",
            help="Print the output-current test points as a measurements file to fill "
            "in, and exit (no device needed).",
        ),
    ] = False,
    unit_serial: Annotated[
        str | None,
        typer.Option(
            UNIT_SERIAL_OPTION,
            metavar="SN",
            help="The serial number printed on the unit's label, recorded as its label "
            "serial. Required for a device that reports no serial number (the RehaStim2); "
            "for one that does, it must be the serial the device reports.",
        ),
    ] = None,
) -> None:
    """Prove a device profile true on one device unit and write a validation record.

    Checks identity, amplitude accuracy, that the device refuses over-limit commands by
    itself, the watchdog, STOP ALL latency and open-circuit detection. A device that
    cannot measure its own output current is measured on the bench load: by you at the
    prompt, from --measurements FILE, or (on estim's simulator) by the simulator's
    instrument. A device that reports no serial number needs --unit-serial SN, the
    serial on its label. Exit code 0 when every check passed, 1 when any did not, 2 on
    invalid input, 3 when the device could not be reached, 4 when stopped with Ctrl-C.
    """
    # Device events and stops are in the table; keep the driver's log lines off stderr.
    logging.getLogger("estim").addHandler(logging.NullHandler())
    loaded = find_profile(profile)
    who = technician or _login_name()
    label = None if unit_serial is None else parse_label_serial(unit_serial)
    recorded = None
    if measurements is not None:
        recorded = load_measurements(measurements, technician=who)
        if instrument is not None:
            raise InputError(
                f"--instrument is for readings typed at the prompt; {measurements} says its "
                'own: write instrument = "..." in the file'
            )
    load = _bench_load(load_ohm, recorded)
    plan = accuracy_plan(loaded, load)
    if test_points:
        sys.stdout.write(measurements_template(loaded, plan))
        _say(f"test points: {describe_plan(plan)}")
        return
    if recorded is not None:
        recorded.match(plan)  # refused before anything is switched on
    if port is None:
        raise InputError(
            "give the device: --port /dev/ttyUSB0 (or a pty from `estim sim`, or sim); "
            "--test-points prints the output-current test points without one"
        )
    ask = sys.stdin.isatty() if interactive is None else interactive
    terminal = BenchTerminal(instrument=instrument) if ask else None
    simulator: SimulatedDevice | None = None
    url = port
    if port == "sim":
        simulator = SimulatedDevice(loaded)
        url = simulator.url
    try:
        try:
            stim = _open(loaded, url)
            try:
                # Before any check: a record that cannot name its unit vouches for none.
                if stim.identity is not None:
                    check_label_serial(
                        stim.identity,
                        label,
                        command=f"estim profile bench {profile} --port {port}",
                    )
                record = BenchValidation(
                    loaded,
                    stim,
                    technician=who,
                    port=port,
                    profile_source=profile,
                    prompt=terminal.confirm if terminal else None,
                    progress=_say,
                    current_source=_current_source(
                        loaded, stim, recorded, simulator, terminal, who, instrument
                    ),
                    bench_load_ohm=load,
                    label_serial=label,
                    label_serial_source=f"entered by {who} with {UNIT_SERIAL_OPTION}, "
                    "from the unit's label",
                ).run()
            finally:
                stim.close()
        finally:
            if simulator is not None:
                simulator.close()
    except KeyboardInterrupt:
        # The bench stopped the output when the interrupt reached it, and closing the
        # driver sent STOP again: say so, and write no record of a bench not finished.
        _say("stopped (Ctrl-C): output stopped, port closed; no record written")
        raise typer.Exit(EXIT_STOPPED) from None
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
    accuracy = _check_outcome(record, "amplitude-accuracy")
    if accuracy is Outcome.NOT_VERIFIED and recorded is None:
        guidance = how_to_measure(loaded, profile, port, plan)
        if json_out:
            sys.stderr.write(guidance + "\n")
        else:
            stdout_console().print(Text(guidance), soft_wrap=True)  # commands unbroken
    if not record.passed:
        raise typer.Exit(1)


def how_to_measure(
    profile: DeviceProfile, profile_ref: str, port: str, plan: tuple[AccuracyPoint, ...]
) -> str:
    """Exactly how to supply the output-current readings the bench could not take."""
    load = plan[0].load_ohm if plan else BENCH_LOAD_OHM
    model = profile.identity.model
    reason = (
        f"the {model} cannot measure its output current"
        if not profile.measurement.measures_current
        else "the readings were not all taken"
    )
    return "\n".join(
        [
            f"Amplitude accuracy was not verified: {reason}. Measure it on the bench and "
            "run the bench again, one of two ways:",
            f"  1. In a terminal (stdin a terminal, or --interactive), with a {load} ohm "
            "load and an oscilloscope across a shunt (or a true-r.m.s. meter) on each "
            "channel in turn: the bench switches each test point on and asks for the "
            "peak current you read.",
            f'       estim profile bench {profile_ref} --port {port} --instrument "scope, '
            '10 ohm shunt"',
            "  2. Take the readings yourself and give them in a file:",
            f"       estim profile bench {profile_ref} --test-points > measurements.toml"
            "   # fill in measured_ma",
            f"       estim profile bench {profile_ref} --port {port} "
            "--measurements measurements.toml",
            f"Test points: {describe_plan(plan)}.",
        ]
    )


def _bench_load(load_ohm: int | None, recorded: RecordedMeasurements | None) -> int:
    if recorded is None:
        return load_ohm or BENCH_LOAD_OHM
    if load_ohm is not None and load_ohm != recorded.load_ohm:
        raise InputError(
            f"--load-ohm {load_ohm} but {recorded.origin} was measured on "
            f"load_ohm = {recorded.load_ohm}: give one load"
        )
    return recorded.load_ohm


def _current_source(  # noqa: PLR0917 - the choices, in order
    profile: DeviceProfile,
    stim: Stimulator,
    recorded: RecordedMeasurements | None,
    simulator: SimulatedDevice | None,
    terminal: BenchTerminal | None,
    technician: str,
    instrument: str | None,
) -> CurrentSource | None:
    """Who measures output current (None: the device itself, or nobody)."""
    if recorded is not None:
        return recorded
    if profile.measurement.measures_current:
        return None  # the device's readback
    from_simulator = simulator_instrument_for(stim)
    if from_simulator is not None:
        return from_simulator
    if simulator is not None:
        return _in_process_instrument(simulator)
    if terminal is not None:
        return TechnicianEntry(terminal, technician=technician, instrument=instrument)
    return None


def _in_process_instrument(device: SimulatedDevice) -> SimulatorInstrument:
    """The instrument of an in-process simulator whose protocol has no such query."""

    def peak_ua(channel: int) -> int:
        state = device.hardware.outputs()[channel - 1]
        return state.amplitude_ua if state.output_on else 0

    return SimulatorInstrument(
        lambda channel, ohm: device.inject(f"load:ch={channel},ohm={ohm}"),
        peak_ua,
        where="read from the in-process simulator",
    )


def _check_outcome(record: ValidationRecord, check_id: str) -> Outcome | None:
    try:
        return record.check(check_id).outcome
    except KeyError:
        return None


def record_table(record: ValidationRecord) -> Table:
    """The checks and every measurement, readable at the bench."""
    device = record.device
    serial = f"serial {device.serial_number}"
    if device.label_serial is not None and not serial_reported(device):
        serial = f"label serial {device.label_serial} (the device reports none)"
    table = Table(
        title=f"{device.manufacturer} {device.model}, {serial}, "
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
    device = record.device
    unit = (
        device.serial_number
        if serial_reported(device)
        else f"{device.model}-{device.label_serial}"
        if device.label_serial is not None
        else device.model
    )
    serial = re.sub(r"[^A-Za-z0-9_.-]+", "_", unit)
    stamp = record.finished_at.strftime("%Y%m%dT%H%M%SZ")
    return Path(f"bench-{serial}-{stamp}.json")


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError) as err:
        raise InputError("cannot tell who you are: give --technician NAME") from err


def _say(text: str) -> None:
    sys.stderr.write(f"bench: {text}\n")
    sys.stderr.flush()


def register(app: typer.Typer) -> None:
    profile_app.command("bench")(bench_command)
