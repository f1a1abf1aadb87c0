"""Shared pieces for the records tests: a store on a temporary file, a ready course,
and a way to open and run a session without a controller."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from estim.events import SessionEvent
from estim.protocols.catalog import get_protocol
from estim.protocols.models import Protocol
from estim.protocols.prescription import Prescription, ProtocolRef
from estim.records.checklist import ChecklistItem, ContraindicationChecklist
from estim.records.models import (
    DeviceRecord,
    Outcome,
    PrescriptionRecord,
    SessionRecord,
    SessionStart,
    SessionSummary,
)
from estim.records.recorder import SessionRecorder
from estim.records.seed import all_clear_checklist
from estim.records.store import Store

TODAY = date(2024, 5, 20)  # a Monday
CODE = "PF-0042"
PROFILE_SHA = "a" * 64


class Clock:
    """Wall time for the store that a test moves by hand."""

    def __init__(self, today: date = TODAY) -> None:
        self.now = datetime(today.year, today.month, today.day, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def today(self) -> date:
        return self.now.date()

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def stress() -> Protocol:
    return get_protocol("stress")


def open_store(path: Path, clock: Clock | None = None) -> Store:
    clock = clock or Clock()
    return Store.open(path, now=clock, today=clock.today, host="test-host")


# Fixtures: import them by these names (``from records_helpers import clock_fixture,
# store_fixture``); pytest knows them as ``clock`` and ``store``.


@pytest.fixture(name="clock")
def clock_fixture() -> Clock:
    return Clock()


@pytest.fixture(name="store")
def store_fixture(tmp_path: Path, clock: Clock) -> Iterator[Store]:
    with open_store(tmp_path / "records.db", clock) as opened:
        yield opened


def prescription(
    code: str = CODE,
    *,
    start: date = TODAY - timedelta(days=14),
    end: date | None = None,
    max_ma: str = "30",
    protocol: Protocol | None = None,
) -> Prescription:
    protocol = protocol or stress()
    return Prescription(
        patient_code=code,
        protocol=ProtocolRef.of(protocol),
        max_amplitude_ma=Decimal(max_ma),
        prescriber="Dr. A. Visser",
        start_date=start,
        end_date=end,
    )


def checklist(answered_at: date = TODAY, **answers: bool) -> ContraindicationChecklist:
    base = all_clear_checklist("Dr. A. Visser", answered_at)
    merged = {**base.answers, **{ChecklistItem(k): v for k, v in answers.items()}}
    return base.model_copy(update={"answers": merged})


def ready_course(store: Store, code: str = CODE) -> PrescriptionRecord:
    """A patient with a course active today and a fresh, all-clear checklist."""
    store.add_patient(code, 1980)
    return store.prescribe(prescription(code), stress(), checklist(store.today()))


def session_start(record: PrescriptionRecord, **overrides: object) -> SessionStart:
    values: dict[str, object] = {
        "patient_code": record.patient_code,
        "protocol_sha256": record.effective_protocol.content_hash,
        "profile_name": "estim-pf2",
        "profile_sha256": PROFILE_SHA,
        "device": DeviceRecord(model="PF2", serial_number="SN-001", firmware="1.2.0"),
        "clinician": "Nurse B",
    }
    values.update(overrides)
    return SessionStart.model_validate(values)


def event(n: int, kind: str = "status", state: str = "running") -> SessionEvent:
    return SessionEvent(
        kind=kind,
        state=state,
        monotonic_ns=1_000_000_000 + n * 100_000_000,
        data={"n": n, "amplitude_ua": 1000 * n},
        wall_time=datetime(2024, 5, 20, 9, 0, tzinfo=UTC) + timedelta(milliseconds=100 * n),
    )


def run_session(
    store: Store,
    record: PrescriptionRecord,
    *,
    events: int = 3,
    outcome: Outcome = Outcome.COMPLETED,
    amplitude_ua: int | None = 12_000,
    on_time_us: int = 600_000_000,
    **start: object,
) -> SessionRecord:
    recorder: SessionRecorder = store.begin_session(session_start(record, **start))
    for n in range(events):
        recorder.append(event(n))
    return recorder.finish(
        outcome,
        f"test {outcome.value}",
        SessionSummary(confirmed_amplitude_ua=amplitude_ua, on_time_us=on_time_us, contractions=5),
    )
