"""The ``make bench`` harness: discovery, statistics and the JSON it writes (no timing)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import Figure, figure_from_ns, percentile
from bench.__main__ import figure_functions, main


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 201)]
    assert percentile(values, 0.50) == 100
    assert percentile(values, 0.99) == 198
    assert percentile([7.0], 0.99) == 7


def test_figures_are_in_milliseconds_and_judge_their_target() -> None:
    figure = figure_from_ns("x", [1_000_000, 3_000_000, 2_000_000], target_ms=2.5)
    assert (figure.p50, figure.p99, figure.max, figure.n) == (2.0, 3.0, 3.0, 3)
    assert figure.passed is False
    data = figure.to_json()
    assert data["unit"] == "ms"
    assert data["pass"] is False
    assert Figure("y", 1, 1, 1, 1).to_json().keys() == {"name", "unit", "p50", "p99", "max", "n"}


def test_every_bench_module_contributes_figure_functions() -> None:
    names = [name for name, _ in figure_functions()]
    assert "wire.figure_stop_all_to_output_zero" in names
    assert "wire.figure_watchdog_trip" in names
    assert "wire.figure_codec_throughput" in names


def test_a_quick_run_writes_the_json_list(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["--quick", "--only", "wire.figure_codec", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert [f["name"].split(" (")[0] for f in figures] == [
        "codec: decode one STATUS reply",
        "codec: encode one STATUS reply",
    ]
    for figure in figures:
        assert {"name", "unit", "p50", "p99", "max", "n"} <= figure.keys()
        assert figure["unit"] == "ms"


def test_the_replay_baseline_makes_the_same_device_calls_as_the_session() -> None:
    """The virtual-time floor replays a session's calls: the replaying device must
    deliver exactly what the session's device delivered, at the same instants."""

    from bench.session import PROFILE, TARGET_UA, DeviceCall, record_device_calls
    from bench.session import replay_device_calls as replay
    from estim.clock import VirtualClock
    from estim.device.registry import create_stimulator
    from estim.device.simulator import SimulatedDevice
    from estim.events import MemorySink
    from estim.session.director import AutoSession
    from estim.session.runner import SessionRunner
    from estim.testing.session import make_plan

    plan = make_plan(cycles=2)
    clock = VirtualClock()
    calls: list[DeviceCall] = []
    with SimulatedDevice(PROFILE, clock=clock, seed=0) as session_device:
        driver = create_stimulator(PROFILE, session_device.url, clock=clock)
        record_device_calls(driver, clock, calls)
        runner = SessionRunner(
            driver, plan, clock=clock, sink=MemorySink(), director=AutoSession(target_ua=TARGET_UA)
        )
        assert runner.run().outcome.value == "completed"
        delivered = [
            (r["clock_ns"], r["amplitude_ua"], r["output_on"])
            for r in session_device.trace.records("output")
        ]
    methods = {call.method for call in calls}
    assert {"configure", "output_on", "set_amplitudes", "status", "stop_all"} <= methods
    with SimulatedDevice(PROFILE, clock=VirtualClock(), seed=0) as replay_device:
        assert replay(calls, 0, replay_device) > 0
        replayed = [
            (r["clock_ns"], r["amplitude_ua"], r["output_on"])
            for r in replay_device.trace.records("output")
        ]
    assert any(amplitude == TARGET_UA for _, amplitude, _ in delivered)
    assert replayed == delivered
