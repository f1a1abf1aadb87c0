"""A RehaStim2 reports no serial number: people name the unit by its label, end to end.

Over real pseudo-terminals, against ``estim sim --profile profiles/hasomed-rehastim2.toml``
in its own process: the bench refuses to run without the serial on the unit's label and
records it when given; ``estim session start`` is refused at connect
(IL-DEVICE-VALIDATION) unless the clinician confirms that label serial, with
``--unit-serial`` or by typing it at the prompt in a terminal, and the confirmation is
in the session log either way. The simulator's output stage ends at zero.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pty
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from estim_process import ACKNOWLEDGE, Process, invoke
from typer.testing import CliRunner

from estim.cli import app, main
from estim.cli.session_cmd import _validation_check
from estim.device.base import DeviceIdentity
from estim.device.profile import builtin_profile
from estim.records.store import Store
from estim.session.states import State, Trigger
from estim.session.story import check_story
from estim.testing.session import make_plan, virtual_rig
from estim.validation.record import (
    CheckResult,
    ConfirmedHow,
    DeviceUnit,
    Outcome,
    UnitConfirmation,
    ValidationRecord,
    load_record,
    save_record,
)

PROFILE_FILE = "profiles/hasomed-rehastim2.toml"
PF2 = builtin_profile("estim-pf2")
HOW = ConfirmedHow.OPTION
LABEL = "RS2-0417"


def estim_process(*args: str, stdin: int | None = None) -> Process:
    return Process(*args, stdin=stdin, columns=160)  # wide: the prompts on one line


class Sim:
    """``estim sim`` for the RehaStim2, and what its trace says the output stage did."""

    def __init__(self, port: str, trace: Path) -> None:
        self.port = port
        self.trace = trace

    def records(self, event: str) -> list[dict[str, object]]:
        return [
            record
            for line in self.trace.read_text(encoding="utf-8").splitlines()
            if (record := json.loads(line)).get("event") == event
        ]

    def times_switched_on(self) -> int:
        return sum(1 for r in self.records("output") if r.get("output_on"))

    def output_at_zero(self) -> bool:
        last: dict[object, object] = {}
        for record in self.records("output"):
            last[record["channel"]] = record["amplitude_ua"]
        return set(last.values()) <= {0}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """One ``estim sim --profile profiles/hasomed-rehastim2.toml`` for the module."""
    trace = tmp_path_factory.mktemp("sim") / "sim.jsonl"
    process = estim_process("sim", "--profile", PROFILE_FILE, "--trace", str(trace))
    try:
        port = process.wait_for("/dev/").strip()
        yield Sim(port, trace)
    finally:
        process.stop()
    assert Sim(port, trace).output_at_zero(), "the simulator's output stage ends at zero"


@pytest.fixture(scope="module")
def record(sim: Sim, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A passing bench record of the simulated unit labelled RS2-0417, and what it printed."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    result = CliRunner().invoke(
        app,
        [
            *("profile", "bench", PROFILE_FILE, "--port", sim.port, "--technician", "Tess Tech"),
            *("--unit-serial", LABEL, "--out", str(out), "--no-interactive"),
        ],
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def session_args(record: Path, sim: Sim, db: Path, *extra: str) -> list[str]:
    return [
        *("session", "start", "PF-0042", "--port", sim.port, "--profile", PROFILE_FILE),
        *("--validation", str(record), *ACKNOWLEDGE, "--titrate-to", "5", "--plain"),
        *("--db", str(db), "--clinician", "Dr Test", *extra),
    ]


def logged(db: Path) -> list[tuple[str, dict[str, object]]]:
    """The one session's events, as (kind, data)."""
    with Store.open(db, create=False) as store:
        (session,) = store.sessions("PF-0042")
        assert store.verify(session.id).ok
        return [(e.kind, e.data) for e in store.events(session.id)]


def trips(events: list[tuple[str, dict[str, object]]]) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    for kind, data in events:
        if kind == "trip" and isinstance(data["trips"], list):
            found.extend(data["trips"])
    return found


# --- the bench -----------------------------------------------------------------------------------


@pytest.mark.pty
def test_the_bench_is_refused_without_the_label_serial(
    sim: Sim, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    switched_on = sim.times_switched_on()
    out = tmp_path / "bench.json"
    code = main(
        [
            *("profile", "bench", PROFILE_FILE, "--port", sim.port, "--technician", "Tess Tech"),
            *("--out", str(out), "--no-interactive"),
        ]
    )
    printed = capsys.readouterr()
    said = " ".join((printed.out + printed.err).split())
    assert code == 2, said
    assert (
        "the RehaStim2 reports no serial number (not reported by ScienceMode2), so a record "
        "of this bench could not say which unit it was made on, and would vouch for any "
        "RehaStim2: read the serial number printed on the unit's label and give it: "
        f"estim profile bench {PROFILE_FILE} --port {sim.port} --unit-serial SN"
    ) in said
    assert "Traceback" not in said
    assert not out.exists()
    assert sim.times_switched_on() == switched_on, "refused before any check switched output on"


@pytest.mark.pty
def test_a_label_serial_that_cannot_be_one_is_refused_before_the_port_opens(
    sim: Sim, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = len(sim.records("frame"))
    code = main(
        [
            *("profile", "bench", PROFILE_FILE, "--port", sim.port),
            *("--unit-serial", "  ", "--out", str(tmp_path / "r.json"), "--no-interactive"),
        ]
    )
    assert code == 2
    assert "--unit-serial: give the serial number printed on the unit's label" in (
        capsys.readouterr().err
    )
    assert len(sim.records("frame")) == frames, "the port was never opened"


@pytest.mark.pty
def test_the_bench_passes_with_the_label_serial_and_records_it(record: tuple[Path, str]) -> None:
    path, printed = record
    bench = load_record(path)
    assert bench.passed
    assert bench.spec_version == 3
    assert bench.device.serial_number == "not reported by ScienceMode2"
    assert bench.device.label_serial == LABEL
    assert bench.device.label_serial_source == (
        "entered by Tess Tech with --unit-serial, from the unit's label"
    )
    label = next(m for m in bench.check("identity").measurements if m.name == "label serial")
    assert (label.text, label.passed) == (LABEL, None)  # what the technician read, unjudged
    assert f"RehaStim2, label serial {LABEL} (the device reports none)" in " ".join(printed.split())


# --- session start -----------------------------------------------------------------------------


@pytest.mark.pty
@pytest.mark.trips("IL-DEVICE-VALIDATION")
def test_a_session_without_the_label_serial_is_refused_at_connect(
    sim: Sim, record: tuple[Path, str], patient_db: Path
) -> None:
    switched_on = sim.times_switched_on()
    code, out = invoke(session_args(record[0], sim, patient_db))
    flat = " ".join(out.split())
    assert code == 4, out
    assert "connected: RehaStim2" in flat
    assert (
        "TRIP IL-DEVICE-VALIDATION: the validation record "
        f"{record[0]} does not vouch for this unit: the RehaStim2 reports no serial number "
        "and nobody confirmed which unit is connected: read the serial on the connected "
        "unit's label and give it with --unit-serial SN, or type it when asked in a "
        f"terminal (the record is for the unit labelled {LABEL})"
    ) in flat
    assert sim.times_switched_on() == switched_on
    events = logged(patient_db)
    assert "unit_confirmation" not in [kind for kind, _ in events]
    assert [t["interlock_id"] for t in trips(events)] == ["IL-DEVICE-VALIDATION"]


@pytest.mark.pty
@pytest.mark.trips("IL-DEVICE-VALIDATION")
def test_a_session_with_the_wrong_label_serial_is_refused_and_the_confirmation_logged(
    sim: Sim, record: tuple[Path, str], patient_db: Path
) -> None:
    switched_on = sim.times_switched_on()
    code, out = invoke(session_args(record[0], sim, patient_db, "--unit-serial", "RS2-0999"))
    flat = " ".join(out.split())
    assert code == 4, out
    assert (
        "unit confirmed by Dr Test: label serial RS2-0999 (given with --unit-serial); "
        "DOES NOT MATCH the bench record or the device"
    ) in flat
    assert (
        "the connected RehaStim2 was confirmed as label serial RS2-0999, but the record was "
        f"made on the unit labelled {LABEL}: connect that unit, or give this unit's own record "
        "(benched with --unit-serial RS2-0999)"
    ) in flat
    assert sim.times_switched_on() == switched_on
    events = logged(patient_db)
    kinds = [kind for kind, _ in events]
    assert kinds.index("connected") < kinds.index("unit_confirmation") < kinds.index("trip")
    confirmation = dict(events)["unit_confirmation"]
    assert confirmation == {
        "confirmed_serial": "RS2-0999",
        "how": "given with --unit-serial",
        "confirmed_by": "Dr Test",
        "device_serial": "not reported by ScienceMode2",
        "record_label_serial": LABEL,
        "matches": False,
    }
    assert [t["interlock_id"] for t in trips(events)] == ["IL-DEVICE-VALIDATION"]


@pytest.mark.pty
def test_a_session_with_the_right_label_serial_stimulates(
    sim: Sim, record: tuple[Path, str], patient_db: Path
) -> None:
    session = estim_process(*session_args(record[0], sim, patient_db, "--unit-serial", "rs2-0417"))
    exit_code = session.interrupt_after(
        "unit confirmed by Dr Test: label serial rs2-0417", "amplitude confirmed: 5 mA", "phase on"
    )
    assert exit_code == 4, session.output  # the emergency stop we sent, nothing else
    assert "(given with --unit-serial); matches" in session.output
    assert "IL-DEVICE-VALIDATION" not in session.output
    events = logged(patient_db)
    assert dict(events)["unit_confirmation"]["matches"] is True
    assert not trips(events)
    with Store.open(patient_db, create=False) as store:
        (recorded,) = store.sessions("PF-0042")
        assert recorded.validation is not None
        assert recorded.validation["fields"]["device_label_serial"] == LABEL


@pytest.mark.pty
def test_in_a_terminal_the_clinician_is_asked_for_the_label_serial(
    sim: Sim, record: tuple[Path, str], patient_db: Path
) -> None:
    keyboard, terminal = pty.openpty()  # the session's stdin is a real terminal
    try:
        session = estim_process(*session_args(record[0], sim, patient_db), stdin=terminal)
        try:
            session.wait_for("The RehaStim2 reports no serial number: confirm which unit")
            os.write(keyboard, f"{LABEL}\n".encode())
            exit_code = session.interrupt_after(
                f"label serial {LABEL} (typed at the prompt from the unit's label)", "phase on"
            )
        finally:
            session.stop()
    finally:
        os.close(keyboard)
        os.close(terminal)
    assert exit_code == 4, session.output
    flat = " ".join(session.output.split())
    # The prompt names the record but not the serial it expects (a serial copied off the
    # screen would prove nothing about the unit on the desk).
    assert f"checked against the bench record {record[0]}" in flat
    prompt = flat[: flat.index("Serial number on the connected unit's label")]
    assert LABEL not in prompt
    assert "matches" in flat
    assert "IL-DEVICE-VALIDATION" not in flat
    confirmation = dict(logged(patient_db))["unit_confirmation"]
    assert confirmation["how"] == "typed at the prompt from the unit's label"
    assert confirmation["matches"] is True


# --- a device that reports its serial: as before, and a confirmation must match ----------------


def pf2_record(tmp_path: Path, serial: str) -> tuple[Path, ValidationRecord]:
    """A passing record of the estim-PF2 simulator unit with ``serial``."""
    identity = DeviceIdentity(
        model=PF2.identity.model,
        serial_number=serial,
        firmware="1.0",
        protocol_version=1,
        capabilities=frozenset({"sim-fault-injection"}),
    )
    started = datetime(2025, 3, 4, 9, 30, tzinfo=UTC)
    record = ValidationRecord(
        profile_sha256=PF2.sha256,
        profile_model=PF2.identity.model,
        device=DeviceUnit.from_identity(identity),
        port="sim",
        technician="Tess Tech",
        started_at=started,
        finished_at=started + timedelta(minutes=3),
        estim_version="test",
        checks=(CheckResult(id="identity", title="Identity", outcome=Outcome.PASS),),
        passed=True,
    )
    return save_record(record, tmp_path / "pf2.json"), record


@pytest.mark.parametrize("confirmed", [None, "sim000000"])
def test_a_unit_that_reports_its_serial_connects_as_before(
    tmp_path: Path, confirmed: str | None
) -> None:
    path, record = pf2_record(tmp_path, "SIM000000")
    confirmation = None if confirmed is None else UnitConfirmation(confirmed, HOW, "Dr Test")
    check = _validation_check(path, record, PF2, confirmation)
    with virtual_rig(dataclasses.replace(make_plan(), validation=check)) as rig:
        assert rig.command(Trigger.CONNECT) is State.CONNECTING
        rig.step(periods=3)
        assert rig.runner.machine.state is not State.FAULT
        kinds = rig.sink.kinds()
        assert "trip" not in kinds
        if confirmed is None:
            assert "unit_confirmation" not in kinds
        else:
            (event,) = [e for e in rig.sink.events if e.kind == "unit_confirmation"]
            assert event.data["matches"] is True
            assert event.data["device_serial"] == "SIM000000"


@pytest.mark.trips("IL-DEVICE-VALIDATION")
def test_a_confirmation_that_is_not_the_serial_the_unit_reports_is_refused(
    tmp_path: Path,
) -> None:
    path, record = pf2_record(tmp_path, "SIM000000")
    confirmation = UnitConfirmation("SIM000007", HOW, "Dr Test")
    check = _validation_check(path, record, PF2, confirmation)
    with virtual_rig(dataclasses.replace(make_plan(), validation=check)) as rig:
        assert rig.command(Trigger.CONNECT) is State.FAULT
        fault = rig.runner.machine.fault
        assert fault is not None
        assert fault.interlock_id == "IL-DEVICE-VALIDATION"
        assert (
            "the unit was confirmed as serial SIM000007 (--unit-serial), but the connected "
            f"{PF2.identity.model} reports serial SIM000000: check the label of the unit "
            "connected, or connect the unit labelled SIM000007"
        ) in fault.reason
        kinds = rig.sink.kinds()
        assert kinds.index("connected") < kinds.index("unit_confirmation") < kinds.index("trip")
        assert check_story(rig.sink.events) == []
        assert not rig.simulator.hardware.any_output_on
