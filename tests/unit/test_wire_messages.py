"""estim-wire/1 payload layouts, against hand-written bytes."""

from __future__ import annotations

import pytest

from estim.device.base import ChannelConfig, ChannelStatus, DeviceStatus, FaultFlag
from estim.device.wire.messages import (
    Capability,
    Command,
    ErrorCode,
    Event,
    IdentifyReply,
    MessageError,
    Nack,
    decode_channel_mask,
    decode_configure,
    decode_set_amplitude,
    decode_status,
    encode_channel_mask,
    encode_configure,
    encode_set_amplitude,
    encode_status,
)
from estim.protocols.models import ShapeKind


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def test_configure_layout() -> None:
    config = ChannelConfig(2, ShapeKind.ASYMMETRIC_BIPHASIC, (250, 1000), 50, 28572)
    payload = h("02 02 000000fa 000003e8 00000032 00006f9c")
    assert encode_configure(config) == payload
    assert decode_configure(payload) == config


def test_configure_monophasic_sends_zero_second_phase() -> None:
    config = ChannelConfig(1, ShapeKind.MONOPHASIC_RECTANGULAR, (100_000,), 0, 3_333_333)
    payload = encode_configure(config)
    assert payload[6:10] == b"\x00\x00\x00\x00"
    assert decode_configure(payload) == config


def test_configure_unknown_shape_is_refused() -> None:
    with pytest.raises(MessageError, match="unknown shape"):
        decode_configure(h("01 09") + bytes(16))


def test_set_amplitude_layout_is_sorted_by_channel() -> None:
    assert encode_set_amplitude({2: 500, 1: 90_000}) == h("02 01 00015f90 02 000001f4")
    assert decode_set_amplitude(h("02 01 00015f90 02 000001f4")) == {1: 90_000, 2: 500}


@pytest.mark.parametrize(
    ("payload", "match"),
    [("00", "no channel"), ("01 01 0000", "ends early"), ("02 01 00000001 01 00000002", "twice")],
)
def test_set_amplitude_malformed(payload: str, match: str) -> None:
    with pytest.raises(MessageError, match=match):
        decode_set_amplitude(h(payload))


def test_channel_mask() -> None:
    assert encode_channel_mask([1, 2]) == h("00 03")
    assert encode_channel_mask([16]) == h("80 00")
    assert decode_channel_mask(h("80 01")) == (1, 16)
    with pytest.raises(MessageError):
        decode_channel_mask(h("00 00"))
    with pytest.raises(MessageError):
        encode_channel_mask([17])


def test_status_layout() -> None:
    status = DeviceStatus(
        (
            ChannelStatus(1, 20_000, 20_150, 800, True, FaultFlag.COMPLIANCE),
            ChannelStatus(2, 0, None, None, False, FaultFlag.OPEN_CIRCUIT),
        ),
        faults=FaultFlag.WATCHDOG,
    )
    payload = encode_status(status, 4000)
    assert payload == h(
        "0004 00000fa0 02 01 0008 00004e20 00004eb6 00000320 00 0001 00000000 ffffffff ffffffff"
    )
    decoded, uptime = decode_status(payload, taken_at_ns=7)
    assert uptime == 4000
    assert decoded == DeviceStatus(status.channels, faults=FaultFlag.WATCHDOG, taken_at_ns=7)


def test_status_rejects_trailing_bytes() -> None:
    status = DeviceStatus((ChannelStatus(1, 0, 0, 500, False),))
    with pytest.raises(MessageError, match="trailing"):
        decode_status(encode_status(status, 0) + b"\x00")


def test_identify_layout_and_identity() -> None:
    reply = IdentifyReply(1, 2, Capability(3), 90_000, 100, 250, "ACME", "PF-2", "SN1", "1.0")
    payload = h("01 02 0003 00015f90 00000064 00fa 04 41434d45 04 50462d32 03 534e31 03 312e30")
    assert reply.encode() == payload
    assert IdentifyReply.decode(payload) == reply
    identity = reply.to_identity()
    assert identity.capabilities == {"measures-current", "measures-impedance"}
    assert (identity.model, identity.serial_number, identity.firmware) == ("PF-2", "SN1", "1.0")


def test_identify_truncated() -> None:
    with pytest.raises(MessageError):
        IdentifyReply.decode(h("01 02 0003 00015f90"))


def test_nack_layout() -> None:
    nack = Nack(Command.SET_AMPLITUDE, ErrorCode.OUT_OF_RANGE, 1, 90_000, "too much")
    payload = h("03 05 01 00015f90") + b"too much"
    assert nack.encode() == payload
    assert Nack.decode(payload) == nack
    assert nack.error_name == "OUT_OF_RANGE"
    assert Nack.decode(h("01 01 00 ffffffff")) == Nack(1, 1, None, None, "")


def test_event_layout() -> None:
    event = Event(FaultFlag.OPEN_CIRCUIT, 2, 1234, "open")
    payload = h("02 0001 000004d2") + b"open"
    assert event.encode() == payload
    assert Event.decode(payload) == event
    assert Event.decode(h("00 0080 00000000")).channel is None
