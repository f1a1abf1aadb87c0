"""The RehaStim2 over a real pseudo-terminal: our driver, and a third-party client.

The simulator serves the RehaStim2 personality on ``/dev/pts/N``; clients open it with
pyserial at 460800 baud 8E1 as they would open the USB serial adapter of a real
RehaStim2. Every test ends with every output off (the integration guard checks that
the device was left safe). Waits have generous bounds; nothing asserts how long
anything took.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from estim.device.base import ChannelConfig, DeviceEvent, FaultFlag
from estim.device.profile import DeviceProfile, builtin_profile
from estim.device.sciencemode2.driver import ScienceMode2Stimulator
from estim.device.simulator import PtyServer, SimulatedDevice
from estim.device.simulator.trace import TraceRecord
from estim.errors import DeviceDisconnected, DeviceError, DeviceFaulted
from estim.protocols.models import ShapeKind

pytestmark = pytest.mark.pty

REHASTIM2 = builtin_profile("hasomed-rehastim2")
# The same device with a short watchdog, so watchdog tests take a fraction of a second.
QUICK = REHASTIM2.model_copy(
    update={
        "link": REHASTIM2.link.model_copy(
            update={"watchdog_timeout_ms": 400, "heartbeat_period_ms": 100}
        )
    }
)
Waiter = Callable[..., TraceRecord]


def config(channel: int, width_us: int = 300, period_us: int = 20_000) -> ChannelConfig:
    return ChannelConfig(channel, ShapeKind.SYMMETRIC_BIPHASIC, (width_us, width_us), 0, period_us)


@contextmanager
def served(
    profile: DeviceProfile = REHASTIM2, faults: tuple[str, ...] = ()
) -> Iterator[tuple[SimulatedDevice, PtyServer]]:
    device = SimulatedDevice(profile, faults=faults)
    with PtyServer(device) as server:
        yield device, server


@contextmanager
def connected(
    profile: DeviceProfile = REHASTIM2, *, keepalive: bool = True
) -> Iterator[tuple[SimulatedDevice, ScienceMode2Stimulator, list[DeviceEvent]]]:
    with served(profile) as (device, server):
        driver = ScienceMode2Stimulator(profile, server.path, keepalive=keepalive)
        events: list[DeviceEvent] = []
        driver.add_event_listener(events.append)
        driver.open()
        try:
            yield device, driver, events
        finally:
            driver.close()


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Poll ``condition``; the bound only stops a broken test from hanging."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.005)


def delivered(device: SimulatedDevice, channel: int) -> tuple[int, bool]:
    state = device.hardware.outputs()[channel - 1]
    return state.amplitude_ua, state.output_on


def output_is(channel: int, amplitude_ua: int) -> Callable[[TraceRecord], bool]:
    """A channel delivering ``amplitude_ua`` > 0 (zero: use :func:`wait_until_off`)."""
    assert amplitude_ua > 0
    return lambda r: (
        r["event"] == "output" and r["channel"] == channel and r["amplitude_ua"] == amplitude_ua
    )


def wait_until_off(device: SimulatedDevice) -> None:
    wait_until(lambda: not device.hardware.any_output_on, "every output off")


def test_our_driver_ramps_and_stops_a_rehastim2(wait_trace: Waiter) -> None:
    with connected() as (device, driver, events):
        driver.configure([config(1), config(2, width_us=250, period_us=40_000)])
        driver.output_on([1, 2])
        for step in range(1, 11):  # a host-side ramp in 1 mA steps
            driver.set_amplitudes({1: step * 1000, 2: step * 500 // 1000 * 1000})
            driver.status()
        wait_trace(device, output_is(1, 10_000))
        assert delivered(device, 1) == (10_000, True)
        assert delivered(device, 2) == (5000, True)
        driver.stop_all()
        wait_until_off(device)
        sent = [r["command"] for r in device.trace.records("frame") if r["direction"] == "in"]
        assert sent[:6] == [
            "INIT_ACK",
            "GET_STIMULATION_MODE",
            "200",  # is this estim's simulator? (a RehaStim2 answers UnknownCommand)
            "INIT_CHANNEL_LIST_MODE",
            "START_CHANNEL_LIST_MODE",  # the widths, at 0 mA
            "START_CHANNEL_LIST_MODE",  # armed: width 0, no pulses
        ]
        assert driver.is_simulator
        assert sent[-1] == "STOP_CHANNEL_LIST_MODE"
        assert events == []
        assert driver.stats.decoder.bad_crc == 0


def test_host_silence_trips_the_device_watchdog(wait_trace: Waiter) -> None:
    with connected(QUICK, keepalive=False) as (device, driver, events):
        driver.configure([config(1)])
        driver.set_amplitudes({1: 12_000})
        driver.output_on([1])
        wait_trace(device, output_is(1, 12_000))
        # The host now says nothing: the device stops on its own and drops the link.
        wait_trace(device, lambda r: r["event"] == "watchdog" and r.get("what") == "link lost")
        assert delivered(device, 1) == (0, False)
        # It announces itself again; the driver answers and reports the restart.
        wait_until(lambda: bool(events), "the driver reports the device's re-announcement")
        assert events[0].faults == FaultFlag.WATCHDOG  # the host had been silent that long
        assert driver.status().faults == FaultFlag.WATCHDOG
        assert not driver.status().any_output_on
        with pytest.raises(DeviceFaulted):
            driver.output_on([1])
        # A person acknowledges; the stimulation is set up again from zero.
        driver.clear_fault()
        driver.configure([config(1)])
        driver.output_on([1])
        driver.set_amplitudes({1: 3000})
        wait_trace(device, output_is(1, 3000))
        driver.output_off()
        wait_until_off(device)


def test_heartbeats_keep_the_link(wait_trace: Waiter) -> None:
    # Real timings (500 ms keep-alive, 2 s device watchdog): three watchdog periods pass.
    with connected(REHASTIM2, keepalive=True) as (device, driver, events):
        driver.configure([config(1)])
        driver.set_amplitudes({1: 5000})
        driver.output_on([1])
        wait_trace(device, output_is(1, 5000))
        time.sleep(3 * REHASTIM2.link.watchdog_timeout_ms / 1000)
        assert delivered(device, 1) == (5000, True)
        assert not device.trace.records("watchdog")
        assert events == []
        driver.output_off()


def test_an_electrode_error_reaches_the_host_and_latches(wait_trace: Waiter) -> None:
    with connected() as (device, driver, events):
        driver.configure([config(1), config(2)])
        driver.set_amplitudes({1: 8000, 2: 8000})
        driver.output_on([1, 2])
        wait_trace(device, output_is(2, 8000))
        driver.inject_fault("open:ch=2")  # simulator-only command, over the wire
        wait_until(lambda: bool(events), "StimulationError reported")
        assert events[0].faults == FaultFlag.ELECTRODE
        assert "electrode" in events[0].detail
        assert not device.hardware.any_output_on
        status = driver.status()
        assert status.faults == FaultFlag.ELECTRODE
        assert not status.any_output_on
        with pytest.raises(DeviceFaulted, match="electrode"):
            driver.output_on([1, 2])
        # The electrode is fixed and a person acknowledges: stimulation works again.
        driver.inject_fault("close:ch=2")
        driver.clear_fault()
        driver.output_on([1, 2])
        driver.set_amplitudes({1: 2000, 2: 2000})
        wait_trace(device, output_is(2, 2000))
        driver.stop_all()
        wait_until_off(device)


def test_the_emergency_switch_reaches_the_host(wait_trace: Waiter) -> None:
    with connected() as (device, driver, events):
        driver.configure([config(1)])
        driver.set_amplitudes({1: 6000})
        driver.output_on([1])
        wait_trace(device, output_is(1, 6000))
        driver.inject_fault("emergency-switch")  # the switch on the RehaStim2 is pressed
        wait_until(lambda: bool(events), "StimulationError -1 reported")
        assert events[0].faults == FaultFlag.EMERGENCY_SWITCH
        assert not device.hardware.any_output_on
        assert driver.status().faults == FaultFlag.EMERGENCY_SWITCH
        with pytest.raises(DeviceFaulted, match="emergency switch"):
            driver.set_amplitudes({1: 6000})


def test_a_vanished_port_is_a_clean_disconnect(wait_trace: Waiter) -> None:
    with served(QUICK) as (device, server):
        driver = ScienceMode2Stimulator(QUICK, server.path)
        driver.open()
        try:
            driver.configure([config(1)])
            driver.set_amplitudes({1: 4000})
            driver.output_on([1])
            wait_trace(device, output_is(1, 4000))
            device.inject("disconnect")

            def link_failed() -> bool:
                try:
                    driver.status()
                except DeviceDisconnected:
                    return True
                return False

            wait_until(link_failed, "the driver notices the port vanished")
            with pytest.raises(DeviceDisconnected):
                driver.set_amplitudes({1: 5000})
            # The device, left alone, stops on its watchdog.
            wait_until_off(device)
        finally:
            driver.close()  # best effort: the port is gone; must not raise or hang


def test_open_waits_for_a_device_still_bound_to_a_vanished_host() -> None:
    # Also opens the same pty twice at 8E1 (see estim.device.transport on parity).
    with served(QUICK) as (_device, server):
        first = ScienceMode2Stimulator(QUICK, server.path)
        first.open()
        first._close()  # the host vanishes without a word (no stop, no more frames)
        second = ScienceMode2Stimulator(QUICK, server.path)
        second.open()  # answered once the watchdog dropped the first link
        try:
            assert second.query_mode().name == "START"
        finally:
            second.close()


def test_stop_all_from_another_thread_while_commands_run(wait_trace: Waiter) -> None:
    with connected() as (device, driver, _events):
        driver.configure([config(1)])
        driver.output_on([1])
        errors: list[BaseException] = []
        stop = threading.Event()

        def ramp() -> None:
            try:
                amplitude = 1000
                while not stop.is_set():
                    driver.set_amplitudes({1: amplitude})
                    amplitude = 1000 + (amplitude + 1000) % 20_000
            except DeviceError as err:  # superseded by the stop, or the mode is gone
                errors.append(err)

        worker = threading.Thread(target=ramp)
        worker.start()
        wait_trace(device, lambda r: r["event"] == "output" and r["amplitude_ua"] >= 5000)
        driver.stop_all()
        stop.set()
        worker.join(timeout=10)
        assert not worker.is_alive()
        wait_until_off(device)
        # Nothing written after the stop may switch the output on again.
        time.sleep(0.2)
        assert not device.hardware.any_output_on
        assert all(isinstance(e, DeviceError) for e in errors)


@pytest.mark.timeout(120)
def test_pyscience_mode_connects_and_stimulates(wait_trace: Waiter) -> None:
    """The s2mLab client, unmodified, against the simulator: any client may connect."""
    pysciencemode = pytest.importorskip("pysciencemode")
    with served() as (device, server):
        one = pysciencemode.Channel(
            mode=pysciencemode.Modes.SINGLE,
            no_channel=1,
            amplitude=20,
            pulse_width=300,
            device_type=pysciencemode.Device.Rehastim2,
        )
        two = pysciencemode.Channel(
            mode=pysciencemode.Modes.SINGLE,
            no_channel=2,
            amplitude=15,
            pulse_width=250,
            device_type=pysciencemode.Device.Rehastim2,
        )
        stimulator = pysciencemode.Rehastim2(server.path, show_log=False)
        try:
            stimulator.init_channel(stimulation_interval=20, list_channels=[one, two])
            stimulator.start_stimulation(upd_list_channels=[one, two])
            wait_trace(device, output_is(1, 20_000))
            assert delivered(device, 2) == (15_000, True)
            one.set_amplitude(25)
            stimulator.start_stimulation(upd_list_channels=[one, two])
            wait_trace(device, output_is(1, 25_000))
            # Longer than the device watchdog: pyScienceMode's keep-alive holds the link.
            time.sleep(2.5)
            assert delivered(device, 1) == (25_000, True)
            # Its GetStimulationMode is sent with the quirk (command 0x5F, no escape).
            stimulator._send_packet("GetStimulationMode")
            reply = stimulator._get_last_ack()
            assert reply[6] == 11  # GetStimulationModeAck
            assert (reply[7], reply[8]) == (0, 2)  # ok, stimulating
            stimulator.end_stimulation()
            wait_until_off(device)
        finally:
            stimulator.disconnect()
            stimulator.close_port()
        refused = device.trace.records("refused") + device.trace.records("ignored")
        assert [r for r in refused if r["command"] != "WATCHDOG"] == []
