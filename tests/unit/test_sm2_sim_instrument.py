"""The RehaStim2 simulator's instrument: ``measure-current:ch=N`` over command 200.

The bench's stand-in for an oscilloscope on the simulated load: exact bytes on the
device side, and the driver's ``sim_measure_current`` against the simulator in virtual
time (a device that does not know the query refuses it, as a real RehaStim2 would).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from estim.clock import VirtualClock
from estim.device.base import ChannelConfig
from estim.device.profile import builtin_profile
from estim.device.sciencemode2.codec import FrameDecoder
from estim.device.sciencemode2.driver import ScienceMode2Stimulator
from estim.device.sciencemode2.messages import (
    SIM_INJECT,
    SIM_INJECT_ACK,
    Init,
    InitAck,
    Message,
    MessageError,
    Result,
    Unrecognised,
    decode,
    decode_measure_current_reply,
    encode_measure_current,
    parse_measure_current,
)
from estim.device.simulator import SimulatedDevice
from estim.errors import DeviceRejected
from estim.protocols.models import ShapeKind

PROFILE = builtin_profile("hasomed-rehastim2")


def test_the_query_bytes() -> None:
    assert encode_measure_current(1) == b"measure-current:ch=1"
    assert encode_measure_current(8) == b"measure-current:ch=8"
    assert parse_measure_current(b"measure-current:ch=12") == 12
    assert parse_measure_current(b"open:ch=1") is None
    assert parse_measure_current(b"") is None
    for bad in (b"measure-current:ch=", b"measure-current:ch=x", b"measure-current:ch=-1"):
        with pytest.raises(ValueError, match="not a number"):
            parse_measure_current(bad)
    with pytest.raises(ValueError, match="not 1-255"):
        encode_measure_current(0)


def test_the_reply_bytes() -> None:
    # result 0, then 11000 uA = 0x2AF8 as uint32 little-endian
    assert decode_measure_current_reply(bytes([0, 0xF8, 0x2A, 0, 0])) == 11_000
    with pytest.raises(MessageError, match="expected 5"):
        decode_measure_current_reply(b"\x00")


class _Host:
    def __init__(self, device: SimulatedDevice) -> None:
        self.device = device
        self.decoder = FrameDecoder()
        self.counter = 0

    def send(self, message: Message) -> list[Message]:
        self.device.receive(message.encode(self.counter))
        self.counter += 1
        return self.receive()

    def receive(self) -> list[Message]:
        self.device.tick()
        return [decode(f) for f in self.decoder.feed(self.device.transmit())]


@pytest.fixture
def host() -> Iterator[_Host]:
    device = SimulatedDevice(PROFILE, clock=VirtualClock())
    try:
        host = _Host(device)
        device.tick()
        frames = host.decoder.feed(device.transmit())
        assert isinstance(decode(frames[-1]), Init)
        device.receive(InitAck(Result.OK).encode(frames[-1].counter))
        yield host
    finally:
        device.close()


def test_the_device_side_reads_the_delivered_current(host: _Host) -> None:
    hw = host.device.hardware
    assert host.send(Unrecognised(SIM_INJECT, b"measure-current:ch=2")) == [
        Unrecognised(SIM_INJECT_ACK, b"\x00\x00\x00\x00\x00")
    ]
    hw.clear_faults()
    hw.configure(ChannelConfig(2, ShapeKind.SYMMETRIC_BIPHASIC, (200, 200), 0, 50_000))
    hw.set_amplitudes({2: 28_000})
    hw.output_on([2])
    try:
        (reply,) = host.send(Unrecognised(SIM_INJECT, b"measure-current:ch=2"))
        assert reply == Unrecognised(SIM_INJECT_ACK, bytes([0]) + (28_000).to_bytes(4, "little"))
        # Compliance: 126 V drive at most 14 mA through 9 kOhm; the instrument reads that.
        hw.set_load(2, 9_000)
        (reply,) = host.send(Unrecognised(SIM_INJECT, b"measure-current:ch=2"))
        assert isinstance(reply, Unrecognised)
        assert decode_measure_current_reply(reply.payload) == 14_000  # 126 V / 9 kOhm
    finally:
        hw.stop_all()
    assert host.device.trace.records("instrument")[-1]["peak_ua"] == 14_000


def test_the_device_side_refuses_a_bad_query(host: _Host) -> None:
    refused = [Unrecognised(SIM_INJECT_ACK, bytes([Result.PARAMETER_ERROR & 0xFF]))]
    assert host.send(Unrecognised(SIM_INJECT, b"measure-current:ch=9")) == refused
    assert host.send(Unrecognised(SIM_INJECT, b"measure-current:ch=one")) == refused


def test_the_driver_measures_over_the_wire_in_virtual_time() -> None:
    clock = VirtualClock()
    with SimulatedDevice(PROFILE, clock=clock) as device:
        driver = ScienceMode2Stimulator(PROFILE, device.url, clock=clock)
        driver.open()
        try:
            config = ChannelConfig(1, ShapeKind.SYMMETRIC_BIPHASIC, (200, 200), 0, 50_000)
            driver.configure([config])
            driver.set_amplitudes({1: 56_000})
            assert driver.sim_measure_current(1) == 0  # armed, no pulses yet
            driver.output_on([1])
            assert driver.sim_measure_current(1) == 56_000
            with pytest.raises(DeviceRejected, match="refused to measure channel 9"):
                driver.sim_measure_current(9)
            driver.output_off()
            assert driver.sim_measure_current(1) == 0
        finally:
            driver.close()
        assert not device.hardware.any_output_on


def test_a_device_without_the_query_refuses_it() -> None:
    clock = VirtualClock()
    with SimulatedDevice(PROFILE, clock=clock) as device:
        driver = ScienceMode2Stimulator(PROFILE, device.url, clock=clock)
        driver.open()
        try:
            device.personality.inject_fault = None  # now it answers like a real RehaStim2
            with pytest.raises(DeviceRejected, match="does not accept simulator current"):
                driver.sim_measure_current(1)
        finally:
            driver.close()
