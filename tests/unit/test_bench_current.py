"""Output current measured from outside at the bench: test points, files, the technician.

The bench commands each test point on a known load and takes the reading from an
external source when the device cannot measure its own current. Here: the plan (pure),
the measurements file (every kind of bad input refused with a clear message), the
technician's typing, and the bench itself in virtual time against a RehaStim2
simulator that answers like real hardware, with a scripted technician who checks,
at every question, that the output is on exactly when a reading is being taken.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from rich.console import Console

from estim.cli.bench_prompt import BenchTerminal
from estim.clock import VirtualClock
from estim.device.base import DeviceIdentity
from estim.device.profile import builtin_profile
from estim.device.sciencemode2.driver import ScienceMode2Stimulator
from estim.device.simulator import SimulatedDevice
from estim.errors import InputError, PreflightBlocked
from estim.validation.bench import BenchValidation
from estim.validation.current import (
    AccuracyPoint,
    CurrentReading,
    TechnicianEntry,
    accuracy_plan,
    describe_plan,
    load_measurements,
    measurements_template,
    parse_measured_ma,
)
from estim.validation.record import (
    MeasurementMethod,
    Outcome,
    ValidationRecord,
    check_record,
    load_record,
    record_problems,
    save_record,
)

REHASTIM2 = builtin_profile("hasomed-rehastim2")
PLAN = accuracy_plan(REHASTIM2, 1000)


# --- the plan ---------------------------------------------------------------------------------


def test_the_rehastim2_plan_on_a_1_kohm_load() -> None:
    # Usable: min(126 mA, 90 % of 126 V / 1 kOhm = 113.4 mA); 10/25/50/90 %, whole mA.
    assert len(PLAN) == 8 * 4
    assert sorted({p.commanded_ua for p in PLAN}) == [11_000, 28_000, 56_000, 102_000]
    # Tolerance: the larger of 2 mA and 5 %.
    assert {p.commanded_ua: p.tolerance_ua for p in PLAN} == {
        11_000: 2000,
        28_000: 2000,
        56_000: 2800,
        102_000: 5100,
    }
    assert describe_plan(PLAN) == "channels 1-8 at 11, 28, 56, 102 mA on a 1000 ohm load"


def test_a_higher_load_lowers_the_points_to_what_compliance_allows() -> None:
    plan = accuracy_plan(REHASTIM2, 2000)  # 90 % of 63 mA = 56.7 mA usable
    assert sorted({p.commanded_ua for p in plan}) == [5000, 14_000, 28_000, 51_000]
    with pytest.raises(InputError, match="above 0 ohm"):
        accuracy_plan(REHASTIM2, 0)


def test_a_point_accepts_exactly_its_window() -> None:
    point = AccuracyPoint(
        channel=2, commanded_ua=56_000, load_ohm=1000, tolerance_ua=Fraction(2800)
    )
    assert point.accepts(53_200)
    assert point.accepts(58_800)
    assert not point.accepts(53_199)
    assert not point.accepts(58_801)
    assert point.window() == "53.2 to 58.8 mA (56 mA +/- 2.8 mA)"
    assert point.limit() == "56000 +/- 2800 uA"
    assert str(point) == "channel 2 at 56 mA"


# --- what the technician types ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "expected"),
    [("11.2", "11.2"), (" 11.2 mA ", "11.2"), ("11,25", "11.25"), ("0", "0"), ("102", "102")],
)
def test_typed_currents_are_read_exactly(typed: str, expected: str) -> None:
    assert parse_measured_ma(typed) == Decimal(expected)


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("", "not a current"),
        ("abc", "not a current"),
        ("1e3", "not a current"),
        ("nan", "not a current"),
        ("-1", "0 mA or more"),
        ("11.2345", "decimal places"),
    ],
)
def test_typed_nonsense_is_refused(typed: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_measured_ma(typed)


# --- the measurements file --------------------------------------------------------------------


def filled_template(path: Path, *, measured: str | None = None) -> Path:
    """The --test-points template with every reading filled in (= commanded by default)."""
    lines = []
    commanded = ""
    for line in measurements_template(REHASTIM2, PLAN).splitlines():
        if line.startswith("commanded_ma = "):
            commanded = line.removeprefix("commanded_ma = ")
        filled = f"measured_ma = {measured or commanded}"
        lines.append(filled if line.startswith("# measured_ma =") else line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_template_lists_every_point_and_cannot_pass_unfilled(tmp_path: Path) -> None:
    text = measurements_template(REHASTIM2, PLAN)
    assert text.count("[[points]]") == 32
    assert "# measured_ma =     # passes from 96.9 to 107.1 mA (102 mA +/- 5.1 mA)" in text
    unfilled = tmp_path / "unfilled.toml"
    unfilled.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=r"points\.0\.measured_ma: Field required"):
        load_measurements(unfilled, technician="T. Tech")


def test_a_filled_template_matches_the_plan(tmp_path: Path) -> None:
    recorded = load_measurements(filled_template(tmp_path / "m.toml"), technician="T. Tech")
    recorded.match(PLAN)
    assert recorded.load_ohm == 1000
    assert recorded.technician == "T. Tech"  # the file names nobody: the bench's technician
    reading = recorded.read(PLAN[5])
    assert reading.measured_ua == PLAN[5].commanded_ua
    assert reading.method is MeasurementMethod.EXTERNAL_INSTRUMENT
    assert reading.source.startswith(f"recorded by T. Tech in {tmp_path / 'm.toml'} (sha256 ")


def test_a_json_file_reads_the_same(tmp_path: Path) -> None:
    data = {
        "technician": "M. Scope",
        "instrument": "true-rms meter",
        "load_ohm": 1000,
        "points": [
            {"channel": p.channel, "commanded_ma": int(p.commanded_ma), "measured_ma": 1.5}
            for p in PLAN
        ],
    }
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    recorded = load_measurements(path, technician="T. Tech")
    recorded.match(PLAN)
    assert recorded.read(PLAN[0]).measured_ua == 1500
    assert "recorded by M. Scope" in recorded.describe()
    assert "instrument: true-rms meter" in recorded.describe()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("load_ohm = 1000", "load_ohm = 1000\ncolour = 'red'"), "colour"),
        (lambda t: t.replace("load_ohm = 1000", "load_ohm = -5"), "load_ohm"),
        (lambda t: t.replace("measured_ma = 11\n", "measured_ma = 11.0001\n", 1), "decimal"),
        (lambda t: t.replace("measured_ma = 11\n", "measured_ma = -1\n", 1), "measured_ma"),
        (lambda t: t.replace("measured_ma = 11\n", 'measured_ma = "eleven"\n', 1), "measured"),
        (lambda t: t.replace("spec_version = 1", "spec_version = 7"), "newer"),
        (lambda t: t.replace('kind = "estim-bench-measurements"', 'kind = "x"'), "kind"),
        (lambda t: t.replace("[[points]]", "[[point]]"), "point"),
        (lambda t: t + "oops = [", "not valid TOML"),
    ],
)
def test_a_bad_file_is_refused_with_the_field_named(
    tmp_path: Path, edit: object, message: str
) -> None:
    path = filled_template(tmp_path / "m.toml")
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")  # type: ignore[operator]
    with pytest.raises(InputError, match=message):
        load_measurements(path, technician="T. Tech")


def test_readings_that_do_not_match_the_points_are_all_named(tmp_path: Path) -> None:
    path = filled_template(tmp_path / "m.toml")
    text = path.read_text(encoding="utf-8")
    text = text.replace("channel = 8\ncommanded_ma = 102", "channel = 9\ncommanded_ma = 102")
    text = text.replace("channel = 2\ncommanded_ma = 11", "channel = 1\ncommanded_ma = 11")
    path.write_text(text, encoding="utf-8")
    recorded = load_measurements(path, technician="T. Tech")
    with pytest.raises(InputError) as caught:
        recorded.match(PLAN)
    problems = [str(p) for p in caught.value.problems]
    assert len(problems) == 3, problems
    assert "points[4]: a second reading for channel 1 at 11 mA" in problems[0]
    assert "points[31]: channel 9 at 102 mA is not a test point of this bench" in problems[1]
    assert "no reading for channel 2 at 11 mA, channel 8 at 102 mA" in problems[2]
    assert "print them with --test-points" in problems[1]


# --- the technician at the bench, in virtual time ----------------------------------------------


class Technician:
    """A scripted technician who also checks the output at every question."""

    def __init__(self, device: SimulatedDevice, answers: dict[tuple[int, int], object]) -> None:
        self.device = device
        self.answers = answers  # (channel, commanded uA) -> mA, None, or an exception
        self.asked: list[AccuracyPoint] = []
        self.connected: list[tuple[int, int]] = []
        self.off_after: list[int] = []
        self.connect_answer: bool = True

    def _delivering(self) -> dict[int, int]:
        return {o.channel: o.amplitude_ua for o in self.device.hardware.outputs() if o.output_on}

    def ready(self, channel: int, load_ohm: int) -> bool:
        assert self._delivering() == {}, "output must be off while the load is connected"
        self.connected.append((channel, load_ohm))
        return self.connect_answer

    def measured_ma(self, point: AccuracyPoint) -> Decimal | None:
        assert self._delivering() == {point.channel: point.commanded_ua}
        self.asked.append(point)
        answer = self.answers.get((point.channel, point.commanded_ua), point.commanded_ma)
        if isinstance(answer, BaseException):
            raise answer
        return None if answer is None else Decimal(str(answer))

    def output_off(self, point: AccuracyPoint, reading: CurrentReading) -> None:
        assert self._delivering() == {}, "output must be off once the reading is taken"
        self.off_after.append(reading.measured_ua)


@pytest.fixture
def real_looking() -> Iterator[tuple[SimulatedDevice, ScienceMode2Stimulator]]:
    """A RehaStim2 simulator that answers the simulator probe like real hardware."""
    clock = VirtualClock()
    with SimulatedDevice(REHASTIM2, clock=clock) as device:
        device.personality.inject_fault = None
        driver = ScienceMode2Stimulator(REHASTIM2, device.url, clock=clock)
        driver.open()
        try:
            yield device, driver
        finally:
            driver.close()
        assert not device.hardware.any_output_on


def run_bench(
    driver: ScienceMode2Stimulator, technician: Technician
) -> tuple[ValidationRecord, list[str]]:
    progress: list[str] = []
    record = BenchValidation(
        REHASTIM2,
        driver,
        technician="Tess Tech",
        port="/dev/ttyUSB0",
        label_serial="RS2-0417",
        current_source=TechnicianEntry(
            technician, technician="Tess Tech", instrument="scope, 10 ohm shunt"
        ),
        progress=progress.append,
    ).run()
    return record, progress


def test_the_technician_reads_every_point_with_the_output_on_only_then(
    real_looking: tuple[SimulatedDevice, ScienceMode2Stimulator],
) -> None:
    device, driver = real_looking
    technician = Technician(device, {(4, 56_000): "55.1"})
    record, _ = run_bench(driver, technician)
    assert [(p.channel, p.commanded_ua) for p in technician.asked] == [
        (p.channel, p.commanded_ua) for p in PLAN
    ]
    assert technician.connected == [(n, 1000) for n in range(1, 9)]
    assert len(technician.off_after) == 32
    accuracy = record.check("amplitude-accuracy")
    assert accuracy.outcome is Outcome.PASS
    reading = next(m for m in accuracy.measurements if m.name == "ch4 at 56000 uA")
    assert reading.value == 55_100
    assert reading.method is MeasurementMethod.EXTERNAL_INSTRUMENT
    assert reading.source == (
        "entered by Tess Tech at the bench prompt; instrument: scope, 10 ohm shunt"
    )
    # A real device with nobody to pull a lead: the open-circuit check is not verified.
    assert record.check("open-circuit").outcome is Outcome.NOT_VERIFIED


def test_a_reading_out_of_tolerance_fails(
    real_looking: tuple[SimulatedDevice, ScienceMode2Stimulator],
) -> None:
    device, driver = real_looking
    record, _ = run_bench(driver, Technician(device, {(1, 11_000): "8.999"}))
    accuracy = record.check("amplitude-accuracy")
    assert accuracy.outcome is Outcome.FAIL
    assert [m.name for m in accuracy.measurements if m.passed is False] == ["ch1 at 11000 uA"]


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        (None, "not measured: the technician could not measure channel 2 at 28 mA"),
        (EOFError(), "not measured: the input ended before every test point was measured"),
    ],
    ids=["skipped", "end-of-input"],
)
def test_a_missing_reading_is_not_verified_and_the_output_goes_off(
    real_looking: tuple[SimulatedDevice, ScienceMode2Stimulator], answer: object, detail: str
) -> None:
    device, driver = real_looking
    technician = Technician(device, {(2, 28_000): answer})
    record, _ = run_bench(driver, technician)
    accuracy = record.check("amplitude-accuracy")
    assert accuracy.outcome is Outcome.NOT_VERIFIED
    assert accuracy.detail.startswith(detail)
    assert "channels 1-8 at 11, 28, 56, 102 mA" in accuracy.detail
    assert len(technician.asked) == 6  # four on channel 1, then 11 and 28 mA on channel 2
    assert not record.passed
    # The output went off at once: after channel 2 came on at 28 mA (the unanswered
    # point), the device stopped before its output came on again for anything.
    records = device.trace.records()
    [asked_at] = [
        i
        for i, r in enumerate(records)
        if r["event"] == "output"
        and r["output_on"]
        and (r["channel"], r["amplitude_ua"]) == (2, 28_000)
    ]
    after = records[asked_at + 1 :]
    next_stop = next((i for i, r in enumerate(after) if r["event"] == "stop"), len(after))
    next_on = next(
        (i for i, r in enumerate(after) if r["event"] == "output" and r["output_on"]), len(after)
    )
    assert next_stop < next_on, "no STOP before the output came on again"
    assert not device.hardware.any_output_on


def test_a_reading_out_of_tolerance_fails_even_if_a_later_one_is_missing(
    real_looking: tuple[SimulatedDevice, ScienceMode2Stimulator],
) -> None:
    device, driver = real_looking
    record, _ = run_bench(driver, Technician(device, {(1, 11_000): "20", (1, 28_000): None}))
    accuracy = record.check("amplitude-accuracy")
    assert accuracy.outcome is Outcome.FAIL
    assert accuracy.detail.startswith("measured current strayed beyond the tolerance; not ")


def test_a_channel_the_technician_cannot_connect_is_not_verified(
    real_looking: tuple[SimulatedDevice, ScienceMode2Stimulator],
) -> None:
    device, driver = real_looking
    technician = Technician(device, {})
    technician.connect_answer = False
    record, _ = run_bench(driver, technician)
    accuracy = record.check("amplitude-accuracy")
    assert accuracy.outcome is Outcome.NOT_VERIFIED
    assert "the technician did not connect channel 1" in accuracy.detail
    assert technician.asked == []


def test_ctrl_c_at_the_prompt_stops_the_output_and_ends_the_bench(
    real_looking: tuple[SimulatedDevice, ScienceMode2Stimulator],
) -> None:
    device, driver = real_looking
    technician = Technician(device, {(1, 56_000): KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        run_bench(driver, technician)
    assert not device.hardware.any_output_on  # before the driver closes (fixture)
    assert device.trace.records("stop")[-1]["reason"] == "StopChannelListMode"


def test_ctrl_c_at_the_open_electrode_prompt_leaves_the_output_off(
    real_looking: tuple[SimulatedDevice, ScienceMode2Stimulator],
) -> None:
    device, driver = real_looking
    asked: list[bool] = []

    def pull_the_lead(text: str) -> bool:
        asked.append(device.hardware.any_output_on)  # on while the lead is to be pulled
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        BenchValidation(
            REHASTIM2,
            driver,
            technician="Tess Tech",
            port="/dev/ttyUSB0",
            label_serial="RS2-0417",
            prompt=pull_the_lead,
            current_source=TechnicianEntry(Technician(device, {}), technician="Tess Tech"),
        ).run()
    assert asked == [True]
    assert not device.hardware.any_output_on  # before the driver closes (fixture)


# --- the terminal the technician sees ----------------------------------------------------------


@pytest.fixture
def screen() -> io.StringIO:
    return io.StringIO()


def terminal_with(
    screen: io.StringIO, typed: str, monkeypatch: pytest.MonkeyPatch
) -> BenchTerminal:
    monkeypatch.setattr("sys.stdin", io.StringIO(typed))
    console = Console(file=screen, width=200, highlight=False, color_system=None)
    return BenchTerminal(console, instrument="scope")


def test_the_terminal_shows_output_on_and_asks_again_after_nonsense(
    screen: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = terminal_with(screen, "y\neleven\n11.4 mA\ns\n", monkeypatch)
    point = PLAN[0]
    assert terminal.ready(1, 1000) is True
    assert terminal.measured_ma(point) == Decimal("11.4")
    terminal.output_off(point, CurrentReading(11_400, MeasurementMethod.EXTERNAL_INSTRUMENT, "x"))
    assert terminal.measured_ma(PLAN[1]) is None  # "s": cannot measure
    shown = screen.getvalue()
    assert "connect the 1000 ohm bench load to channel 1" in shown
    assert "(scope)" in shown
    assert (
        " OUTPUT ON  channel 1: 11 mA commanded into the 1000 ohm load; "
        "passes from 9 to 13 mA (11 mA +/- 2 mA)" in shown
    )
    assert "'eleven' is not a current in mA" in shown
    assert " output off  channel 1: 11.4 mA read, within tolerance" in shown


def test_a_reading_outside_the_window_is_confirmed_before_it_is_kept(
    screen: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = terminal_with(screen, "1.2\nn\n12\n8\ny\n", monkeypatch)
    assert terminal.measured_ma(PLAN[0]) == Decimal("12")  # the typo, typed again
    assert terminal.measured_ma(PLAN[0]) == Decimal("8")  # out of tolerance, kept
    shown = " ".join(screen.getvalue().split())
    assert shown.count("is outside 9 to 13 mA (11 mA +/- 2 mA): record it as measured") == 2


def test_the_terminal_says_out_of_tolerance(
    screen: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = terminal_with(screen, "", monkeypatch)
    terminal.output_off(PLAN[0], CurrentReading(14_000, MeasurementMethod.EXTERNAL_INSTRUMENT, ""))
    assert "14 mA read, OUT OF TOLERANCE" in screen.getvalue()


def test_the_end_of_input_ends_every_question(
    screen: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = terminal_with(screen, "", monkeypatch)
    with pytest.raises(EOFError):
        terminal.measured_ma(PLAN[0])
    assert terminal.input_ended
    assert terminal.confirm("Output is ON on channel 1. Disconnect the lead.") is False
    with pytest.raises(EOFError):
        terminal.ready(2, 1000)
    assert "input ended: no more questions" in screen.getvalue()


# --- the record ---------------------------------------------------------------------------------


@pytest.fixture
def simulator_record() -> ValidationRecord:
    clock = VirtualClock()
    with SimulatedDevice(REHASTIM2, clock=clock) as device:
        driver = ScienceMode2Stimulator(REHASTIM2, device.url, clock=clock)
        driver.open()
        try:
            return BenchValidation(
                REHASTIM2, driver, technician="T", port=device.url, label_serial="SIM-RS2-1"
            ).run()
        finally:
            driver.close()


def test_the_simulator_instrument_passes_the_rehastim2_in_virtual_time(
    simulator_record: ValidationRecord,
) -> None:
    assert simulator_record.passed
    readings = [
        m for m in simulator_record.check("amplitude-accuracy").measurements if m.unit == "uA"
    ]
    assert len(readings) == 32
    assert {m.method for m in readings} == {MeasurementMethod.SIMULATOR_INSTRUMENT}


def test_the_record_round_trips_with_its_methods_and_reads_format_1(
    simulator_record: ValidationRecord, tmp_path: Path
) -> None:
    path = save_record(simulator_record, tmp_path / "r.json")
    assert load_record(path) == simulator_record
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["spec_version"] == 3
    assert data["checks"][1]["measurements"][2]["method"] == "simulator instrument"
    # A format-1 record (before methods and label serials existed) still reads.
    data["spec_version"] = 1
    del data["device"]["label_serial"], data["device"]["label_serial_source"]
    for check in data["checks"]:
        for measurement in check.get("measurements", []):
            measurement.pop("method", None)
            measurement.pop("source", None)
    (tmp_path / "v1.json").write_text(json.dumps(data), encoding="utf-8")
    old = load_record(tmp_path / "v1.json")
    assert old.passed
    assert all(m.method is None for c in old.checks for m in c.measurements)


def test_a_rehastim2_record_vouches_for_the_simulator_it_was_made_on_only(
    simulator_record: ValidationRecord,
) -> None:
    simulator = DeviceIdentity(
        model="RehaStim2",
        serial_number="not reported by ScienceMode2",
        firmware="1",
        protocol_version=1,
        manufacturer="HASOMED GmbH",
        capabilities=frozenset({"sciencemode2", "channel-list-mode", "sim-fault-injection"}),
    )
    check_record(simulator_record, REHASTIM2, simulator, unit_serial="SIM-RS2-1")
    real = DeviceIdentity(
        model="RehaStim2",
        serial_number="not reported by ScienceMode2",
        firmware="1",
        protocol_version=1,
        capabilities=frozenset({"sciencemode2", "channel-list-mode"}),
    )
    assert record_problems(simulator_record, REHASTIM2, real, unit_serial="SIM-RS2-1") == [
        "the record was made on estim's simulator; the connected device is not a simulator"
    ]
    with pytest.raises(PreflightBlocked) as caught:
        check_record(None, REHASTIM2, real)
    assert "no bench validation record for this RehaStim2 (its serial number is not reported" in (
        str(caught.value)
    )


def test_the_watchdog_margin_is_20_ms_or_a_fortieth_of_the_timeout() -> None:
    from estim.validation.bench import watchdog_limit_ms

    assert watchdog_limit_ms(250) == 270  # estim-wire simulator
    assert watchdog_limit_ms(800) == 820
    assert watchdog_limit_ms(2000) == 2050  # RehaStim2
    assert watchdog_limit_ms(2001) == 2052  # rounded up, never down
