"""The real driver against the simulator over a real pseudo-terminal, in real time.

Each test opens ``/dev/pts/N`` through pyserial exactly as it would open a USB serial
adapter, and ends with every output off (the integration guard checks the device was
left safe before it was closed). Waits have generous bounds; nothing asserts how long
anything took (that is ``make bench``'s job).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from estim.device.base import ChannelConfig, DeviceEvent, FaultFlag
from estim.device.profile import DeviceProfile, builtin_profile
from estim.device.simulator import PtyServer, SimulatedDevice
from estim.device.simulator.trace import TraceRecord
from estim.device.wire.driver import WireStimulator
from estim.errors import DeviceDisconnected, DeviceError, DeviceFaulted, DeviceTimeout
from estim.protocols.models import ShapeKind

pytestmark = pytest.mark.pty

PF2 = builtin_profile("estim-pf2")
CONFIG = ChannelConfig(1, ShapeKind.SYMMETRIC_BIPHASIC, (200, 200), 0, 20_000)
Waiter = Callable[..., TraceRecord]


@contextmanager
def served(
    faults: tuple[str, ...] = (), profile: DeviceProfile = PF2, seed: int = 0
) -> Iterator[tuple[SimulatedDevice, PtyServer]]:
    device = SimulatedDevice(profile, faults=faults, seed=seed)
    with PtyServer(device) as server:
        yield device, server


@contextmanager
def connected(
    faults: tuple[str, ...] = (), *, keepalive: bool = True, seed: int = 0
) -> Iterator[tuple[SimulatedDevice, WireStimulator, list[DeviceEvent]]]:
    with served(faults, seed=seed) as (device, server):
        driver = WireStimulator(PF2, server.path, keepalive=keepalive)
        events: list[DeviceEvent] = []
        driver.add_event_listener(events.append)
        driver.open()
        try:
            yield device, driver, events
        finally:
            driver.close()


def stimulate(driver: WireStimulator, amplitude_ua: int = 10_000) -> None:
    driver.configure([CONFIG])
    driver.set_amplitudes({1: amplitude_ua})
    driver.output_on([1])


def is_fault(flag: str) -> Callable[[TraceRecord], bool]:
    return lambda r: r["event"] == "fault" and r["flags"] == flag


def test_a_session_over_a_pty(wait_trace: Waiter) -> None:
    with connected(keepalive=False) as (device, driver, _events):
        assert driver.identity is not None
        assert driver.identity.model == PF2.identity.model
        stimulate(driver, 25_000)
        status = driver.status()
        assert status.channel(1).output_on
        measured = status.channel(1).measured_ua
        assert measured is not None
        assert abs(measured - 25_000) <= 1000
        driver.set_amplitudes({1: 30_000})
        driver.output_off()
        assert not driver.status().any_output_on
        outputs = [(r["amplitude_ua"], r["output_on"]) for r in device.trace.records("output")]
        assert outputs == [(25_000, True), (30_000, True), (0, False)]
        commands = [r["command"] for r in device.trace.records("frame") if r["direction"] == "in"]
        assert commands[:2] == ["IDENTIFY", "CLEAR_FAULT"]
        assert all(isinstance(r["t_ns"], int) for r in device.trace.records())


def test_emergency_stop_overtakes_a_pending_command(wait_trace: Waiter) -> None:
    # Replies take 60 ms; a status poll is waiting for one when another thread stops.
    with connected(("delay:ms=60",), keepalive=False) as (device, driver, _events):
        stimulate(driver)
        returned: list[int] = []

        def poll_once() -> None:
            driver.status()
            returned.append(time.monotonic_ns())

        poller = threading.Thread(target=poll_once)
        poller.start()
        wait_trace(device, lambda r: r["event"] == "frame" and r.get("command") == "STATUS")
        driver.stop_all()
        poller.join()
        zero = wait_trace(device, lambda r: r["event"] == "output" and not r["output_on"])
        stop_in = wait_trace(device, lambda r: r.get("command") == "STOP_ALL")
        # The STOP ALL reached the device, and the output went to zero, while the status
        # poll was still waiting for its (delayed) reply.
        assert stop_in["t_ns"] < returned[0]
        assert zero["t_ns"] < returned[0]
        assert not device.hardware.any_output_on


def test_stop_all_from_many_threads_at_once(wait_trace: Waiter) -> None:
    with connected(keepalive=False) as (device, driver, _events):
        stimulate(driver)
        errors: list[BaseException] = []

        def stop() -> None:
            try:
                driver.stop_all()
            except BaseException as err:  # pragma: no cover - reported below
                errors.append(err)

        threads = [threading.Thread(target=stop) for _ in range(8)]
        for t in threads:
            t.start()
        status_during = driver.status()
        for t in threads:
            t.join()
        assert not errors
        assert not device.hardware.any_output_on
        assert len(status_during.channels) == 2


@pytest.mark.parametrize("fault", ["drop:p=0.004", "corrupt:p=0.004"])
def test_a_noisy_line_never_yields_wrong_data_and_never_hangs(fault: str) -> None:
    with connected((fault,), keepalive=False, seed=5) as (device, driver, _events):
        driver.configure([CONFIG])
        ok = failed = 0
        for _ in range(60):
            try:
                status = driver.status()
            except DeviceTimeout:
                failed += 1
                continue
            ok += 1
            assert len(status.channels) == 2
            assert status.channel(1).commanded_ua == 0
            assert status.channel(2).impedance_ohm == device.hardware.load_ohm(2)
        assert ok > failed
        rejected = driver.stats.decoder.rejected + driver.stats.retries + failed
        assert rejected > 0  # the fault really did something
        driver.stop_all()
    assert not device.hardware.any_output_on


def test_delayed_replies_within_the_timeout_just_work() -> None:
    with connected(("delay:ms=20",), keepalive=False) as (device, driver, _events):
        stimulate(driver)
        assert driver.status().channel(1).output_on
        driver.output_off()
        assert driver.stats.retries == 0
        assert not device.hardware.any_output_on


def test_a_vanishing_port_is_a_clean_disconnect_and_the_watchdog_stops_output(
    wait_trace: Waiter,
) -> None:
    with connected(keepalive=False) as (device, driver, _events):
        stimulate(driver)
        with pytest.raises(DeviceError):  # its reply can never arrive
            driver.inject_fault("disconnect")
        with pytest.raises(DeviceDisconnected):
            driver.status()
        with pytest.raises(DeviceDisconnected):
            driver.stop_all()
        wait_trace(device, is_fault("watchdog"))
        assert not device.hardware.any_output_on


def test_scheduled_disconnect_while_idle(wait_trace: Waiter) -> None:
    with connected(("disconnect:at=300ms",), keepalive=True) as (device, driver, _events):
        stimulate(driver)
        wait_trace(device, lambda r: r["event"] == "link" and r["what"] == "disconnect")
        wait_trace(device, is_fault("watchdog"))
        with pytest.raises(DeviceError):
            driver.status()
    assert not device.hardware.any_output_on


def test_device_reset_mid_session(wait_trace: Waiter) -> None:
    with connected() as (device, driver, events):
        stimulate(driver)
        driver.inject_fault("reset")
        wait_trace(device, lambda r: r["event"] == "power" and r["what"] == "reset")
        status = driver.status()
        assert FaultFlag.RESET in status.faults
        assert not status.any_output_on
        with pytest.raises(DeviceError, match="NOT_CONFIGURED"):  # configuration was lost
            driver.output_on([1])
        driver.configure([CONFIG])
        with pytest.raises(DeviceFaulted):  # and RESET is latched until cleared
            driver.output_on([1])
        _wait_for_event(events, FaultFlag.RESET)


def test_open_electrode_trips_and_reports(wait_trace: Waiter) -> None:
    with connected(("open:ch=1,at=400ms",)) as (device, driver, events):
        stimulate(driver)
        wait_trace(device, is_fault("open circuit"))
        event = _wait_for_event(events, FaultFlag.OPEN_CIRCUIT)
        assert event.channel == 1
        status = driver.status()
        assert FaultFlag.OPEN_CIRCUIT in status.channel(1).faults
        assert not status.any_output_on
        impedance = status.channel(1).impedance_ohm
        assert impedance is not None
        assert impedance >= PF2.impedance.open_circuit_ohm


def test_impedance_drift_is_visible_then_trips(wait_trace: Waiter) -> None:
    with connected(("drift:ch=1,ohm_per_s=20000",)) as (device, driver, events):
        first = driver.status().channel(1).impedance_ohm
        stimulate(driver)
        wait_trace(device, is_fault("open circuit"))
        later = driver.status().channel(1).impedance_ohm
        assert first is not None
        assert later is not None
        assert later > first
        _wait_for_event(events, FaultFlag.OPEN_CIRCUIT)
        assert not device.hardware.any_output_on


def test_a_stuck_output_is_caught_by_the_device_monitor(wait_trace: Waiter) -> None:
    with connected() as (device, driver, events):
        stimulate(driver, 20_000)
        driver.inject_fault("stuck:ch=1")
        driver.stop_all()  # the output stage ignores it...
        wait_trace(device, is_fault("over current"))  # ...the relay does not
        _wait_for_event(events, FaultFlag.OVER_CURRENT)
        assert not device.hardware.any_output_on


def test_a_lying_device_is_found_out_by_its_measured_current() -> None:
    with connected(("lie-output",)) as (device, driver, _events):
        stimulate(driver, 30_000)
        status = driver.status()
        assert not status.channel(1).output_on  # the lie
        measured = status.channel(1).measured_ua
        assert measured is not None
        assert measured > 25_000  # the evidence
        assert device.hardware.any_output_on  # the truth
        driver.stop_all()
        assert driver.status().channel(1).measured_ua == 0
    assert not device.hardware.any_output_on


def test_watchdog_stops_output_when_the_host_goes_quiet(wait_trace: Waiter) -> None:
    with connected(keepalive=False) as (device, driver, events):
        stimulate(driver)
        fault = wait_trace(device, is_fault("watchdog"))
        assert "no valid frame" in fault["detail"]
        _wait_for_event(events, FaultFlag.WATCHDOG)
        assert not device.hardware.any_output_on


def test_keepalive_holds_the_watchdog_off_until_suspended(wait_trace: Waiter) -> None:
    with connected(keepalive=True) as (device, driver, _events):
        stimulate(driver)
        wait_trace(
            device,
            lambda r: r.get("command") == "HEARTBEAT",
        )
        # Several watchdog periods of keep-alive (counted in frames, not seconds).
        for _ in range(8):
            wait_trace(device, _nth_heartbeat(device))
        assert device.hardware.any_output_on
        with driver.keepalive_suspended():
            wait_trace(device, is_fault("watchdog"))
        assert not device.hardware.any_output_on


def test_the_port_can_be_closed_and_reopened() -> None:
    with served() as (device, server):
        for _ in range(3):
            driver = WireStimulator(PF2, server.path)
            driver.open()
            stimulate(driver)
            driver.close()
            assert not device.hardware.any_output_on


def _nth_heartbeat(device: SimulatedDevice) -> Callable[[TraceRecord], bool]:
    seen = sum(1 for r in device.trace.records("frame") if r.get("command") == "HEARTBEAT")

    def predicate(record: TraceRecord) -> bool:
        nonlocal seen
        if record.get("command") != "HEARTBEAT" or record["event"] != "frame":
            return False
        seen -= 1
        return seen < 0

    return predicate


def _wait_for_event(events: list[DeviceEvent], flag: FaultFlag) -> DeviceEvent:
    """Events arrive on the driver's reader thread; wait (bounded) for one."""
    done = threading.Event()
    for _ in range(1000):
        for event in list(events):
            if flag in event.faults:
                return event
        done.wait(0.01)
    raise AssertionError(f"no {flag.describe()} event; got {events}")
