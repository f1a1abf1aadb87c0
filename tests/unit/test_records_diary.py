"""Diary entries in the leaflet's units, and CSV in and out."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from estim.errors import InputError
from estim.records.diary import (
    DiaryEntry,
    Programme,
    export_csv,
    make_entry,
    parse_csv,
)

TODAY = date(2024, 5, 20)
HEADER = "date,hold_s,repetitions,blocks_done,fast_contractions,leakage_episodes,programme,notes\n"


def test_a_starting_block_is_hold_seconds_times_repetitions() -> None:
    e = DiaryEntry(day=TODAY, hold_s=2, repetitions=4, blocks_done=5)
    assert e.shows_voluntary_contraction
    assert e.starting_block == "2 s x 4"
    none = DiaryEntry(day=TODAY, hold_s=0, repetitions=0, blocks_done=4)
    assert not none.shows_voluntary_contraction
    assert none.starting_block == "none"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"hold_s": 0, "repetitions": 3}, "without a hold time"),
        ({"hold_s": 3, "repetitions": 0}, "0 repetitions"),
        ({"hold_s": 11, "repetitions": 1}, "less than or equal to 10"),
        ({"hold_s": 1, "repetitions": 13}, "less than or equal to 12"),
        ({"blocks_done": 13}, "less than or equal to 12"),
        ({"hold_s": -1}, "greater than or equal to 0"),
        ({"leakage_episodes": 51}, "less than or equal to 50"),
        ({"notes": "x" * 501}, "at most 500"),
    ],
)
def test_impossible_entries_are_refused_with_a_clear_message(
    fields: dict[str, object], message: str
) -> None:
    data = {"day": TODAY, "hold_s": 0, "repetitions": 0, "blocks_done": 4, **fields}
    with pytest.raises(ValidationError, match=message):
        DiaryEntry.model_validate(data)


def test_make_entry_names_the_option_the_person_typed() -> None:
    with pytest.raises(InputError) as info:
        make_entry(
            {"day": TODAY, "hold_s": 11, "repetitions": 1, "blocks_done": 40},
            "diary entry",
            {"hold_s": "--hold", "blocks_done": "--blocks"},
        )
    locations = [p.location for p in info.value.problems]
    assert locations == ["--hold", "--blocks"]


def test_csv_round_trip_with_awkward_notes() -> None:
    entries = [
        DiaryEntry(day=date(2024, 5, 1), hold_s=2, repetitions=4, blocks_done=5, notes="a, b"),
        DiaryEntry(
            day=date(2024, 5, 2),
            hold_s=0,
            repetitions=0,
            blocks_done=4,
            notes='said "fine"\nnext line',
        ),
        DiaryEntry(
            day=date(2024, 5, 3),
            hold_s=0,
            repetitions=0,
            blocks_done=0,
            notes="=HYPERLINK(1)",
            programme=Programme.MAINTENANCE,
        ),
        DiaryEntry(day=date(2024, 5, 4), hold_s=1, repetitions=1, blocks_done=1, notes="'quoted"),
    ]
    text = export_csv(entries)
    assert "'=HYPERLINK(1)" in text  # a spreadsheet will not run it
    assert parse_csv(text, "d.csv", TODAY) == entries


def test_csv_with_only_the_required_columns_in_any_order_and_a_bom() -> None:
    text = (
        "\ufeffblocks_done,date,repetitions,hold_s\r\n4,2024-05-01,4,2\r\n\r\n5,2024-05-02,0,0\r\n"
    )
    entries = parse_csv(text, "d.csv", TODAY)
    assert [(e.day.day, e.hold_s, e.repetitions, e.blocks_done) for e in entries] == [
        (1, 2, 4, 4),
        (2, 0, 0, 5),
    ]


def test_every_bad_row_is_reported_by_line_and_field() -> None:
    text = HEADER + (
        "2024-05-01,2,4,5,0,0,training,ok\n"
        "2024-13-01,2,4,5,0,0,training,\n"
        "2024-05-03,x,4,5,0,0,training,\n"
        "2024-05-04,0,4,5,0,0,training,\n"
        "2024-05-01,1,1,1,0,0,training,\n"
        "2024-06-01,1,1,1,0,0,training,\n"
        "2024-05-06,1,1,1,0,0,weekly,\n"
        "2024-05-07,1,1\n"
    )
    with pytest.raises(InputError) as info:
        parse_csv(text, "d.csv", TODAY)
    problems = [str(p) for p in info.value.problems]
    assert "nothing was written" in info.value.summary
    assert problems[0].startswith("d.csv: line 3: date: not a date")
    assert problems[1].startswith("d.csv: line 4: hold_s: not a whole number")
    assert problems[2].startswith("d.csv: line 5: ")
    assert "without a hold time" in problems[2]
    assert problems[3].startswith("d.csv: line 6: date")
    assert "line 2" in problems[3]
    assert problems[4].startswith("d.csv: line 7: date: date is in the future")
    assert problems[5].startswith("d.csv: line 8: programme")
    assert problems[6].startswith("d.csv: line 9: has 3 fields")
    assert len(problems) == 7


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("date,hold_s,blocks_done\n", "missing column(s): repetitions"),
        ("date,hold_s,repetitions,blocks_done,mood\n", "unknown column(s): 'mood'"),
        ("date,date,hold_s,repetitions,blocks_done\n", "repeated column(s): date"),
    ],
)
def test_bad_headers(text: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        parse_csv(text, "d.csv", TODAY)
    assert message in str(info.value)


@pytest.mark.parametrize("count", ["1_0", "١٢", "+3", " 4e0"])
def test_a_count_is_ascii_digits_only(count: str) -> None:
    """int() reads "1_0" as 10 and Arabic-Indic digits as numbers: not what a person
    meant to write in a diary."""
    text = HEADER + f"2024-05-01,2,{count},5,0,0,training,\n"
    with pytest.raises(InputError) as info:
        parse_csv(text, "d.csv", TODAY)
    assert "repetitions: not a whole number" in str(info.value.problems[0])


def test_a_diary_day_before_any_record_is_refused() -> None:
    text = HEADER + "0001-01-01,2,4,5,0,0,training,\n"
    with pytest.raises(InputError) as info:
        parse_csv(text, "d.csv", TODAY)
    assert "before any record could have been kept" in str(info.value.problems[0])
