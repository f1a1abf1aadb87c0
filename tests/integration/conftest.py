"""Integration-tier guards: every simulator a test creates ends closed and safe.

The autouse fixture fails a test that

- leaves a simulated device open (it is closed for the next test anyway),
- closed a device whose output was still on (the test, driver or controller must have
  switched it off, or the device must have tripped, *before* teardown: closing powers
  the model off and would hide that), or
- leaked a pty, ptmx or pipe file descriptor.

Thread leaks are caught by the root conftest. Helpers for waiting on the simulator's
trace live here too: they wait for an event with a generous bound, never assert on
how long it took.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from estim.device.simulator import SimulatedDevice, open_devices, take_close_reports
from estim.device.simulator.trace import TraceRecord
from estim.protocols.catalog import get_protocol
from estim.records.seed import seed_demo_patient
from estim.records.store import Store

_WATCHED_FD_PREFIXES = ("/dev/pts/", "/dev/ptmx", "pipe:")


def _watched_fds() -> dict[int, str]:
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith(_WATCHED_FD_PREFIXES):
            fds[int(name)] = target
    return fds


@pytest.fixture(autouse=True)
def simulators_end_safe() -> Iterator[None]:
    open_before = {d.name for d in open_devices()}
    take_close_reports()
    fds_before = _watched_fds()
    yield
    left_open = [d for d in open_devices() if d.name not in open_before]
    for device in left_open:
        device.close()
    reports = take_close_reports()
    assert not left_open, f"test left simulators open: {[d.name for d in left_open]}"
    unsafe = [r for r in reports if r.output_was_on]
    assert not unsafe, f"simulators closed with output still on: {unsafe}"
    leaked = {fd: t for fd, t in _watched_fds().items() if fds_before.get(fd) != t}
    assert not leaked, f"test leaked file descriptors: {leaked}"


def wait_for_trace(
    device: SimulatedDevice,
    predicate: Callable[[TraceRecord], bool],
    *,
    timeout_s: float = 10.0,
) -> TraceRecord:
    """The first trace record (already there or to come) matching ``predicate``.

    The bound only stops a broken test from hanging; it is not a timing assertion.
    """
    found: list[TraceRecord] = []
    arrived = threading.Event()

    def listener(record: TraceRecord) -> None:
        if not found and predicate(record):
            found.append(record)
            arrived.set()

    unsubscribe = device.trace.subscribe(listener)
    try:
        for record in device.trace.records():
            if predicate(record):
                return record
        if not arrived.wait(timeout_s):
            raise AssertionError(f"no matching trace record within {timeout_s} s")
        return found[0]
    finally:
        unsubscribe()


def all_outputs_off(device: SimulatedDevice) -> bool:
    return not device.hardware.any_output_on


@pytest.fixture
def wait_trace() -> Callable[..., TraceRecord]:
    """:func:`wait_for_trace` as a fixture, for test modules."""
    return wait_for_trace


@pytest.fixture
def patient_db(tmp_path: Path) -> Path:
    """A records database with PF-0042 ready for a stress session (checklist answered,
    course active), as the session tests need it."""
    db = tmp_path / "records.db"
    with Store.open(db) as store:
        seed_demo_patient(store, get_protocol("stress"), code="PF-0042")
    return db
