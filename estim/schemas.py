"""JSON Schemas of estim's data files, for editor completion and validation.

Generated from the pydantic models themselves (``model_json_schema``), so they cannot
drift from what the loaders accept. ``estim protocol schema --out DIR`` writes one file
per kind; point an editor's JSON/TOML schema setting at them (for TOML, e.g. with the
Even Better TOML extension: ``#:schema ./protocol.schema.json`` on the first line).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from estim.device.profile import DeviceProfile
from estim.errors import InputError
from estim.protocols.models import Protocol
from estim.protocols.prescription import Prescription
from estim.safety.limits import Limits

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "protocol": Protocol,
    "prescription": Prescription,
    "device-profile": DeviceProfile,
    "limits": Limits,
}
"""File kind -> model; the schema file is ``<kind>.schema.json``."""


def json_schema(kind: str) -> dict[str, Any]:
    model = SCHEMA_MODELS[kind]
    schema = model.model_json_schema(mode="validation")
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": f"{kind}.schema.json", **schema}


def json_schemas() -> dict[str, dict[str, Any]]:
    return {kind: json_schema(kind) for kind in SCHEMA_MODELS}


def write_schemas(directory: Path) -> list[Path]:
    """Write every schema into ``directory`` (created if missing); return the paths."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for kind, schema in json_schemas().items():
            path = directory / f"{kind}.schema.json"
            path.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
            written.append(path)
    except OSError as err:
        raise InputError(f"{directory}: cannot write schemas ({err.strerror})") from err
    return written
