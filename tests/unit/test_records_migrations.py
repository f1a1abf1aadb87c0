"""Schema versions: from an empty database, and from a version-1 database made with the
DDL that version shipped with."""

from __future__ import annotations

import sqlite3
import stat
from contextlib import closing
from pathlib import Path

import pytest
from records_helpers import TODAY, Clock, checklist, open_store, prescription, stress
from sqlalchemy import create_engine, inspect

from estim.errors import RecordsError
from estim.protocols.models import canonical_hash, canonical_json
from estim.records import migrations, schema
from estim.records.store import Store

# The version-1 schema exactly as it was created on disk (SQLite's own DDL text).
V1_DDL = """
CREATE TABLE schema_version (
    version INTEGER NOT NULL, applied_at VARCHAR(32) NOT NULL, description TEXT NOT NULL,
    PRIMARY KEY (version));
CREATE TABLE patient (
    id INTEGER NOT NULL, code VARCHAR(32) NOT NULL, year_of_birth INTEGER NOT NULL,
    notes TEXT NOT NULL, created_at VARCHAR(32) NOT NULL, PRIMARY KEY (id), UNIQUE (code));
CREATE TABLE prescription (
    id INTEGER NOT NULL, patient_id INTEGER NOT NULL, protocol_id VARCHAR(64) NOT NULL,
    protocol_version INTEGER NOT NULL, protocol_sha256 VARCHAR(64) NOT NULL,
    prescription_json TEXT NOT NULL, prescription_sha256 VARCHAR(64) NOT NULL,
    prescriber VARCHAR(120) NOT NULL, start_date DATE NOT NULL, end_date DATE,
    protocol_json TEXT NOT NULL, created_at VARCHAR(32) NOT NULL, PRIMARY KEY (id),
    FOREIGN KEY(patient_id) REFERENCES patient (id));
CREATE INDEX ix_prescription_patient_id ON prescription (patient_id);
CREATE TABLE checklist (
    id INTEGER NOT NULL, prescription_id INTEGER NOT NULL, checklist_json TEXT NOT NULL,
    checklist_sha256 VARCHAR(64) NOT NULL, answered_by VARCHAR(120) NOT NULL,
    answered_at DATE NOT NULL, recorded_at VARCHAR(32) NOT NULL, PRIMARY KEY (id),
    FOREIGN KEY(prescription_id) REFERENCES prescription (id));
CREATE INDEX ix_checklist_prescription_id ON checklist (prescription_id);
CREATE TABLE diary_entry (
    id INTEGER NOT NULL, patient_id INTEGER NOT NULL, day DATE NOT NULL,
    hold_s INTEGER NOT NULL, repetitions INTEGER NOT NULL, blocks_done INTEGER NOT NULL,
    fast_contractions INTEGER NOT NULL, leakage_episodes INTEGER NOT NULL, notes TEXT NOT NULL,
    recorded_at VARCHAR(32) NOT NULL, PRIMARY KEY (id),
    CONSTRAINT uq_diary_patient_day UNIQUE (patient_id, day),
    FOREIGN KEY(patient_id) REFERENCES patient (id));
CREATE TABLE session (
    id INTEGER NOT NULL, uid VARCHAR(36) NOT NULL, patient_id INTEGER NOT NULL,
    prescription_id INTEGER NOT NULL, prescription_sha256 VARCHAR(64) NOT NULL,
    protocol_sha256 VARCHAR(64) NOT NULL, profile_name VARCHAR(200) NOT NULL,
    profile_sha256 VARCHAR(64) NOT NULL, validation_sha256 VARCHAR(64), validation_json TEXT,
    device_model VARCHAR(120) NOT NULL, device_serial VARCHAR(120) NOT NULL,
    device_firmware VARCHAR(60) NOT NULL, clinician VARCHAR(120) NOT NULL,
    diary_day DATE NOT NULL, started_at VARCHAR(32) NOT NULL,
    header_sha256 VARCHAR(64) NOT NULL, ended_at VARCHAR(32), outcome VARCHAR(16),
    reason TEXT, confirmed_amplitude_ua INTEGER, on_time_us BIGINT, contractions INTEGER,
    event_count INTEGER NOT NULL, last_event_sha256 VARCHAR(64) NOT NULL,
    last_event_kind VARCHAR(64), last_event_at VARCHAR(32), PRIMARY KEY (id), UNIQUE (uid),
    FOREIGN KEY(patient_id) REFERENCES patient (id),
    FOREIGN KEY(prescription_id) REFERENCES prescription (id));
CREATE INDEX ix_session_patient_id ON session (patient_id);
CREATE INDEX ix_session_diary_day ON session (diary_day);
CREATE TABLE session_event (
    id INTEGER NOT NULL, session_id INTEGER NOT NULL, sequence INTEGER NOT NULL,
    kind VARCHAR(64) NOT NULL, state VARCHAR(64) NOT NULL, monotonic_ns BIGINT NOT NULL,
    wall_time VARCHAR(32) NOT NULL, data_json TEXT NOT NULL, prev_sha256 VARCHAR(64) NOT NULL,
    sha256 VARCHAR(64) NOT NULL, PRIMARY KEY (id),
    CONSTRAINT uq_session_event_sequence UNIQUE (session_id, sequence),
    FOREIGN KEY(session_id) REFERENCES session (id));
INSERT INTO schema_version VALUES (1, '2024-01-02T10:00:00.000000Z', 'initial schema');
"""


def make_v1(path: Path) -> None:
    """A version-1 database with one patient, a course and its checklist, and a diary day."""
    rx = prescription(start=TODAY)
    with closing(sqlite3.connect(path)) as db:
        db.executescript(V1_DDL)
        db.execute(
            "INSERT INTO patient VALUES (1, 'PF-0042', 1980, 'old', '2024-01-02T10:00:00.000000Z')"
        )
        db.execute(
            "INSERT INTO prescription VALUES (1, 1, 'stress', 1, ?, ?, ?, 'Dr. A. Visser', ?, "
            "NULL, ?, '2024-01-02T10:00:00.000000Z')",
            (
                stress().content_hash,
                canonical_json(rx),
                canonical_hash(rx),
                TODAY.isoformat(),
                canonical_json(stress()),
            ),
        )
        c = checklist()
        db.execute(
            "INSERT INTO checklist VALUES (1, 1, ?, ?, 'Dr. A. Visser', ?, "
            "'2024-01-02T10:00:00.000000Z')",
            (canonical_json(c), canonical_hash(c), TODAY.isoformat()),
        )
        db.execute(
            "INSERT INTO diary_entry VALUES (1, 1, '2024-05-19', 2, 4, 5, 0, 1, 'note', "
            "'2024-01-02T10:00:00.000000Z')"
        )
        db.commit()


def describe(path: Path) -> dict[str, object]:
    """Tables, columns (name, nullability), unique constraints, foreign keys, indexes."""
    engine = create_engine(f"sqlite:///{path}")
    try:
        insp = inspect(engine)
        out: dict[str, object] = {}
        for table in sorted(insp.get_table_names()):
            out[table] = {
                "columns": sorted(
                    (c["name"], c["nullable"], str(c["type"]).split("(")[0])
                    for c in insp.get_columns(table)
                ),
                "unique": sorted(
                    tuple(u["column_names"]) for u in insp.get_unique_constraints(table)
                ),
                "fks": sorted(
                    (tuple(f["constrained_columns"]), f["referred_table"])
                    for f in insp.get_foreign_keys(table)
                ),
                "indexes": sorted(tuple(i["column_names"]) for i in insp.get_indexes(table)),
            }
        return out
    finally:
        engine.dispose()


def test_an_empty_database_migrates_to_exactly_the_current_schema(tmp_path: Path) -> None:
    with open_store(tmp_path / "new.db") as s:
        assert s.schema_version() == schema.SCHEMA_VERSION == 2
    reference = tmp_path / "reference.db"
    engine = create_engine(f"sqlite:///{reference}")
    schema.metadata.create_all(engine)
    engine.dispose()
    assert describe(tmp_path / "new.db") == describe(reference)


def test_a_version_1_database_is_migrated_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_v1(path)
    clock = Clock()
    with open_store(path, clock) as s:
        assert s.schema_version() == 2
        assert any("migrated from schema 1" in w for w in s.warnings)
        assert s.patient("PF-0042").notes == "old"
        [course] = s.prescriptions("PF-0042")
        assert course.revision == 1
        assert course.changed_at == course.created_at
        [rev] = s.revisions(course.id)
        assert rev.reason == "prescribed (migrated from schema version 1)"
        [entry] = s.diary("PF-0042")
        assert (entry.hold_s, entry.repetitions, entry.programme.value) == (2, 4, "training")
        assert s.latest_checklist(course.id) is not None
    describe_old = describe(path)
    reference = tmp_path / "reference.db"
    engine = create_engine(f"sqlite:///{reference}")
    schema.metadata.create_all(engine)
    engine.dispose()
    assert describe_old == describe(reference)
    backup = tmp_path / "old.db.schema-v1.bak"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    with closing(sqlite3.connect(backup)) as db:
        assert db.execute("SELECT max(version) FROM schema_version").fetchone() == (1,)


def test_the_migrated_database_has_append_only_events(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_v1(path)
    open_store(path).close()
    with closing(sqlite3.connect(path)) as db:
        triggers = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    assert triggers == {"session_event_no_update", "session_event_no_delete"}


def test_a_failed_migration_leaves_the_database_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    make_v1(path)
    real = migrations.MIGRATIONS[1]

    def half_then_fail(conn: object) -> None:
        real.apply(conn)  # type: ignore[arg-type]
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(
        migrations,
        "MIGRATIONS",
        (migrations.MIGRATIONS[0], migrations.Migration(2, real.description, half_then_fail)),
    )
    with pytest.raises(RuntimeError, match="disk on fire"):
        open_store(path)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT max(version) FROM schema_version").fetchone() == (1,)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        columns = {r[1] for r in db.execute("PRAGMA table_info(prescription)")}
    assert "prescription_revision" not in tables
    assert "revision" not in columns


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    open_store(path).close()
    with closing(sqlite3.connect(path)) as db:
        db.execute("INSERT INTO schema_version VALUES (3, '2030-01-01T00:00:00.000000Z', 'x')")
        db.commit()
    with pytest.raises(RecordsError, match="newer than this estim understands"):
        Store.open(path)


def test_a_database_that_is_not_estims_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE photos (id INTEGER)")
        db.commit()
    with pytest.raises(RecordsError, match="not an estim records database"):
        Store.open(path)
