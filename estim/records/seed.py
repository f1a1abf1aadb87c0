"""A ready-to-run demo patient: for ``estim demo`` and for tests.

Creates (if missing) a patient, a course on a library protocol with a complete
checklist answered "no" throughout, and a diary that shows no voluntary contraction
(the indication for stimulation). Only ever used on a demo or test database: the
records it writes are invented.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from estim.protocols.models import Protocol
from estim.protocols.prescription import Prescription, ProtocolRef
from estim.records.checklist import ChecklistItem, ContraindicationChecklist
from estim.records.diary import DiaryEntry
from estim.records.models import PrescriptionRecord
from estim.records.store import Store

DEMO_CODE = "DEMO-0001"
DEMO_PRESCRIBER = "estim demo (not a clinician)"


def all_clear_checklist(answered_by: str, answered_at: date) -> ContraindicationChecklist:
    """Every item answered "no"."""
    return ContraindicationChecklist(
        answered_by=answered_by,
        answered_at=answered_at,
        answers=dict.fromkeys(ChecklistItem, False),
    )


def seed_demo_patient(
    store: Store,
    protocol: Protocol,
    *,
    code: str = DEMO_CODE,
    max_amplitude_ma: Decimal | None = None,
    diary_days: int = 14,
) -> PrescriptionRecord:
    """The patient's course active today, creating whatever is missing."""
    today = store.today()
    if code not in {p.code for p in store.patients()}:
        store.add_patient(code, 1980, "demo patient: invented records")
    active = store.active_prescription(code, today)
    if active is None:
        ceiling = max_amplitude_ma or min(protocol.amplitude.ceiling_ma, Decimal(20))
        prescription = Prescription(
            patient_code=code,
            protocol=ProtocolRef.of(protocol),
            max_amplitude_ma=ceiling,
            prescriber=DEMO_PRESCRIBER,
            start_date=today - timedelta(days=diary_days),
            notes="demo course",
        )
        active = store.prescribe(
            prescription, protocol, all_clear_checklist(DEMO_PRESCRIBER, today)
        )
    recorded = {e.day for e in store.diary(code)}
    entries = [
        DiaryEntry(day=day, hold_s=0, repetitions=0, blocks_done=4, notes="no contraction felt")
        for day in (today - timedelta(days=n) for n in range(diary_days, 0, -1))
        if day not in recorded
    ]
    if entries:
        store.add_diary(code, entries)
    return active
