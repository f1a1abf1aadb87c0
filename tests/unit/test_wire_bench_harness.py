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
