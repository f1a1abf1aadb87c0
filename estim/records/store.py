"""The records store: one narrow interface over the database.

Everything estim keeps about patients goes through :class:`Store`; nothing else
touches the tables. Every public method is one transaction: it either happens
completely or not at all, and invalid input raises :class:`~estim.errors.InputError`
*before* anything is written. Queries are SQLAlchemy Core, portable across SQLite (the
default) and PostgreSQL; what is database-specific lives in :mod:`estim.records.engine`.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import platformdirs
from sqlalchemy import Connection, Engine, Row, and_, func, insert, select, update

from estim.errors import InputError, NotFoundError, PreflightBlocked, Problem, RecordsError
from estim.events import SessionEvent
from estim.protocols.models import Protocol, canonical_hash, canonical_json
from estim.protocols.prescription import Prescription, ResolvedPrescription, resolve
from estim.records import chain, engine, migrations
from estim.records import schema as t
from estim.records.checklist import (
    DEFAULT_MAX_AGE_DAYS,
    ContraindicationChecklist,
    checklist_findings,
)
from estim.records.decisions import (
    ELIGIBILITY_LOOKBACK_DAYS,
    DoseCount,
    dose_count,
    eligibility_findings,
)
from estim.records.diary import DiaryEntry, Programme, check_day
from estim.records.findings import Finding, Severity, blocking
from estim.records.lease import SessionLease
from estim.records.models import (
    EARLIEST_YEAR_OF_BIRTH,
    ChecklistRecord,
    DeviceRecord,
    EligibilityOverride,
    Outcome,
    OverrideRecord,
    Patient,
    PrescriptionRecord,
    PrescriptionRevision,
    SessionRecord,
    SessionStart,
    SessionSummary,
    normalize_code,
)
from estim.records.recorder import SessionRecorder
from estim.records.sessionlog import (
    END_KIND,
    OPENED_KIND,
    delivered_columns,
    device_columns,
    device_of,
    header_fields,
    header_of,
    validation_findings,
    verify_session,
)

PATIENT_NOTES_MAX_CHARS = 2000


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RecordsPreflight:
    """What the records say about starting a session for a patient on a day."""

    day: date
    prescription: PrescriptionRecord | None
    resolved: ResolvedPrescription | None
    findings: list[Finding] = field(default_factory=list)
    dose: DoseCount | None = None

    @property
    def blocking(self) -> list[Finding]:
        return blocking(self.findings)

    @property
    def ok(self) -> bool:
        return not self.blocking


class Store:
    """Patients, prescriptions, checklists, diary, sessions and their event logs.

    Open with :meth:`Store.open`; use as a context manager or call :meth:`close`.
    ``now`` (aware UTC) and ``today`` (the clinic's local date) are injectable.
    """

    def __init__(
        self,
        db_engine: Engine,
        *,
        location: str,
        lock_dir: Path,
        now: Callable[[], datetime] = utc_now,
        today: Callable[[], date] = date.today,
        host: str | None = None,
        warnings: Sequence[str] = (),
    ) -> None:
        self._engine = db_engine
        self._writer = engine.writer(db_engine)
        self.location = location
        self.lock_dir = lock_dir
        self._now = now
        self._today = today
        self.host = host or socket.gethostname()
        self.warnings = list(warnings)

    # --- opening -----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        location: str | Path | None = None,
        *,
        create: bool = True,
        now: Callable[[], datetime] = utc_now,
        today: Callable[[], date] = date.today,
        host: str | None = None,
    ) -> Store:
        """Open (and if needed create and migrate) the store at a path or URL.

        ``location`` None means ``$ESTIM_DB`` or the user's data directory. With
        ``create=False`` a missing SQLite file is an error instead of a new database.
        """
        where = engine.resolve_location(None if location is None else str(location))
        path = engine.sqlite_path(where)
        if path is not None and not create and not path.exists():
            raise NotFoundError(
                f"no records database at {path}; add a patient first (estim patient add) "
                "or give --db / ESTIM_DB"
            )
        db_engine, warnings = engine.open_engine(where)
        if path is not None:
            # Beside the real file, however it was named (a symlink, a relative path):
            # two names for one database must share one set of session leases, or one
            # would "recover" the other's live session as interrupted.
            real = path.resolve()
            lock_dir = real.with_name(real.name + ".locks")
        else:
            digest = hashlib.sha256(where.encode()).hexdigest()[:16]
            lock_dir = platformdirs.user_state_path("estim", appauthor=False) / "locks" / digest
        store = cls(
            db_engine,
            location=str(path) if path is not None else where,
            lock_dir=lock_dir,
            now=now,
            today=today,
            host=host,
            warnings=warnings,
        )
        try:
            store._migrate(path)
        except BaseException:
            store.close()
            raise
        return store

    def _migrate(self, path: Path | None) -> None:
        with engine.translate_errors("reading the schema version"), self._engine.connect() as c:
            found = migrations.current_version(c)
        if found == t.SCHEMA_VERSION:
            return
        if path is not None and 0 < found < t.SCHEMA_VERSION:
            backup = engine.backup_sqlite(path, f"schema-v{found}")
            self.warnings.append(
                f"records migrated from schema {found} to {t.SCHEMA_VERSION}; "
                f"the previous file is kept at {backup}"
            )
        with self._write("migrating the schema") as conn:
            migrations.migrate(conn, self._now())

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def engine(self) -> Engine:
        return self._engine

    def schema_version(self) -> int:
        with self._read("reading the schema version") as conn:
            return migrations.current_version(conn)

    def today(self) -> date:
        return self._today()

    # --- transactions ------------------------------------------------------------------

    @contextmanager
    def _write(self, what: str) -> Iterator[Connection]:
        with engine.translate_errors(what), self._writer.begin() as conn:
            yield conn

    @contextmanager
    def _read(self, what: str) -> Iterator[Connection]:
        with engine.translate_errors(what), self._engine.begin() as conn:
            yield conn

    def _stamp(self) -> str:
        return chain.wall_time_text(self._now())

    # --- patients ----------------------------------------------------------------------

    def add_patient(self, code: str, year_of_birth: int, notes: str = "") -> Patient:
        code = normalize_code(code)
        this_year = self._today().year
        problems = []
        if not EARLIEST_YEAR_OF_BIRTH <= year_of_birth <= this_year:
            problems.append(
                Problem(
                    "year_of_birth",
                    "out of range",
                    value=year_of_birth,
                    limit=f"{EARLIEST_YEAR_OF_BIRTH}-{this_year}",
                    fix="give the four-digit year of birth",
                )
            )
        notes = notes.strip()
        if len(notes) > PATIENT_NOTES_MAX_CHARS:
            problems.append(
                Problem(
                    "notes",
                    "too long",
                    value=f"{len(notes)} characters",
                    limit=f"<= {PATIENT_NOTES_MAX_CHARS}",
                )
            )
        if problems:
            raise InputError(f"patient {code} not added", problems)
        created = self._stamp()
        with self._write("adding a patient") as conn:
            if self._patient_id(conn, code, required=False) is not None:
                raise InputError(
                    f"patient {code} already exists",
                    [Problem("code", "already in use", value=code, fix="choose another code")],
                )
            conn.execute(
                insert(t.patient).values(
                    code=code, year_of_birth=year_of_birth, notes=notes, created_at=created
                )
            )
        return Patient(
            code=code,
            year_of_birth=year_of_birth,
            notes=notes,
            created_at=chain.parse_wall_time(created),
        )

    def patient(self, code: str) -> Patient:
        code = normalize_code(code)
        with self._read("reading a patient") as conn:
            row = conn.execute(select(t.patient).where(t.patient.c.code == code)).first()
        if row is None:
            raise NotFoundError(f"no patient {code}; add one with: estim patient add {code}")
        return _patient(row)

    def patients(self) -> list[Patient]:
        with self._read("listing patients") as conn:
            rows = conn.execute(select(t.patient).order_by(t.patient.c.code)).all()
        return [_patient(r) for r in rows]

    def _patient_id(self, conn: Connection, code: str, *, required: bool = True) -> int | None:
        pid = conn.execute(select(t.patient.c.id).where(t.patient.c.code == code)).scalar()
        if pid is None and required:
            raise NotFoundError(f"no patient {code}; add one with: estim patient add {code}")
        return pid

    # --- prescriptions -----------------------------------------------------------------

    def prescribe(
        self,
        prescription: Prescription,
        protocol: Protocol,
        checklist: ContraindicationChecklist | None = None,
        *,
        replace: bool = False,
    ) -> PrescriptionRecord:
        """Record a new course. ``replace`` ends an open course that overlaps it.

        Refuses (nothing written) when the prescription does not fit the protocol, a
        course already covers its dates, or the checklist is incomplete or blocks.
        """
        code = normalize_code(prescription.patient_code, "patient_code")
        if code != prescription.patient_code:
            prescription = prescription.model_copy(update={"patient_code": code})
        resolve(prescription, protocol)  # InputError listing every misfit
        if checklist is not None:
            self._check_new_checklist(checklist)
            found = blocking(checklist_findings(checklist, today=self._today()))
            if found:
                raise PreflightBlocked(
                    f"not prescribed: the checklist blocks a course for {code}:\n"
                    + "\n".join(f"  - {f}" for f in found),
                    list(found),
                )
        stamp = self._stamp()
        with self._write("recording a prescription") as conn:
            pid = self._patient_id(conn, code)
            assert pid is not None
            self._make_room(conn, pid, prescription, replace=replace, stamp=stamp)
            body = canonical_json(prescription)
            digest = canonical_hash(prescription)
            protocol_json = canonical_json(protocol)
            new_id = conn.execute(
                insert(t.prescription)
                .values(
                    patient_id=pid,
                    protocol_id=protocol.id,
                    protocol_version=protocol.version,
                    protocol_sha256=protocol.content_hash,
                    prescription_json=body,
                    prescription_sha256=digest,
                    prescriber=prescription.prescriber,
                    start_date=prescription.start_date,
                    end_date=prescription.end_date,
                    protocol_json=protocol_json,
                    created_at=stamp,
                    revision=1,
                    changed_at=stamp,
                )
                .returning(t.prescription.c.id)
            ).scalar_one()
            conn.execute(
                insert(t.prescription_revision).values(
                    prescription_id=new_id,
                    revision=1,
                    prescription_json=body,
                    prescription_sha256=digest,
                    protocol_json=protocol_json,
                    changed_at=stamp,
                    changed_by=prescription.prescriber,
                    reason="prescribed",
                )
            )
            if checklist is not None:
                self._insert_checklist(conn, new_id, checklist, stamp)
            return self._prescription(conn, new_id)

    def amend(
        self,
        prescription_id: int,
        prescription: Prescription,
        protocol: Protocol,
        *,
        changed_by: str,
        reason: str,
        checklist: ContraindicationChecklist | None = None,
    ) -> PrescriptionRecord:
        """A new revision of a course (ceiling, step, adjustments, protocol, dates).

        A change to the treatment makes the course's checklist stale: give a fresh one
        here or answer it again before the next session.
        """
        reason = reason.strip()
        if len(reason) < 5:
            raise InputError(
                "an amendment needs a reason",
                [Problem("reason", "too short", value=reason, fix="say why the course changes")],
            )
        current = self.prescription(prescription_id)
        code = current.patient_code
        if normalize_code(prescription.patient_code) != code:
            raise InputError(
                f"prescription #{prescription_id} belongs to {code}",
                [Problem("patient_code", "cannot move a course to another patient")],
            )
        prescription = prescription.model_copy(update={"patient_code": code})
        resolve(prescription, protocol)
        if checklist is not None:
            self._check_new_checklist(checklist)
        stamp = self._stamp()
        treatment_changed = _treatment(current.prescription) != _treatment(prescription) or (
            current.protocol.content_hash != protocol.content_hash
        )
        with self._write("amending a prescription") as conn:
            pid = self._patient_id(conn, code)
            assert pid is not None
            self._refuse_overlap(conn, pid, prescription, exclude=prescription_id)
            self._add_revision(
                conn,
                prescription_id,
                prescription,
                protocol,
                changed_by=changed_by,
                reason=reason,
                stamp=stamp,
                treatment_changed=treatment_changed,
            )
            if checklist is not None:
                self._insert_checklist(conn, prescription_id, checklist, stamp)
            return self._prescription(conn, prescription_id)

    def end_course(
        self, prescription_id: int, end_date: date, *, changed_by: str, reason: str
    ) -> PrescriptionRecord:
        """Set a course's last day (a revision; the checklist stays valid)."""
        current = self.prescription(prescription_id)
        p = current.prescription
        if end_date < p.start_date:
            raise InputError(
                f"course #{prescription_id} starts on {p.start_date}",
                [Problem("end_date", "before the start", value=end_date.isoformat())],
            )
        ended = p.model_copy(update={"end_date": end_date})
        return self.amend(
            prescription_id, ended, current.protocol, changed_by=changed_by, reason=reason
        )

    def prescription(self, prescription_id: int) -> PrescriptionRecord:
        with self._read("reading a prescription") as conn:
            return self._prescription(conn, prescription_id)

    def prescriptions(self, code: str) -> list[PrescriptionRecord]:
        code = normalize_code(code)
        with self._read("listing prescriptions") as conn:
            pid = self._patient_id(conn, code)
            ids = conn.execute(
                select(t.prescription.c.id)
                .where(t.prescription.c.patient_id == pid)
                .order_by(t.prescription.c.start_date, t.prescription.c.id)
            ).scalars()
            return [self._prescription(conn, i) for i in ids]

    def active_prescription(self, code: str, day: date | None = None) -> PrescriptionRecord | None:
        day = day or self._today()
        active = [p for p in self.prescriptions(code) if p.is_active_on(day)]
        return active[0] if active else None

    def revisions(self, prescription_id: int) -> list[PrescriptionRevision]:
        r = t.prescription_revision
        with self._read("reading prescription revisions") as conn:
            rows = conn.execute(
                select(r).where(r.c.prescription_id == prescription_id).order_by(r.c.revision)
            ).all()
        return [
            PrescriptionRevision(
                revision=row.revision,
                prescription=Prescription.model_validate_json(row.prescription_json),
                prescription_sha256=row.prescription_sha256,
                changed_at=chain.parse_wall_time(row.changed_at),
                changed_by=row.changed_by,
                reason=row.reason,
            )
            for row in rows
        ]

    def _prescription(self, conn: Connection, prescription_id: int) -> PrescriptionRecord:
        p = t.prescription
        row = conn.execute(
            select(p, t.patient.c.code)
            .join(t.patient, t.patient.c.id == p.c.patient_id)
            .where(p.c.id == prescription_id)
        ).first()
        if row is None:
            raise NotFoundError(f"no prescription #{prescription_id}")
        return PrescriptionRecord(
            id=row.id,
            patient_code=row.code,
            revision=row.revision,
            prescription=Prescription.model_validate_json(row.prescription_json),
            protocol=Protocol.model_validate_json(row.protocol_json),
            prescription_sha256=row.prescription_sha256,
            created_at=chain.parse_wall_time(row.created_at),
            changed_at=chain.parse_wall_time(row.changed_at or row.created_at),
        )

    def _overlapping(
        self, conn: Connection, patient_id: int, new: Prescription, exclude: int | None = None
    ) -> list[PrescriptionRecord]:
        ids = conn.execute(
            select(t.prescription.c.id).where(t.prescription.c.patient_id == patient_id)
        ).scalars()
        found = []
        for i in ids:
            if i == exclude:
                continue
            rec = self._prescription(conn, i)
            if _overlap(rec.prescription, new):
                found.append(rec)
        return found

    def _refuse_overlap(
        self, conn: Connection, patient_id: int, new: Prescription, exclude: int | None = None
    ) -> None:
        clash = self._overlapping(conn, patient_id, new, exclude)
        if clash:
            raise InputError(
                f"{new.patient_code} already has a course on these dates (one active per day)",
                [
                    Problem(
                        "start_date",
                        f"overlaps course {c.describe()}",
                        fix="choose other dates, or give --replace to end the open course "
                        "the day before",
                    )
                    for c in clash
                ],
            )

    def _make_room(
        self, conn: Connection, patient_id: int, new: Prescription, *, replace: bool, stamp: str
    ) -> None:
        clash = self._overlapping(conn, patient_id, new)
        if not clash:
            return
        if not replace:
            self._refuse_overlap(conn, patient_id, new)
        last_day = new.start_date - timedelta(days=1)
        for old in clash:
            p = old.prescription
            if p.start_date > last_day:
                raise InputError(
                    f"--replace cannot end course #{old.id}",
                    [
                        Problem(
                            "start_date",
                            f"course {old.describe()} does not start before the new one",
                            fix="choose a start date after the old course's start",
                        )
                    ],
                )
            ended = p.model_copy(update={"end_date": last_day})
            self._add_revision(
                conn,
                old.id,
                ended,
                old.protocol,
                changed_by=new.prescriber,
                reason=f"ended on {last_day}: replaced by a new course from {new.start_date}",
                stamp=stamp,
                treatment_changed=False,
            )

    def _add_revision(
        self,
        conn: Connection,
        prescription_id: int,
        prescription: Prescription,
        protocol: Protocol,
        *,
        changed_by: str,
        reason: str,
        stamp: str,
        treatment_changed: bool,
    ) -> None:
        p = t.prescription
        revision = conn.execute(select(p.c.revision).where(p.c.id == prescription_id)).scalar_one()
        body = canonical_json(prescription)
        digest = canonical_hash(prescription)
        protocol_json = canonical_json(protocol)
        values: dict[str, Any] = {
            "revision": revision + 1,
            "prescription_json": body,
            "prescription_sha256": digest,
            "protocol_id": protocol.id,
            "protocol_version": protocol.version,
            "protocol_sha256": protocol.content_hash,
            "protocol_json": protocol_json,
            "prescriber": prescription.prescriber,
            "start_date": prescription.start_date,
            "end_date": prescription.end_date,
        }
        if treatment_changed:
            values["changed_at"] = stamp
        conn.execute(update(p).where(p.c.id == prescription_id).values(**values))
        conn.execute(
            insert(t.prescription_revision).values(
                prescription_id=prescription_id,
                revision=revision + 1,
                prescription_json=body,
                prescription_sha256=digest,
                protocol_json=protocol_json,
                changed_at=stamp,
                changed_by=changed_by,
                reason=reason,
            )
        )

    # --- checklists --------------------------------------------------------------------

    def record_checklist(
        self, prescription_id: int, checklist: ContraindicationChecklist
    ) -> tuple[ChecklistRecord, list[Finding]]:
        """Store a newly answered checklist for a course; return it and its findings.

        A checklist that says "yes" to a contraindication is stored (it is the truth
        about the patient today) and blocks sessions until it is answered again.
        """
        self._check_new_checklist(checklist)
        stamp = self._stamp()
        with self._write("recording a checklist") as conn:
            rec = self._prescription(conn, prescription_id)
            cid = self._insert_checklist(conn, prescription_id, checklist, stamp)
            stored = self._checklist(conn, cid)
        findings = checklist_findings(
            checklist,
            today=self._today(),
            recorded_at=stored.recorded_at,
            prescription_changed_at=rec.changed_at,
        )
        return stored, findings

    def latest_checklist(self, prescription_id: int) -> ChecklistRecord | None:
        c = t.checklist
        with self._read("reading a checklist") as conn:
            cid = conn.execute(
                select(c.c.id)
                .where(c.c.prescription_id == prescription_id)
                .order_by(c.c.recorded_at.desc(), c.c.id.desc())
                .limit(1)
            ).scalar()
            return None if cid is None else self._checklist(conn, cid)

    def _check_new_checklist(self, checklist: ContraindicationChecklist) -> None:
        problems = []
        if checklist.unanswered:
            problems.append(
                Problem(
                    "answers",
                    "every item must be answered yes or no; unanswered: "
                    + ", ".join(checklist.unanswered),
                    fix="answer the missing items (estim checklist template lists them all)",
                )
            )
        if checklist.answered_at > self._today():
            problems.append(
                Problem(
                    "answered_at",
                    "is in the future",
                    value=checklist.answered_at.isoformat(),
                    limit=f"on or before {self._today()}",
                )
            )
        if problems:
            raise InputError("checklist not recorded", problems)

    def _insert_checklist(
        self,
        conn: Connection,
        prescription_id: int,
        checklist: ContraindicationChecklist,
        stamp: str,
    ) -> int:
        body = canonical_json(checklist)
        return int(
            conn.execute(
                insert(t.checklist)
                .values(
                    prescription_id=prescription_id,
                    checklist_json=body,
                    checklist_sha256=canonical_hash(checklist),
                    answered_by=checklist.answered_by,
                    answered_at=checklist.answered_at,
                    recorded_at=stamp,
                )
                .returning(t.checklist.c.id)
            ).scalar_one()
        )

    def _checklist(self, conn: Connection, checklist_id: int) -> ChecklistRecord:
        row = conn.execute(select(t.checklist).where(t.checklist.c.id == checklist_id)).one()
        return ChecklistRecord(
            id=row.id,
            prescription_id=row.prescription_id,
            checklist=ContraindicationChecklist.model_validate_json(row.checklist_json),
            sha256=row.checklist_sha256,
            recorded_at=chain.parse_wall_time(row.recorded_at),
        )

    # --- diary -------------------------------------------------------------------------

    def add_diary(self, code: str, entries: Sequence[DiaryEntry], *, replace: bool = False) -> int:
        """Record diary days, all or none. Returns how many were written.

        A day already recorded is refused unless ``replace`` (then the entry's revision
        count goes up, so a replaced day is visible as such).
        """
        code = normalize_code(code)
        today = self._today()
        problems: list[Problem] = []
        seen: set[date] = set()
        for e in entries:
            problems.extend(check_day(e, today, f"{e.day}"))
            if e.day in seen:
                problems.append(Problem(f"{e.day}", "given twice", fix="one entry per day"))
            seen.add(e.day)
        if problems:
            raise InputError(f"diary for {code} not changed, nothing was written", problems)
        stamp = self._stamp()
        d = t.diary_entry
        with self._write("recording the diary") as conn:
            pid = self._patient_id(conn, code)
            existing = {
                row.day: row.revision
                for row in conn.execute(
                    select(d.c.day, d.c.revision).where(
                        and_(d.c.patient_id == pid, d.c.day.in_(sorted(seen)))
                    )
                )
            }
            if existing and not replace:
                raise InputError(
                    f"diary for {code} not changed, nothing was written",
                    [
                        Problem(
                            f"{day}",
                            "this day is already recorded",
                            fix="give --replace to overwrite it (the entry's revision goes up)",
                        )
                        for day in sorted(existing)
                    ],
                )
            for e in entries:
                values = {
                    "hold_s": e.hold_s,
                    "repetitions": e.repetitions,
                    "blocks_done": e.blocks_done,
                    "fast_contractions": e.fast_contractions,
                    "leakage_episodes": e.leakage_episodes,
                    "programme": e.programme.value,
                    "notes": e.notes,
                    "recorded_at": stamp,
                }
                if e.day in existing:
                    conn.execute(
                        update(d)
                        .where(and_(d.c.patient_id == pid, d.c.day == e.day))
                        .values(revision=existing[e.day] + 1, **values)
                    )
                else:
                    conn.execute(insert(d).values(patient_id=pid, day=e.day, revision=1, **values))
        return len(entries)

    def diary(
        self, code: str, start: date | None = None, end: date | None = None
    ) -> list[DiaryEntry]:
        code = normalize_code(code)
        d = t.diary_entry
        with self._read("reading the diary") as conn:
            pid = self._patient_id(conn, code)
            query = select(d).where(d.c.patient_id == pid).order_by(d.c.day)
            if start is not None:
                query = query.where(d.c.day >= start)
            if end is not None:
                query = query.where(d.c.day <= end)
            rows = conn.execute(query).all()
        return [
            DiaryEntry(
                day=r.day,
                hold_s=r.hold_s,
                repetitions=r.repetitions,
                blocks_done=r.blocks_done,
                fast_contractions=r.fast_contractions,
                leakage_episodes=r.leakage_episodes,
                programme=Programme(r.programme),
                notes=r.notes,
            )
            for r in rows
        ]

    # --- preflight ---------------------------------------------------------------------

    def preflight(
        self,
        code: str,
        *,
        day: date | None = None,
        prescription_id: int | None = None,
        eligibility_override: EligibilityOverride | None = None,
        max_checklist_age_days: int = DEFAULT_MAX_AGE_DAYS,
        lookback_days: int = ELIGIBILITY_LOOKBACK_DAYS,
    ) -> RecordsPreflight:
        """Checklist, eligibility and dose for a session on ``day`` (default today)."""
        code = normalize_code(code)
        with self._read("preflight") as conn:
            return self._preflight(
                conn,
                code,
                day or self._today(),
                prescription_id=prescription_id,
                override=eligibility_override,
                max_checklist_age_days=max_checklist_age_days,
                lookback_days=lookback_days,
            )

    def _preflight(
        self,
        conn: Connection,
        code: str,
        day: date,
        *,
        prescription_id: int | None,
        override: EligibilityOverride | None,
        max_checklist_age_days: int = DEFAULT_MAX_AGE_DAYS,
        lookback_days: int = ELIGIBILITY_LOOKBACK_DAYS,
    ) -> RecordsPreflight:
        pid = self._patient_id(conn, code)
        assert pid is not None
        if prescription_id is None:
            ids = conn.execute(
                select(t.prescription.c.id).where(t.prescription.c.patient_id == pid)
            ).scalars()
            active = [r for r in (self._prescription(conn, i) for i in ids) if r.is_active_on(day)]
            record = active[0] if active else None
        else:
            record = self._prescription(conn, prescription_id)
            if record.patient_code != code:
                raise InputError(
                    f"prescription #{prescription_id} is not {code}'s",
                    [Problem("prescription_id", "belongs to another patient")],
                )
        if record is None:
            finding = Finding(
                "RX-NONE",
                Severity.BLOCK,
                f"{code} has no prescription active on {day}",
                fix=f"prescribe a course: estim prescribe {code} --protocol ID --max-ma X",
            )
            return RecordsPreflight(day, None, None, [finding])
        findings: list[Finding] = []
        if not record.is_active_on(day):
            findings.append(
                Finding(
                    "RX-INACTIVE",
                    Severity.BLOCK,
                    f"prescription {record.describe()} is not active on {day}",
                )
            )
        resolved: ResolvedPrescription | None = None
        try:
            resolved = record.resolved()
        except InputError as err:
            findings.append(Finding("RX-INVALID", Severity.BLOCK, str(err)))
        cid = conn.execute(
            select(t.checklist.c.id)
            .where(t.checklist.c.prescription_id == record.id)
            .order_by(t.checklist.c.recorded_at.desc(), t.checklist.c.id.desc())
            .limit(1)
        ).scalar()
        stored = None if cid is None else self._checklist(conn, cid)
        findings += checklist_findings(
            None if stored is None else stored.checklist,
            today=day,
            recorded_at=None if stored is None else stored.recorded_at,
            prescription_changed_at=record.changed_at,
            max_age_days=max_checklist_age_days,
        )
        diary = self._diary_rows(conn, pid, day - timedelta(days=lookback_days), day)
        findings += eligibility_findings(
            diary, today=day, override=override, lookback_days=lookback_days
        )
        sessions = self._sessions(conn, patient_id=pid)
        dose = dose_count(sessions, day=day)
        if resolved is not None:
            findings += dose.findings(
                sessions_per_day=resolved.protocol.sessions_per_day,
                sessions_per_week=resolved.protocol.sessions_per_week,
            )
        return RecordsPreflight(day, record, resolved, findings, dose)

    def _diary_rows(self, conn: Connection, pid: int, start: date, end: date) -> list[DiaryEntry]:
        d = t.diary_entry
        rows = conn.execute(
            select(d).where(and_(d.c.patient_id == pid, d.c.day >= start, d.c.day <= end))
        ).all()
        return [
            DiaryEntry(
                day=r.day,
                hold_s=r.hold_s,
                repetitions=r.repetitions,
                blocks_done=r.blocks_done,
                fast_contractions=r.fast_contractions,
                leakage_episodes=r.leakage_episodes,
                programme=Programme(r.programme),
                notes=r.notes,
            )
            for r in rows
        ]

    def overrides(self, code: str) -> list[OverrideRecord]:
        code = normalize_code(code)
        o = t.decision_override
        with self._read("reading overrides") as conn:
            pid = self._patient_id(conn, code)
            rows = conn.execute(
                select(o).where(o.c.patient_id == pid).order_by(o.c.recorded_at, o.c.id)
            ).all()
        return [
            OverrideRecord(
                id=r.id,
                patient_code=code,
                kind=r.kind,
                finding_code=r.finding_code,
                finding_message=r.finding_message,
                reason=r.reason,
                clinician=r.clinician,
                recorded_at=chain.parse_wall_time(r.recorded_at),
            )
            for r in rows
        ]

    # --- sessions ----------------------------------------------------------------------

    def begin_session(
        self, start: SessionStart, *, monotonic_ns: int | None = None
    ) -> SessionRecorder:
        """Open a session record and return the :class:`SessionRecorder` (an EventSink).

        Marks sessions whose process died as interrupted, then runs the records
        preflight again inside the transaction that opens the session (checklist,
        eligibility with the given override, dose, prescription active, protocol hash
        as prescribed) and refuses with :class:`PreflightBlocked` if anything blocks,
        writing nothing. The first event, ``records.opened``, logs the preflight's
        findings (overrides included). ``monotonic_ns`` is the controller's clock
        reading for that event (default: the process's monotonic clock).
        """
        code = normalize_code(start.patient_code, "patient_code")
        day = start.diary_day or self._today()
        # Close sessions whose process died first: they count toward today's dose, and
        # their record should say "interrupted" before a new session is judged.
        self.recover_interrupted()
        uid = str(uuid.uuid4())
        lease = SessionLease(self.lock_dir, uid)
        if not lease.try_acquire():  # a fresh uid: only a broken lock dir gets here
            raise RecordsError(f"cannot lock new session {uid} in {self.lock_dir}")
        try:
            return self._open_session(
                start, code, day, uid=uid, lease=lease, monotonic_ns=monotonic_ns
            )
        except BaseException:
            lease.release()
            raise

    def _open_session(
        self,
        start: SessionStart,
        code: str,
        day: date,
        *,
        uid: str,
        lease: SessionLease,
        monotonic_ns: int | None,
    ) -> SessionRecorder:
        started = self._stamp()
        with self._write("opening a session") as conn:
            check = self._preflight(
                conn,
                code,
                day,
                prescription_id=start.prescription_id,
                override=start.eligibility_override,
            )
            findings = list(check.findings)
            record = check.prescription
            if record is not None and check.resolved is not None:
                effective = check.resolved.protocol.content_hash
                if start.protocol_sha256 != effective:
                    findings.append(
                        Finding(
                            "RX-PROTOCOL",
                            Severity.BLOCK,
                            f"the session's protocol {start.protocol_sha256[:12]} is not the "
                            f"prescribed one ({effective[:12]}, course #{record.id} rev "
                            f"{record.revision})",
                            fix="run the protocol as prescribed (resolve the prescription)",
                        )
                    )
            findings += validation_findings(start)
            stop = blocking(findings)
            if stop or record is None:
                raise PreflightBlocked(
                    f"session for {code} not started:\n" + "\n".join(f"  - {f}" for f in stop),
                    list(stop),
                )
            pid = self._patient_id(conn, code)
            assert pid is not None
            override_id = None
            if start.eligibility_override is not None:
                overridden = next((f for f in findings if f.code == "ELIG-OVERRIDDEN"), None)
                if overridden is not None:
                    override_id = conn.execute(
                        insert(t.decision_override)
                        .values(
                            patient_id=pid,
                            kind="eligibility",
                            finding_code="ELIG-VOLUNTARY",
                            finding_message=overridden.message,
                            reason=start.eligibility_override.reason,
                            clinician=start.eligibility_override.clinician,
                            recorded_at=started,
                        )
                        .returning(t.decision_override.c.id)
                    ).scalar_one()
            validation_json = (
                None
                if start.validation is None
                else chain.canonical(start.validation.model_dump(mode="json"))
            )
            values: dict[str, Any] = {
                "uid": uid,
                "patient_id": pid,
                "prescription_id": record.id,
                "prescription_revision": record.revision,
                "prescription_sha256": record.prescription_sha256,
                "protocol_sha256": start.protocol_sha256,
                "profile_name": start.profile_name,
                "profile_sha256": start.profile_sha256,
                "validation_sha256": None if start.validation is None else start.validation.sha256,
                "validation_json": validation_json,
                "device_model": "" if start.device is None else start.device.model,
                "device_serial": "" if start.device is None else start.device.serial_number,
                "device_firmware": "" if start.device is None else start.device.firmware,
                "clinician": start.clinician,
                "diary_day": day,
                "started_at": started,
                "override_id": override_id,
                "owner_host": self.host,
            }
            header = chain.header_hash(header_fields(values, code))
            session_id = conn.execute(
                insert(t.session)
                .values(**values, header_sha256=header, event_count=0, last_event_sha256=header)
                .returning(t.session.c.id)
            ).scalar_one()
        recorder = SessionRecorder(
            self, session_id, uid=uid, lease=lease, head=header, findings=findings
        )
        recorder.append(
            SessionEvent(
                kind=OPENED_KIND,
                state="",
                monotonic_ns=time.monotonic_ns() if monotonic_ns is None else monotonic_ns,
                data={
                    "patient": code,
                    "prescription_id": record.id,
                    "prescription_revision": record.revision,
                    "diary_day": day.isoformat(),
                    "device": None if start.device is None else start.device.as_data(),
                    "findings": [
                        {"code": f.code, "severity": f.severity.value, "message": f.message}
                        for f in findings
                    ],
                },
            )
        )
        return recorder

    def _append(
        self, session_id: int, sequence: int, prev_hash: str, event: SessionEvent
    ) -> chain.ChainedEvent:
        linked = chain.link(
            sequence,
            prev_hash,
            kind=event.kind,
            state=event.state,
            monotonic_ns=event.monotonic_ns,
            wall_time=event.wall_time,
            data=event.data,
        )
        with self._write("appending a session event") as conn:
            self._append_row(conn, session_id, linked)
        return linked

    def _append_row(self, conn: Connection, session_id: int, linked: chain.ChainedEvent) -> None:
        s = t.session
        # Optimistic check-and-set: the row still ends where this link starts, and is open.
        moved = conn.execute(
            update(s)
            .where(
                and_(
                    s.c.id == session_id,
                    s.c.event_count == linked.sequence,
                    s.c.last_event_sha256 == linked.prev_hash,
                    s.c.outcome.is_(None),
                )
            )
            .values(
                event_count=linked.sequence + 1,
                last_event_sha256=linked.hash,
                last_event_kind=linked.kind,
                last_event_at=linked.wall_time,
                **device_columns(device_of(linked.kind, linked.data)),
                **delivered_columns(linked.data),
            )
        ).rowcount
        if moved != 1:
            row = conn.execute(
                select(s.c.outcome, s.c.event_count).where(s.c.id == session_id)
            ).first()
            if row is None:
                raise RecordsError(f"no session #{session_id}")
            if row.outcome is not None:
                raise RecordsError(
                    f"session #{session_id} already ended ({row.outcome}); no more events"
                )
            raise RecordsError(
                f"session #{session_id}: another writer appended event #{row.event_count - 1}; "
                "one recorder per session"
            )
        conn.execute(
            insert(t.session_event).values(
                session_id=session_id,
                sequence=linked.sequence,
                kind=linked.kind,
                state=linked.state,
                monotonic_ns=linked.monotonic_ns,
                wall_time=linked.wall_time,
                data_json=linked.data_json,
                prev_sha256=linked.prev_hash,
                sha256=linked.hash,
            )
        )

    def _finish(
        self,
        session_id: int,
        sequence: int,
        prev_hash: str,
        *,
        outcome: Outcome,
        reason: str,
        summary: SessionSummary,
        monotonic_ns: int,
        state: str,
        ended_at: datetime | None = None,
        extra: dict[str, Any] | None = None,
    ) -> chain.ChainedEvent:
        ended = chain.wall_time_text(ended_at or self._now())
        # Stripped here, once, for both: the row is read back through a model that
        # strips its strings, and verify compares the row with this event.
        reason = reason.strip()
        data: dict[str, Any] = {
            "outcome": outcome.value,
            "reason": reason,
            "ended_at": ended,
            "confirmed_amplitude_ua": summary.confirmed_amplitude_ua,
            "on_time_us": summary.on_time_us,
            "contractions": summary.contractions,
        }
        data.update(extra or {})
        linked = chain.link(
            sequence,
            prev_hash,
            kind=END_KIND,
            state=state,
            monotonic_ns=monotonic_ns,
            wall_time=self._now(),
            data=data,
        )
        with self._write("closing a session") as conn:
            self._append_row(conn, session_id, linked)
            conn.execute(
                update(t.session)
                .where(t.session.c.id == session_id)
                .values(
                    ended_at=ended,
                    outcome=outcome.value,
                    reason=reason,
                    confirmed_amplitude_ua=summary.confirmed_amplitude_ua,
                    on_time_us=summary.on_time_us,
                    contractions=summary.contractions,
                )
            )
        return linked

    def recover_interrupted(self) -> list[SessionRecord]:
        """Mark sessions whose process died as interrupted; return them.

        A session counts as dead when it has no outcome, was opened on this machine,
        and nobody holds its lock (see :mod:`estim.records.lease`). Its last event is
        kept and named in the reason; a ``records.end`` event closes the chain.
        """
        s = t.session
        with self._read("looking for interrupted sessions") as conn:
            candidates = conn.execute(
                select(s.c.id, s.c.uid, s.c.owner_host).where(s.c.outcome.is_(None))
            ).all()
        recovered = []
        for row in candidates:
            if row.owner_host not in (None, self.host):
                continue  # another workstation's session: not ours to judge
            lease = SessionLease(self.lock_dir, row.uid)
            if not lease.try_acquire():
                continue  # alive
            try:
                if self._close_interrupted(row.id):
                    recovered.append(self.session(row.id))
            finally:
                lease.release()
        return recovered

    def _close_interrupted(self, session_id: int) -> bool:
        s, e = t.session, t.session_event
        with self._read("reading an interrupted session") as conn:
            row = conn.execute(select(s).where(s.c.id == session_id)).one()
            if row.outcome is not None:
                return False
            last = conn.execute(
                select(e).where(e.c.session_id == session_id).order_by(e.c.sequence.desc()).limit(1)
            ).first()
        if last is None:
            reason = "the process ended before any event was recorded"
            monotonic_ns, state, ended_at = 0, "", chain.parse_wall_time(row.started_at)
            extra: dict[str, Any] = {"last_sequence": None}
        else:
            reason = (
                f"the process ended without recording an outcome; last event #{last.sequence} "
                f"{last.kind!r} (state {last.state or '-'}) at {last.wall_time}"
            )
            monotonic_ns, state = last.monotonic_ns, last.state
            ended_at = chain.parse_wall_time(last.wall_time)
            extra = {
                "last_sequence": last.sequence,
                "last_kind": last.kind,
                "last_wall_time": last.wall_time,
                "detected_at": self._stamp(),
            }
        self._finish(
            session_id,
            row.event_count,
            row.last_event_sha256,
            outcome=Outcome.INTERRUPTED,
            reason=reason,
            summary=SessionSummary(  # as the last status event left it; None where never known
                confirmed_amplitude_ua=row.confirmed_amplitude_ua,
                on_time_us=row.on_time_us,
                contractions=row.contractions,
            ),
            monotonic_ns=monotonic_ns,
            state=state,
            ended_at=ended_at,
            extra=extra,
        )
        return True

    def session(self, ref: int | str) -> SessionRecord:
        """A session by number (``12``) or by its uid or a unique uid prefix."""
        s = t.session
        with self._read("reading a session") as conn:
            number = _session_number(ref)
            if number is not None:
                cond = s.c.id == number
            else:
                prefix = str(ref).strip().lower()
                if len(prefix) < 4:
                    raise InputError(
                        f"session {ref!r}: give the session number or at least 4 characters "
                        "of its uid"
                    )
                matches = (
                    conn.execute(select(s.c.id).where(s.c.uid.startswith(prefix, autoescape=True)))
                    .scalars()
                    .all()
                )
                if len(matches) > 1:
                    raise InputError(f"session {ref!r} is ambiguous; give more of the uid")
                cond = s.c.id == (matches[0] if matches else -1)
            found = self._sessions(conn, where=cond)
        if not found:
            raise NotFoundError(f"no session {ref}; list them with: estim log list")
        return found[0]

    def sessions(
        self, code: str | None = None, start: date | None = None, end: date | None = None
    ) -> list[SessionRecord]:
        """Sessions, oldest first; of one patient, within diary days if given."""
        s = t.session
        with self._read("listing sessions") as conn:
            pid = None if code is None else self._patient_id(conn, normalize_code(code))
            conds = []
            if start is not None:
                conds.append(s.c.diary_day >= start)
            if end is not None:
                conds.append(s.c.diary_day <= end)
            return self._sessions(conn, patient_id=pid, where=and_(*conds) if conds else None)

    def _sessions(
        self, conn: Connection, *, patient_id: int | None = None, where: Any = None
    ) -> list[SessionRecord]:
        s = t.session
        query = (
            select(s, t.patient.c.code)
            .join(t.patient, t.patient.c.id == s.c.patient_id)
            .order_by(s.c.started_at, s.c.id)
        )
        if patient_id is not None:
            query = query.where(s.c.patient_id == patient_id)
        if where is not None:
            query = query.where(where)
        found: list[SessionRecord] = []
        rows = iter(conn.execute(query))
        while True:
            try:  # the database driver converts dates as it hands each row over
                row = next(rows, None)
            except ValueError as err:
                raise _unreadable("one of the sessions", err) from err
            if row is None:
                return found
            found.append(_readable_session(row))

    def events(self, session_id: int) -> list[chain.ChainedEvent]:
        with self._read("reading session events") as conn:
            return self._events(conn, session_id)

    def _events(self, conn: Connection, session_id: int) -> list[chain.ChainedEvent]:
        e = t.session_event
        rows = conn.execute(
            select(e).where(e.c.session_id == session_id).order_by(e.c.sequence, e.c.id)
        ).all()
        return [_chained(r) for r in rows]

    def _snapshot(self, session_id: int) -> tuple[SessionRecord, list[chain.ChainedEvent]]:
        """The session row and its events as of one moment (one read transaction), so a
        session still being recorded by another process is seen consistently."""
        with self._read("reading a session log") as conn:
            found = self._sessions(conn, where=t.session.c.id == session_id)
            if not found:
                raise NotFoundError(f"no session {session_id}; list them with: estim log list")
            return found[0], self._events(conn, session_id)

    def verify(self, session_id: int) -> chain.ChainVerdict:
        """Check a session's header, every link, and that the row matches its end event."""
        record, events = self._snapshot(session_id)
        return verify_session(record, events)

    def verify_all(self) -> list[tuple[int, chain.ChainVerdict]]:
        """Every session's verdict, oldest first. A row that cannot be read is a broken
        session, reported as such; the others are still checked."""
        s = t.session
        with self._read("listing sessions") as conn:
            ids = conn.execute(select(s.c.id).order_by(s.c.id)).scalars().all()
        verdicts: list[tuple[int, chain.ChainVerdict]] = []
        for session_id in ids:
            try:
                verdicts.append((session_id, self.verify(session_id)))
            except RecordsError as err:
                unreadable = chain.BrokenLink(0, str(err))
                verdicts.append((session_id, chain.ChainVerdict(0, "", unreadable)))
        return verdicts

    def export_session(self, session_id: int) -> dict[str, Any]:
        """A self-contained JSON-ready export: header, every event with hashes, verdict."""
        record, events = self._snapshot(session_id)
        verdict = verify_session(record, events)
        return {
            "format": "estim-session-log/1",
            "session": record.model_dump(mode="json"),
            "header": header_of(record),
            "header_sha256": record.header_sha256,
            "events": [
                {
                    "sequence": ev.sequence,
                    "prev_sha256": ev.prev_hash,
                    "kind": ev.kind,
                    "state": ev.state,
                    "monotonic_ns": ev.monotonic_ns,
                    "wall_time": ev.wall_time,
                    "data": ev.data,
                    "sha256": ev.hash,
                }
                for ev in events
            ],
            "verified": verdict.ok,
            "broken": None if verdict.broken is None else str(verdict.broken),
            "head_sha256": verdict.head_hash,
        }

    def counts(self) -> dict[str, int]:
        """Rows per table, for ``estim records info``."""
        tables = {
            "patients": t.patient,
            "prescriptions": t.prescription,
            "diary days": t.diary_entry,
            "sessions": t.session,
            "events": t.session_event,
        }
        with self._read("counting records") as conn:
            return {
                name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                for name, table in tables.items()
            }


# --- row conversion ----------------------------------------------------------------------


def _patient(row: Row[Any]) -> Patient:
    return Patient(
        code=row.code,
        year_of_birth=row.year_of_birth,
        notes=row.notes,
        created_at=chain.parse_wall_time(row.created_at),
    )


def _opt_time(text: str | None) -> datetime | None:
    return None if text is None else chain.parse_wall_time(text)


def _readable_session(row: Row[Any]) -> SessionRecord:
    """``_session``, or a :class:`RecordsError` naming the row a person or a fault
    changed into something no version of estim wrote (never a traceback)."""
    try:
        return _session(row)
    except (ValueError, TypeError) as err:  # includes pydantic's ValidationError
        raise _unreadable(f"session #{row.id}", err) from err


def _unreadable(which: str, err: Exception) -> RecordsError:
    first_line = (str(err).splitlines() or [""])[0]
    return RecordsError(
        f"{which}: its row cannot be read ({type(err).__name__}: {first_line}); the "
        "database was edited or damaged: restore it from a backup"
    )


def _session(row: Row[Any]) -> SessionRecord:
    return SessionRecord(
        id=row.id,
        uid=row.uid,
        patient_code=row.code,
        prescription_id=row.prescription_id,
        prescription_revision=row.prescription_revision,
        prescription_sha256=row.prescription_sha256,
        protocol_sha256=row.protocol_sha256,
        profile_name=row.profile_name,
        profile_sha256=row.profile_sha256,
        validation_sha256=row.validation_sha256,
        validation=None if row.validation_json is None else json.loads(row.validation_json),
        device=None
        if not row.device_model
        else DeviceRecord(
            model=row.device_model, serial_number=row.device_serial, firmware=row.device_firmware
        ),
        clinician=row.clinician,
        diary_day=row.diary_day,
        started_at=chain.parse_wall_time(row.started_at),
        ended_at=_opt_time(row.ended_at),
        outcome=None if row.outcome is None else Outcome(row.outcome),
        reason=row.reason,
        confirmed_amplitude_ua=row.confirmed_amplitude_ua,
        on_time_us=row.on_time_us,
        contractions=row.contractions,
        event_count=row.event_count,
        last_event_kind=row.last_event_kind,
        last_event_at=_opt_time(row.last_event_at),
        header_sha256=row.header_sha256,
        last_event_sha256=row.last_event_sha256,
        override_id=row.override_id,
        owner_host=row.owner_host,
    )


def _chained(row: Row[Any]) -> chain.ChainedEvent:
    return chain.ChainedEvent(
        sequence=row.sequence,
        prev_hash=row.prev_sha256,
        kind=row.kind,
        state=row.state,
        monotonic_ns=row.monotonic_ns,
        wall_time=row.wall_time,
        data_json=row.data_json,
        hash=row.sha256,
    )


def _overlap(a: Prescription, b: Prescription) -> bool:
    a_end = a.end_date or date.max
    b_end = b.end_date or date.max
    return a.start_date <= b_end and b.start_date <= a_end


def _treatment(p: Prescription) -> tuple[Any, ...]:
    """The parts of a prescription that change what the patient gets (not its dates)."""
    return (p.protocol, p.max_amplitude_ma, p.titration_step_ma, sorted(p.adjustments.items()))


_SESSION_ID_MAX = 2**63 - 1  # SQLite's INTEGER


def _session_number(ref: int | str) -> int | None:
    """``ref`` as a session number (ASCII digits only: "²" is not a number here), or
    None for a uid prefix. A number beyond any id names no session (-1)."""
    if isinstance(ref, int):
        number = ref
    elif (text := ref.strip()).isascii() and text.isdigit():
        number = int(text)
    else:
        return None
    return number if 0 <= number <= _SESSION_ID_MAX else -1
