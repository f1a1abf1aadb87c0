"""The real controller writing to the records: a whole session in virtual time against
the simulator, with a :class:`SessionRecorder` as its event sink."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from records_helpers import Clock

from estim.events import MemorySink, SessionEvent
from estim.protocols.catalog import get_protocol
from estim.records.models import Outcome, SessionStart
from estim.records.recorder import SessionRecorder
from estim.records.seed import all_clear_checklist
from estim.records.store import Store
from estim.session.director import AutoSession
from estim.testing.session import make_plan, virtual_rig


class Tee(MemorySink):
    """The recorder is the sink; the copy lets the test compare what the controller sent."""

    def __init__(self, recorder: SessionRecorder) -> None:
        super().__init__()
        self.recorder = recorder

    def append(self, event: SessionEvent) -> None:
        self.recorder.append(event)
        super().append(event)


def test_a_controller_session_is_recorded_and_verifies(tmp_path: Path) -> None:
    clock = Clock(date(2026, 6, 1))
    plan = make_plan()
    with Store.open(tmp_path / "records.db", now=clock, today=clock.today, host="h") as store:
        code = plan.resolved.prescription.patient_code
        store.add_patient(code, 1980)
        store.prescribe(
            plan.resolved.prescription,
            get_protocol("stress"),
            all_clear_checklist("Dr Demo", clock.today()),
        )
        recorder = store.begin_session(
            SessionStart(
                patient_code=code,
                protocol_sha256=plan.resolved.protocol.content_hash,
                profile_name="estim-pf2",
                profile_sha256=plan.profile.sha256,
                clinician="Nurse B",
            ),
            monotonic_ns=0,
        )
        with virtual_rig(
            plan,
            director=AutoSession(target_ua=12_000),
            sink_factory=lambda: Tee(recorder),
        ) as rig:
            summary = rig.runner.run()
            sent = list(rig.sink.events)
            assert rig.runner.unsaved_events == []  # the recorder took every event
        record = recorder.finish_from_summary(summary.to_dict())

        assert record.outcome is Outcome.COMPLETED
        assert record.confirmed_amplitude_ua == 12_000
        assert record.contractions == summary.contractions == 2
        assert record.on_time_us == summary.on_time_us
        assert record.device is not None
        assert record.device.model == plan.profile.identity.model
        events = store.events(record.id)
        assert len(events) == len(sent) + 2
        assert [e.kind for e in events[1:-1]] == [e.kind for e in sent]
        assert events[-1].data["controller"]["outcome"] == "completed"
        assert store.verify(record.id).ok
        check = store.preflight(code)
        assert check.dose is not None
        assert check.dose.sessions_today == 1
