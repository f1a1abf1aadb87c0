"""The bench on a device that cannot measure its own current: the Hasomed RehaStim2.

Amplitude accuracy is measured from outside on the bench load: by the simulator's own
instrument (over its simulator-only command), from a technician's measurements file,
or not at all (then the bench fails and says how to supply them). The record it writes
lets ``estim session start`` pass IL-DEVICE-VALIDATION on that unit, and only there:
a record made on the simulator never vouches for real hardware.

Everything runs over real pseudo-terminals: ``estim sim`` in its own process where the
whole user flow matters, an in-process pty server where a test inspects the device.
Every test ends with the simulator's output stage at zero.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from estim_process import ACKNOWLEDGE, Process, invoke
from typer.testing import CliRunner

from estim.cli import app, main
from estim.device.profile import builtin_profile
from estim.device.simulator import PtyServer, SimulatedDevice
from estim.records.store import Store
from estim.validation.current import accuracy_plan
from estim.validation.record import MeasurementMethod, Outcome, load_record

REHASTIM2 = builtin_profile("hasomed-rehastim2")
PROFILE_FILE = "profiles/hasomed-rehastim2.toml"
LABEL = "RS2-0417"  # the serial on the (simulated) unit's label: ScienceMode2 reports none
UNIT = ("--unit-serial", LABEL)


def trace_records(trace: Path, event: str) -> list[dict[str, object]]:
    return [
        record
        for line in trace.read_text(encoding="utf-8").splitlines()
        if (record := json.loads(line)).get("event") == event
    ]


def outputs_end_at_zero(trace: Path) -> bool:
    last: dict[object, object] = {}
    for record in trace_records(trace, "output"):
        last[record["channel"]] = record["amplitude_ua"]
    return bool(last) and set(last.values()) == {0}


def bench(*args: str) -> tuple[int, str]:
    """``estim profile bench ...`` in-process; exit code and what it printed."""
    return invoke(["profile", "bench", *args])


def bench_with_the_simulator_instrument(port: str, out: Path) -> int:
    """``estim profile bench`` of the RehaStim2 on ``port`` (``estim sim``), run as
    :func:`estim.cli.main`, the record written to ``out``; the exit code."""
    return main(
        [
            "profile", "bench", PROFILE_FILE, "--port", port,
            "--technician", "Tess Tech", *UNIT, "--out", str(out), "--no-interactive",
        ]
    )  # fmt: skip


def measurements_file(path: Path, *, off_by_ma: dict[tuple[int, int], str] | None = None) -> Path:
    """Readings for every test point (equal to commanded unless ``off_by_ma`` says)."""
    lines = [
        "spec_version = 1",
        'technician = "M. Scope"',
        'instrument = "oscilloscope, 10 ohm shunt"',
        "load_ohm = 1000",
    ]
    for point in accuracy_plan(REHASTIM2, 1000):
        key = (point.channel, int(point.commanded_ma))
        measured = (off_by_ma or {}).get(key, str(point.commanded_ma))
        lines += [
            "[[points]]",
            f"channel = {point.channel}",
            f"commanded_ma = {point.commanded_ma}",
            f"measured_ma = {measured}",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def estim_sim(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``estim sim --profile profiles/hasomed-rehastim2.toml`` in its own process."""
    trace = tmp_path / "sim.jsonl"
    sim = Process("sim", "--profile", PROFILE_FILE, "--trace", str(trace))
    try:
        port = sim.wait_for("/dev/")
        yield port.strip(), trace
    finally:
        sim.stop()
    assert outputs_end_at_zero(trace), "the simulator's output stage ends at zero"


@pytest.fixture
def pty_rehastim2() -> Iterator[tuple[str, SimulatedDevice]]:
    """A RehaStim2 simulator on a pty in this process (so a test can inspect it)."""
    device = SimulatedDevice(REHASTIM2, seed=3)
    with PtyServer(device) as server:
        yield server.path, device
    assert not device.hardware.any_output_on


# --- the simulator's instrument -------------------------------------------------------------


@pytest.mark.pty
def test_the_rehastim2_bench_passes_on_estim_sim_with_the_simulator_instrument(
    tmp_path: Path, estim_sim: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    port, trace = estim_sim
    out = tmp_path / "bench.json"
    code = bench_with_the_simulator_instrument(port, out)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "Bench validation PASSED" in printed
    record = load_record(out)
    assert record.passed
    assert {c.id: c.outcome for c in record.checks} == dict.fromkeys(
        ("identity", "amplitude-accuracy", "refuses-over-limit", "watchdog", "stop-latency",
         "open-circuit"),
        Outcome.PASS,
    )  # fmt: skip
    accuracy = record.check("amplitude-accuracy")
    readings = [m for m in accuracy.measurements if m.unit == "uA"]
    plan = accuracy_plan(REHASTIM2, 1000)
    assert [(m.name, m.value) for m in readings] == [
        (f"ch{p.channel} at {p.commanded_ua} uA", p.commanded_ua) for p in plan
    ]
    assert {m.method for m in readings} == {MeasurementMethod.SIMULATOR_INSTRUMENT}
    assert all(m.source and "simulator" in m.source for m in readings)
    # The readings came from the simulator's own instrument, one per test point, and
    # each was taken while that point was really delivered into the 1 kOhm load.
    instrument = trace_records(trace, "instrument")
    assert [(r["channel"], r["peak_ua"]) for r in instrument] == [
        (p.channel, p.commanded_ua) for p in plan
    ]
    loads = [r["spec"] for r in trace_records(trace, "inject") if "load:" in str(r["spec"])]
    assert loads == [f"load:ch={n},ohm=1000" for n in range(1, 9)]
    assert record.device.serial_number == "not reported by ScienceMode2"
    assert record.device.label_serial == LABEL
    assert record.device.label_serial_source == (
        "entered by Tess Tech with --unit-serial, from the unit's label"
    )
    assert "sim-fault-injection" in record.device.capabilities


# --- a technician's measurements file -------------------------------------------------------


@pytest.mark.pty
def test_a_measurements_file_within_tolerance_passes(
    tmp_path: Path, pty_rehastim2: tuple[str, SimulatedDevice]
) -> None:
    path, device = pty_rehastim2
    readings = measurements_file(
        tmp_path / "m.toml", off_by_ma={(1, 11): "12.95", (3, 102): "97.0", (8, 56): "58.8"}
    )
    out = tmp_path / "bench.json"
    code, printed = bench(
        PROFILE_FILE, "--port", path, "--technician", "Tess Tech", *UNIT,
        "--measurements", str(readings), "--out", str(out), "--no-interactive",
    )  # fmt: skip
    assert code == 0, printed
    record = load_record(out)
    assert record.passed
    accuracy = record.check("amplitude-accuracy")
    by_name = {m.name: m for m in accuracy.measurements}
    edge = by_name["ch8 at 56000 uA"]
    assert (edge.value, edge.limit, edge.passed) == (58_800, "56000 +/- 2800 uA", True)
    assert by_name["ch1 at 11000 uA"].value == 12_950
    assert by_name["ch3 at 102000 uA"].value == 97_000
    reading = by_name["ch2 at 28000 uA"]
    assert reading.method is MeasurementMethod.EXTERNAL_INSTRUMENT
    assert reading.source is not None
    assert "recorded by M. Scope in" in reading.source
    assert "oscilloscope, 10 ohm shunt" in reading.source
    assert by_name["method"].text is not None
    assert by_name["method"].text.startswith("external instrument, recorded by M. Scope")
    # The file, not the simulator's instrument, was the source: it was never asked.
    assert not device.trace.records("instrument")
    # Every point was still commanded on the device: 32 times the output went on.
    switched_on = [r for r in device.trace.records("output") if r["output_on"]]
    assert len(switched_on) >= 32


@pytest.mark.pty
def test_a_reading_out_of_tolerance_fails_the_bench(
    tmp_path: Path, pty_rehastim2: tuple[str, SimulatedDevice]
) -> None:
    path, _device = pty_rehastim2
    readings = measurements_file(tmp_path / "m.toml", off_by_ma={(2, 28): "30.001"})
    out = tmp_path / "bench.json"
    code, printed = bench(
        PROFILE_FILE, "--port", path, "--technician", "Tess Tech", *UNIT,
        "--measurements", str(readings), "--out", str(out), "--no-interactive",
    )  # fmt: skip
    assert code == 1, printed
    assert "Bench validation FAILED" in printed
    record = load_record(out)
    assert not record.passed
    accuracy = record.check("amplitude-accuracy")
    assert accuracy.outcome is Outcome.FAIL
    assert accuracy.detail == "measured current strayed beyond the tolerance"
    failed = [m for m in accuracy.measurements if m.passed is False]
    assert [(m.name, m.value, m.limit) for m in failed] == [
        ("ch2 at 28000 uA", 30_001, "28000 +/- 2000 uA")
    ]
    assert record.check("watchdog").outcome is Outcome.PASS


@pytest.mark.pty
def test_a_measurements_file_that_does_not_match_is_refused_before_output(
    tmp_path: Path, pty_rehastim2: tuple[str, SimulatedDevice]
) -> None:
    path, device = pty_rehastim2
    readings = measurements_file(tmp_path / "m.toml")
    text = readings.read_text(encoding="utf-8").replace("commanded_ma = 102", "commanded_ma = 100")
    readings.write_text(text, encoding="utf-8")
    code, printed = bench(
        PROFILE_FILE, "--port", path, "--measurements", str(readings),
        "--out", str(tmp_path / "r.json"), "--no-interactive",
    )  # fmt: skip
    assert code == 2, printed
    assert "do not match the bench's test points" in printed
    assert "channel 1 at 100 mA is not a test point" in printed
    assert "no reading for channel 1 at 102 mA" in printed
    assert "Traceback" not in printed
    assert not (tmp_path / "r.json").exists()
    received = [r for r in device.trace.records("frame") if r["direction"] == "in"]
    assert not received, "refused before the port was opened"


# --- nobody to measure: not verified, and how to fix it -----------------------------------


@pytest.mark.pty
def test_without_measurements_a_real_device_is_not_verified_and_told_how(
    tmp_path: Path, pty_rehastim2: tuple[str, SimulatedDevice]
) -> None:
    path, device = pty_rehastim2
    device.personality.inject_fault = None  # answers the probe like a real RehaStim2
    out = tmp_path / "bench.json"
    code, printed = bench(
        PROFILE_FILE, "--port", path, "--technician", "Tess Tech", *UNIT,
        "--out", str(out), "--no-interactive",
    )  # fmt: skip
    assert code == 1, printed
    assert "Bench validation FAILED" in printed
    record = load_record(out)
    accuracy = record.check("amplitude-accuracy")
    assert accuracy.outcome is Outcome.NOT_VERIFIED
    assert "cannot measure its output current" in accuracy.detail
    assert "channels 1-8 at 11, 28, 56, 102 mA on a 1000 ohm load" in accuracy.detail
    assert "sim-fault-injection" not in record.device.capabilities
    # The guidance says exactly how to supply the readings.
    flat = " ".join(printed.split())
    assert "Amplitude accuracy was not verified: the RehaStim2 cannot measure" in flat
    assert f"estim profile bench {PROFILE_FILE} --test-points > measurements.toml" in flat
    assert f"--port {path} --measurements measurements.toml" in flat
    assert "--interactive" in flat
    # Nothing was switched on for an accuracy reading nobody could take.
    assert not device.trace.records("instrument")


# --- the record at session start ---------------------------------------------------------------


@pytest.mark.pty
def test_the_record_lets_a_rehastim2_session_pass_its_validation_preflight(
    tmp_path: Path, patient_db: Path, estim_sim: tuple[str, Path]
) -> None:
    port, trace = estim_sim
    record = tmp_path / "bench.json"
    assert bench_with_the_simulator_instrument(port, record) == 0
    session = Process(
        "session", "start", "PF-0042", "--port", port, "--profile", PROFILE_FILE,
        "--validation", str(record), *ACKNOWLEDGE, "--titrate-to", "5", "--plain",
        "--db", str(patient_db), "--clinician", "Dr Test", *UNIT,
    )  # fmt: skip
    exit_code = session.interrupt_after(
        "connected: RehaStim2", "amplitude confirmed: 5 mA", "phase on"
    )
    assert exit_code == 4, session.output  # the emergency stop we sent, nothing else
    assert "IL-DEVICE-VALIDATION" not in session.output
    assert "EMERGENCY STOP" in session.output
    with Store.open(patient_db, create=False) as store:
        (recorded,) = store.sessions("PF-0042")
        assert recorded.validation_sha256 is not None
        assert recorded.outcome is not None
        assert recorded.outcome.value == "aborted"
    # estim_sim's teardown checks the output stage ended at zero.
    assert max(int(str(r["amplitude_ua"])) for r in trace_records(trace, "output")) > 0


@pytest.mark.pty
@pytest.mark.trips("IL-DEVICE-VALIDATION")
def test_a_record_made_on_the_simulator_does_not_vouch_for_a_real_rehastim2(
    tmp_path: Path, patient_db: Path, pty_rehastim2: tuple[str, SimulatedDevice]
) -> None:
    path, device = pty_rehastim2
    record = tmp_path / "bench.json"
    code, printed = bench(
        PROFILE_FILE, "--port", path, "--technician", "Tess Tech", *UNIT,
        "--out", str(record), "--no-interactive",
    )  # fmt: skip
    assert code == 0, printed
    device.personality.inject_fault = None  # the next connection looks like real hardware
    result = CliRunner().invoke(
        app,
        [
            "session", "start", "PF-0042", "--port", path, "--profile", PROFILE_FILE,
            "--validation", str(record), *ACKNOWLEDGE, "--titrate-to", "5", "--plain",
            "--db", str(patient_db), "--clinician", "Dr Test", *UNIT,
        ],
    )  # fmt: skip
    assert result.exit_code == 4, result.output
    assert "TRIP IL-DEVICE-VALIDATION" in result.output
    assert "made on estim's simulator" in " ".join(result.output.split())
    assert not device.hardware.any_output_on


# --- the technician at the prompt, through the command line ----------------------------------


def typed_readings(*, stop_after: int | None = None, off: dict[int, str] | None = None) -> str:
    """What a technician types: "y" per channel, one reading per point, "n" to pulling a lead."""
    lines: list[str] = []
    for index, point in enumerate(accuracy_plan(REHASTIM2, 1000)):
        if stop_after is not None and index == stop_after:
            return "\n".join(lines) + "\n"
        if point.commanded_ua == 11_000:
            lines.append("y")  # channel connected
        lines.append((off or {}).get(index, str(point.commanded_ma)))
    lines.append("n")  # cannot pull the electrode lead now
    return "\n".join(lines) + "\n"


@pytest.mark.pty
def test_readings_typed_at_the_prompt_go_into_the_record(
    tmp_path: Path, pty_rehastim2: tuple[str, SimulatedDevice]
) -> None:
    path, device = pty_rehastim2
    device.personality.inject_fault = None  # a real RehaStim2: the technician measures
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        app,
        [
            "profile", "bench", PROFILE_FILE, "--port", path, "--technician", "Tess Tech",
            *UNIT,
            "--instrument", "scope, 10 ohm shunt", "--out", str(out), "--interactive",
        ],
        input=typed_readings(off={10: "55.5 mA"}),  # channel 3 at 56 mA
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # the lead was not pulled: not verified
    record = load_record(out)
    accuracy = record.check("amplitude-accuracy")
    assert accuracy.outcome is Outcome.PASS
    by_name = {m.name: m for m in accuracy.measurements}
    assert by_name["ch3 at 56000 uA"].value == 55_500
    assert by_name["ch3 at 56000 uA"].source == (
        "entered by Tess Tech at the bench prompt; instrument: scope, 10 ohm shunt"
    )
    assert record.check("open-circuit").outcome is Outcome.NOT_VERIFIED
    assert not device.trace.records("instrument")


@pytest.mark.pty
def test_the_input_ending_at_the_prompt_leaves_the_output_off(
    tmp_path: Path, pty_rehastim2: tuple[str, SimulatedDevice]
) -> None:
    path, device = pty_rehastim2
    device.personality.inject_fault = None
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        app,
        [
            "profile", "bench", PROFILE_FILE, "--port", path, "--technician", "Tess Tech",
            *UNIT,
            "--out", str(out), "--interactive",
        ],
        input=typed_readings(stop_after=6),
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    record = load_record(out)
    accuracy = record.check("amplitude-accuracy")
    assert accuracy.outcome is Outcome.NOT_VERIFIED
    assert "the input ended" in accuracy.detail
    assert record.check("open-circuit").outcome is Outcome.NOT_VERIFIED
    assert "Amplitude accuracy was not verified" in " ".join(result.output.split())


@pytest.mark.pty
def test_ctrl_c_during_the_bench_stops_the_output_and_writes_no_record(
    tmp_path: Path, estim_sim: tuple[str, Path]
) -> None:
    port, _trace = estim_sim
    out = tmp_path / "bench.json"
    run = Process(
        "profile", "bench", PROFILE_FILE, "--port", port, "--technician", "Tess Tech", *UNIT,
        "--out", str(out), "--no-interactive",
    )  # fmt: skip
    # Ctrl-C once the 2 s watchdog check is under way.
    code = run.interrupt_after("bench: Watchdog stops output")
    assert code == 4, run.output
    assert "stopped (Ctrl-C): output stopped, port closed; no record written" in run.output
    assert "Traceback" not in run.output
    assert not out.exists()
    # estim_sim's teardown checks the output stage ended at zero.


# --- other simulators and bad options ----------------------------------------------------------


def test_an_in_process_simulator_measures_for_a_profile_without_readback(tmp_path: Path) -> None:
    from estim.device.profile import load_profile
    from estim.files import to_toml

    pf2 = builtin_profile("estim-pf2")
    data = pf2.model_dump(mode="python")
    data["measurement"] = {**data["measurement"], "measures_current": False}
    blind = tmp_path / "pf2-no-readback.toml"
    blind.write_text(to_toml(type(pf2).model_validate(data)), encoding="utf-8")
    assert not load_profile(blind).measurement.measures_current
    out = tmp_path / "bench.json"
    code, printed = bench(
        str(blind), "--port", "sim", "--technician", "Tess Tech", "--out", str(out),
        "--no-interactive",
    )  # fmt: skip
    assert code == 0, printed
    accuracy = load_record(out).check("amplitude-accuracy")
    readings = [m for m in accuracy.measurements if m.unit == "uA"]
    assert readings
    assert all(m.passed for m in readings)
    assert {m.source for m in readings} == {
        "estim simulator load model, read from the in-process simulator"
    }


def test_the_test_points_print_as_a_file_to_fill_in() -> None:
    code, printed = bench(PROFILE_FILE, "--test-points", "--load-ohm", "2000")
    assert code == 0
    assert printed.count("[[points]]") == 32
    assert "load_ohm = 2000" in printed
    assert "commanded_ma = 51" in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give the device: --port"),
        (["--load-ohm", "500", "--port", "sim"], "--load-ohm 500 but"),
        (["--instrument", "scope", "--port", "sim"], "--instrument is for readings typed"),
    ],
)
def test_conflicting_or_missing_options_are_refused_with_exit_2(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    readings = measurements_file(tmp_path / "m.toml")
    args = [PROFILE_FILE, *extra]
    if extra:
        args += ["--measurements", str(readings)]
    code, printed = bench(*args)
    assert code == 2, printed
    assert message in " ".join(printed.split())
