"""``estim profile ...``: device profiles (``check``, ``list``; ``bench`` is added by
:mod:`estim.cli.bench_cmd` onto :data:`profile_app`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from estim.cli.options import LimitsOpt, limits_from
from estim.cli.render import print_json, profile_table, stdout_console, verdict_report
from estim.device.profile import (
    DeviceProfile,
    builtin_profile,
    builtin_profiles_dir,
    load_profile,
)
from estim.protocols.catalog import looks_like_path
from estim.safety.checks import check_profile

profile_app = typer.Typer(
    name="profile",
    help="Device profiles: what a stimulator can do, checked against the standards.",
    no_args_is_help=True,
)

ProfileArg = Annotated[
    str,
    typer.Argument(
        metavar="FILE_OR_NAME", help="A profile file (.toml/.json) or a built-in name (estim-pf2)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def find_profile(file_or_name: str) -> DeviceProfile:
    """A profile from a file path (if it looks like one) or a built-in name."""
    if looks_like_path(file_or_name):
        return load_profile(file_or_name)
    builtin = (builtin_profiles_dir() / f"{file_or_name}.toml").is_file()
    if not builtin and Path(file_or_name).is_file():
        return load_profile(file_or_name)
    return builtin_profile(file_or_name)


@profile_app.command("check")
def check_command(profile: ProfileArg, json_out: JsonOpt = False, limits: LimitsOpt = None) -> None:
    """Validate a device profile: IEC / FDA figures, watchdog, tolerances, leakage.

    Exit code 0 when nothing blocks, 1 when a finding blocks, 2 when the file is invalid.
    """
    loaded = find_profile(profile)
    verdict = check_profile(loaded, limits_from(limits))
    if json_out:
        print_json(verdict.to_dict())
    else:
        console = stdout_console()
        console.print(profile_table(loaded))
        console.print(verdict_report(verdict))
    if verdict.exit_code:
        raise typer.Exit(verdict.exit_code)


@profile_app.command("list")
def list_command(json_out: JsonOpt = False) -> None:
    """List the device profiles shipped with estim."""
    profiles = [
        (path.stem, builtin_profile(path.stem))
        for path in sorted(builtin_profiles_dir().glob("*.toml"))
    ]
    if json_out:
        print_json(
            [
                {
                    "name": name,
                    "manufacturer": p.identity.manufacturer,
                    "model": p.identity.model,
                    "wire_protocol": p.link.wire_protocol,
                    "long_pulse_capable": p.output.long_pulse_capable,
                    "sha256": p.sha256,
                }
                for name, p in profiles
            ]
        )
        return
    console = stdout_console()
    for name, p in profiles:
        long_pulse = ", long pulses" if p.output.long_pulse_capable else ""
        console.print(
            f"{name}: {p.identity.manufacturer} {p.identity.model} "
            f"({p.link.wire_protocol}, 0-{p.output.amplitude_max_ma} mA{long_pulse})",
            markup=False,
        )


def register(app: typer.Typer) -> None:
    app.add_typer(profile_app, name="profile")
