"""``estim sim`` as a user runs it: a separate process serving a pty.

The first line of its output is the port path; any serial client (here estim's driver)
connects to it; SIGTERM or Ctrl-C stops it with every output off, and the trace file
tells from outside what the device did, stamped with ``time.monotonic_ns()``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from estim.device.base import ChannelConfig, FaultFlag
from estim.device.profile import builtin_profile
from estim.device.wire.driver import WireStimulator
from estim.errors import DeviceError
from estim.protocols.models import ShapeKind

pytestmark = pytest.mark.pty

PF2 = builtin_profile("estim-pf2")
LP1 = builtin_profile("estim-lp1")
CONFIG = ChannelConfig(1, ShapeKind.SYMMETRIC_BIPHASIC, (200, 200), 0, 20_000)


@contextmanager
def estim_sim(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", "from estim.cli import run; run()", "sim", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline().strip()
        yield process, first
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def read_trace(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_first_line_is_the_port_and_sigterm_leaves_output_off(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    with estim_sim("--trace", str(trace), "--seed", "7") as (process, port):
        assert port.startswith("/dev/pts/")
        driver = WireStimulator(PF2, port, keepalive=True)
        before = time.monotonic_ns()
        identity = driver.open()
        assert identity.serial_number == "SIM000007"
        driver.configure([CONFIG])
        driver.set_amplitudes({1: 12_000})
        driver.output_on([1])
        assert driver.status().channel(1).output_on
        # The simulator is stopped while the output is on and the host still connected.
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        driver.close()
    assert process.returncode == 0, stderr
    assert "every output off" in stderr
    records = read_trace(trace)
    outputs = [r for r in records if r["event"] == "output"]
    assert outputs[0]["amplitude_ua"] == 12_000
    assert outputs[0]["output_on"] is True
    assert outputs[-1]["output_on"] is False  # off before the process exited
    assert not [r for r in records if r["event"] == "fault" and r["flags"] == "watchdog"]
    assert records[-1] == {**records[-1], "event": "power", "what": "off"}
    frames = [r["command"] for r in records if r["event"] == "frame" and r["direction"] == "in"]
    assert frames[:2] == ["IDENTIFY", "CLEAR_FAULT"]
    stamped = [r["t_ns"] for r in records if r["event"] in {"frame", "output"}]
    assert all(isinstance(t, int) for t in stamped)
    stamped_ns = [int(str(t)) for t in stamped]
    assert min(stamped_ns) >= before
    assert stamped_ns == sorted(stamped_ns)


def test_ctrl_c_stops_it_too() -> None:
    with estim_sim("--quiet") as (process, port):
        assert os.path.exists(port)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr


def test_faults_from_the_command_line(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    with estim_sim(
        "--profile", "estim-lp1", "--fault", "open:ch=2,at=200ms", "--trace", str(trace)
    ) as (process, port):
        driver = WireStimulator(LP1, port, keepalive=True)
        driver.open()
        try:
            driver.configure([ChannelConfig(2, CONFIG.shape, (200, 200), 0, 20_000)])
            driver.set_amplitudes({2: 5_000})
            driver.output_on([2])
            status = driver.status()
            for _ in range(2000):
                if FaultFlag.OPEN_CIRCUIT in status.channel(2).faults:
                    break
                status = driver.status()
            assert FaultFlag.OPEN_CIRCUIT in status.channel(2).faults
            assert not status.any_output_on
        finally:
            driver.close()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert "open:ch=2,at=200ms" in stderr
    assert "fault" in stderr
    faults = [r for r in read_trace(trace) if r["event"] == "fault"]
    assert any(r["flags"] == "open circuit" and r["channel"] == 2 for r in faults)


def test_a_scheduled_disconnect_makes_the_port_vanish() -> None:
    with estim_sim("--fault", "disconnect:at=300ms", "--quiet") as (process, port):
        driver = WireStimulator(PF2, port, keepalive=True)
        driver.open()
        with pytest.raises(DeviceError):
            _poll_until_it_fails(driver)
        driver.close()
        assert process.poll() is None  # the simulator itself keeps running


def test_bad_fault_specs_exit_2_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from estim.cli import run; run()", "sim", "--fault", "open"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "open needs ch=" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_link_option_makes_a_stable_path(tmp_path: Path) -> None:
    link = tmp_path / "estim-sim"
    with estim_sim("--link", str(link), "--quiet") as (process, port):
        assert os.path.realpath(link) == port
        driver = WireStimulator(PF2, str(link))
        driver.open()
        driver.close()
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert not link.exists()


def _poll_until_it_fails(driver: WireStimulator) -> None:
    for _ in range(100_000):
        driver.status()
