"""The built-in protocol library, and loading protocols and prescriptions from files.

The library is a directory of TOML files shipped inside the package
(``estim/protocols/library/<id>.toml``); each file's name is its protocol's id. A
protocol can be named by id or by a path to a TOML / JSON file; prescriptions are
always files. Every loader refuses a malformed file, an unknown key, a wrong type, an
out-of-range value or a newer ``spec_version`` with one :class:`~estim.errors.InputError`
listing every problem (file, field, value, fix).
"""

from __future__ import annotations

import functools
from fractions import Fraction
from importlib import resources
from pathlib import Path

from estim.errors import InputError, NotFoundError
from estim.files import load_model
from estim.protocols.dose import PC_PER_UC, dose_at, significant
from estim.protocols.models import SPEC_VERSION, Protocol
from estim.protocols.prescription import Prescription

FILE_SUFFIXES = (".toml", ".json")


def library_dir() -> Path:
    """Where the built-in protocol files live (inside the installed package)."""
    return Path(str(resources.files("estim.protocols") / "library"))


def load_protocol(path: Path | str) -> Protocol:
    """A protocol from a TOML or JSON file; refuses newer spec versions."""
    return load_model(Protocol, Path(path), spec_version=SPEC_VERSION, what="protocol")


def load_prescription(path: Path | str) -> Prescription:
    """A prescription from a TOML or JSON file; refuses newer spec versions."""
    return load_model(Prescription, Path(path), spec_version=SPEC_VERSION, what="prescription")


@functools.cache
def _library() -> dict[str, Protocol]:
    protocols: dict[str, Protocol] = {}
    for path in sorted(library_dir().glob("*.toml"), key=lambda p: p.stem):
        protocol = load_protocol(path)
        if protocol.id != path.stem:
            raise InputError(
                f"{path}: protocol id {protocol.id!r} does not match the file name; "
                f"rename the file to {protocol.id}.toml"
            )
        protocols[protocol.id] = protocol
    return protocols


def list_protocols() -> tuple[Protocol, ...]:
    """Every built-in protocol, by id."""
    return tuple(_library().values())


def protocol_ids() -> tuple[str, ...]:
    return tuple(_library())


def get_protocol(protocol_id: str) -> Protocol:
    """The built-in protocol with this id; :class:`NotFoundError` names the known ids."""
    try:
        return _library()[protocol_id]
    except KeyError:
        known = ", ".join(protocol_ids())
        raise NotFoundError(
            f"no protocol {protocol_id!r} in the library; known: {known} "
            "(or give a path to a .toml / .json protocol file)"
        ) from None


def looks_like_path(text: str) -> bool:
    """A file name rather than an id: has a .toml/.json suffix or a directory part."""
    return text.endswith(FILE_SUFFIXES) or "/" in text or "\\" in text


def find_protocol(file_or_id: str) -> Protocol:
    """A protocol named by a library id or by a file path.

    Anything that looks like a path is loaded as a file; otherwise a library id wins
    over a file of the same name in the current directory.
    """
    if looks_like_path(file_or_id):
        return load_protocol(file_or_id)
    if file_or_id not in _library() and Path(file_or_id).is_file():
        return load_protocol(file_or_id)
    return get_protocol(file_or_id)


def library_markdown_table() -> str:
    """The library table of ``docs/protocols.md`` (kept in step by a test)."""
    rows = [
        "| id | indication | ceiling | r.m.s. at ceiling | energy/pulse | charge/phase "
        "| pulses/session | stimulating | source |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in list_protocols():
        dose = dose_at(p, p.amplitude.ceiling_ua)
        minutes = significant(Fraction(dose.stimulating_us, 60_000_000), 3)
        rows.append(
            f"| `{p.id}` | {p.indication.value.replace('_', ' ')} "
            f"| {p.amplitude.ceiling_ma} mA "
            f"| {significant(dose.rms_ua / 1000)} mA "
            f"| {significant(dose.energy_per_pulse_uj / 1000)} mJ "
            f"| {significant(dose.max_phase_charge_pc / PC_PER_UC)} uC "
            f"| {dose.pulses} | {minutes} min "
            f"| [{p.source.confidence.value}] |"
        )
    return "\n".join(rows) + "\n"
