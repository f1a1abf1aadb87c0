"""The simulator's estim-wire/1 device side: bytes in, bytes out (virtual time, no pty)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from estim.clock import NS_PER_MS, VirtualClock
from estim.device.base import ChannelConfig, FaultFlag
from estim.device.profile import builtin_profile
from estim.device.simulator import SimulatedDevice
from estim.device.wire.codec import Frame, FrameDecoder, encode_frame
from estim.device.wire.messages import (
    Command,
    ErrorCode,
    Event,
    IdentifyReply,
    Nack,
    Reply,
    decode_status,
    encode_configure,
    encode_set_amplitude,
)
from estim.protocols.models import ShapeKind

PF2 = builtin_profile("estim-pf2")
CONFIG = ChannelConfig(1, ShapeKind.SYMMETRIC_BIPHASIC, (200, 200), 0, 20_000)


def _sym(channel: int, first_us: int, second_us: int, period_us: int) -> ChannelConfig:
    shape = ShapeKind.SYMMETRIC_BIPHASIC
    return ChannelConfig(channel, shape, (first_us, second_us), 0, period_us)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def device(clock: VirtualClock) -> Iterator[SimulatedDevice]:
    with SimulatedDevice(PF2, clock=clock) as dev:
        dev.tick()
        boot = FrameDecoder().feed(dev.transmit())
        assert [f.code for f in boot] == [Reply.EVENT]
        assert Event.decode(boot[0].payload).faults == FaultFlag.RESET
        yield dev
        dev.hardware.stop_all("test teardown")


def send(device: SimulatedDevice, wire: bytes) -> list[Frame]:
    device.receive(wire)
    return FrameDecoder().feed(device.transmit())


def command(device: SimulatedDevice, code: int, seq: int, payload: bytes = b"") -> Frame:
    (reply,) = send(device, encode_frame(code, seq, payload))
    assert reply.seq == seq
    return reply


def nack_of(reply: Frame) -> Nack:
    assert reply.code == Reply.NACK
    return Nack.decode(reply.payload)


def bring_up(device: SimulatedDevice) -> None:
    assert command(device, Command.CLEAR_FAULT, 2, h("ffff")).code == Reply.ACK
    assert command(device, Command.CONFIGURE, 3, encode_configure(CONFIG)).code == Reply.ACK


def test_heartbeat_is_acknowledged_with_exact_bytes(device: SimulatedDevice) -> None:
    device.receive(h("04 01 05 07 03 80 13 00"))
    assert device.transmit() == h("08 01 05 80 01 07 7f 94 00")


def test_stop_all_works_before_anything_else_and_with_faults_latched(
    device: SimulatedDevice,
) -> None:
    assert device.hardware.latched_faults() == FaultFlag.RESET
    device.receive(h("00 04 01 2a 06 03 19 d5 00"))
    reply = FrameDecoder().feed(device.transmit())[0]
    assert (reply.code, reply.seq, reply.payload) == (Reply.ACK, 0x2A, b"\x06")


def test_identify_reports_the_impersonated_profile(device: SimulatedDevice) -> None:
    reply = command(device, Command.IDENTIFY, 1)
    info = IdentifyReply.decode(reply.payload[1:])
    assert reply.payload[0] == Command.IDENTIFY
    assert (info.model, info.firmware, info.channels) == ("PF-2 pelvic NMES", "1.0", 2)
    assert info.amplitude_max_ua == 90_000
    assert info.amplitude_step_ua == 100
    assert info.watchdog_ms == 250
    assert "sim-fault-injection" in info.to_identity().capabilities


def test_over_limit_amplitude_is_refused_not_clamped(device: SimulatedDevice) -> None:
    bring_up(device)
    nack = nack_of(command(device, Command.SET_AMPLITUDE, 4, encode_set_amplitude({1: 90_100})))
    assert (nack.error, nack.channel, nack.detail) == (ErrorCode.OUT_OF_RANGE, 1, 90_000)
    status, _ = decode_status(command(device, Command.STATUS, 5).payload[1:])
    assert status.channel(1).commanded_ua == 0


def test_multi_channel_amplitude_is_all_or_nothing(device: SimulatedDevice) -> None:
    bring_up(device)
    nack = nack_of(
        command(device, Command.SET_AMPLITUDE, 4, encode_set_amplitude({1: 5000, 2: 5050}))
    )
    assert (nack.error, nack.channel, nack.detail) == (ErrorCode.NOT_A_STEP, 2, 100)
    status, _ = decode_status(command(device, Command.STATUS, 5).payload[1:])
    assert status.channel(1).commanded_ua == 0


@pytest.mark.parametrize(
    ("config", "error", "limit"),
    [
        (_sym(1, 460, 460, 20_000), "OUT_OF_RANGE", 450),
        (_sym(1, 40, 40, 20_000), "OUT_OF_RANGE", 50),
        (_sym(1, 205, 205, 20_000), "NOT_A_STEP", 10),
        (_sym(1, 200, 200, 9_000), "OUT_OF_RANGE", 10_000),
        (_sym(1, 200, 200, 600_000), "OUT_OF_RANGE", 500_000),
        (_sym(1, 200, 300, 20_000), "BAD_ARGUMENT", None),
        (_sym(3, 200, 200, 20_000), "UNKNOWN_CHANNEL", None),
        (
            ChannelConfig(1, ShapeKind.LONG_BIPHASIC_RECTANGULAR, (400, 400), 0, 20_000),
            "UNSUPPORTED_SHAPE",
            None,
        ),
    ],
)
def test_configure_is_checked_against_the_hardware(
    device: SimulatedDevice, config: ChannelConfig, error: str, limit: int | None
) -> None:
    nack = nack_of(command(device, Command.CONFIGURE, 3, encode_configure(config)))
    assert nack.error_name == error
    assert nack.detail == limit
    assert nack.message  # a person can read why
    assert device.hardware.channel_config(1) is None


def test_output_on_needs_configuration_and_no_latched_fault(device: SimulatedDevice) -> None:
    nack = nack_of(command(device, Command.OUTPUT_ON, 2, h("0001")))
    assert nack.error == ErrorCode.NOT_CONFIGURED
    command(device, Command.CONFIGURE, 3, encode_configure(CONFIG))
    nack = nack_of(command(device, Command.OUTPUT_ON, 4, h("0001")))
    assert nack.error == ErrorCode.FAULT_LATCHED
    assert nack.detail == FaultFlag.RESET
    command(device, Command.CLEAR_FAULT, 5, h("0080"))
    assert command(device, Command.OUTPUT_ON, 6, h("0001")).code == Reply.ACK


def test_reconfigure_and_impedance_test_need_output_off(device: SimulatedDevice) -> None:
    bring_up(device)
    command(device, Command.OUTPUT_ON, 4, h("0001"))
    assert nack_of(command(device, Command.CONFIGURE, 5, encode_configure(CONFIG))).error == (
        ErrorCode.WRONG_STATE
    )
    assert nack_of(command(device, Command.MEASURE_IMPEDANCE, 6, h("01"))).error == (
        ErrorCode.WRONG_STATE
    )
    command(device, Command.OUTPUT_OFF, 7)
    reply = command(device, Command.MEASURE_IMPEDANCE, 8, h("01"))
    assert reply.payload[:2] == h("09 01")


def test_malformed_commands_get_specific_nacks(device: SimulatedDevice) -> None:
    assert nack_of(command(device, 0x55, 1)).error == ErrorCode.UNKNOWN_COMMAND
    nack = nack_of(command(device, Command.HEARTBEAT, 2, b"\x00"))
    assert (nack.error, nack.detail) == (ErrorCode.BAD_LENGTH, 0)
    assert nack_of(command(device, Command.SET_AMPLITUDE, 3, h("02 01"))).error == (
        ErrorCode.BAD_LENGTH
    )
    assert nack_of(command(device, Command.SIM_INJECT, 4, b"nonsense")).error == (
        ErrorCode.BAD_ARGUMENT
    )


def test_other_version_is_nacked_and_does_not_feed_the_watchdog(
    device: SimulatedDevice,
) -> None:
    wire = Frame(Command.HEARTBEAT, 9, version=2).encode()
    (reply,) = send(device, wire)
    nack = nack_of(reply)
    assert (reply.seq, nack.error, nack.detail) == (9, ErrorCode.BAD_VERSION, 1)
    assert device.hardware.next_deadline_ns() is None  # watchdog still unarmed


def test_a_retry_is_answered_from_the_cache_without_acting_twice(
    device: SimulatedDevice,
) -> None:
    clear_all = encode_frame(Command.CLEAR_FAULT, 2, h("ffff"))
    first = send(device, clear_all)
    assert first[0].payload == h("0a 0000")
    # Behind the host's back the device trips (firmware calls, no frame).
    device.hardware.configure(CONFIG)
    device.hardware.output_on([1])
    device.hardware.open_electrode(1)
    assert device.hardware.latched_faults() == FaultFlag.OPEN_CIRCUIT
    # The host re-sends the same frame (its reply was lost): same answer, not re-executed.
    again = send(device, clear_all)
    assert [f.raw for f in again] != []
    replies = [f for f in again if f.code == Reply.ACK]
    assert replies[0].raw == first[0].raw
    assert device.hardware.latched_faults() == FaultFlag.OPEN_CIRCUIT
    # A new command (new seq) is executed.
    assert command(device, Command.CLEAR_FAULT, 3, h("ffff")).payload == h("0a 0000")
    assert device.hardware.latched_faults() == FaultFlag.NONE


def test_duplicate_frame_is_not_executed_twice(device: SimulatedDevice) -> None:
    bring_up(device)
    on = encode_frame(Command.OUTPUT_ON, 4, h("0001"))
    assert send(device, on)[0].code == Reply.ACK
    device.hardware.output_off()  # something else switched it off meanwhile
    (again,) = send(device, on)  # identical bytes: the host's retry of a lost reply
    assert (again.code, again.seq) == (Reply.ACK, 4)
    assert not device.hardware.any_output_on
    (fresh,) = send(device, encode_frame(Command.OUTPUT_ON, 5, h("0001")))
    assert fresh.code == Reply.ACK
    assert device.hardware.any_output_on
    command(device, Command.STOP_ALL, 6)


def test_watchdog_trip_sends_an_event_and_zeroes_output(
    device: SimulatedDevice, clock: VirtualClock
) -> None:
    bring_up(device)
    command(device, Command.SET_AMPLITUDE, 4, encode_set_amplitude({1: 10_000}))
    command(device, Command.OUTPUT_ON, 5, h("0001"))
    clock.advance(249 * NS_PER_MS)
    assert device.hardware.any_output_on
    clock.advance(1 * NS_PER_MS)
    assert not device.hardware.any_output_on
    (event,) = FrameDecoder().feed(device.transmit())
    assert event.code == Reply.EVENT
    decoded = Event.decode(event.payload)
    assert (decoded.faults, decoded.channel) == (FaultFlag.WATCHDOG, None)
    assert event.seq == 1  # the power-up announcement was event 0


def test_stop_all_acts_in_the_same_feed_as_earlier_frames(device: SimulatedDevice) -> None:
    bring_up(device)
    burst = (
        encode_frame(Command.SET_AMPLITUDE, 4, encode_set_amplitude({1: 10_000}))
        + encode_frame(Command.OUTPUT_ON, 5, h("0001"))
        + b"\x00"
        + encode_frame(Command.STOP_ALL, 6)
    )
    replies = send(device, burst)
    assert [(r.code, r.seq) for r in replies] == [(Reply.ACK, 4), (Reply.ACK, 5), (Reply.ACK, 6)]
    assert not device.hardware.any_output_on
    ons = [r for r in device.trace.records("output") if r["output_on"]]
    assert ons  # the output really went on before the stop
