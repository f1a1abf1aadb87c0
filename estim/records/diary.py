"""The patient's training diary, in the leaflet's own units, and its CSV form.

One entry per day: the starting block (hold seconds 0-10, repetitions 0-12), how many
blocks were done (target 4-6 a day; in maintenance 3 sets of 8-12, twice a week), fast
contractions, leakage episodes and notes. Impossible entries are refused with a
message that names the field and the fix, never adjusted.

CSV import is all-or-nothing: every row is checked first and any problem is reported
with its line number and field, so a file is either taken whole or not at all.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import date
from enum import StrEnum
from typing import Any

from pydantic import Field, ValidationError, model_validator

from estim.errors import InputError, Problem
from estim.files import validation_problems
from estim.protocols.models import Frozen
from estim.records.models import EARLIEST_RECORD_DAY

HOLD_MAX_S = 10
"""Leaflet: hold a maximal contraction as long as possible, at most 10 seconds [C]."""
REPETITIONS_MAX = 12
"""Leaflet: repeat as often as possible, at most 8-12 times [C]."""
BLOCKS_TARGET_MIN, BLOCKS_TARGET_MAX = 4, 6
"""Leaflet: do the starting block 4 to 6 times a day [C]."""
REPETITIONS_TARGET_MIN, REPETITIONS_TARGET_MAX = 8, 12
MAINTENANCE_SETS = 3
"""Leaflet: maintenance twice a week, 3 sets of 8-12 maximal contractions [C]."""
MAINTENANCE_DAYS_PER_WEEK = 2
MAX_BLOCKS_PER_DAY = 12
"""More blocks than this in one day is not a plausible record [I]: twice the leaflet's
upper target, allowing for a keen patient but catching typing errors (40 for 4)."""
MAX_FAST_CONTRACTIONS = 300
"""[I] a generous day of fast-contraction sets; more is a typing error."""
MAX_LEAKAGE_EPISODES = 50
"""[I] more than this many episodes in a day is a typing error, not a diary entry."""
NOTES_MAX_CHARS = 500


class Programme(StrEnum):
    TRAINING = "training"  # building up: the starting block 4-6 times a day
    MAINTENANCE = "maintenance"  # after the programme: 3 sets of 8-12, twice a week


class DiaryEntry(Frozen):
    """One day of the training diary."""

    day: date
    hold_s: int = Field(ge=0, le=HOLD_MAX_S)
    repetitions: int = Field(ge=0, le=REPETITIONS_MAX)
    blocks_done: int = Field(ge=0, le=MAX_BLOCKS_PER_DAY)
    fast_contractions: int = Field(default=0, ge=0, le=MAX_FAST_CONTRACTIONS)
    leakage_episodes: int = Field(default=0, ge=0, le=MAX_LEAKAGE_EPISODES)
    programme: Programme = Programme.TRAINING
    notes: str = Field(default="", max_length=NOTES_MAX_CHARS)

    @model_validator(mode="after")
    def _block_is_possible(self) -> DiaryEntry:
        if self.repetitions > 0 and self.hold_s == 0:
            raise ValueError(
                f"{self.repetitions} repetitions recorded without a hold time; a repetition "
                "is a held contraction: give a hold time of 1-10 s, or 0 repetitions"
            )
        if self.hold_s > 0 and self.repetitions == 0:
            raise ValueError(
                f"a hold of {self.hold_s} s recorded with 0 repetitions; a hold is at least "
                "one contraction: give 1-12 repetitions, or a hold time of 0"
            )
        return self

    @property
    def shows_voluntary_contraction(self) -> bool:
        """The leaflet's evidence that the patient can contract: a real starting block."""
        return self.hold_s > 0 and self.repetitions > 0

    @property
    def starting_block(self) -> str:
        if not self.shows_voluntary_contraction:
            return "none"
        return f"{self.hold_s} s x {self.repetitions}"


def check_day(entry: DiaryEntry, today: date, location: str = "day") -> list[Problem]:
    """A diary records what happened: a day after today is a mistake, and so is one
    before any record could have been kept (a mistyped year)."""
    if entry.day < EARLIEST_RECORD_DAY:
        return [
            Problem(
                location,
                "date is before any record could have been kept",
                value=entry.day.isoformat(),
                limit=f"on or after {EARLIEST_RECORD_DAY}",
                fix="check the year",
            )
        ]
    if entry.day > today:
        return [
            Problem(
                location,
                "date is in the future",
                value=entry.day.isoformat(),
                limit=f"on or before today ({today})",
                fix="record a day that has happened",
            )
        ]
    return []


def make_entry(
    data: dict[str, Any], origin: str, names: dict[str, str] | None = None
) -> DiaryEntry:
    """Validate one entry, turning every problem into an :class:`InputError`.

    ``names`` renames fields in the messages to what the person typed (e.g.
    ``{"hold_s": "--hold"}`` on the command line).
    """
    try:
        return DiaryEntry.model_validate(data)
    except ValidationError as err:
        names = names or {}
        problems = []
        for e in err.errors(include_url=False):
            field = ".".join(str(part) for part in e["loc"]) or "starting block"
            problems.append(
                Problem(
                    names.get(field, field),
                    e["msg"].removeprefix("Value error, "),
                    value=e.get("input") if e["loc"] else None,
                    fix="give a value within the limit" if "than" in e["type"] else None,
                )
            )
        raise InputError(f"{origin}: not recorded", problems) from err


# --- CSV --------------------------------------------------------------------------------

CSV_COLUMNS = (
    "date",
    "hold_s",
    "repetitions",
    "blocks_done",
    "fast_contractions",
    "leakage_episodes",
    "programme",
    "notes",
)
REQUIRED_COLUMNS = ("date", "hold_s", "repetitions", "blocks_done")
_INT_COLUMNS = ("hold_s", "repetitions", "blocks_done", "fast_contractions", "leakage_episodes")
# A cell starting with one of these is run as a formula by spreadsheet programs; exported
# notes get a leading apostrophe (which spreadsheets hide) and import removes one.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def export_csv(entries: Iterable[DiaryEntry]) -> str:
    """CSV text of diary entries, in date order, with a header row."""
    out = io.StringIO()
    # CRLF as RFC 4180 says; it also makes the writer quote a note holding a lone "\r".
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for e in sorted(entries, key=lambda e: e.day):
        notes = "'" + e.notes if e.notes.startswith(_FORMULA_START) else e.notes
        writer.writerow(
            [
                e.day.isoformat(),
                e.hold_s,
                e.repetitions,
                e.blocks_done,
                e.fast_contractions,
                e.leakage_episodes,
                e.programme.value,
                notes,
            ]
        )
    return out.getvalue()


def parse_csv(text: str, origin: str, today: date) -> list[DiaryEntry]:
    """Every entry of a diary CSV, or an :class:`InputError` naming each bad line and field.

    Line numbers are the file's own (the header is line 1). Columns may come in any
    order; ``fast_contractions``, ``leakage_episodes``, ``programme`` and ``notes`` may
    be left out. A day may appear only once.
    """
    text = text.removeprefix("\ufeff")  # spreadsheet programs like to add a BOM
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{origin}: empty file; expected a header row") from None
    except csv.Error as err:
        raise InputError(f"{origin}: line 1: not valid CSV ({err})") from err
    header = [h.strip().lower() for h in header]
    problems = _header_problems(header, origin)
    if problems:
        raise InputError(f"{origin}: the header row is not a diary header", problems)

    entries: list[DiaryEntry] = []
    first_line_of: dict[date, int] = {}
    try:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue  # blank lines are harmless
            where = f"{origin}: line {line}"
            if len(row) != len(header):
                problems.append(
                    Problem(
                        where,
                        f"has {len(row)} fields, the header has {len(header)}",
                        fix="quote notes that contain commas",
                    )
                )
                continue
            entry, row_problems = _parse_row(dict(zip(header, row, strict=True)), where)
            problems.extend(row_problems)
            if entry is None:
                continue
            problems.extend(check_day(entry, today, f"{where}: date"))
            if entry.day in first_line_of:
                problems.append(
                    Problem(
                        f"{where}: date",
                        f"{entry.day} already appears on line {first_line_of[entry.day]}",
                        fix="one row per day: merge the rows",
                    )
                )
            else:
                first_line_of[entry.day] = line
            entries.append(entry)
    except csv.Error as err:
        problems.append(Problem(f"{origin}: line {reader.line_num}", f"not valid CSV ({err})"))
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise InputError(
            f"{origin}: diary not imported, nothing was written ({len(problems)} {noun})",
            problems,
        )
    return entries


def _header_problems(header: list[str], origin: str) -> list[Problem]:
    problems = []
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown:
        problems.append(
            Problem(
                f"{origin}: line 1",
                "unknown column(s): " + ", ".join(repr(h) for h in unknown),
                limit="columns: " + ", ".join(CSV_COLUMNS),
                fix="rename or remove the column",
            )
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        problems.append(
            Problem(
                f"{origin}: line 1",
                "missing column(s): " + ", ".join(missing),
                fix="add the column",
            )
        )
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        problems.append(
            Problem(f"{origin}: line 1", "repeated column(s): " + ", ".join(duplicated))
        )
    return problems


def _parse_row(cells: dict[str, str], where: str) -> tuple[DiaryEntry | None, list[Problem]]:
    problems: list[Problem] = []
    data: dict[str, Any] = {}
    raw_date = cells["date"].strip()
    try:
        data["day"] = date.fromisoformat(raw_date)
    except ValueError:
        problems.append(
            Problem(f"{where}: date", "not a date", value=raw_date, fix="write it as YYYY-MM-DD")
        )
    for column in _INT_COLUMNS:
        if column not in cells:
            continue
        raw = cells[column].strip()
        if raw == "" and column not in REQUIRED_COLUMNS:
            continue
        if raw.isascii() and raw.isdigit():  # int() would also take "1_0" and "١٢"
            data[column] = int(raw)
        else:
            problems.append(
                Problem(f"{where}: {column}", "not a whole number", value=raw, fix="give 0 or more")
            )
    if "programme" in cells and cells["programme"].strip():
        data["programme"] = cells["programme"].strip().lower()
    if "notes" in cells:
        notes = cells["notes"]
        data["notes"] = notes[1:] if notes.startswith("'") else notes
    if problems:
        return None, problems
    try:
        return DiaryEntry.model_validate(data), []
    except ValidationError as err:
        return None, [_renamed(p) for p in validation_problems(err, where)]


def _renamed(problem: Problem) -> Problem:
    # The model calls the date field "day"; the CSV column is "date".
    location = problem.location.replace(": day", ": date")
    return Problem(location, problem.message, problem.value, problem.limit, problem.fix)
