"""The records commands as a user runs them: output, exit codes, and nothing written on
bad input."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import date, timedelta
from pathlib import Path

import pytest

from estim.cli import main
from estim.records.checklist import checklist_template
from estim.records.models import DeviceRecord, Outcome, SessionStart, SessionSummary
from estim.records.store import Store

TODAY = date.today()


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "records.db"
    monkeypatch.setenv("ESTIM_DB", str(path))
    return path


@pytest.fixture
def checklist_file(tmp_path: Path) -> Path:
    path = tmp_path / "checklist.toml"
    text = checklist_template().replace('answered_by = ""', 'answered_by = "Dr. A. Visser"')
    text = text.replace('= "?"', "= false")
    text = text.replace("answered_at = " + date.today().isoformat(), f"answered_at = {TODAY}")
    path.write_text(text)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def rows(db: Path, table: str) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def prescribe(capsys: pytest.CaptureFixture[str], checklist_file: Path, *extra: str) -> int:
    code, _, _ = run(
        capsys,
        "prescribe", "PF-0042", "--protocol", "stress", "--max-ma", "30",
        "--prescriber", "Dr. A. Visser", "--checklist", str(checklist_file),
        "--start", (TODAY - timedelta(days=10)).isoformat(), *extra,
    )  # fmt: skip
    return code


def test_patient_add_list_show(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "patient", "add", "pf-0042", "--born", "1980")[0] == 0
    code, out, _ = run(capsys, "patient", "list", "--json")
    assert code == 0
    assert json.loads(out)[0]["code"] == "PF-0042"
    code, out, _ = run(capsys, "patient", "show", "PF-0042")
    assert code == 0
    assert "RX-NONE" in out
    assert "BLOCKED" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["patient", "add", "Jane Doe", "--born", "1980"], "not a patient code"),
        (["patient", "add", "PF-1", "--born", "1800"], "year_of_birth"),
        (["patient", "add", "PF-1"], "Missing option"),
    ],
)
def test_bad_patient_input_exits_2_and_writes_nothing(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert not db.exists() or rows(db, "patient") == 0


def test_commands_that_only_read_refuse_a_missing_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo.db"
    code, _, err = run(capsys, "patient", "list", "--db", str(missing))
    assert code == 2
    assert "no records database" in err
    assert not missing.exists()


def test_prescribe_and_show_the_course(
    db: Path, capsys: pytest.CaptureFixture[str], checklist_file: Path
) -> None:
    run(capsys, "patient", "add", "PF-0042", "--born", "1980")
    code, out, _ = run(
        capsys,
        "prescribe", "PF-0042", "--protocol", "stress", "--max-ma", "30", "--step-ma", "0.5",
        "--adjust", "frequency_hz=40", "--prescriber", "Dr. A. Visser",
        "--checklist", str(checklist_file), "--json",
    )  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert data["prescription"]["adjustments"] == {"frequency_hz": "40"}
    assert data["checklist_findings"] == []
    code, out, _ = run(capsys, "prescription", "show", str(data["course"]))
    assert code == 0
    assert "40 Hz" in out
    code, out, _ = run(capsys, "checklist", "show", "PF-0042")
    assert code == 0
    assert "lets sessions go ahead" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-ma", "80"], "ceiling"),
        (["--max-ma", "thirty"], "not a number"),
        (["--adjust", "frequency_hz=99"], "outside the protocol's declared range"),
        (["--adjust", "volume=3"], "not an adjustable parameter"),
        (["--protocol", "no-such-protocol"], "no protocol"),
        (["--start", "yesterday"], "not a date"),
        (["--end", "2000-01-01"], "before start_date"),
    ],
)
def test_bad_prescriptions_exit_2_and_write_nothing(
    db: Path,
    capsys: pytest.CaptureFixture[str],
    checklist_file: Path,
    extra: list[str],
    message: str,
) -> None:
    run(capsys, "patient", "add", "PF-0042", "--born", "1980")
    argv = [
        "prescribe", "PF-0042", "--protocol", "stress", "--max-ma", "30",
        "--prescriber", "Dr. A. Visser", "--checklist", str(checklist_file),
    ]  # fmt: skip
    for i in range(0, len(extra), 2):
        if extra[i] in argv:
            argv[argv.index(extra[i]) + 1] = extra[i + 1]
        else:
            argv += extra[i : i + 2]
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert message in err
    assert rows(db, "prescription") == 0
    assert rows(db, "checklist") == 0


def test_an_incomplete_checklist_file_exits_2(
    db: Path, capsys: pytest.CaptureFixture[str], checklist_file: Path
) -> None:
    run(capsys, "patient", "add", "PF-0042", "--born", "1980")
    text = checklist_file.read_text().splitlines()
    checklist_file.write_text("\n".join(line for line in text if "epilepsy" not in line))
    code, _, err = run(
        capsys, "prescribe", "PF-0042", "--protocol", "stress", "--max-ma", "30",
        "--prescriber", "Dr. A. Visser", "--checklist", str(checklist_file),
    )  # fmt: skip
    assert code == 2
    assert "unanswered: epilepsy" in err
    assert rows(db, "prescription") == 0


def test_a_contraindication_exits_1_and_writes_nothing(
    db: Path, capsys: pytest.CaptureFixture[str], checklist_file: Path
) -> None:
    run(capsys, "patient", "add", "PF-0042", "--born", "1980")
    checklist_file.write_text(
        checklist_file.read_text().replace("pregnancy = false", "pregnancy = true")
    )
    code, _, err = run(
        capsys, "prescribe", "PF-0042", "--protocol", "stress", "--max-ma", "30",
        "--prescriber", "Dr. A. Visser", "--checklist", str(checklist_file),
    )  # fmt: skip
    assert code == 1
    assert "CHK-CONTRA-pregnancy" in err
    assert rows(db, "prescription") == 0


def test_no_checklist_and_no_terminal_is_a_clear_error(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "patient", "add", "PF-0042", "--born", "1980")
    code, _, err = run(
        capsys, "prescribe", "PF-0042", "--protocol", "stress", "--max-ma", "30",
        "--prescriber", "Dr. A. Visser",
    )  # fmt: skip
    assert code == 2
    assert "no terminal" in err
    assert rows(db, "prescription") == 0


def test_the_checklist_can_be_answered_on_the_terminal(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    run(capsys, "patient", "add", "PF-0042", "--born", "1980")
    # 13 answers: the epilepsy precaution is "yes" and gets an override reason.
    answers = ["n"] * 10 + ["y", "well controlled for ten years, seen by neurology"] + ["n"] * 2
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(answers) + "\n"))
    code, out, err = run(
        capsys, "prescribe", "PF-0042", "--protocol", "stress", "--max-ma", "30",
        "--prescriber", "Dr. A. Visser", "--ask",
    )  # fmt: skip
    assert code == 0, err
    assert "overridden" in out
    code, out, _ = run(capsys, "checklist", "show", "PF-0042", "--json")
    data = json.loads(out)
    assert data["checklist"]["answers"]["epilepsy"] is True
    assert data["checklist"]["overrides"]["epilepsy"]["reason"].startswith("well controlled")


def test_overlapping_course_then_replace(
    db: Path, capsys: pytest.CaptureFixture[str], checklist_file: Path
) -> None:
    run(capsys, "patient", "add", "PF-0042", "--born", "1980")
    assert prescribe(capsys, checklist_file) == 0
    code, _, err = run(
        capsys, "prescribe", "PF-0042", "--protocol", "urge", "--max-ma", "20",
        "--prescriber", "Dr. A. Visser", "--checklist", str(checklist_file),
    )  # fmt: skip
    assert code == 2
    assert "--replace" in err
    code, _, err = run(
        capsys, "prescribe", "PF-0042", "--protocol", "urge", "--max-ma", "20",
        "--prescriber", "Dr. A. Visser", "--checklist", str(checklist_file), "--replace",
    )  # fmt: skip
    assert code == 0, err
    code, out, _ = run(capsys, "prescription", "list", "PF-0042", "--json")
    courses = json.loads(out)
    assert courses[0]["prescription"]["end_date"] == (TODAY - timedelta(days=1)).isoformat()
    assert courses[1]["prescription"]["protocol"]["id"] == "urge"


def test_amend_makes_the_checklist_stale_until_answered_again(
    db: Path, capsys: pytest.CaptureFixture[str], checklist_file: Path
) -> None:
    run(capsys, "patient", "add", "PF-0042", "--born", "1980")
    prescribe(capsys, checklist_file)
    code, out, err = run(
        capsys, "prescribe", "PF-0042", "--amend", "--max-ma", "25", "--reason", "discomfort"
    )
    assert code == 0, err
    assert "CHK-STALE" in out
    assert run(capsys, "checklist", "show", "PF-0042")[0] == 1
    code, _, _ = run(capsys, "checklist", "answer", "PF-0042", "--file", str(checklist_file))
    assert code == 0
    assert run(capsys, "checklist", "show", "PF-0042")[0] == 0


def test_diary_add_show_export_import(
    db: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run(capsys, "patient", "add", "PF-0042", "--born", "1980")
    day = (TODAY - timedelta(days=1)).isoformat()
    code, out, _ = run(
        capsys, "diary", "add", "PF-0042", "--date", day, "--hold", "2", "--reps", "4",
        "--blocks", "5", "--notes", "first real block",
    )  # fmt: skip
    assert code == 0
    assert "2 s x 4" in out
    code, out, _ = run(capsys, "diary", "show", "PF-0042", "--json")
    shown = json.loads(out)
    assert len(shown) == 2  # from the first record (yesterday) to today, not 28 empty days
    assert shown[-2]["diary"]["hold_s"] == 2
    out_file = tmp_path / "diary.csv"
    assert run(capsys, "diary", "export", "PF-0042", "--out", str(out_file))[0] == 0
    run(capsys, "patient", "add", "PF-0043", "--born", "1970")
    assert run(capsys, "diary", "import", "PF-0043", str(out_file))[0] == 0
    code, out, _ = run(capsys, "diary", "export", "PF-0043")
    assert out == out_file.read_bytes().decode()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--hold", "0", "--reps", "3", "--blocks", "4"], "without a hold time"),
        (["--hold", "11", "--reps", "3", "--blocks", "4"], "--hold"),
        (["--hold", "0", "--reps", "0", "--blocks", "40"], "--blocks"),
        (["--hold", "0", "--reps", "0", "--blocks", "4", "--date", "2999-01-01"], "future"),
        (["--hold", "0", "--reps", "0", "--blocks", "4", "--date", "01/02/2024"], "not a date"),
    ],
)
def test_impossible_diary_entries_exit_2(
    db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    run(capsys, "patient", "add", "PF-0042", "--born", "1980")
    code, _, err = run(capsys, "diary", "add", "PF-0042", *argv)
    assert code == 2
    assert message in err
    assert rows(db, "diary_entry") == 0


def test_a_bad_csv_imports_nothing(
    db: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run(capsys, "patient", "add", "PF-0042", "--born", "1980")
    csv_file = tmp_path / "d.csv"
    csv_file.write_text(
        "date,hold_s,repetitions,blocks_done\n2024-05-01,2,4,5\n2024-05-02,2,four,5\n"
    )
    code, _, err = run(capsys, "diary", "import", "PF-0042", str(csv_file))
    assert code == 2
    assert "line 3: repetitions: not a whole number" in err
    assert rows(db, "diary_entry") == 0
    code, _, err = run(capsys, "diary", "import", "PF-0042", str(tmp_path / "none.csv"))
    assert code == 2
    assert "no such file" in err


def record_session(db: Path, outcome: Outcome = Outcome.COMPLETED) -> int:
    with Store.open(db) as store:
        record = store.active_prescription("PF-0042")
        assert record is not None
        recorder = store.begin_session(
            SessionStart(
                patient_code="PF-0042",
                protocol_sha256=record.effective_protocol.content_hash,
                profile_name="estim-pf2",
                profile_sha256="a" * 64,
                device=DeviceRecord(model="PF2", serial_number="SN-1", firmware="1.0"),
                clinician="Nurse B",
            )
        )
        recorder.finish(outcome, "done", SessionSummary(confirmed_amplitude_ua=15_500))
        return recorder.session_id


def test_log_list_show_verify_export(
    db: Path, capsys: pytest.CaptureFixture[str], checklist_file: Path, tmp_path: Path
) -> None:
    run(capsys, "patient", "add", "PF-0042", "--born", "1980")
    prescribe(capsys, checklist_file)
    sid = record_session(db)
    code, out, _ = run(capsys, "log", "list")
    assert code == 0
    assert "15.5 mA" in out
    code, out, _ = run(capsys, "log", "show", str(sid))
    assert code == 0
    assert "records.end" in out
    code, out, _ = run(capsys, "log", "verify", "--all")
    assert code == 0
    assert "ok, 2 events" in out
    export = tmp_path / "log.json"
    assert run(capsys, "log", "export", str(sid), "--out", str(export))[0] == 0
    assert json.loads(export.read_text())["verified"] is True
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("DROP TRIGGER session_event_no_update")
        conn.execute("UPDATE session_event SET state='x' WHERE sequence=1")
        conn.commit()
    code, out, _ = run(capsys, "log", "verify", str(sid))
    assert code == 1
    assert "BROKEN at event #1" in out
    assert run(capsys, "log", "show", "999")[0] == 2
    assert run(capsys, "log", "verify")[0] == 2


def test_report_terminal_json_and_html(
    db: Path, capsys: pytest.CaptureFixture[str], checklist_file: Path, tmp_path: Path
) -> None:
    run(capsys, "patient", "add", "PF-0042", "--born", "1980")
    prescribe(capsys, checklist_file)
    record_session(db)
    html_file = tmp_path / "report.html"
    code, out, err = run(capsys, "report", "PF-0042", "--html", str(html_file))
    assert code == 0, err
    assert "Progress report: PF-0042" in out
    assert html_file.read_text().startswith("<!DOCTYPE html>")
    code, out, _ = run(capsys, "report", "PF-0042", "--json")
    data = json.loads(out)
    assert data["format"] == "estim-report/1"
    assert data["courses"][0]["completed"] == 1
    assert data["amplitude"][0]["amplitude_ma"] == "15.5"
    code, _, err = run(capsys, "report", "PF-0042", "--from", "2030-01-01")
    assert code == 2
    assert "after --to" in err


def test_records_info(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "patient", "add", "PF-0042", "--born", "1980")
    code, out, _ = run(capsys, "records", "info", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["schema_version"] == 2
    assert data["settings"] == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1}
    assert data["counts"]["patients"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["diary", "show", "PF-0042", "--to", "0001-01-05"], "before any record"),
        (
            [
                "diary",
                "add",
                "PF-0042",
                "--hold",
                "5",
                "--reps",
                "3",
                "--blocks",
                "4",
                "--date",
                "0001-01-01",
            ],
            "before any record",
        ),
        (["report", "PF-0042", "--from", "0001-01-01"], "before any record"),
    ],
)
def test_days_before_any_record_are_a_clear_error(
    db: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    run(capsys, "patient", "add", "PF-0042", "--born", "1980")
    code, _, err = run(capsys, *args)
    assert code == 2, err
    assert message in err


def test_the_calendars_last_day_is_shown_not_a_crash(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "patient", "add", "PF-0042", "--born", "1980")
    code, out, err = run(
        capsys, "diary", "show", "PF-0042", "--from", "9999-12-31", "--to", "9999-12-31"
    )
    assert code == 0, err
    assert "9999-12-31" in out


def test_a_non_ascii_patient_code_is_refused_not_folded_into_another() -> None:
    from estim.errors import InputError
    from estim.records.models import normalize_code

    with pytest.raises(InputError, match="not a patient code"):
        normalize_code("ß1")  # "ß1".upper() == "SS1": somebody else's code
    assert normalize_code("pf-0042") == "PF-0042"
