"""Schema versions and the steps between them.

Each step is frozen history: it declares the tables *as they were* at its version, so
a later change to :mod:`estim.records.schema` cannot change what an old step does. A
database is migrated in one write transaction (SQLite and PostgreSQL both roll DDL
back), so a failed migration leaves it exactly as it was. A database written by a
newer estim is refused rather than guessed at.

Versions:

1. patients, prescriptions (with their protocol), checklists, diary, sessions, events.
2. prescription revisions (amendments keep their history), the diary's programme
   phase and entry revisions, logged decision overrides, the session's prescription
   revision / override / owning host, and database triggers that make the event log
   append-only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Date,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    column,
    insert,
    inspect,
    select,
    table,
    text,
    update,
)
from sqlalchemy.schema import CreateColumn, CreateTable

from estim.errors import RecordsError
from estim.records import schema
from estim.records.chain import wall_time_text
from estim.records.engine import append_only_ddl


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


# --- version 1 -------------------------------------------------------------------------

_TS = String(32)
_HASH = String(64)


def _v1_tables() -> MetaData:
    m = MetaData()
    Table(
        "schema_version",
        m,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("applied_at", _TS, nullable=False),
        Column("description", Text, nullable=False),
    )
    Table(
        "patient",
        m,
        Column("id", Integer, primary_key=True),
        Column("code", String(32), nullable=False, unique=True),
        Column("year_of_birth", Integer, nullable=False),
        Column("notes", Text, nullable=False),
        Column("created_at", _TS, nullable=False),
    )
    Table(
        "prescription",
        m,
        Column("id", Integer, primary_key=True),
        Column("patient_id", Integer, ForeignKey("patient.id"), nullable=False, index=True),
        Column("protocol_id", String(64), nullable=False),
        Column("protocol_version", Integer, nullable=False),
        Column("protocol_sha256", _HASH, nullable=False),
        Column("prescription_json", Text, nullable=False),
        Column("prescription_sha256", _HASH, nullable=False),
        Column("prescriber", String(120), nullable=False),
        Column("start_date", Date, nullable=False),
        Column("end_date", Date, nullable=True),
        Column("protocol_json", Text, nullable=False),
        Column("created_at", _TS, nullable=False),
    )
    Table(
        "checklist",
        m,
        Column("id", Integer, primary_key=True),
        Column(
            "prescription_id", Integer, ForeignKey("prescription.id"), nullable=False, index=True
        ),
        Column("checklist_json", Text, nullable=False),
        Column("checklist_sha256", _HASH, nullable=False),
        Column("answered_by", String(120), nullable=False),
        Column("answered_at", Date, nullable=False),
        Column("recorded_at", _TS, nullable=False),
    )
    Table(
        "diary_entry",
        m,
        Column("id", Integer, primary_key=True),
        Column("patient_id", Integer, ForeignKey("patient.id"), nullable=False),
        Column("day", Date, nullable=False),
        Column("hold_s", Integer, nullable=False),
        Column("repetitions", Integer, nullable=False),
        Column("blocks_done", Integer, nullable=False),
        Column("fast_contractions", Integer, nullable=False),
        Column("leakage_episodes", Integer, nullable=False),
        Column("notes", Text, nullable=False),
        Column("recorded_at", _TS, nullable=False),
        UniqueConstraint("patient_id", "day", name="uq_diary_patient_day"),
    )
    Table(
        "session",
        m,
        Column("id", Integer, primary_key=True),
        Column("uid", String(36), nullable=False, unique=True),
        Column("patient_id", Integer, ForeignKey("patient.id"), nullable=False, index=True),
        Column("prescription_id", Integer, ForeignKey("prescription.id"), nullable=False),
        Column("prescription_sha256", _HASH, nullable=False),
        Column("protocol_sha256", _HASH, nullable=False),
        Column("profile_name", String(200), nullable=False),
        Column("profile_sha256", _HASH, nullable=False),
        Column("validation_sha256", _HASH, nullable=True),
        Column("validation_json", Text, nullable=True),
        Column("device_model", String(120), nullable=False),
        Column("device_serial", String(120), nullable=False),
        Column("device_firmware", String(60), nullable=False),
        Column("clinician", String(120), nullable=False),
        Column("diary_day", Date, nullable=False, index=True),
        Column("started_at", _TS, nullable=False),
        Column("header_sha256", _HASH, nullable=False),
        Column("ended_at", _TS, nullable=True),
        Column("outcome", String(16), nullable=True),
        Column("reason", Text, nullable=True),
        Column("confirmed_amplitude_ua", Integer, nullable=True),
        Column("on_time_us", BigInteger, nullable=True),
        Column("contractions", Integer, nullable=True),
        Column("event_count", Integer, nullable=False),
        Column("last_event_sha256", _HASH, nullable=False),
        Column("last_event_kind", String(64), nullable=True),
        Column("last_event_at", _TS, nullable=True),
    )
    Table(
        "session_event",
        m,
        Column("id", Integer, primary_key=True),
        Column("session_id", Integer, ForeignKey("session.id"), nullable=False),
        Column("sequence", Integer, nullable=False),
        Column("kind", String(64), nullable=False),
        Column("state", String(64), nullable=False),
        Column("monotonic_ns", BigInteger, nullable=False),
        Column("wall_time", _TS, nullable=False),
        Column("data_json", Text, nullable=False),
        Column("prev_sha256", _HASH, nullable=False),
        Column("sha256", _HASH, nullable=False),
        UniqueConstraint("session_id", "sequence", name="uq_session_event_sequence"),
    )
    return m


def _to_v1(conn: Connection) -> None:
    _v1_tables().create_all(conn)


# --- version 2 -------------------------------------------------------------------------


def _v2_new_tables() -> tuple[Table, Table]:
    m = MetaData()
    # Stand-ins for tables that already exist, so the foreign keys can be written out.
    Table("patient", m, Column("id", Integer, primary_key=True))
    Table("prescription", m, Column("id", Integer, primary_key=True))
    revisions = Table(
        "prescription_revision",
        m,
        Column("id", Integer, primary_key=True),
        Column("prescription_id", Integer, ForeignKey("prescription.id"), nullable=False),
        Column("revision", Integer, nullable=False),
        Column("prescription_json", Text, nullable=False),
        Column("prescription_sha256", _HASH, nullable=False),
        Column("protocol_json", Text, nullable=False),
        Column("changed_at", _TS, nullable=False),
        Column("changed_by", String(120), nullable=False),
        Column("reason", Text, nullable=False),
        UniqueConstraint("prescription_id", "revision", name="uq_prescription_revision"),
    )
    overrides = Table(
        "decision_override",
        m,
        Column("id", Integer, primary_key=True),
        Column("patient_id", Integer, ForeignKey("patient.id"), nullable=False),
        Column("kind", String(32), nullable=False),
        Column("finding_code", String(64), nullable=False),
        Column("finding_message", Text, nullable=False),
        Column("reason", Text, nullable=False),
        Column("clinician", String(120), nullable=False),
        Column("recorded_at", _TS, nullable=False),
    )
    return revisions, overrides


def _add_column(conn: Connection, table: str, column: Column[object], references: str = "") -> None:
    """``ALTER TABLE ... ADD COLUMN``: standard SQL, rendered by the connection's dialect."""
    ddl = str(CreateColumn(column).compile(dialect=conn.dialect))
    if references:
        ddl += f" REFERENCES {references}"
    conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {ddl}"))


def _to_v2(conn: Connection) -> None:
    revisions, overrides = _v2_new_tables()
    conn.execute(CreateTable(revisions))
    conn.execute(CreateTable(overrides))

    _add_column(
        conn, "prescription", Column("revision", Integer, nullable=False, server_default="1")
    )
    _add_column(conn, "prescription", Column("changed_at", _TS, nullable=True))
    _add_column(
        conn,
        "diary_entry",
        Column("programme", String(16), nullable=False, server_default="training"),
    )
    _add_column(
        conn, "diary_entry", Column("revision", Integer, nullable=False, server_default="1")
    )
    _add_column(
        conn,
        "session",
        Column("prescription_revision", Integer, nullable=False, server_default="1"),
    )
    _add_column(
        conn, "session", Column("override_id", Integer, nullable=True), "decision_override (id)"
    )
    _add_column(conn, "session", Column("owner_host", String(255), nullable=True))

    # Backfill: every existing prescription becomes revision 1 of itself. The columns
    # are named as they were at version 1 (lightweight table, not the current schema).
    p = table(
        "prescription",
        column("id"),
        column("prescription_json"),
        column("prescription_sha256"),
        column("protocol_json"),
        column("created_at"),
        column("prescriber"),
        column("changed_at"),
    )
    rows = conn.execute(
        select(
            p.c.id,
            p.c.prescription_json,
            p.c.prescription_sha256,
            p.c.protocol_json,
            p.c.created_at,
            p.c.prescriber,
        )
    ).all()
    for row in rows:
        conn.execute(
            insert(revisions).values(
                prescription_id=row.id,
                revision=1,
                prescription_json=row.prescription_json,
                prescription_sha256=row.prescription_sha256,
                protocol_json=row.protocol_json,
                changed_at=row.created_at,
                changed_by=row.prescriber,
                reason="prescribed (migrated from schema version 1)",
            )
        )
    conn.execute(update(p).values(changed_at=p.c.created_at))

    for statement in append_only_ddl(conn.dialect.name, "session_event"):
        conn.execute(text(statement))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _to_v1),
    Migration(2, "prescription revisions, overrides, diary programme, append-only events", _to_v2),
)

assert MIGRATIONS[-1].version == schema.SCHEMA_VERSION, "add a migration for the new version"


def current_version(conn: Connection) -> int:
    """The database's schema version: 0 when empty; refuses a database estim did not make."""
    tables = set(inspect(conn).get_table_names())
    if "schema_version" not in tables:
        if tables:
            raise RecordsError(
                "this database holds tables but no estim schema version "
                f"({', '.join(sorted(tables)[:5])}...); it is not an estim records "
                "database: give another --db"
            )
        return 0
    version = conn.execute(
        select(schema.schema_version.c.version)
        .order_by(schema.schema_version.c.version.desc())
        .limit(1)
    ).scalar()
    return int(version or 0)


def migrate(conn: Connection, now: datetime, target: int = schema.SCHEMA_VERSION) -> list[int]:
    """Bring the database to ``target`` inside the caller's transaction; return steps run."""
    found = current_version(conn)
    if found > schema.SCHEMA_VERSION:
        raise RecordsError(
            f"the records database has schema version {found}, newer than this estim "
            f"understands ({schema.SCHEMA_VERSION}); upgrade estim before using it"
        )
    applied = []
    for step in MIGRATIONS:
        if found < step.version <= target:
            step.apply(conn)
            conn.execute(
                insert(schema.schema_version).values(
                    version=step.version,
                    applied_at=wall_time_text(now),
                    description=step.description,
                )
            )
            applied.append(step.version)
    return applied
