"""``estim sim``: serve the simulated stimulator on a pseudo-terminal.

The first line on stdout is the port path (flushed at once), so a script can do::

    port=$(estim sim --fault open:ch=1,at=5s | head -n1)

Everything else (what is simulated, faults as they trip) goes to stderr. The simulator
runs until Ctrl-C or SIGTERM and turns every output off before it exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from estim.cli.profile_cmd import find_profile
from estim.clock import NS_PER_MS
from estim.device.simulator import (
    FAULT_HELP,
    FaultSpec,
    PtyServer,
    SimulatedDevice,
    parse_faults,
)
from estim.device.simulator.trace import TraceRecord
from estim.errors import DeviceError, InputError

_HELP = (
    "Serve a simulated stimulator on a pseudo-terminal.\n\n"
    "Prints the port path (e.g. /dev/pts/7) as the first line of output, then runs until "
    "Ctrl-C or SIGTERM; every output is off when it exits. Connect with any serial client, "
    "e.g. `estim profile bench estim-pf2 --port /dev/pts/7`.\n\n" + FAULT_HELP
)

_SHOWN_EVENTS = {"fault", "power", "inject", "link", "watchdog"}


def sim_command(  # noqa: PLR0917 - one parameter per option
    profile: Annotated[
        str,
        typer.Option("--profile", "-p", help="Profile to impersonate: a file or a built-in name."),
    ] = "estim-pf2",
    fault: Annotated[
        list[str] | None,
        typer.Option("--fault", "-f", help="Inject a fault (repeatable); see the list above."),
    ] = None,
    trace: Annotated[
        Path | None,
        typer.Option(
            "--trace", help="Write one JSON line per frame received and per output change."
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed for measurement noise and random link faults.")
    ] = 0,
    serial_number: Annotated[
        str | None, typer.Option("--serial", help="Serial number the device reports.")
    ] = None,
    firmware: Annotated[
        str | None,
        typer.Option("--firmware", help="Firmware version the device reports (default: lowest)."),
    ] = None,
    link: Annotated[
        Path | None,
        typer.Option("--link", help="Also make a symlink at this path pointing at the port."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the port path.")] = False,
) -> None:
    loaded = find_profile(profile)
    faults = parse_faults(fault or [], channels=loaded.output.channels)
    if link is not None and (link.exists() and not link.is_symlink()):
        raise InputError(f"--link {link}: a file is already there; give a new path")
    device = SimulatedDevice(
        loaded,
        faults=faults,
        trace=trace,
        seed=seed,
        serial_number=serial_number,
        firmware=firmware,
    )
    server = PtyServer(device)
    stop = threading.Event()
    # Ctrl-C and SIGTERM both ask for an orderly stop, from the first instant on.
    handler = _stop_on(stop)
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            path = server.start()
        except DeviceError:
            device.close()
            raise
        try:
            _announce(path, link, quiet, device, faults)
            while not stop.wait(0.25):
                if not server.serving:
                    raise DeviceError(f"the simulator stopped unexpectedly: {server.error}")
        finally:
            server.stop()  # closes the device: every output off
            if link is not None:
                with contextlib.suppress(OSError):
                    link.unlink()
            if not quiet:
                _say("stopped; every output off")
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _announce(
    path: str,
    link: Path | None,
    quiet: bool,
    device: SimulatedDevice,
    faults: list[FaultSpec],
) -> None:
    if link is not None:
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        os.symlink(path, link)
    sys.stdout.write(path + "\n")
    sys.stdout.flush()
    if quiet:
        return
    profile = device.profile
    _say(
        f"simulating {profile.identity.manufacturer} {profile.identity.model} "
        f"({profile.link.wire_protocol}, serial {device.hardware.serial_number}, "
        f"firmware {device.hardware.firmware}) on {path}"
        + (f" (link {link})" if link else "")
        + "; Ctrl-C to stop"
    )
    for spec in faults:
        _say(f"fault planned: {spec.text}")
    device.trace.subscribe(_reporter(device))


def _stop_on(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return handler


def _reporter(device: SimulatedDevice) -> Callable[[TraceRecord], None]:
    def report(record: TraceRecord) -> None:
        event = record["event"]
        if event not in _SHOWN_EVENTS or (event == "power" and record.get("what") == "off"):
            return
        seconds = (record["clock_ns"] - device.hardware.clock.now_ns() + device.elapsed_ns) / (
            1000 * NS_PER_MS
        )
        details = ", ".join(
            f"{key}={value}"
            for key, value in record.items()
            if key not in {"t_ns", "clock_ns", "event"} and value is not None
        )
        _say(f"{seconds:9.3f} s  {event}: {details}")

    return report


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def register(app: typer.Typer) -> None:
    app.command("sim", help=_HELP)(sim_command)
