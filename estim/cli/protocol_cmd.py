"""``estim protocol ...``: the protocol library, safety checks, schedules and schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from estim.cli.options import LimitsOpt, limits_from
from estim.cli.profile_cmd import JsonOpt, find_profile
from estim.cli.render import (
    dose_table,
    print_json,
    protocol_details,
    protocol_hash_line,
    protocols_table,
    schedule_table,
    schedule_to_dict,
    stdout_console,
    verdict_report,
)
from estim.errors import InputError, Problem
from estim.protocols.catalog import find_protocol, get_protocol, list_protocols, load_prescription
from estim.protocols.dose import dose_at, dose_of
from estim.protocols.models import Protocol
from estim.protocols.prescription import Prescription, ResolvedPrescription, resolve
from estim.protocols.schedule import compile_protocol, compile_schedule
from estim.safety.checks import evaluate, matching_electrodes
from estim.schemas import json_schemas, write_schemas

DEFAULT_PROFILE = "estim-pf2"

protocol_app = typer.Typer(
    name="protocol",
    help="The protocol library: list, show, check against a device, schedule, schema.",
    no_args_is_help=True,
)

ProtocolArg = Annotated[
    str,
    typer.Argument(
        metavar="FILE_OR_ID", help="A library protocol id (see: estim protocol list) or a file."
    ),
]
PrescriptionOpt = Annotated[
    Path | None,
    typer.Option("--prescription", help="A prescription file (.toml/.json) to check."),
]


def _resolve_in_file(
    prescription: Prescription, protocol: Protocol, path: Path
) -> ResolvedPrescription:
    """Resolve, naming the prescription file in every problem."""
    try:
        return resolve(prescription, protocol)
    except InputError as err:
        problems = [
            Problem(f"{path}: {p.location}", p.message, value=p.value, limit=p.limit, fix=p.fix)
            for p in err.problems
        ]
        raise InputError(f"{path}: {err.summary}", problems) from err


def _protocol_and_prescription(
    file_or_id: str | None, prescription_path: Path | None
) -> tuple[Protocol, ResolvedPrescription | None]:
    prescription = None if prescription_path is None else load_prescription(prescription_path)
    if file_or_id is None:
        if prescription is None:
            raise InputError(
                "name a protocol (library id or file), or give --prescription FILE; "
                "see: estim protocol list"
            )
        protocol = get_protocol(prescription.protocol.id)
    else:
        protocol = find_protocol(file_or_id)
    if prescription is None or prescription_path is None:
        return protocol, None
    return protocol, _resolve_in_file(prescription, protocol, prescription_path)


@protocol_app.command("list")
def list_command(json_out: JsonOpt = False) -> None:
    """List the built-in protocols with their indication, parameters and source."""
    protocols = list_protocols()
    if json_out:
        print_json(
            [
                {
                    "id": p.id,
                    "version": p.version,
                    "title": p.title,
                    "indication": p.indication.value,
                    "sha256": p.content_hash,
                    "source": p.source.citation,
                    "confidence": p.source.confidence.value,
                }
                for p in protocols
            ]
        )
        return
    stdout_console().print(protocols_table(protocols))


@protocol_app.command("show")
def show_command(protocol: ProtocolArg, json_out: JsonOpt = False) -> None:
    """Show every parameter of a protocol, and its dose at the protocol ceiling."""
    loaded = find_protocol(protocol)
    dose = dose_at(loaded, loaded.amplitude.ceiling_ua)
    if json_out:
        print_json(
            {
                "protocol": loaded.model_dump(mode="json", exclude_none=True),
                "sha256": loaded.content_hash,
                "dose_at_ceiling": dose.to_dict(),
            }
        )
        return
    console = stdout_console()
    console.print(protocol_details(loaded))
    console.print(protocol_hash_line(loaded), soft_wrap=True)
    console.print(dose_table(dose))


@protocol_app.command("check")
def check_command(  # noqa: PLR0917 (typer maps parameters to options)
    protocol: Annotated[
        str | None,
        typer.Argument(
            metavar="FILE_OR_ID",
            help="A library protocol id or a protocol file; may be left out with "
            "--prescription (its protocol is looked up in the library).",
        ),
    ] = None,
    profile: Annotated[
        str,
        typer.Option("--profile", help="A device profile file, or a built-in name."),
    ] = DEFAULT_PROFILE,
    prescription: PrescriptionOpt = None,
    limits: LimitsOpt = None,
    json_out: JsonOpt = False,
    passes: Annotated[
        bool, typer.Option("--passes/--no-passes", help="List the checks that passed too.")
    ] = True,
) -> None:
    """Check a protocol (at its ceiling) or a prescription against a device and the limits.

    Exit code 0: may proceed (warnings need acknowledgement); 1: blocking findings;
    2: invalid input, or the device cannot deliver the protocol.
    """
    loaded, resolved = _protocol_and_prescription(protocol, prescription)
    device = find_profile(profile)
    chosen = limits_from(limits)
    if resolved is None:
        amplitude = loaded.amplitude
        verdict = evaluate(
            loaded, amplitude.ceiling_ua, amplitude.titration_step_ua, device, chosen
        )
    else:
        verdict = evaluate(resolved.protocol, resolved.ceiling_ua, resolved.step_ua, device, chosen)
    if json_out:
        print_json(verdict.to_dict())
    else:
        console = stdout_console()
        console.print(verdict_report(verdict, show_passes=passes))
        if verdict.dose is not None:
            console.print(dose_table(verdict.dose))
    if verdict.exit_code:
        raise typer.Exit(verdict.exit_code)


@protocol_app.command("schedule")
def schedule_command(
    protocol: Annotated[
        str | None,
        typer.Argument(metavar="FILE_OR_ID", help="A library protocol id or a protocol file."),
    ] = None,
    prescription: PrescriptionOpt = None,
    profile: Annotated[
        str | None,
        typer.Option("--profile", help="Add current and power density on this device."),
    ] = None,
    cycles: Annotated[int, typer.Option("--cycles", min=1, help="Cycles to list.")] = 1,
    json_out: JsonOpt = False,
) -> None:
    """The compiled schedule (timed segments with envelopes) and the dose figures."""
    loaded, resolved = _protocol_and_prescription(protocol, prescription)
    areas = []
    if profile is not None:
        device = find_profile(profile)
        effective = loaded if resolved is None else resolved.protocol
        areas = [a for e in matching_electrodes(effective, device) for a in e.contact_areas_cm2]
    if resolved is None:
        schedule = compile_protocol(loaded)
        dose = dose_at(loaded, loaded.amplitude.ceiling_ua, areas)
    else:
        schedule = compile_schedule(resolved)
        dose = dose_of(resolved, areas)
    if json_out:
        print_json(
            {
                "protocol": {
                    "id": loaded.id,
                    "version": loaded.version,
                    "sha256": loaded.content_hash,
                },
                "schedule": schedule_to_dict(schedule),
                "dose": dose.to_dict(),
            }
        )
        return
    console = stdout_console()
    console.print(schedule_table(schedule, cycles))
    console.print(dose_table(dose))


@protocol_app.command("schema")
def schema_command(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write <kind>.schema.json files into this directory."),
    ] = None,
) -> None:
    """JSON Schemas of protocol, prescription, device-profile and limits files."""
    if out is None:
        print_json(json_schemas())
        return
    console = stdout_console()
    for path in write_schemas(out):
        console.print(f"wrote {path}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(protocol_app, name="protocol")
