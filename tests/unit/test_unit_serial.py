"""Which unit a bench record vouches for, when the device cannot say its serial number.

A RehaStim2 (ScienceMode2) reports no serial number, so a person names the unit by the
serial on its label: the technician at the bench (the record keeps it as the unit's
label serial), the clinician before a session (``--unit-serial`` or the prompt). Here:
the pure matching rules, the record's format (old records still read), the bench's
refusal, the interlock's reason, and what the session log and the screen say.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from pydantic import ValidationError
from rich.console import Console

from estim.cli.session_cmd import _confirm_unit, _validation_check
from estim.cli.session_run import narrate
from estim.device.base import DeviceIdentity
from estim.device.profile import builtin_profile
from estim.errors import InputError, PreflightBlocked, SpecVersionError
from estim.events import SessionEvent
from estim.records.models import ValidationRef
from estim.safety.interlocks import DeviceValidation, ValidationReading
from estim.validation.bench import check_label_serial
from estim.validation.record import (
    RECORD_SPEC_VERSION,
    CheckResult,
    ConfirmedHow,
    DeviceUnit,
    Outcome,
    UnitConfirmation,
    ValidationRecord,
    check_record,
    load_record,
    parse_label_serial,
    record_problems,
    same_serial,
    save_record,
    unit_problems,
)

REHASTIM2 = builtin_profile("hasomed-rehastim2")
PF2 = builtin_profile("estim-pf2")
NOT_REPORTED = "not reported by ScienceMode2"
STARTED = datetime(2025, 3, 4, 9, 30, tzinfo=UTC)

REHASTIM2_UNIT = DeviceIdentity(
    model="RehaStim2",
    serial_number=NOT_REPORTED,
    firmware="1",
    protocol_version=1,
    manufacturer="HASOMED GmbH",
    capabilities=frozenset({"sciencemode2", "channel-list-mode"}),
)
PF2_UNIT = DeviceIdentity(
    model=PF2.identity.model, serial_number="PF2-000123", firmware="1.0", protocol_version=1
)


def make_record(
    identity: DeviceIdentity = REHASTIM2_UNIT,
    profile_sha256: str = REHASTIM2.sha256,
    label: str | None = "RS2-0417",
) -> ValidationRecord:
    return ValidationRecord(
        profile_sha256=profile_sha256,
        profile_model=identity.model,
        device=DeviceUnit.from_identity(
            identity,
            label_serial=label,
            label_serial_source=None if label is None else "entered by Tess Tech",
        ),
        port="/dev/ttyUSB0",
        technician="Tess Tech",
        started_at=STARTED,
        finished_at=STARTED + timedelta(minutes=4),
        estim_version="test",
        checks=(CheckResult(id="identity", title="Identity", outcome=Outcome.PASS),),
        passed=True,
    )


# --- a serial number typed from a label ------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "kept"),
    [
        ("RS2-0417", "RS2-0417"),
        ("  RS2-0417\n", "RS2-0417"),
        ("RS2   0417", "RS2 0417"),
        ("12/2019 #7", "12/2019 #7"),
        ("A", "A"),
        ("x" * 64, "x" * 64),
    ],
)
def test_a_label_serial_is_kept_as_typed_but_tidied(typed: str, kept: str) -> None:
    assert parse_label_serial(typed) == kept


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("", "give the serial number printed on the unit's label"),
        ("   ", "give the serial number printed on the unit's label"),
        ("-RS2", "is not a serial number"),
        ("RS2-", "is not a serial number"),
        ("RS2;rm", "is not a serial number"),
        ("x" * 65, "at most 64 characters"),
        ("RS2\x000417", "is not a serial number"),
        ("Seriennr. ÄÖ", "is not a serial number"),
    ],
)
def test_what_cannot_be_a_serial_number_is_refused_with_the_option_named(
    typed: str, message: str
) -> None:
    with pytest.raises(InputError) as caught:
        parse_label_serial(typed)
    assert "--unit-serial" in str(caught.value)
    assert message in str(caught.value)


def test_serials_compare_ignoring_case_and_spaces_but_not_other_characters() -> None:
    assert same_serial("RS2-0417", "rs2-0417")
    assert same_serial("RS2 0417", "RS20417")
    assert not same_serial("RS2-0417", "RS20417")
    assert not same_serial("RS2-0417", "RS2-0471")
    assert not same_serial("RS2-0417", "RS2-04170")


# --- the matching rules -------------------------------------------------------------------------


def test_a_unit_without_a_serial_is_vouched_for_only_once_its_label_is_confirmed() -> None:
    record = make_record()
    assert record_problems(record, REHASTIM2, REHASTIM2_UNIT, unit_serial="RS2-0417") == []
    assert record_problems(record, REHASTIM2, REHASTIM2_UNIT, unit_serial="rs2-0417") == []
    assert record.matches(REHASTIM2, REHASTIM2_UNIT) is False  # nobody confirmed

    (absent,) = record_problems(record, REHASTIM2, REHASTIM2_UNIT)
    assert absent.startswith("the RehaStim2 reports no serial number and nobody confirmed")
    assert "give it with --unit-serial SN, or type it when asked in a terminal" in absent
    assert "the record is for the unit labelled RS2-0417" in absent

    (wrong,) = record_problems(record, REHASTIM2, REHASTIM2_UNIT, unit_serial="RS2-0999")
    assert wrong == (
        "the connected RehaStim2 was confirmed as label serial RS2-0999, but the record was "
        "made on the unit labelled RS2-0417: connect that unit, or give this unit's own "
        "record (benched with --unit-serial RS2-0999)"
    )


def test_a_record_without_a_label_serial_vouches_for_no_unit_without_a_serial() -> None:
    old = make_record(label=None)
    for confirmed in (None, "RS2-0417"):
        (problem,) = record_problems(old, REHASTIM2, REHASTIM2_UNIT, unit_serial=confirmed)
        assert "the record names no label serial" in problem
        assert "cannot say which RehaStim2 it was made on" in problem
        assert "estim profile bench PROFILE --port PORT --unit-serial SN" in problem


def test_a_unit_that_reports_its_serial_works_as_before_and_a_confirmation_must_match() -> None:
    record = make_record(PF2_UNIT, PF2.sha256, label=None)
    assert record_problems(record, PF2, PF2_UNIT) == []
    assert record_problems(record, PF2, PF2_UNIT, unit_serial="pf2-000123") == []
    (wrong,) = record_problems(record, PF2, PF2_UNIT, unit_serial="PF2-000999")
    assert wrong == (
        "the unit was confirmed as serial PF2-000999 (--unit-serial), but the connected "
        "estim-PF2 reports serial PF2-000123: check the label of the unit connected, or "
        "connect the unit labelled PF2-000999"
    ).replace("estim-PF2", PF2.identity.model)
    other = DeviceIdentity(PF2.identity.model, "PF2-000999", "1.0", protocol_version=1)
    (serial,) = record_problems(record, PF2, other, unit_serial="PF2-000999")
    assert serial == "the record is for serial PF2-000123, the device is PF2-000999"


def test_a_serial_mismatch_is_said_once_not_again_as_a_label_problem() -> None:
    record = make_record(PF2_UNIT, REHASTIM2.sha256, label=None)
    problems = record_problems(record, REHASTIM2, REHASTIM2_UNIT)
    assert problems[0] == f"the record is for serial PF2-000123, the device is {NOT_REPORTED}"
    assert not any("label" in p for p in problems)


def test_unit_problems_are_independent_of_the_rest_of_the_record() -> None:
    failed = make_record().model_copy(update={"profile_sha256": "0" * 64})
    assert unit_problems(failed, REHASTIM2_UNIT, "RS2-0417") == []
    problems = record_problems(failed, REHASTIM2, REHASTIM2_UNIT, unit_serial="RS2-0417")
    assert len(problems) == 1
    assert "profile changed" in problems[0]


def test_check_record_adds_the_bench_fix_only_when_a_new_record_is_needed() -> None:
    record = make_record()
    check_record(record, REHASTIM2, REHASTIM2_UNIT, unit_serial="rs2-0417")
    with pytest.raises(PreflightBlocked) as unconfirmed:
        check_record(record, REHASTIM2, REHASTIM2_UNIT)
    assert "nobody confirmed which unit is connected" in str(unconfirmed.value)
    assert "run `estim profile bench" not in str(unconfirmed.value)
    with pytest.raises(PreflightBlocked) as no_record:
        check_record(None, REHASTIM2, REHASTIM2_UNIT)
    assert "--unit-serial SN` (SN: its label) on this RehaStim2" in str(no_record.value)
    edited = make_record(profile_sha256="0" * 64)
    with pytest.raises(PreflightBlocked) as changed:
        check_record(edited, REHASTIM2, REHASTIM2_UNIT, unit_serial="RS2-0417")
    assert "run `estim profile bench PROFILE --port PORT --unit-serial SN`" in str(changed.value)


# --- the record ---------------------------------------------------------------------------------


def test_the_label_serial_says_how_it_was_obtained_and_is_checked_like_input() -> None:
    unit = make_record().device
    assert (unit.label_serial, unit.label_serial_source) == ("RS2-0417", "entered by Tess Tech")
    assert unit.name == "RehaStim2 labelled RS2-0417"
    assert make_record(label=None).device.name == (
        f"RehaStim2 (serial {NOT_REPORTED}, no label serial recorded)"
    )
    assert make_record(PF2_UNIT, PF2.sha256, None).device.name == (
        f"{PF2.identity.model} serial PF2-000123"
    )
    data = unit.model_dump()
    with pytest.raises(ValidationError, match="go together"):
        DeviceUnit.model_validate({**data, "label_serial_source": None})
    with pytest.raises(ValidationError, match="go together"):
        DeviceUnit.model_validate({**data, "label_serial": None})
    with pytest.raises(ValidationError):
        DeviceUnit.model_validate({**data, "label_serial": "-bad-"})


def test_a_record_keeps_its_label_serial_and_older_formats_still_read(tmp_path: Path) -> None:
    record = make_record()
    path = save_record(record, tmp_path / "v3.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["spec_version"] == RECORD_SPEC_VERSION == 3
    assert data["device"]["label_serial"] == "RS2-0417"
    assert data["device"]["label_serial_source"] == "entered by Tess Tech"
    assert load_record(path) == record
    # Format 2 (before label serials): reads, names no label, and so vouches for no
    # RehaStim2 until the unit is benched again.
    data["spec_version"] = 2
    del data["device"]["label_serial"], data["device"]["label_serial_source"]
    (tmp_path / "v2.json").write_text(json.dumps(data), encoding="utf-8")
    old = load_record(tmp_path / "v2.json")
    assert old.device.label_serial is None
    assert (
        "names no label serial"
        in record_problems(old, REHASTIM2, REHASTIM2_UNIT, unit_serial="RS2-0417")[0]
    )
    # A newer format than this code knows is refused, not guessed at.
    data["spec_version"] = RECORD_SPEC_VERSION + 1
    (tmp_path / "v4.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(SpecVersionError):
        load_record(tmp_path / "v4.json")


def test_the_session_records_reference_names_the_label_serial(tmp_path: Path) -> None:
    labelled = save_record(make_record(), tmp_path / "labelled.json")
    assert ValidationRef.from_file(labelled).fields["device_label_serial"] == "RS2-0417"
    unlabelled = save_record(make_record(PF2_UNIT, PF2.sha256, None), tmp_path / "pf2.json")
    assert "device_label_serial" not in ValidationRef.from_file(unlabelled).fields


# --- the bench ----------------------------------------------------------------------------------


def test_the_bench_is_refused_for_a_unit_that_cannot_be_named() -> None:
    with pytest.raises(InputError) as caught:
        check_label_serial(
            REHASTIM2_UNIT, None, command="estim profile bench hasomed-rehastim2 --port sim"
        )
    text = str(caught.value)
    assert text.startswith(f"the RehaStim2 reports no serial number ({NOT_REPORTED})")
    assert "would vouch for any RehaStim2" in text
    assert text.endswith(
        "give it: estim profile bench hasomed-rehastim2 --port sim --unit-serial SN"
    )
    check_label_serial(REHASTIM2_UNIT, "RS2-0417")


def test_a_label_serial_given_for_a_unit_that_reports_its_own_must_match() -> None:
    check_label_serial(PF2_UNIT, None)
    check_label_serial(PF2_UNIT, "pf2-000123")
    with pytest.raises(InputError) as caught:
        check_label_serial(PF2_UNIT, "PF2-000999")
    assert str(caught.value) == (
        f"--unit-serial PF2-000999, but the connected {PF2.identity.model} reports serial "
        "PF2-000123: check the label of the unit on the bench (or leave out --unit-serial: "
        "this unit names itself)"
    )


# --- at session start: the interlock and the log ------------------------------------------------


@pytest.mark.trips("IL-DEVICE-VALIDATION")
def test_the_interlock_trips_with_the_reason_and_what_to_do() -> None:
    record = make_record()
    interlock = DeviceValidation()
    problems = tuple(record_problems(record, REHASTIM2, REHASTIM2_UNIT))
    trip = interlock.should_trip(ValidationReading("bench-RS2-0417.json", problems))
    assert trip is not None
    assert trip.reason.startswith(
        "the validation record bench-RS2-0417.json does not vouch for this unit: the "
        "RehaStim2 reports no serial number and nobody confirmed which unit is connected"
    )
    assert "--unit-serial SN" in trip.reason
    missing = interlock.should_trip(ValidationReading(None))
    assert missing is not None
    assert "--unit-serial SN, the serial on its label, if it reports none" in missing.reason
    assert "--validation FILE" in missing.reason


def test_the_confirmation_is_logged_with_its_verdict() -> None:
    record = make_record()
    typed = UnitConfirmation("rs2-0417", ConfirmedHow.PROMPT, "Dr Test")
    assert typed.event_data(record, REHASTIM2_UNIT) == {
        "confirmed_serial": "rs2-0417",
        "how": "typed at the prompt from the unit's label",
        "confirmed_by": "Dr Test",
        "device_serial": NOT_REPORTED,
        "record_label_serial": "RS2-0417",
        "matches": True,
    }
    given = UnitConfirmation("RS2-0999", ConfirmedHow.OPTION, "Dr Test")
    data = given.event_data(record, REHASTIM2_UNIT)
    assert (data["how"], data["matches"]) == ("given with --unit-serial", False)
    assert given.event_data(None, REHASTIM2_UNIT)["matches"] is False


def test_the_sessions_check_carries_the_confirmation_into_the_reading(tmp_path: Path) -> None:
    record = make_record()
    path = save_record(record, tmp_path / "bench.json")
    confirmed = UnitConfirmation("RS2-0417", ConfirmedHow.OPTION, "Dr Test")
    check = _validation_check(path, record, REHASTIM2, confirmed)
    reading = check(REHASTIM2_UNIT)
    assert reading == ValidationReading(
        str(path), (), unit_confirmation=confirmed.event_data(record, REHASTIM2_UNIT)
    )
    assert DeviceValidation().should_trip(reading) is None
    unconfirmed = _validation_check(path, record, REHASTIM2, None)
    reading = unconfirmed(REHASTIM2_UNIT)
    assert reading.unit_confirmation is None
    assert len(reading.problems) == 1
    no_record = _validation_check(None, None, REHASTIM2, confirmed)
    reading = no_record(REHASTIM2_UNIT)
    assert reading.record is None
    assert reading.unit_confirmation is not None
    assert reading.unit_confirmation["matches"] is False


def test_the_screen_says_whether_the_confirmed_unit_matches() -> None:
    def event(matches: bool) -> SessionEvent:
        data = UnitConfirmation(
            "RS2-0417" if matches else "RS2-0999", ConfirmedHow.OPTION, "Dr Test"
        ).event_data(make_record(), REHASTIM2_UNIT)
        return SessionEvent("unit_confirmation", "connecting", 0, data)

    good = narrate(event(True))
    assert good is not None
    assert good.plain == (
        "unit confirmed by Dr Test: label serial RS2-0417 (given with --unit-serial); matches"
    )
    bad = narrate(event(False))
    assert bad is not None
    assert bad.plain.endswith(
        "RS2-0999 (given with --unit-serial); DOES NOT MATCH the bench record or the device"
    )
    assert bad.style == "bold red"


# --- the prompt -------------------------------------------------------------------------------


class _Keyboard(io.StringIO):
    """Stands in for a terminal's stdin: what the clinician types."""

    def isatty(self) -> bool:
        return True


def prompt(
    monkeypatch: pytest.MonkeyPatch,
    typed: str,
    record: ValidationRecord | None = None,
    given: str | None = None,
    *,
    tty: bool = True,
) -> tuple[UnitConfirmation | None, str]:
    keyboard = _Keyboard(typed) if tty else io.StringIO(typed)
    monkeypatch.setattr("sys.stdin", keyboard)
    screen = io.StringIO()
    console = Console(file=screen, width=200, highlight=False)
    confirmed = _confirm_unit(
        record or make_record(), Path("bench-RS2-0417.json"), given, "Dr Test", console
    )
    return confirmed, screen.getvalue()


def test_in_a_terminal_the_clinician_types_the_label_serial(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    confirmed, shown = prompt(monkeypatch, "  rs2-0417 \n")
    assert confirmed == UnitConfirmation("rs2-0417", ConfirmedHow.PROMPT, "Dr Test")
    flat = " ".join(shown.split())
    assert "The RehaStim2 reports no serial number: confirm which unit is connected." in flat
    assert "checked against the bench record bench-RS2-0417.json" in flat
    assert "RS2-0417" not in flat.replace("bench-RS2-0417.json", "")  # never shown: typed
    assert "Serial number on the connected unit's label:" in flat


def test_a_blank_or_malformed_answer_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    confirmed, shown = prompt(monkeypatch, "\nRS2;0417\nRS2-0417\n")
    assert confirmed is not None
    assert confirmed.serial == "RS2-0417"
    assert shown.count("Serial number on the connected unit's label:") == 3
    assert "the label serial: give the serial number printed" in shown
    assert "the label serial 'RS2;0417' is not a serial number" in shown


def test_the_input_ending_confirms_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    confirmed, shown = prompt(monkeypatch, "")
    assert confirmed is None
    assert "no unit confirmed (input ended)" in shown


def test_without_a_terminal_nobody_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    confirmed, shown = prompt(monkeypatch, "RS2-0417\n", tty=False)
    assert confirmed is None
    assert shown == ""


def test_the_option_is_taken_as_given_and_nobody_is_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    confirmed, shown = prompt(monkeypatch, "RS2-9999\n", given="RS2-0417")
    assert confirmed == UnitConfirmation("RS2-0417", ConfirmedHow.OPTION, "Dr Test")
    assert shown == ""


def test_ctrl_c_at_the_prompt_ends_the_command_before_anything_connects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def interrupted(*_args: object, **_kwargs: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(Console, "input", interrupted)
    with pytest.raises(typer.Exit) as caught:
        prompt(monkeypatch, "RS2-0417\n")
    assert caught.value.exit_code == 4


def test_a_unit_that_reports_its_serial_is_not_asked_about(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    confirmed, shown = prompt(monkeypatch, "PF2-000123\n", make_record(PF2_UNIT, PF2.sha256, None))
    assert confirmed is None
    assert shown == ""


def test_a_record_without_a_label_serial_still_asks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    confirmed, shown = prompt(monkeypatch, "RS2-0417\n", make_record(label=None))
    assert confirmed is not None  # the refusal comes at connect (the record names no unit)
    assert "Serial number on the connected unit's label:" in shown


def test_the_records_default_file_name_says_which_unit() -> None:
    from estim.cli.bench_cmd import _default_path

    stamp = "20250304T093400Z"
    assert _default_path(make_record(label="RS2 0417")).name == (
        f"bench-RehaStim2-RS2_0417-{stamp}.json"
    )
    assert _default_path(make_record(PF2_UNIT, PF2.sha256, None)).name == (
        f"bench-PF2-000123-{stamp}.json"
    )
    assert _default_path(make_record(label=None)).name == f"bench-RehaStim2-{stamp}.json"
