"""Reading and writing estim's data files (TOML and JSON) with clear errors.

Every loader turns a malformed file, an unknown key, a wrong type or an out-of-range
value into one :class:`~estim.errors.InputError` that lists each problem with the file,
the field, the value and what to do. Numbers are parsed as :class:`~decimal.Decimal`
so that the value a clinician typed is the value estim compares.
"""

from __future__ import annotations

import json
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import tomli_w
from pydantic import BaseModel, ValidationError

from estim.errors import InputError, Problem, SpecVersionError

M = TypeVar("M", bound=BaseModel)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise InputError(f"{path}: no such file") from err
    except IsADirectoryError as err:
        raise InputError(f"{path}: is a directory, expected a file") from err
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror})") from err


def parse_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"{origin}: not valid TOML: {err}") from err


def parse_json(text: str, origin: str) -> Any:
    try:
        return json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as err:
        raise InputError(
            f"{origin}: not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})"
        ) from err


def load_mapping(path: Path) -> dict[str, Any]:
    """A TOML or JSON file as a dict (chosen by suffix; TOML unless ``.json``)."""
    text = read_text(path)
    data = parse_json(text, str(path)) if path.suffix == ".json" else parse_toml(text, str(path))
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a table of keys at the top level")
    return data


def check_spec_version(data: dict[str, Any], supported: int, origin: str, what: str) -> None:
    """Refuse a file written for a newer estim: guessing its meaning could be unsafe."""
    version = data.get("spec_version", 1)
    if not isinstance(version, int | Decimal) or isinstance(version, bool):
        raise InputError(f"{origin}: spec_version must be a whole number, got {version!r}")
    if version > supported:
        raise SpecVersionError(
            f"{origin}: {what} spec_version {version} is newer than this estim understands "
            f"(up to {supported}); upgrade estim or use a file written for version {supported}"
        )


def validation_problems(err: ValidationError, origin: str) -> list[Problem]:
    """One :class:`Problem` per pydantic error, naming the dotted field path."""
    problems = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(part) for part in e["loc"] if not _is_union_tag(part))
        field = f"{origin}: {loc}" if loc else origin
        message = _ENUM_REPR.sub(r"\1", e["msg"].removeprefix("Value error, "))
        value = e.get("input") if e["type"] != "missing" else None
        if isinstance(value, dict):
            value = None  # a whole sub-table is noise; the field path says where
        problems.append(Problem(field, message, value=value, fix=_fix_for(e)))
    return problems


# pydantic names enum tags by repr ("<ShapeKind.SYMMETRIC_BIPHASIC: 'symmetric_biphasic'>");
# a user typed the value, so show the value.
_ENUM_REPR = re.compile(r"<[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z0-9_]+: ('[^']*')>")


def _is_union_tag(part: object) -> bool:
    # pydantic puts the discriminator value in the path of tagged unions; the user
    # never typed it as a key, so leave it out of the location.
    return isinstance(part, str) and (
        part.endswith(("_biphasic", "_rectangular", "_triangular"))
        or part in {"cycled", "continuous"}
    )


def _fix_for(error: Any) -> str | None:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "remove this key (check its spelling against the schema: estim protocol schema)"
    if kind == "missing":
        return "add this key"
    if kind in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
        return "give a value within the limit"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return "give a value of the expected type"
    if kind == "union_tag_invalid":
        return "use one of the listed kinds"
    return None


def validate(model: type[M], data: Any, origin: str, what: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = validation_problems(err, origin)
        noun = "problem" if len(problems) == 1 else "problems"
        raise InputError(f"{origin}: invalid {what} ({len(problems)} {noun})", problems) from err


def load_model(model: type[M], path: Path, *, spec_version: int, what: str) -> M:
    data = load_mapping(path)
    check_spec_version(data, spec_version, str(path), what)
    return validate(model, data, str(path), what)


def to_toml(model: BaseModel) -> str:
    """TOML text of a model; Decimals stay exact, ``None`` fields are left out."""
    return tomli_w.dumps(model.model_dump(mode="python", exclude_none=True, by_alias=True))


def to_json(model: BaseModel, indent: int | None = 2) -> str:
    return model.model_dump_json(indent=indent, exclude_none=True)
