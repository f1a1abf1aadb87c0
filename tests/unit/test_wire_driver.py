"""WireStimulator against the in-process simulator (``sim://``) in virtual time.

No pty and no reader thread: every exchange is deterministic, and timeouts, retries
and scheduled faults happen in virtual time. The same driver over a real pty is in
tests/integration/test_driver_sim_pty.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from estim.clock import NS_PER_MS, VirtualClock
from estim.device.base import ChannelConfig, DeviceEvent, FaultFlag
from estim.device.profile import builtin_profile
from estim.device.registry import create_stimulator
from estim.device.simulator import SimulatedDevice
from estim.device.transport import open_link
from estim.device.wire.driver import WireRejected, WireStimulator
from estim.errors import (
    DeviceDisconnected,
    DeviceFaulted,
    DeviceTimeout,
    IdentityMismatch,
    InputError,
)
from estim.protocols.models import ShapeKind

PF2 = builtin_profile("estim-pf2")
LP1 = builtin_profile("estim-lp1")
CONFIG = ChannelConfig(1, ShapeKind.SYMMETRIC_BIPHASIC, (200, 200), 0, 20_000)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def device(clock: VirtualClock) -> Iterator[SimulatedDevice]:
    with SimulatedDevice(PF2, clock=clock) as dev:
        yield dev


@pytest.fixture
def driver(device: SimulatedDevice, clock: VirtualClock) -> Iterator[WireStimulator]:
    stim = create_stimulator(PF2, device.url, clock=clock)
    assert isinstance(stim, WireStimulator)
    stim.open()
    yield stim
    stim.close()
    assert not device.hardware.any_output_on


def frames_in(device: SimulatedDevice, command: str) -> int:
    return sum(1 for r in device.trace.records("frame") if r.get("command") == command)


def start(driver: WireStimulator, amplitude_ua: int = 10_000) -> None:
    driver.configure([CONFIG])
    driver.set_amplitudes({1: amplitude_ua})
    driver.output_on([1])


def test_open_identifies_and_acknowledges_the_power_up(
    driver: WireStimulator, device: SimulatedDevice
) -> None:
    assert driver.identity is not None
    assert driver.identity.model == PF2.identity.model
    assert driver.identity.serial_number == device.hardware.serial_number
    assert driver.device_info is not None
    assert driver.device_info.amplitude_max_ua == PF2.output.amplitude_max_ua
    status = driver.status()
    assert status.faults == FaultFlag.NONE
    assert not status.any_output_on


def test_a_session_round_trip(driver: WireStimulator, device: SimulatedDevice) -> None:
    start(driver, 20_000)
    status = driver.status()
    assert status.channel(1).output_on
    assert status.channel(1).commanded_ua == 20_000
    assert device.hardware.outputs()[0].amplitude_ua == 20_000
    assert driver.measure_impedance(2) == pytest.approx(device.hardware.load_ohm(2), rel=0.02)
    driver.output_off()
    assert not device.hardware.any_output_on


def test_over_limit_is_refused_by_the_device_with_its_limit(
    driver: WireStimulator, device: SimulatedDevice
) -> None:
    driver.configure([CONFIG])
    with pytest.raises(WireRejected) as refused:
        driver.set_amplitudes({1: 90_100})
    assert refused.value.code_name == "OUT_OF_RANGE"
    assert refused.value.nack.detail == 90_000
    assert refused.value.exit_code == 3
    assert device.hardware.status().channel(1).commanded_ua == 0


def test_a_latched_fault_refusal_is_a_device_fault(
    driver: WireStimulator, device: SimulatedDevice, clock: VirtualClock
) -> None:
    events: list[DeviceEvent] = []
    driver.add_event_listener(events.append)
    start(driver)
    clock.advance(300 * NS_PER_MS)  # nobody polls: the device watchdog trips
    driver.poll_events()
    assert [e.faults for e in events] == [FaultFlag.WATCHDOG]
    with pytest.raises(DeviceFaulted) as faulted:
        driver.output_on([1])
    assert faulted.value.flags == FaultFlag.WATCHDOG
    driver.clear_fault()
    driver.output_on([1])
    driver.stop_all()


def test_events_reach_listeners(
    driver: WireStimulator, device: SimulatedDevice, clock: VirtualClock
) -> None:
    events: list[DeviceEvent] = []
    driver.add_event_listener(events.append)
    start(driver)
    driver.inject_fault("open:ch=1")
    assert [(e.faults, e.channel) for e in events] == [(FaultFlag.OPEN_CIRCUIT, 1)]
    assert events[0].at_ns == clock.now_ns()
    assert not device.hardware.any_output_on


def test_idempotent_commands_are_retried_until_the_timeout(
    driver: WireStimulator, device: SimulatedDevice, clock: VirtualClock
) -> None:
    device.inject("drop:p=1,dir=out")
    before = clock.now_ns()
    with pytest.raises(DeviceTimeout, match="3 attempts"):
        driver.status()
    assert frames_in(device, "STATUS") == 3
    assert clock.now_ns() - before == 3 * PF2.link.reply_timeout_ms * NS_PER_MS
    assert driver.stats.retries == 2


def test_output_raising_commands_are_never_retried(
    driver: WireStimulator, device: SimulatedDevice
) -> None:
    driver.configure([CONFIG])
    device.inject("drop:p=1,dir=out")
    with pytest.raises(DeviceTimeout, match="1 attempt\\)"):
        driver.set_amplitudes({1: 1000})
    with pytest.raises(DeviceTimeout):
        driver.output_on([1])
    assert frames_in(device, "SET_AMPLITUDE") == 1
    assert frames_in(device, "OUTPUT_ON") == 1
    device.hardware.stop_all("test")


def test_a_late_reply_completes_the_retry_without_acting_twice(
    driver: WireStimulator, device: SimulatedDevice, clock: VirtualClock
) -> None:
    device.inject("delay:ms=150")  # longer than the 100 ms reply timeout
    driver.output_off()
    assert driver.stats.retries == 1
    assert frames_in(device, "OUTPUT_OFF") == 2  # one action, one cached answer
    clock.advance(200 * NS_PER_MS)
    driver.poll_events()
    assert driver.stats.stale_replies == 1  # the second copy of the reply, ignored


def test_disconnect_fails_cleanly_and_the_watchdog_stops_the_output(
    driver: WireStimulator, device: SimulatedDevice, clock: VirtualClock
) -> None:
    start(driver)
    device.inject("disconnect")
    with pytest.raises(DeviceDisconnected):
        driver.status()
    with pytest.raises(DeviceDisconnected):
        driver.stop_all()  # nothing can reach the device any more...
    assert device.hardware.any_output_on
    clock.advance(260 * NS_PER_MS)  # ...and its watchdog makes it safe
    assert not device.hardware.any_output_on
    assert device.hardware.latched_faults() == FaultFlag.WATCHDOG


def test_a_device_reset_mid_session_is_reported(
    driver: WireStimulator, device: SimulatedDevice
) -> None:
    events: list[DeviceEvent] = []
    driver.add_event_listener(events.append)
    start(driver)
    device.inject("reset")
    status = driver.status()
    assert status.faults == FaultFlag.RESET
    assert not status.any_output_on
    assert [e.faults for e in events] == [FaultFlag.RESET]


def test_identity_must_match_the_profile(device: SimulatedDevice, clock: VirtualClock) -> None:
    stim = WireStimulator(LP1, device.url, clock=clock)
    with pytest.raises(IdentityMismatch, match="model is 'PF-2 pelvic NMES'"):
        stim.open()
    unchecked = WireStimulator(LP1, device.url, clock=clock, check_identity=False)
    assert unchecked.open().model == "PF-2 pelvic NMES"
    unchecked.close()


def test_firmware_outside_the_profile_range_is_refused(clock: VirtualClock) -> None:
    with SimulatedDevice(PF2, clock=clock, firmware="2.1") as dev:
        stim = WireStimulator(PF2, dev.url, clock=clock)
        with pytest.raises(IdentityMismatch, match=r"firmware 2\.1 is outside"):
            stim.open()


def test_keepalive_needs_real_time(clock: VirtualClock) -> None:
    with pytest.raises(ValueError, match="real time"):
        WireStimulator(PF2, "sim://x", clock=clock, keepalive=True)


def test_arguments_are_checked_for_form(driver: WireStimulator) -> None:
    with pytest.raises(ValueError, match="whole uA"):
        driver.set_amplitudes({1: -5})
    with pytest.raises(ValueError, match="does not exist"):
        driver.output_on([3])


def test_closed_driver_refuses_commands(device: SimulatedDevice, clock: VirtualClock) -> None:
    stim = WireStimulator(PF2, device.url, clock=clock)
    stim.open()
    stim.close()
    stim.close()  # twice is fine
    with pytest.raises(DeviceDisconnected):
        stim.status()


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("/dev/estim-no-such-port", DeviceDisconnected),
        ("sim://no-such-device", DeviceDisconnected),
        ("nonsense://x", InputError),
        ("", InputError),
    ],
)
def test_ports_that_cannot_be_opened_raise_estim_errors(url: str, error: type[Exception]) -> None:
    with pytest.raises(error) as raised:
        open_link(url, PF2.link)
    assert raised.value.__cause__ is not None or url == ""


def test_sim_new_url_spawns_a_device_owned_by_the_port() -> None:
    stim = WireStimulator(PF2, "sim://new?profile=estim-pf2&seed=4")
    try:
        identity = stim.open()
        assert identity.serial_number == "SIM000004"
        stim.configure([CONFIG])
        stim.set_amplitudes({1: 5000})
        stim.output_on([1])
        assert stim.status().channel(1).output_on
    finally:
        stim.close()


def test_closing_a_link_waits_for_a_write_in_progress() -> None:
    """A write reads the port's descriptor and then uses it; if close() released the
    descriptor in between, the kernel could hand the number to another file (the
    records database) and the write would land there. close() waits for the write."""
    import threading

    link = open_link("loop://", PF2.link)
    port = link.port
    entered, release = threading.Event(), threading.Event()
    closed_during_write: list[bool] = []
    real_write = port.write

    def slow_write(data: bytes) -> int:
        entered.set()
        release.wait(5)
        closed_during_write.append(not port.is_open)
        return int(real_write(data))

    port.write = slow_write
    writer = threading.Thread(target=link.write, args=(b"\x00",))
    writer.start()
    assert entered.wait(5)
    closer = threading.Thread(target=link.close)
    closer.start()
    closer.join(0.2)
    assert closer.is_alive(), "close() did not wait for the write"
    release.set()
    writer.join(5)
    closer.join(5)
    assert closed_during_write == [False]
    assert not port.is_open
    with pytest.raises(DeviceDisconnected):
        link.write(b"\x00")
