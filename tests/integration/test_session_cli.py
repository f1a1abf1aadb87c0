"""``estim demo`` and ``estim session start`` as a user runs them.

Real processes where signals matter (Ctrl-C and SIGTERM are emergency stops), a real
``estim sim`` on a pty where the demo is pointed at one, and the demo database checked
afterwards: the session is recorded, its chain verifies, and the report exists.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from estim_process import BOUND_S, Process, invoke

from estim.device.profile import builtin_profile
from estim.device.simulator import PtyServer, SimulatedDevice
from estim.records.store import Store


@pytest.fixture
def estim_sim(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``estim sim`` in its own process; yields its port and trace file."""
    trace = tmp_path / "sim.jsonl"
    sim = Process("sim", "--trace", str(trace))
    try:
        port = sim.wait_for("/dev/")
        yield port.strip(), trace
    finally:
        sim.stop()


def last_output_amplitudes(trace: Path) -> dict[int, int]:

    last: dict[int, int] = {}
    for line in trace.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("event") == "output":
            last[int(record["channel"])] = int(record["amplitude_ua"])
    return last


def sessions(db: Path) -> list[object]:
    with Store.open(db, create=False) as store:
        return list(store.sessions())


# --- estim demo ------------------------------------------------------------------------


def test_demo_virtual_runs_a_full_length_session_and_records_it(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    code, out = invoke(["demo", "--virtual", "--db", str(db)])
    assert code == 0, out
    assert "estim demo: a full-length stress session in virtual time" in out
    assert "connected: PF-2 pelvic NMES" in out
    assert "preflight: electrode impedance channel 1" in out
    assert "amplitude confirmed: 12 mA" in out
    assert "70 of 70 planned" in out
    assert "completed" in out
    assert "cycle 70 of 70" in out or "cycle 69 of 70" in out
    report = tmp_path / "DEMO-0001-report.html"
    assert report.is_file()
    assert "<html" in report.read_text(encoding="utf-8").lower()
    with Store.open(db, create=False) as store:
        (record,) = store.sessions()
        assert record.outcome is not None
        assert record.outcome.value == "completed"
        assert store.verify(record.id).ok


def test_demo_uses_the_sites_limits_and_the_log_records_them(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    site = tmp_path / "site-limits.toml"
    site.write_text("spec_version = 1\ntitration_time_max_min = 2\n", encoding="utf-8")
    code, out = invoke(["demo", "--virtual", "--db", str(db), "--limits", str(site)])
    assert code == 0, out
    assert f"limits: {site}, overriding TITRATION_TIME_MAX = 2 min" in out
    with Store.open(db, create=False) as store:
        (record,) = store.sessions()
        session = next(e for e in store.events(record.id) if e.kind == "session")
    data = json.loads(session.data_json)
    assert data["limits_overrides"] == {"TITRATION_TIME_MAX": "2"}
    assert data["titration_cap_us"] == 2 * 60 * 1_000_000
    code, out = invoke(["log", "show", str(record.id), "--db", str(db), "--tail", "1"])
    assert code == 0, out
    assert "TITRATION_TIME_MAX = 2" in out


@pytest.mark.pty
def test_demo_in_real_time_ctrl_c_is_an_emergency_stop(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    demo = Process("demo", "--plain", "--db", str(db))
    code = demo.interrupt_after("stimulation started", "phase on")
    assert code == 4, demo.output
    assert "EMERGENCY STOP (['SIGINT'])" in demo.output
    assert "emergency stop" in demo.output
    assert "device confirmed output off │ yes" in demo.output
    (record,) = sessions(db)
    assert record.outcome.value == "aborted"  # type: ignore[attr-defined]


@pytest.mark.pty
def test_demo_pressed_again_and_again_still_closes_its_record(tmp_path: Path) -> None:
    """People press Ctrl-C again and again in an emergency. Every press is one more
    stop; none cuts the closing of the record short: it is closed from the controller's
    summary (outcome aborted), not as an interrupted session. Once the record is closed
    a press may end the command before it prints its summary."""
    db = tmp_path / "demo.db"
    demo = Process("demo", "--plain", "--db", str(db))
    try:
        demo.wait_for("stimulation started")
        demo.proc.send_signal(signal.SIGINT)
        demo.wait_for("EMERGENCY STOP")
        for _ in range(5):
            if demo.proc.poll() is not None:
                break
            demo.proc.send_signal(signal.SIGINT)
            time.sleep(0.01)
        code = demo.finish()
    finally:
        demo.stop()
    # 4: it finished; 130 or killed by SIGINT: a press after the record was closed
    # ended the command before its summary (click's "Aborted!", or Python's default).
    assert code in (4, 130, -signal.SIGINT), demo.output
    assert "Traceback" not in demo.output
    (record,) = sessions(db)
    assert record.outcome.value == "aborted", record  # type: ignore[attr-defined]
    code, out = invoke(["log", "verify", str(record.id), "--db", str(db)])  # type: ignore[attr-defined]
    assert code == 0, out


@pytest.mark.pty
def test_demo_against_a_running_estim_sim_stops_on_sigterm(
    tmp_path: Path, estim_sim: tuple[str, Path]
) -> None:
    port, trace = estim_sim
    demo = Process("demo", "--port", port, "--db", str(tmp_path / "demo.db"))
    try:
        demo.wait_for(f"device PF-2 pelvic NMES: {port}")
        demo.wait_for("phase on")
        demo.proc.send_signal(signal.SIGTERM)
        code = demo.finish()
    finally:
        demo.stop()
    assert code == 4, demo.output
    assert "EMERGENCY STOP (['SIGTERM'])" in demo.output
    assert last_output_amplitudes(trace) == {1: 0}, "the simulator's output stage ends at zero"


@pytest.mark.pty
@pytest.mark.slow
def test_make_demo_runs_to_completion_in_under_a_minute_of_session(tmp_path: Path) -> None:
    demo = Process("demo", "--db", str(tmp_path / "demo.db"))  # piped: plain lines
    code = demo.finish()
    assert code == 0, demo.output
    out = demo.output
    for expected in (
        "static checks: 0 errors",
        "records preflight: checklist, eligibility and dose clear for DEMO-0001",
        "built-in simulator on /dev/pts/",
        "finish: now completed",
        "phase ramp up   cycle 1 of 2",
        "cycle 2 of 2",
        "completed",
        "2 of 2 planned",
        "session time                │ 34 s",
        "DEMO-0001-report.html",
    ):
        assert expected in out, f"missing {expected!r} in:\n{out}"


def test_demo_refuses_virtual_with_a_port(tmp_path: Path) -> None:
    code, out = invoke(["demo", "--virtual", "--port", "/dev/null", "--db", str(tmp_path / "d.db")])
    assert code == 2
    assert "cannot drive --port" in out


def test_demo_with_a_broken_profile_says_why_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("spec_version = 1\n[identity]\nmodel = 3\n", encoding="utf-8")
    code, out = invoke(["demo", "--virtual", "--profile", str(bad), "--db", str(tmp_path / "d.db")])
    assert code == 2
    assert "identity" in out
    assert "Traceback" not in out


# --- estim session start ------------------------------------------------------------------


@pytest.fixture
def pty_sim() -> Iterator[tuple[str, SimulatedDevice]]:
    device = SimulatedDevice(builtin_profile("estim-pf2"))
    server = PtyServer(device)
    path = server.start()
    try:
        yield path, device
    finally:
        server.stop()


def test_session_start_refuses_before_connecting_when_the_records_block(tmp_path: Path) -> None:
    db = tmp_path / "records.db"
    with Store.open(db) as store:
        store.add_patient("PF-0001", 1970, "no course yet")
    code, out = invoke(
        [
            "session",
            "start",
            "PF-0001",
            "--port",
            "/dev/nonexistent",
            "--titrate-to",
            "5",
            "--db",
            str(db),
            "--clinician",
            "Dr Test",
        ]
    )
    assert code == 1, out
    assert "RX-NONE" in out


@pytest.mark.parametrize("given_by", ["option", "environment"])
def test_session_start_checks_against_the_sites_limits(
    patient_db: Path, tmp_path: Path, given_by: str
) -> None:
    site = tmp_path / "site-limits.toml"
    site.write_text("spec_version = 1\nsession_max_min = 10\n", encoding="utf-8")
    args = [
        *("session", "start", "PF-0042", "--port", "/dev/nonexistent", "--titrate-to", "5"),
        *("--db", str(patient_db), "--clinician", "Dr Test"),
    ]
    if given_by == "option":
        code, out = invoke([*args, "--limits", str(site)])
    else:
        code, out = invoke(args, env={"ESTIM_LIMITS": str(site)})
    assert code == 1, out
    assert f"limits: {site}, overriding SESSION_MAX = 10 min" in out
    assert "ERROR SESSION_MAX" in out
    assert "limit <= 10 min" in out
    assert sessions(patient_db) == [], "blocked before any port was opened"


def test_session_start_refuses_a_malformed_limits_file(patient_db: Path, tmp_path: Path) -> None:
    site = tmp_path / "site-limits.toml"
    site.write_text("spec_version = 1\nsession_max_min = -3\n", encoding="utf-8")
    code, out = invoke(
        [
            *("session", "start", "PF-0042", "--port", "/dev/nonexistent"),
            *("--titrate-to", "5", "--db", str(patient_db), "--limits", str(site)),
        ]
    )
    assert code == 2, out
    assert "session_max_min" in out
    assert sessions(patient_db) == []


def test_session_start_without_a_keyboard_needs_titrate_to(patient_db: Path) -> None:
    code, out = invoke(
        [
            "session",
            "start",
            "PF-0042",
            "--port",
            "/dev/null",
            "--db",
            str(patient_db),
            "--clinician",
            "Dr Test",
        ]
    )
    assert code == 2
    assert "--titrate-to" in out


@pytest.mark.parametrize(
    ("target", "message"),
    [("100", "above the ceiling 20 mA"), ("5.5", "whole number of 1 mA steps"), ("0", "above 0")],
)
def test_session_start_refuses_a_titration_target_it_cannot_reach(
    patient_db: Path, target: str, message: str
) -> None:
    code, out = invoke(
        [
            *("session", "start", "PF-0042", "--port", "/dev/null", "--titrate-to", target),
            *("--db", str(patient_db), "--clinician", "Dr Test"),
        ]
    )
    assert code == 2, out
    assert message in out


@pytest.mark.pty
@pytest.mark.trips("IL-DEVICE-VALIDATION")
def test_session_start_refuses_a_unit_without_a_bench_record(
    patient_db: Path, pty_sim: tuple[str, SimulatedDevice]
) -> None:
    path, device = pty_sim
    code, out = invoke(
        [
            "session",
            "start",
            "PF-0042",
            "--port",
            path,
            "--titrate-to",
            "5",
            "--plain",
            "--db",
            str(patient_db),
            "--clinician",
            "Dr Test",
        ]
    )
    assert code == 4, out
    assert "TRIP IL-DEVICE-VALIDATION: no bench validation record" in out
    assert not device.hardware.any_output_on


def stimulating_session(port: str, record: Path, patient_db: Path, *options: str) -> Process:
    """Bench PF-2 on ``port`` (the record ``record``), then ``estim session start`` for
    PF-0042 titrated to 8 mA (with ``options`` added), returned once it is stimulating."""
    code, out = invoke(
        [
            "profile", "bench", "profiles/estim-pf2.toml", "--port", port,
            "--technician", "Tess Tech", "--out", str(record),
        ]
    )  # fmt: skip
    assert code == 0, out
    session = Process(
        "session", "start", "PF-0042", "--port", port, "--validation", str(record),
        "--titrate-to", "8", "--plain", "--db", str(patient_db), "--clinician", "Dr Test",
        *options,
    )  # fmt: skip
    try:
        session.wait_for("amplitude confirmed: 8 mA")
        session.wait_for("phase on")
    except BaseException:
        session.stop()
        raise
    return session


@pytest.mark.pty
def test_session_start_with_a_bench_record_stimulates_and_stops_on_ctrl_c(
    tmp_path: Path, patient_db: Path, estim_sim: tuple[str, Path]
) -> None:
    port, trace = estim_sim
    site = tmp_path / "site-limits.toml"  # a site's limits that let the session run
    site.write_text("spec_version = 1\ntitration_time_max_min = 2\n", encoding="utf-8")
    session = stimulating_session(port, tmp_path / "bench.json", patient_db, "--limits", str(site))
    exit_code = session.interrupt_after()
    assert exit_code == 4, session.output
    assert "EMERGENCY STOP" in session.output
    assert set(last_output_amplitudes(trace).values()) == {0}
    with Store.open(patient_db, create=False) as store:
        (recorded,) = store.sessions("PF-0042")
        assert recorded.validation_sha256 is not None
        assert recorded.outcome is not None
        assert recorded.outcome.value == "aborted"
        assert store.verify(recorded.id).ok
        session_event = next(e for e in store.events(recorded.id) if e.kind == "session")
    # The site's limits reached the controller, not only the static checks.
    assert session_event.data["limits_overrides"] == {"TITRATION_TIME_MAX": "2"}
    assert session_event.data["titration_cap_us"] == 2 * 60 * 1_000_000


@pytest.mark.pty
def test_a_session_killed_outright_is_stopped_by_the_device_and_recorded_as_interrupted(
    tmp_path: Path, patient_db: Path, estim_sim: tuple[str, Path]
) -> None:
    """SIGKILL leaves the controller no chance to stop anything: the device's own
    watchdog must take the output to zero, and the records must still hold everything
    committed, with the dose delivered so far, and verify."""

    port, trace = estim_sim
    session = stimulating_session(port, tmp_path / "bench.json", patient_db)
    try:
        time.sleep(2.5)  # a couple of status events with the dose so far
        session.proc.send_signal(signal.SIGKILL)
        assert session.finish() == -signal.SIGKILL
    finally:
        session.stop()
    deadline = time.monotonic() + BOUND_S
    while set(last_output_amplitudes(trace).values()) != {0}:
        assert time.monotonic() < deadline, "the device never stopped on its own"
        time.sleep(0.05)
    # What stopped it is the device's watchdog, after the controller's last frame (how
    # soon is a benchmark figure, not asserted here).
    records = [json.loads(line) for line in trace.read_text(encoding="utf-8").splitlines()]
    received = [r.get("event") == "frame" and r.get("direction") == "in" for r in records]
    last_frame = max(i for i, got in enumerate(received) if got)
    after = records[last_frame + 1 :]
    assert any(r.get("event") == "fault" and "watchdog" in str(r.get("flags")) for r in after)
    with Store.open(patient_db, create=False) as store:
        (found,) = store.recover_interrupted()  # as every records command does first
        (recorded,) = store.sessions("PF-0042")
        assert found.id == recorded.id
        assert recorded.outcome is not None
        assert recorded.outcome.value == "interrupted"
        assert recorded.confirmed_amplitude_ua == 8_000
        assert recorded.on_time_us is not None
        assert recorded.on_time_us > 0
        assert "last event" in (recorded.reason or "")
        assert store.verify(recorded.id).ok
