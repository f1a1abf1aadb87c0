"""The records store on a real SQLite file: every operation, every refusal."""

from __future__ import annotations

import os
import stat
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from records_helpers import (
    CODE,
    PROFILE_SHA,
    TODAY,
    Clock,
    checklist,
    clock_fixture,  # noqa: F401  (fixture "clock")
    event,
    open_store,
    prescription,
    ready_course,
    run_session,
    session_start,
    store_fixture,  # noqa: F401  (fixture "store")
    stress,
)
from sqlalchemy import text

from estim.errors import InputError, NotFoundError, PreflightBlocked, RecordsError
from estim.events import SessionEvent
from estim.protocols.catalog import get_protocol
from estim.records.diary import DiaryEntry
from estim.records.engine import sqlite_settings
from estim.records.models import EligibilityOverride, Outcome, SessionSummary, ValidationRef
from estim.records.store import Store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the file -------------------------------------------------------------------------


def test_database_and_wal_files_are_owner_only_even_with_a_permissive_umask(
    tmp_path: Path,
) -> None:
    old = os.umask(0o000)
    try:
        with open_store(tmp_path / "new" / "records.db") as s:
            ready_course(s)
            for name in ("records.db", "records.db-wal", "records.db-shm"):
                assert mode(tmp_path / "new" / name) == 0o600, name
            assert mode(tmp_path / "new") == 0o700
    finally:
        os.umask(old)


def test_durability_settings(store: Store) -> None:
    assert sqlite_settings(store.engine) == {
        "journal_mode": "wal",
        "synchronous": 2,  # FULL
        "foreign_keys": 1,
    }


def test_a_readable_existing_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "records.db"
    open_store(path).close()
    path.chmod(0o644)
    with open_store(path) as s:
        assert any("readable by other accounts" in w for w in s.warnings)


def test_opening_without_create_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no records database"):
        Store.open(tmp_path / "typo.db", create=False)
    assert not (tmp_path / "typo.db").exists()


def test_a_directory_is_not_a_records_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        Store.open(tmp_path)


def test_a_link_to_nothing_is_not_a_records_file(tmp_path: Path) -> None:
    link = tmp_path / "alias.db"
    link.symlink_to(tmp_path / "gone" / "s.db")
    with pytest.raises(InputError, match="which does not exist"):
        Store.open(link)


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(InputError, match="need a file"):
        Store.open("sqlite:///:memory:")


def test_location_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESTIM_DB", str(tmp_path / "env.db"))
    with Store.open() as s:
        assert s.location == str(tmp_path / "env.db")


def test_sqlite_url_works_like_a_path(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path}/url.db") as s:
        assert s.location == str(tmp_path / "url.db")
        assert s.schema_version() == 2


# --- patients --------------------------------------------------------------------------


def test_patients_are_stored_by_upper_case_code(store: Store) -> None:
    store.add_patient("pf-0042", 1980, "  notes  ")
    p = store.patient("PF-0042")
    assert (p.code, p.year_of_birth, p.notes) == ("PF-0042", 1980, "notes")
    assert [x.code for x in store.patients()] == ["PF-0042"]


@pytest.mark.parametrize("code", ["Jane Doe", "JaneDoe", "x", "-PF1", "A" * 33, "PF 0042"])
def test_codes_that_could_be_names_or_are_malformed_are_refused(store: Store, code: str) -> None:
    with pytest.raises(InputError, match="not a patient code"):
        store.add_patient(code, 1980)
    assert store.patients() == []


@pytest.mark.parametrize("year", [1899, TODAY.year + 1])
def test_year_of_birth_is_range_checked(store: Store, year: int) -> None:
    with pytest.raises(InputError, match="year_of_birth"):
        store.add_patient(CODE, year)


def test_duplicate_codes_are_refused_case_insensitively(store: Store) -> None:
    store.add_patient(CODE, 1980)
    with pytest.raises(InputError, match="already exists"):
        store.add_patient(CODE.lower(), 1970)


def test_unknown_patient(store: Store) -> None:
    with pytest.raises(NotFoundError, match="no patient PF-0001"):
        store.patient("PF-0001")


# --- prescriptions ---------------------------------------------------------------------


def test_prescribe_stores_the_prescription_its_protocol_and_checklist(store: Store) -> None:
    record = ready_course(store)
    assert record.revision == 1
    assert record.protocol.content_hash == stress().content_hash
    assert record.prescription.protocol.sha256 == stress().content_hash
    assert store.active_prescription(CODE) == record
    chk = store.latest_checklist(record.id)
    assert chk is not None
    assert not chk.checklist.unanswered
    assert [r.reason for r in store.revisions(record.id)] == ["prescribed"]


def test_a_prescription_that_does_not_fit_its_protocol_writes_nothing(store: Store) -> None:
    store.add_patient(CODE, 1980)
    with pytest.raises(InputError, match="ceiling"):
        store.prescribe(prescription(max_ma="80"), stress(), checklist())
    assert store.prescriptions(CODE) == []


def test_an_incomplete_checklist_is_refused_and_nothing_is_written(store: Store) -> None:
    store.add_patient(CODE, 1980)
    partial = checklist().model_copy(update={"answers": {}})
    with pytest.raises(InputError, match="unanswered"):
        store.prescribe(prescription(), stress(), partial)
    assert store.prescriptions(CODE) == []


def test_a_checklist_that_blocks_refuses_the_course(store: Store) -> None:
    store.add_patient(CODE, 1980)
    with pytest.raises(PreflightBlocked, match="Pregnant"):
        store.prescribe(prescription(), stress(), checklist(pregnancy=True))
    assert store.prescriptions(CODE) == []


def test_one_course_per_day(store: Store) -> None:
    ready_course(store)
    with pytest.raises(InputError, match="already has a course"):
        store.prescribe(prescription(start=TODAY), stress(), checklist())
    assert len(store.prescriptions(CODE)) == 1


def test_replace_ends_the_open_course_the_day_before(store: Store) -> None:
    old = ready_course(store)
    new = store.prescribe(
        prescription(start=TODAY + timedelta(days=3), protocol=get_protocol("urge"), max_ma="20"),
        get_protocol("urge"),
        checklist(),
        replace=True,
    )
    ended = store.prescription(old.id)
    assert ended.prescription.end_date == TODAY + timedelta(days=2)
    assert ended.revision == 2
    assert ended.changed_at == old.changed_at  # ending is not a treatment change
    assert store.active_prescription(CODE, TODAY) == ended
    assert store.active_prescription(CODE, TODAY + timedelta(days=3)) == new


def test_replace_cannot_end_a_course_that_starts_later(store: Store) -> None:
    ready_course(store)
    with pytest.raises(InputError, match="does not start before"):
        store.prescribe(
            prescription(start=TODAY - timedelta(days=30)), stress(), checklist(), replace=True
        )


def test_amending_the_treatment_makes_the_checklist_stale(store: Store, clock: Clock) -> None:
    record = ready_course(store)
    assert store.preflight(CODE).ok
    clock.advance(hours=1)
    amended = store.amend(
        record.id,
        prescription(max_ma="25"),
        stress(),
        changed_by="Dr. A. Visser",
        reason="patient reported discomfort",
    )
    assert amended.revision == 2
    assert amended.prescription.max_amplitude_ma == Decimal(25)
    codes = [f.code for f in store.preflight(CODE).blocking]
    assert codes == ["CHK-STALE"]
    clock.advance(minutes=5)
    store.record_checklist(record.id, checklist())
    assert store.preflight(CODE).ok
    assert [r.revision for r in store.revisions(record.id)] == [1, 2]


def test_amend_needs_a_reason(store: Store) -> None:
    record = ready_course(store)
    with pytest.raises(InputError, match="reason"):
        store.amend(record.id, prescription(), stress(), changed_by="x", reason=" ")


def test_a_checklist_answered_in_the_future_is_refused(store: Store) -> None:
    record = ready_course(store)
    with pytest.raises(InputError, match="future"):
        store.record_checklist(record.id, checklist(TODAY + timedelta(days=1)))


# --- diary -----------------------------------------------------------------------------


def entry(days_ago: int, hold: int = 0, reps: int = 0, blocks: int = 4) -> DiaryEntry:
    return DiaryEntry(
        day=TODAY - timedelta(days=days_ago), hold_s=hold, repetitions=reps, blocks_done=blocks
    )


def test_diary_round_trip(store: Store) -> None:
    store.add_patient(CODE, 1980)
    entries = [entry(3), entry(2, 2, 4, 5), entry(1)]
    assert store.add_diary(CODE, entries) == 3
    assert store.diary(CODE) == entries
    assert store.diary(CODE, start=TODAY - timedelta(days=2), end=TODAY - timedelta(days=2)) == [
        entries[1]
    ]


def test_diary_is_all_or_nothing(store: Store) -> None:
    store.add_patient(CODE, 1980)
    store.add_diary(CODE, [entry(2)])
    with pytest.raises(InputError, match="already recorded"):
        store.add_diary(CODE, [entry(3), entry(2, 3, 3)])
    assert store.diary(CODE) == [entry(2)]
    future = DiaryEntry(day=TODAY + timedelta(days=1), hold_s=0, repetitions=0, blocks_done=1)
    with pytest.raises(InputError, match="future"):
        store.add_diary(CODE, [entry(4), future])
    assert store.diary(CODE) == [entry(2)]


def test_replacing_a_day_keeps_one_entry(store: Store) -> None:
    store.add_patient(CODE, 1980)
    store.add_diary(CODE, [entry(2)])
    store.add_diary(CODE, [entry(2, 3, 3)], replace=True)
    assert store.diary(CODE) == [entry(2, 3, 3)]
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT revision FROM diary_entry")).scalar() == 2


# --- preflight and sessions ---------------------------------------------------------------


def test_no_course_no_session(store: Store) -> None:
    store.add_patient(CODE, 1980)
    assert [f.code for f in store.preflight(CODE).blocking] == ["RX-NONE"]
    with pytest.raises(PreflightBlocked):
        store.begin_session(session_start_for_code())


def session_start_for_code() -> object:
    from estim.records.models import DeviceRecord, SessionStart

    return SessionStart(
        patient_code=CODE,
        protocol_sha256="b" * 64,
        profile_name="p",
        profile_sha256=PROFILE_SHA,
        device=DeviceRecord(model="m", serial_number="s", firmware="1"),
        clinician="Nurse B",
    )


def test_a_session_refuses_to_start_without_a_checklist(store: Store) -> None:
    store.add_patient(CODE, 1980)
    record = store.prescribe(prescription(), stress())
    with pytest.raises(PreflightBlocked, match="CHK-MISSING"):
        store.begin_session(session_start(record))
    assert store.sessions(CODE) == []


def test_a_stale_checklist_cannot_start_a_course_nor_a_session(store: Store, clock: Clock) -> None:
    store.add_patient(CODE, 1980)
    with pytest.raises(PreflightBlocked, match="CHK-STALE"):
        store.prescribe(prescription(), stress(), checklist(TODAY - timedelta(days=31)))
    record = store.prescribe(prescription(), stress(), checklist(TODAY))
    clock.advance(days=31)
    with pytest.raises(PreflightBlocked, match="CHK-STALE"):
        store.begin_session(session_start(record))
    assert store.sessions(CODE) == []


def test_a_session_must_run_the_prescribed_protocol(store: Store) -> None:
    record = ready_course(store)
    with pytest.raises(PreflightBlocked, match="RX-PROTOCOL"):
        store.begin_session(session_start(record, protocol_sha256="c" * 64))


def bench_record(
    path: Path, *, profile_sha256: str = PROFILE_SHA, serial: str = "SN-001", passed: bool = True
) -> ValidationRef:
    from datetime import UTC, datetime

    from estim.validation.record import (
        CheckResult,
        DeviceUnit,
        ValidationRecord,
        save_record,
    )
    from estim.validation.record import Outcome as CheckOutcome

    when = datetime(2024, 5, 1, 9, tzinfo=UTC)
    record = ValidationRecord(
        profile_sha256=profile_sha256,
        profile_model="PF2",
        device=DeviceUnit(model="PF2", serial_number=serial, firmware="1.2.0", protocol_version=1),
        port="sim://",
        technician="T. Echnician",
        started_at=when,
        finished_at=when,
        estim_version="0.1.0",
        checks=(
            CheckResult(
                id="identity",
                title="identity",
                outcome=CheckOutcome.PASS if passed else CheckOutcome.FAIL,
            ),
        ),
        passed=passed,
    )
    path.unlink(missing_ok=True)
    save_record(record, path)
    return ValidationRef.from_file(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"profile_sha256": "d" * 64}, "is for profile dddddddddddd"),
        ({"serial": "SN-999"}, "is for serial SN-999"),
        ({"passed": False}, "did not pass"),
    ],
)
def test_a_validation_record_that_does_not_vouch_for_the_device_blocks(
    store: Store, tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    record = ready_course(store)
    ref = bench_record(tmp_path / "bench.json", **changes)  # type: ignore[arg-type]
    with pytest.raises(PreflightBlocked, match="VAL-RECORD") as info:
        store.begin_session(session_start(record, validation=ref))
    assert message in str(info.value)
    assert store.sessions(CODE) == []


def test_the_validation_record_is_stored_with_its_hash(store: Store, tmp_path: Path) -> None:
    import hashlib

    record = ready_course(store)
    path = tmp_path / "bench.json"
    done = run_session(store, record, validation=bench_record(path))
    assert done.validation_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert done.validation is not None
    assert done.validation["fields"]["technician"] == "T. Echnician"
    assert done.validation["fields"]["passed"] is True


def test_a_file_that_is_not_a_validation_record_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    path.write_text('{"passed": true}')
    with pytest.raises(InputError, match="bench validation record"):
        ValidationRef.from_file(path)


def test_a_session_is_recorded_with_everything_needed(store: Store) -> None:
    record = ready_course(store)
    done = run_session(store, record, events=4)
    assert done.outcome is Outcome.COMPLETED
    assert done.patient_code == CODE
    assert done.prescription_id == record.id
    assert done.protocol_sha256 == record.effective_protocol.content_hash
    assert done.device.serial_number == "SN-001"
    assert done.diary_day == TODAY
    assert done.confirmed_amplitude_ua == 12_000
    assert done.event_count == 6  # opened + 4 + end
    kinds = [e.kind for e in store.events(done.id)]
    assert kinds == ["records.opened"] + ["status"] * 4 + ["records.end"]
    assert store.verify(done.id).ok
    assert store.session(done.uid[:8]) == done
    assert store.session(str(done.id)) == done


def test_the_dose_counts_sessions_already_done(store: Store) -> None:
    record = ready_course(store)  # stress: 1 a day, 5 a week
    run_session(store, record)
    check = store.preflight(CODE)
    assert check.dose is not None
    assert check.dose.sessions_today == 1
    assert [f.code for f in check.blocking] == ["DOSE-DAY"]
    with pytest.raises(PreflightBlocked, match="DOSE-DAY"):
        store.begin_session(session_start(record))
    assert store.preflight(CODE, day=TODAY + timedelta(days=1)).ok


def test_a_session_that_delivered_nothing_does_not_count(store: Store) -> None:
    record = ready_course(store)
    run_session(store, record, outcome=Outcome.ABORTED, on_time_us=0, amplitude_ua=None)
    assert store.preflight(CODE).ok


def test_voluntary_contraction_blocks_until_overridden_and_the_override_is_logged(
    store: Store,
) -> None:
    record = ready_course(store)
    store.add_diary(CODE, [entry(2, hold=3, reps=5)])
    check = store.preflight(CODE)
    assert [f.code for f in check.blocking] == ["ELIG-VOLUNTARY"]
    assert "3 s x 5" in check.blocking[0].message
    with pytest.raises(PreflightBlocked, match="ELIG-VOLUNTARY"):
        store.begin_session(session_start(record))
    override = EligibilityOverride(reason="partial denervation on EMG", clinician="Dr. A. Visser")
    done = run_session(store, record, eligibility_override=override)
    assert done.override_id is not None
    [logged] = store.overrides(CODE)
    assert logged.reason == "partial denervation on EMG"
    assert logged.finding_code == "ELIG-VOLUNTARY"
    opened = store.events(done.id)[0].data
    assert any(f["code"] == "ELIG-OVERRIDDEN" for f in opened["findings"])


def test_events_after_the_end_are_refused(store: Store) -> None:
    record = ready_course(store)
    recorder = store.begin_session(session_start(record))
    recorder.finish(Outcome.STOPPED, "clinician stopped", SessionSummary())
    with pytest.raises(RecordsError, match="finished"):
        recorder.append(event(1))
    with pytest.raises(RecordsError, match="already finished"):
        recorder.finish(Outcome.COMPLETED, "again", SessionSummary())


def test_a_second_writer_on_the_same_session_is_refused(store: Store) -> None:
    record = ready_course(store)
    recorder = store.begin_session(session_start(record))
    store._append(recorder.session_id, recorder.event_count, recorder.head_hash, event(0))
    with pytest.raises(RecordsError, match="another writer"):
        recorder.append(event(1))
    recorder._lease.release()


def test_an_exception_closes_the_session_as_aborted(store: Store) -> None:
    record = ready_course(store)

    def run() -> None:
        with store.begin_session(session_start(record)) as recorder:
            recorder.append(event(0))
            raise RuntimeError("driver exploded")

    with pytest.raises(RuntimeError):
        run()
    [s] = store.sessions(CODE)
    assert s.outcome is Outcome.ABORTED
    assert "driver exploded" in (s.reason or "")
    assert store.verify(s.id).ok


def status_with_dose(n: int, **figures: object) -> SessionEvent:
    """A controller status event carrying the dose delivered so far."""
    return SessionEvent(
        kind="status", state="running", monotonic_ns=n, data={"n": n, "delivered": figures}
    )


def test_the_last_status_event_keeps_the_dose_if_the_process_dies(store: Store) -> None:
    record = ready_course(store)
    recorder = store.begin_session(session_start(record))
    recorder.append(status_with_dose(1, confirmed_ua=9000, on_time_us=4_000_000, contractions=0))
    recorder.append(status_with_dose(2, confirmed_ua=9000, on_time_us=5_000_000, contractions=1))
    recorder.append(event(3))  # no figures: the row keeps the last ones
    recorder._lease.release(remove=False)  # as the kernel does when the process dies
    [recovered] = store.recover_interrupted()
    assert recovered.outcome is Outcome.INTERRUPTED
    assert recovered.confirmed_amplitude_ua == 9000
    assert recovered.on_time_us == 5_000_000
    assert recovered.contractions == 1
    assert "last event #3 'status'" in (recovered.reason or "")
    assert store.verify(recovered.id).ok


@pytest.mark.parametrize(
    "figures",
    [
        {"confirmed_ua": -1, "on_time_us": 1, "contractions": 0},
        {"confirmed_ua": 1000, "on_time_us": "5", "contractions": 0},
        {"confirmed_ua": 1000, "on_time_us": 5, "contractions": True},
    ],
)
def test_figures_that_are_not_the_controllers_are_not_written(
    store: Store, figures: dict[str, object]
) -> None:
    record = ready_course(store)
    recorder = store.begin_session(session_start(record))
    recorder.append(status_with_dose(1, **figures))
    recorder._lease.release(remove=False)
    [recovered] = store.recover_interrupted()
    assert (recovered.confirmed_amplitude_ua, recovered.on_time_us) == (None, None)


def test_a_live_session_is_not_recovered(store: Store, tmp_path: Path, clock: Clock) -> None:
    record = ready_course(store)
    recorder = store.begin_session(session_start(record))
    with open_store(tmp_path / "records.db", clock) as other:
        assert other.recover_interrupted() == []
    assert store.session(recorder.session_id).is_open
    recorder.finish(Outcome.COMPLETED, "done", SessionSummary())


def test_another_hosts_session_is_left_alone(tmp_path: Path, clock: Clock) -> None:
    with open_store(tmp_path / "records.db", clock) as s:
        record = ready_course(s)
        recorder = s.begin_session(session_start(record))
        recorder._lease.release(remove=False)
    other = Store.open(tmp_path / "records.db", now=clock, today=clock.today, host="elsewhere")
    with other:
        assert other.recover_interrupted() == []


# --- tampering ----------------------------------------------------------------------------


def tamper(store: Store, sql: str) -> None:
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS session_event_no_update")
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS session_event_no_delete")
        conn.exec_driver_sql(sql)


def test_the_database_refuses_to_change_events(store: Store) -> None:
    done = run_session(store, ready_course(store))
    with pytest.raises(Exception, match="append-only"), store.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE session_event SET kind='x' WHERE session_id={done.id}")
    with pytest.raises(Exception, match="append-only"), store.engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM session_event WHERE session_id={done.id}")
    assert store.verify(done.id).ok


@pytest.mark.parametrize(
    ("sql", "sequence", "reason"),
    [
        (
            'UPDATE session_event SET data_json=\'{"amplitude_ua":1,"n":2}\' WHERE sequence=3',
            3,
            "altered",
        ),
        ("UPDATE session_event SET kind='trip' WHERE sequence=2", 2, "altered"),
        ("UPDATE session_event SET monotonic_ns=monotonic_ns+1 WHERE sequence=4", 4, "altered"),
        ("DELETE FROM session_event WHERE sequence=2", 2, "sequence number"),
        ("DELETE FROM session_event WHERE sequence=5", 5, "missing from the end"),
        ("UPDATE session SET outcome='stopped'", 5, "outcome"),
        ("UPDATE session SET confirmed_amplitude_ua=99000", 5, "confirmed_amplitude_ua"),
        ("UPDATE session SET clinician='Someone else'", 0, "header"),
        ("UPDATE patient SET code='PF-9999'", 0, "header"),
    ],
)
def test_verify_names_the_first_broken_link_after_raw_sql_edits(
    store: Store, sql: str, sequence: int, reason: str
) -> None:
    done = run_session(store, ready_course(store), events=4)
    assert store.verify(done.id).ok
    tamper(store, sql)
    verdict = store.verify(done.id)
    assert not verdict.ok
    assert verdict.broken is not None
    assert verdict.broken.sequence == sequence, verdict.broken
    assert reason in str(verdict.broken)


def test_export_is_self_contained_and_verifiable(store: Store) -> None:
    import hashlib
    import json

    done = run_session(store, ready_course(store))
    data = store.export_session(done.id)
    assert data["verified"] is True
    prev = data["header_sha256"]
    header_text = json.dumps(
        {"session_header": data["header"]}, sort_keys=True, separators=(",", ":")
    )
    assert hashlib.sha256(header_text.encode()).hexdigest() == prev
    for ev in data["events"]:
        body = {
            k: ev[k] for k in ("sequence", "kind", "state", "monotonic_ns", "wall_time", "data")
        }
        body["prev_hash"] = ev["prev_sha256"]
        assert body["prev_hash"] == prev
        digest = hashlib.sha256(
            json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        assert digest == ev["sha256"]
        prev = digest
    assert prev == data["head_sha256"]


def test_the_device_is_recorded_when_the_controller_connects(store: Store) -> None:
    from estim.events import SessionEvent

    record = ready_course(store)
    recorder = store.begin_session(session_start(record, device=None))
    assert store.session(recorder.session_id).device is None
    recorder.append(
        SessionEvent(
            kind="connected",
            state="connected",
            monotonic_ns=5,
            data={
                "model": "PF2",
                "serial_number": "SN-7",
                "firmware": "2.0",
                "protocol_version": 1,
            },
        )
    )
    device = store.session(recorder.session_id).device
    assert device is not None
    assert (device.model, device.serial_number, device.firmware) == ("PF2", "SN-7", "2.0")
    assert store.verify(recorder.session_id).ok
    recorder.finish(Outcome.COMPLETED, "done", SessionSummary())
    tamper(store, "UPDATE session SET device_serial='SN-8'")
    verdict = store.verify(recorder.session_id)
    assert verdict.broken is not None
    assert verdict.broken.sequence == 1
    assert "device" in verdict.broken.reason


def test_set_device_records_it_in_the_log(store: Store) -> None:
    from estim.records.models import DeviceRecord

    record = ready_course(store)
    recorder = store.begin_session(session_start(record, device=None))
    recorder.set_device(DeviceRecord(model="PF2", serial_number="SN-9", firmware="1"))
    done = recorder.finish(Outcome.STOPPED, "done", SessionSummary())
    assert done.device is not None
    assert done.device.serial_number == "SN-9"
    assert [e.kind for e in store.events(done.id)] == [
        "records.opened",
        "records.device",
        "records.end",
    ]
    assert store.verify(done.id).ok


@pytest.mark.parametrize(
    ("controller", "outcome"),
    [
        ("completed", Outcome.COMPLETED),
        ("stopped", Outcome.STOPPED),
        ("emergency_stop", Outcome.ABORTED),
        ("fault", Outcome.FAULT),
        ("not_started", Outcome.STOPPED),
    ],
)
def test_finish_from_the_controllers_summary(
    store: Store, controller: str, outcome: Outcome
) -> None:
    record = ready_course(store)
    recorder = store.begin_session(session_start(record))
    done = recorder.finish_from_summary(
        {
            "outcome": controller,
            "reason": "why",
            "confirmed_ua": None if controller == "not_started" else 9000,
            "on_time_us": 0 if controller == "not_started" else 1_000_000,
            "contractions": 0,
            "trips": [],
        }
    )
    assert done.outcome is outcome
    assert store.events(done.id)[-1].data["controller"]["outcome"] == controller
    assert store.verify(done.id).ok


@pytest.mark.parametrize(
    "reason", ["  spaced out  ", "ends in a newline\n", "\tKeyboardInterrupt: "]
)
def test_a_reason_with_surrounding_whitespace_still_verifies(store: Store, reason: str) -> None:
    """The row is read back through a model that strips strings; the end event must
    say the same, or verify calls an untouched record altered."""
    record = ready_course(store)
    recorder = store.begin_session(session_start(record))
    done = recorder.finish(Outcome.ABORTED, reason, SessionSummary())
    assert done.reason == reason.strip()
    assert store.events(done.id)[-1].data["reason"] == reason.strip()
    assert store.verify(done.id).ok, store.verify(done.id).broken


def test_a_log_from_before_reasons_were_stripped_still_verifies(store: Store) -> None:
    """Records closed by an earlier version kept the raw reason in their end event; the
    row reads back stripped. Whitespace is all they differ in: not an alteration."""
    from datetime import datetime

    from estim.records import chain
    from estim.records.sessionlog import verify_session

    record = ready_course(store)
    done = store.begin_session(session_start(record)).finish(
        Outcome.ABORTED, "ended by an error: KeyboardInterrupt:", SessionSummary()
    )
    *before, end = store.events(done.id)
    data = end.data | {"reason": "ended by an error: KeyboardInterrupt: "}  # as it was
    old_end = chain.link(
        end.sequence,
        end.prev_hash,
        kind=end.kind,
        state=end.state,
        monotonic_ns=end.monotonic_ns,
        wall_time=datetime.fromisoformat(end.wall_time),
        data=data,
    )
    legacy = done.model_copy(update={"last_event_sha256": old_end.hash})
    assert verify_session(legacy, [*before, old_end]).ok
    altered = legacy.model_copy(update={"reason": "ended by the clinician"})
    assert not verify_session(altered, [*before, old_end]).ok


def test_an_interrupt_without_a_message_closes_the_record_readably(store: Store) -> None:
    record = ready_course(store)
    with pytest.raises(KeyboardInterrupt), store.begin_session(session_start(record)) as rec:
        raise KeyboardInterrupt
    done = store.session(rec.session_id)
    assert done.reason == "ended by an error: KeyboardInterrupt"
    assert store.verify(done.id).ok


@pytest.mark.parametrize("error", [None, RecordsError("closing a session failed (test)")])
def test_a_record_closed_as_a_last_resort_keeps_what_was_delivered(
    store: Store, error: Exception | None
) -> None:
    """The fallback close (the proper one failed, or never ran) must not write zeros
    over the delivered figures: an aborted session with nothing delivered would no
    longer count toward the day's dose."""
    from estim.events import SessionEvent

    record = ready_course(store)
    delivered = {"confirmed_ua": 12_000, "on_time_us": 112_000_000, "contractions": 16}

    def session() -> None:
        with store.begin_session(session_start(record)) as recorder:
            recorder.append(
                SessionEvent(
                    kind="status", state="running", monotonic_ns=5, data={"delivered": delivered}
                )
            )
            if error is not None:
                raise error

    if error is None:
        session()
    else:
        with pytest.raises(RecordsError):
            session()
    (done,) = store.sessions()
    assert done.outcome is (Outcome.INTERRUPTED if error is None else Outcome.ABORTED)
    assert (done.confirmed_amplitude_ua, done.on_time_us, done.contractions) == (
        12_000,
        112_000_000,
        16,
    )
    assert not done.delivered_nothing
    assert store.verify(done.id).ok


def test_a_last_resort_close_that_cannot_read_the_row_records_the_dose_as_unknown(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If even the row cannot be read, the figures are unknown (None), never zeros:
    unknown still counts toward the dose."""
    record = ready_course(store)
    real_session = store.session
    with store.begin_session(session_start(record)) as recorder:
        calls = {"n": 0}

        def locked_once(ref: int | str) -> object:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RecordsError("reading a session failed: database is locked (test)")
            return real_session(ref)

        monkeypatch.setattr(store, "session", locked_once)
    monkeypatch.setattr(store, "session", real_session)
    done = store.session(recorder.session_id)
    assert done.outcome is Outcome.INTERRUPTED
    assert (done.confirmed_amplitude_ua, done.on_time_us, done.contractions) == (None, None, None)
    assert not done.delivered_nothing
    assert store.verify(done.id).ok


def test_events_held_until_the_record_opens_survive_a_failed_write(store: Store) -> None:
    """The controller's first events are held until the device answers; if writing
    them fails, none is dropped, and the controller's retry writes them all once."""
    from estim.cli.session_record import RecordWhenConnected
    from estim.events import SessionEvent

    record = ready_course(store)
    sink = RecordWhenConnected(store, session_start(record, device=None))
    real_append = store._append
    calls = {"n": 0}

    def fails_once(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:  # 1: records.opened; 2: the first held event
            raise RecordsError("database is locked (test)")
        return real_append(*args, **kwargs)  # type: ignore[arg-type]

    store._append = fails_once  # type: ignore[method-assign]
    kinds = ["session", "interlock_skipped", "state", "connected"]
    events = [SessionEvent(kind=k, state="connecting", monotonic_ns=i) for i, k in enumerate(kinds)]
    for ev in events[:-1]:
        sink.append(ev)
    with pytest.raises(RecordsError):
        sink.append(events[-1])  # the device answered: the record opens, a write fails
    sink.append(events[-1])  # the controller tries its unsaved event again
    assert sink.recorder is not None
    stored = [e.kind for e in store.events(sink.recorder.session_id)]
    assert stored == ["records.opened", *kinds]


def test_a_summary_that_does_not_fit_is_refused(store: Store) -> None:
    record = ready_course(store)
    recorder = store.begin_session(session_start(record))
    with pytest.raises(RecordsError, match="no 'on_time_us'"):
        recorder.finish_from_summary(
            {"outcome": "completed", "reason": "", "confirmed_ua": 1, "contractions": 0}
        )
    with pytest.raises(RecordsError, match="unknown session outcome"):
        recorder.finish_from_summary(
            {
                "outcome": "exploded",
                "reason": "",
                "confirmed_ua": 1,
                "on_time_us": 0,
                "contractions": 0,
            }
        )
    recorder.finish(Outcome.COMPLETED, "done", SessionSummary())


def test_session_start_recovers_a_dead_session_first_and_counts_it(store: Store) -> None:
    record = ready_course(store)  # stress: one session a day
    recorder = store.begin_session(session_start(record))
    recorder.append(event(0))
    recorder._lease.release(remove=False)  # the process died mid-session
    with pytest.raises(PreflightBlocked, match="DOSE-DAY"):
        store.begin_session(session_start(record))
    [dead] = store.sessions(CODE)
    assert dead.outcome is Outcome.INTERRUPTED


def test_the_demo_patient_is_ready_for_a_session_and_seeding_twice_changes_nothing(
    store: Store,
) -> None:
    from estim.records.seed import DEMO_CODE, seed_demo_patient

    course = seed_demo_patient(store, stress())
    assert seed_demo_patient(store, stress()) == course
    assert len(store.diary(DEMO_CODE)) == 14
    check = store.preflight(DEMO_CODE)
    assert check.ok, check.findings
    assert course.prescription.max_amplitude_ma == Decimal(20)


def test_one_database_under_two_names_shares_its_session_leases(tmp_path: Path) -> None:
    """A symlink (or a second spelling of the path) must not give a second set of
    leases: the other name would take a live session for one whose process died."""
    real = tmp_path / "real" / "s.db"
    real.parent.mkdir()
    Store.open(real).close()
    alias = tmp_path / "alias.db"
    alias.symlink_to(real)
    with Store.open(real) as by_path, Store.open(alias) as by_link:
        assert by_link.lock_dir == by_path.lock_dir == real.with_name("s.db.locks")


@pytest.mark.parametrize("ref", ["99999999999999999999999", "²", "١٢", " 1_0 "])
def test_a_session_reference_that_only_looks_like_a_number_is_a_clear_error(
    store: Store, ref: str
) -> None:
    with pytest.raises(InputError):
        store.session(ref)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE session SET outcome='hacked'",
        "UPDATE session SET diary_day='not-a-date'",
        "UPDATE session SET started_at='yesterday'",
        "UPDATE session SET validation_json='{'",
    ],
)
def test_a_session_row_edited_into_nonsense_is_a_records_error(store: Store, sql: str) -> None:
    done = run_session(store, ready_course(store))
    tamper(store, sql)
    with pytest.raises(RecordsError, match="its row cannot be read"):
        store.sessions()
    with pytest.raises(RecordsError, match="its row cannot be read"):
        store.session(done.id)


def test_verify_all_reports_an_unreadable_row_and_checks_the_rest(
    store: Store, clock: Clock
) -> None:
    record = ready_course(store)
    first = run_session(store, record)
    clock.advance(days=1)  # one session a day
    second = run_session(store, record)
    tamper(store, f"UPDATE session SET diary_day='not-a-date' WHERE id={first.id}")
    (one, verdict_one), (two, verdict_two) = store.verify_all()
    assert (one, two) == (first.id, second.id)
    assert not verdict_one.ok
    assert "cannot be read" in str(verdict_one.broken)
    assert verdict_two.ok
