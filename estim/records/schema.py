"""The records schema, current version, as SQLAlchemy Core tables.

Portable types only (no SQLite- or PostgreSQL-specific column types). Wall-clock
instants are stored as UTC ISO-8601 text (``2024-05-01T09:30:00.000000Z``): it sorts,
it round-trips exactly on every database, and it is what the event chain hashes.
Calendar days (diary days, prescription dates) are ``Date``.

The tables are built by :mod:`estim.records.migrations`, one frozen step per schema
version; a test checks that migrating an empty database gives exactly these tables.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

SCHEMA_VERSION = 2
"""The schema this code reads and writes; older databases are migrated on open."""

TIMESTAMP = String(32)
HASH = String(64)

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", TIMESTAMP, nullable=False),
    Column("description", Text, nullable=False),
)

patient = Table(
    "patient",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("code", String(32), nullable=False, unique=True),
    Column("year_of_birth", Integer, nullable=False),
    Column("notes", Text, nullable=False),
    Column("created_at", TIMESTAMP, nullable=False),
)

prescription = Table(
    "prescription",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("patient_id", Integer, ForeignKey("patient.id"), nullable=False, index=True),
    Column("protocol_id", String(64), nullable=False),
    Column("protocol_version", Integer, nullable=False),
    Column("protocol_sha256", HASH, nullable=False),
    Column("prescription_json", Text, nullable=False),
    Column("prescription_sha256", HASH, nullable=False),
    Column("prescriber", String(120), nullable=False),
    Column("start_date", Date, nullable=False),
    Column("end_date", Date, nullable=True),
    Column("protocol_json", Text, nullable=False),
    Column("created_at", TIMESTAMP, nullable=False),
    # v2: prescriptions can be amended; the history is in prescription_revision.
    Column("revision", Integer, nullable=False, server_default="1"),
    Column("changed_at", TIMESTAMP, nullable=True),
)

prescription_revision = Table(
    "prescription_revision",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("prescription_id", Integer, ForeignKey("prescription.id"), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("prescription_json", Text, nullable=False),
    Column("prescription_sha256", HASH, nullable=False),
    Column("protocol_json", Text, nullable=False),
    Column("changed_at", TIMESTAMP, nullable=False),
    Column("changed_by", String(120), nullable=False),
    Column("reason", Text, nullable=False),
    UniqueConstraint("prescription_id", "revision", name="uq_prescription_revision"),
)

checklist = Table(
    "checklist",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("prescription_id", Integer, ForeignKey("prescription.id"), nullable=False, index=True),
    Column("checklist_json", Text, nullable=False),
    Column("checklist_sha256", HASH, nullable=False),
    Column("answered_by", String(120), nullable=False),
    Column("answered_at", Date, nullable=False),
    Column("recorded_at", TIMESTAMP, nullable=False),
)

diary_entry = Table(
    "diary_entry",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("patient_id", Integer, ForeignKey("patient.id"), nullable=False),
    Column("day", Date, nullable=False),
    Column("hold_s", Integer, nullable=False),
    Column("repetitions", Integer, nullable=False),
    Column("blocks_done", Integer, nullable=False),
    Column("fast_contractions", Integer, nullable=False),
    Column("leakage_episodes", Integer, nullable=False),
    Column("notes", Text, nullable=False),
    Column("recorded_at", TIMESTAMP, nullable=False),
    # v2: maintenance phase, and a revision count for entries replaced on purpose.
    Column("programme", String(16), nullable=False, server_default="training"),
    Column("revision", Integer, nullable=False, server_default="1"),
    UniqueConstraint("patient_id", "day", name="uq_diary_patient_day"),
)

decision_override = Table(
    "decision_override",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("patient_id", Integer, ForeignKey("patient.id"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("finding_code", String(64), nullable=False),
    Column("finding_message", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("clinician", String(120), nullable=False),
    Column("recorded_at", TIMESTAMP, nullable=False),
)

session = Table(
    "session",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("uid", String(36), nullable=False, unique=True),
    Column("patient_id", Integer, ForeignKey("patient.id"), nullable=False, index=True),
    Column("prescription_id", Integer, ForeignKey("prescription.id"), nullable=False),
    Column("prescription_sha256", HASH, nullable=False),
    Column("protocol_sha256", HASH, nullable=False),
    Column("profile_name", String(200), nullable=False),
    Column("profile_sha256", HASH, nullable=False),
    Column("validation_sha256", HASH, nullable=True),
    Column("validation_json", Text, nullable=True),
    Column("device_model", String(120), nullable=False),
    Column("device_serial", String(120), nullable=False),
    Column("device_firmware", String(60), nullable=False),
    Column("clinician", String(120), nullable=False),
    Column("diary_day", Date, nullable=False, index=True),
    Column("started_at", TIMESTAMP, nullable=False),
    Column("header_sha256", HASH, nullable=False),
    Column("ended_at", TIMESTAMP, nullable=True),
    Column("outcome", String(16), nullable=True),
    Column("reason", Text, nullable=True),
    Column("confirmed_amplitude_ua", Integer, nullable=True),
    Column("on_time_us", BigInteger, nullable=True),
    Column("contractions", Integer, nullable=True),
    Column("event_count", Integer, nullable=False),
    Column("last_event_sha256", HASH, nullable=False),
    Column("last_event_kind", String(64), nullable=True),
    Column("last_event_at", TIMESTAMP, nullable=True),
    # v2: which revision of the prescription ran, the eligibility override that let
    # it run (if any), and which machine owns it while it is open.
    Column("prescription_revision", Integer, nullable=False, server_default="1"),
    Column("override_id", Integer, ForeignKey("decision_override.id"), nullable=True),
    Column("owner_host", String(255), nullable=True),
)

session_event = Table(
    "session_event",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("session_id", Integer, ForeignKey("session.id"), nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("state", String(64), nullable=False),
    Column("monotonic_ns", BigInteger, nullable=False),
    Column("wall_time", TIMESTAMP, nullable=False),
    Column("data_json", Text, nullable=False),
    Column("prev_sha256", HASH, nullable=False),
    Column("sha256", HASH, nullable=False),
    UniqueConstraint("session_id", "sequence", name="uq_session_event_sequence"),
)
