"""ScienceMode2Stimulator against a scripted port: the exact bytes each operation writes.

The scripted port plays the device from a table of literal frames (host frame ->
device reply), in the style of pymeasure's ``expected_protocol``. Every frame below was
laid out by hand from the protocol facts; CRCs come from polynomial long division,
independently of estim's codec. Time is virtual, so timeouts cost nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from serial.serialutil import SerialException

from estim.clock import NS_PER_MS, VirtualClock
from estim.device import transport
from estim.device.base import ChannelConfig, DeviceEvent, FaultFlag
from estim.device.profile import DeviceProfile, Link, builtin_profile
from estim.device.sciencemode2 import driver as driver_module
from estim.device.sciencemode2.driver import ScienceMode2Stimulator, SupersededByStop
from estim.device.sciencemode2.messages import StimulationMode
from estim.errors import (
    CommandSuperseded,
    DeviceDisconnected,
    DeviceFaulted,
    DeviceRejected,
    DeviceTimeout,
    IdentityMismatch,
    ProtocolError,
)
from estim.protocols.models import ShapeKind


def frame(text: str) -> bytes:
    return bytes.fromhex(text)


# --- device -> host ----------------------------------------------------------------------
INIT_D0 = frame("F0 81 47 81 56 00 01 01 0F")  # Init, counter 0, version 1
INIT_D20 = frame("F0 81 4E 81 56 14 01 01 0F")  # Init, counter 0x14, version 1
INIT_D0F = frame("F0 81 C3 81 51 81 5A 01 01 0F")  # Init, counter 0x0F (escaped)
INIT_V2 = frame("F0 81 74 81 56 09 01 02 0F")  # Init, counter 9, version 2
MODE_ACK_START = frame("F0 81 AF 81 51 01 0B 00 00 0F")  # GetStimulationModeAck ok, mode 0
MODE_ACK_STIM = frame("F0 81 A1 81 51 01 0B 00 02 0F")  # GetStimulationModeAck ok, mode 2
# GetStimulationModeAck ok, mode 1 (initialised): payload 01 0B 00 01, CRC 0xFD -> A8.
MODE_ACK_INIT = frame("F0 81 A8 81 51 01 0B 00 01 0F")
# ... mode 3, which ScienceMode2 does not define: payload 01 0B 00 03, CRC 0xF3 -> A6.
MODE_ACK_3 = frame("F0 81 A6 81 51 01 0B 00 03 0F")
# ... result -1 (transfer error), mode 0: payload 01 0B FF 00, CRC 0x2D -> 78.
MODE_NACK = frame("F0 81 78 81 51 01 0B FF 00 0F")
INIT_CLM_ACK = frame("F0 81 17 81 56 02 1F 00 0F")  # InitChannelListModeAck ok
START_ACK = frame("F0 81 53 81 56 03 21 00 0F")  # StartChannelListModeAck ok
START_NACK_PARAM = frame("F0 81 B1 81 56 04 21 FE 0F")  # ... result -2
START_NACK_BUSY = frame("F0 81 A3 81 56 04 21 F8 0F")  # ... result -8
START_NACK_MODE = frame("F0 81 B8 81 56 04 21 FD 0F")  # ... result -3 (CRC 0xED)
STOP_ACK = frame("F0 81 04 81 56 05 23 00 0F")  # StopChannelListModeAck ok
STIM_ERROR = {
    -1: frame("F0 81 0B 81 56 06 26 FF 0F"),
    -2: frame("F0 81 0C 81 56 06 26 FE 0F"),
    -3: frame("F0 81 05 81 56 06 26 FD 0F"),
}
UNKNOWN = frame("F0 81 37 81 57 07 03 0F")  # UnknownCommand

# --- host -> device ----------------------------------------------------------------------
INIT_ACK_C0 = frame("F0 81 7F 81 56 00 02 00 0F")  # InitAck echoing counter 0, result 0
INIT_ACK_C14 = frame("F0 81 76 81 56 14 02 00 0F")  # InitAck echoing counter 0x14
INIT_ACK_C0F = frame("F0 81 FB 81 51 81 5A 02 00 0F")  # InitAck echoing 0x0F, escaped
GET_MODE_C0 = frame("F0 81 6C 81 56 00 81 5F 0F")  # GetStimulationMode, counter 0
# GetStimulationMode, counter N: payload N 81 5F (command 10 = 0x0A is escaped), LEN 3 ->
# 56; CRCs by long division: N=1 0x52, 3 0x84, 4 0x92, 5 0xF9, 6 0x44, 7 0x2F (-> ^55).
GET_MODE_C1 = frame("F0 81 07 81 56 01 81 5F 0F")
GET_MODE_C3 = frame("F0 81 D1 81 56 03 81 5F 0F")
GET_MODE_C4 = frame("F0 81 C7 81 56 04 81 5F 0F")
GET_MODE_C5 = frame("F0 81 AC 81 56 05 81 5F 0F")
GET_MODE_C6 = frame("F0 81 11 81 56 06 81 5F 0F")
GET_MODE_C7 = frame("F0 81 7A 81 56 07 81 5F 0F")
# InitChannelListMode, counter 1: lf 0, channel 1, lf mask 0, IPI 2 ms, 20 ms (code 38).
INIT_CLM_C1 = frame("F0 81 06 81 5C 01 1E 00 01 00 01 00 26 00 0F")
# Same with channel 2 at 40 ms: lf factor 1, mask 03, lf mask 02.
INIT_CLM_C1_LF = frame("F0 81 4F 81 5C 01 1E 01 03 02 01 00 26 00 0F")
# StartChannelListMode: per channel mode, width MSB, LSB, mA. "Off" is width 0.
START_C2_0MA = frame("F0 81 5A 81 53 02 20 00 01 2C 00 0F")  # ch1 300 us 0 mA (width probe)
START_C3_OFF = frame("F0 81 4A 81 53 03 20 00 00 00 00 0F")  # ch1 width 0: armed, no pulses
START_C4_0MA = frame("F0 81 AC 81 53 04 20 00 01 2C 00 0F")  # ch1 300 us 0 mA: output on
START_C5_20MA = frame("F0 81 E9 81 53 05 20 00 01 2C 14 0F")  # ch1 300 us 20 mA
WATCHDOG_C5 = frame("F0 81 08 81 57 05 04 0F")
STOP_C4 = frame("F0 81 EF 81 57 04 22 0F")
STOP_C5 = frame("F0 81 FA 81 57 05 22 0F")
STOP_C6 = frame("F0 81 C5 81 57 06 22 0F")
# Two channels (the low-frequency list above): both 300 us at 0 mA, then both off.
START_C2_LF = frame("F0 81 BE 81 5F 02 20 00 01 2C 00 00 01 2C 00 0F")
START_C3_LF_OFF = frame("F0 81 E0 81 5F 03 20 00 00 00 00 00 00 00 00 0F")


class ScriptedPort:
    """The far end of the serial line, played from a table of literal frames."""

    def __init__(self, announce: bytes = INIT_D0) -> None:
        self.announce = announce
        self.replies: dict[bytes, bytes] = {}
        self.written: list[bytes] = []
        self.inbox = bytearray()
        self.is_open = True
        self.fail_writes = False
        self.fail_reads = False
        self.on_read: Callable[[], None] | None = None

    def reply(self, host_frame: bytes, device_bytes: bytes) -> None:
        self.replies[host_frame] = device_bytes

    def push(self, device_bytes: bytes) -> None:
        self.inbox += device_bytes

    # pyserial's interface, as much as SerialLink uses
    def write(self, data: bytes) -> int:
        if self.fail_writes:
            raise SerialException("device reports readiness to read but returned no data")
        self.written.append(bytes(data))
        self.inbox += self.replies.get(bytes(data), b"")
        return len(data)

    @property
    def in_waiting(self) -> int:
        if self.fail_reads:
            raise SerialException("read failed: [Errno 5] Input/output error")
        return len(self.inbox)

    def read(self, size: int = 1) -> bytes:
        if self.on_read is not None and self.inbox:
            hook, self.on_read = self.on_read, None
            data = bytes(self.inbox)
            self.inbox.clear()
            hook()
            return data
        data = bytes(self.inbox[:size])
        del self.inbox[:size]
        return data

    def reset_input_buffer(self) -> None:
        self.inbox.clear()
        self.inbox += self.announce  # what the device says next

    def cancel_read(self) -> None:
        pass

    def close(self) -> None:
        self.is_open = False


PROFILE = builtin_profile("hasomed-rehastim2")


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> ScriptedPort:
    scripted = ScriptedPort()
    scripted.reply(GET_MODE_C0, MODE_ACK_START)
    opened: list[Link | None] = []

    def open_link(url: str, link: Link | None = None, **_: object) -> transport.SerialLink:
        opened.append(link)
        return transport.SerialLink(url, scripted)

    monkeypatch.setattr(driver_module, "open_link", open_link)
    scripted.opened = opened  # type: ignore[attr-defined]
    return scripted


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def driver(port: ScriptedPort, clock: VirtualClock) -> Iterator[ScienceMode2Stimulator]:
    stimulator = ScienceMode2Stimulator(
        PROFILE, "script://rehastim2", clock=clock, probe_simulator=False
    )
    yield stimulator
    stimulator._close()  # no STOP on close: tests assert exactly what was written


def channel(number: int = 1, width_us: int = 300, period_us: int = 20_000) -> ChannelConfig:
    return ChannelConfig(number, ShapeKind.SYMMETRIC_BIPHASIC, (width_us, width_us), 0, period_us)


def opened(driver: ScienceMode2Stimulator, port: ScriptedPort) -> ScienceMode2Stimulator:
    driver.open()
    port.written.clear()
    return driver


def configured(driver: ScienceMode2Stimulator, port: ScriptedPort) -> ScienceMode2Stimulator:
    """Channel 1 configured: counters 1-3 used, the next frame is counter 4."""
    port.reply(INIT_CLM_C1, INIT_CLM_ACK)
    port.reply(START_C2_0MA, START_ACK)
    port.reply(START_C3_OFF, START_ACK)
    opened(driver, port)
    driver.configure([channel()])
    port.written.clear()
    return driver


def running(driver: ScienceMode2Stimulator, port: ScriptedPort) -> ScienceMode2Stimulator:
    """Channel 1 on at 0 mA: the next frame is counter 5."""
    configured(driver, port)
    port.reply(START_C4_0MA, START_ACK)
    driver.output_on([1])
    port.written.clear()
    return driver


# --- handshake ----------------------------------------------------------------------------


def test_open_answers_init_with_its_counter_then_asks_the_mode(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    identity = driver.open()
    assert port.written == [INIT_ACK_C0, GET_MODE_C0]
    assert identity.protocol_version == 1
    assert identity.firmware == "1"
    assert identity.model == "RehaStim2"
    assert driver.stimulation_mode is StimulationMode.START


def test_open_uses_the_profiles_serial_settings(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    driver.open()
    (link,) = port.opened  # type: ignore[attr-defined]
    assert (link.baudrate, link.bytesize, link.parity, link.stopbits) == (460800, 8, "E", 1)


def test_serial_settings_reach_pyserial() -> None:
    link = transport.open_link("loop://", PROFILE.link)
    try:
        port = link.port
        assert (port.baudrate, port.bytesize, port.parity, port.stopbits) == (460800, 8, "E", 1)
    finally:
        link.close()


def test_init_ack_echoes_a_special_counter_escaped(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    port.announce = INIT_D0F
    driver.open()
    assert port.written[0] == INIT_ACK_C0F


def test_open_refuses_another_protocol_version_without_answering(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    port.announce = INIT_V2
    with pytest.raises(IdentityMismatch, match="protocol version 2"):
        driver.open()
    assert port.written == []


def test_open_times_out_when_the_device_never_announces(
    driver: ScienceMode2Stimulator, port: ScriptedPort, clock: VirtualClock
) -> None:
    port.announce = b""
    with pytest.raises(DeviceTimeout, match="did not announce itself"):
        driver.open()
    assert clock.now_ns() >= (PROFILE.link.watchdog_timeout_ms + 2000) * NS_PER_MS


def test_open_stops_a_device_that_reports_it_is_stimulating(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    port.reply(GET_MODE_C0, MODE_ACK_STIM)
    # StopChannelListMode, counter 1: payload 01 22, CRC by long division 0xFB -> AE.
    stop_c1 = frame("F0 81 AE 81 57 01 22 0F")
    port.reply(stop_c1, STOP_ACK)
    driver.open()
    assert port.written == [INIT_ACK_C0, GET_MODE_C0, stop_c1]


def test_an_error_the_device_reports_on_connecting_stays_latched(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    # A device that stopped on an electrode error before this connection says so right
    # after the handshake. ScienceMode2 has no command to read or clear it: it stays
    # latched, nothing is set up, and status reports it until a person clears it.
    port.reply(INIT_ACK_C0, STIM_ERROR[-2])
    events: list[DeviceEvent] = []
    driver.add_event_listener(events.append)
    driver.open()
    assert port.written == [INIT_ACK_C0, GET_MODE_C0]
    assert [e.faults for e in events] == [FaultFlag.ELECTRODE]
    port.reply(GET_MODE_C1, MODE_ACK_START)
    status = driver.status()
    assert status.faults == FaultFlag.ELECTRODE
    assert not status.any_output_on
    port.written.clear()
    with pytest.raises(DeviceFaulted, match="electrode"):
        driver.configure([channel()])
    assert port.written == []


# --- configure ----------------------------------------------------------------------------


def test_configure_lets_the_device_judge_interval_and_widths_then_arms_without_pulses(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    port.reply(INIT_CLM_C1, INIT_CLM_ACK)
    port.reply(START_C2_0MA, START_ACK)
    port.reply(START_C3_OFF, START_ACK)
    opened(driver, port).configure([channel()])
    assert port.written == [INIT_CLM_C1, START_C2_0MA, START_C3_OFF]
    assert driver.stimulation_mode is StimulationMode.STIMULATING  # armed, width 0
    port.reply(GET_MODE_C4, MODE_ACK_STIM)
    assert not driver.status().any_output_on  # stimulating, with no pulse on any channel
    assert driver.device_mode is StimulationMode.STIMULATING


def test_configure_uses_the_low_frequency_factor_for_a_slower_channel(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    port.reply(INIT_CLM_C1_LF, INIT_CLM_ACK)
    port.reply(START_C2_LF, START_ACK)
    port.reply(START_C3_LF_OFF, START_ACK)
    opened(driver, port).configure([channel(1), channel(2, period_us=40_000)])
    assert port.written == [INIT_CLM_C1_LF, START_C2_LF, START_C3_LF_OFF]


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (channel(period_us=28_571), "multiple of 500 us"),  # 35 Hz, not on the grid
        (channel(period_us=1_025_500), "can carry"),
        (channel(period_us=500), "can carry"),
        (channel(width_us=10), "below the RehaStim2's 20 us"),
        (
            ChannelConfig(1, ShapeKind.ASYMMETRIC_BIPHASIC, (200, 800), 0, 20_000),
            "symmetric biphasic pulses only",
        ),
        (ChannelConfig(1, ShapeKind.SYMMETRIC_BIPHASIC, (300, 300), 50, 20_000), "gap"),
        (
            ChannelConfig(1, ShapeKind.LONG_BIPHASIC_RECTANGULAR, (75_000, 75_000), 0, 650_000),
            "symmetric biphasic pulses only",
        ),
    ],
)
def test_configure_refuses_what_the_device_cannot_do(
    driver: ScienceMode2Stimulator, port: ScriptedPort, config: ChannelConfig, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        opened(driver, port).configure([config])
    assert port.written == []


def test_configure_refuses_periods_that_share_no_main_interval(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    with pytest.raises(ValueError, match="one main interval"):
        opened(driver, port).configure([channel(1), channel(2, period_us=30_000)])
    with pytest.raises(ValueError, match="one main interval"):
        driver.configure([channel(1), channel(2, period_us=200_000)])  # 10x: factor > 7
    with pytest.raises(ValueError, match="one main interval"):
        driver.configure([channel(1), channel(2, period_us=40_000), channel(3, period_us=60_000)])
    assert port.written == []


def test_an_interval_below_the_firmware_minimum_goes_to_the_device_which_refuses_it(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    # 7.5 ms (code 13) fits the wire; the firmware's minimum is 8 ms. The device must
    # refuse it itself (the bench proves that it does): parameter error, -2.
    init_7_5_ms = frame("F0 81 3F 81 5C 01 1E 00 01 00 01 00 0D 00 0F")
    port.reply(init_7_5_ms, frame("F0 81 E3 81 56 02 1F FE 0F"))  # ack, result -2
    with pytest.raises(DeviceRejected, match="parameter error") as raised:
        opened(driver, port).configure([channel(period_us=7_500)])
    assert raised.value.code == -2
    assert port.written == [init_7_5_ms]


def test_a_width_beyond_the_device_limit_is_refused_by_the_device(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    port.reply(INIT_CLM_C1, INIT_CLM_ACK)
    probe_501_us = frame("F0 81 5D 81 53 02 20 00 01 F5 00 0F")  # 501 us at 0 mA
    port.reply(probe_501_us, START_NACK_PARAM)
    with pytest.raises(DeviceRejected, match="parameter error"):
        opened(driver, port).configure([channel(width_us=501)])
    assert port.written == [INIT_CLM_C1, probe_501_us]
    port.reply(GET_MODE_C3, MODE_ACK_INIT)
    assert not driver.status().any_output_on


def test_from_train_periods_are_accepted() -> None:
    # 35 Hz rounds up to 29 ms on the 0.5 ms grid, as ChannelConfig.from_train does.
    from estim.protocols.models import PulseTrain, SymmetricBiphasic

    train = PulseTrain(shape=SymmetricBiphasic(phase_width_us=300), frequency_hz=35)
    config = ChannelConfig.from_train(1, train, PROFILE.output.pulse_period_resolution_us or 1)
    assert config.period_us == 29_000
    driver = ScienceMode2Stimulator(PROFILE, "unused")
    assert driver.channel_list_for((config,)).message.main_interval_us == 29_000


# --- output ---------------------------------------------------------------------------------


def test_output_on_then_amplitude_updates_resend_start(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    configured(driver, port)
    port.reply(START_C4_0MA, START_ACK)
    driver.output_on([1])
    port.reply(START_C5_20MA, START_ACK)
    driver.set_amplitudes({1: 20_000})
    assert port.written == [START_C4_0MA, START_C5_20MA]
    port.reply(GET_MODE_C6, MODE_ACK_STIM)
    status = driver.status()
    assert status.channel(1).commanded_ua == 20_000
    assert status.channel(1).output_on


def test_channels_not_switched_on_get_width_zero(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    port.reply(INIT_CLM_C1_LF, INIT_CLM_ACK)
    port.reply(START_C2_LF, START_ACK)
    port.reply(START_C3_LF_OFF, START_ACK)
    both_off = frame("F0 81 2D 81 5F 04 20 00 00 00 05 00 00 00 09 0F")  # 5 and 9 mA, width 0
    one_on = frame("F0 81 4A 81 5F 05 20 00 01 2C 05 00 00 00 09 0F")  # ch1 300 us 5 mA
    port.reply(both_off, START_ACK)
    port.reply(one_on, START_ACK)
    opened(driver, port).configure([channel(1), channel(2, period_us=40_000)])
    driver.set_amplitudes({1: 5000, 2: 9000})
    driver.output_on([1])
    assert port.written[-2:] == [both_off, one_on]
    port.reply(GET_MODE_C6, MODE_ACK_STIM)
    status = driver.status()
    assert status.channel(1).output_on
    assert status.channel(1).commanded_ua == 5000
    assert not status.channel(2).output_on
    assert status.channel(2).commanded_ua == 0


def test_amplitudes_while_off_are_sent_with_width_zero_so_the_device_judges_them(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    configured(driver, port)
    seven_ma = frame("F0 81 80 81 53 04 20 00 00 00 07 0F")  # width 0, 7 mA
    port.reply(seven_ma, START_ACK)
    driver.set_amplitudes({1: 7000})
    assert port.written == [seven_ma]
    port.reply(GET_MODE_C5, MODE_ACK_STIM)
    assert not driver.status().any_output_on


def test_an_over_limit_amplitude_is_refused_by_the_device_with_no_pulse(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    configured(driver, port)
    too_much = frame("F0 81 EF 81 53 04 20 00 00 00 7F 0F")  # width 0, 127 mA
    port.reply(too_much, START_NACK_PARAM)
    with pytest.raises(DeviceRejected, match="parameter error"):
        driver.set_amplitudes({1: 127_000})
    assert port.written == [too_much]
    port.reply(GET_MODE_C5, MODE_ACK_STIM)
    one = driver.status().channel(1)
    assert (one.output_on, one.commanded_ua) == (False, 0)


@pytest.mark.parametrize("amplitude_ua", [12_500, 1, 256_000])
def test_amplitudes_the_wire_cannot_carry_are_refused(
    driver: ScienceMode2Stimulator, port: ScriptedPort, amplitude_ua: int
) -> None:
    running(driver, port)
    with pytest.raises(ValueError, match="mA"):
        driver.set_amplitudes({1: amplitude_ua})
    assert port.written == []
    port.reply(GET_MODE_C5, MODE_ACK_STIM)
    one = driver.status().channel(1)
    assert (one.output_on, one.commanded_ua) == (True, 0)  # still pulsing at 0 mA


def test_amplitude_for_an_unconfigured_channel_is_refused(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    running(driver, port)
    with pytest.raises(ValueError, match="channel 2 is not configured"):
        driver.set_amplitudes({2: 1000})


@pytest.mark.parametrize(
    ("reply", "code", "name"),
    [(START_NACK_PARAM, -2, "parameter error"), (START_NACK_BUSY, -8, "busy")],
)
def test_a_refused_update_raises_with_the_code_and_keeps_the_old_amplitude(
    driver: ScienceMode2Stimulator, port: ScriptedPort, reply: bytes, code: int, name: str
) -> None:
    running(driver, port)
    port.reply(START_C5_20MA, reply)
    with pytest.raises(DeviceRejected) as raised:
        driver.set_amplitudes({1: 20_000})
    assert (raised.value.code, raised.value.code_name) == (code, name)
    port.reply(GET_MODE_C6, MODE_ACK_STIM)
    one = driver.status().channel(1)
    assert (one.output_on, one.commanded_ua) == (True, 0)  # the refused 20 mA never counts


def test_unknown_command_reply_is_a_rejection(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    running(driver, port)
    port.reply(START_C5_20MA, UNKNOWN)
    with pytest.raises(DeviceRejected, match="does not know START_CHANNEL_LIST_MODE"):
        driver.set_amplitudes({1: 20_000})


def test_no_reply_is_a_timeout(
    driver: ScienceMode2Stimulator, port: ScriptedPort, clock: VirtualClock
) -> None:
    opened(driver, port)
    before = clock.now_ns()
    with pytest.raises(DeviceTimeout, match="no reply to INIT_CHANNEL_LIST_MODE within 150 ms"):
        driver.configure([channel()])
    assert clock.now_ns() - before >= 150 * NS_PER_MS
    assert driver.stats.timeouts == 1


def test_output_off_sends_stop_and_waits_for_its_ack(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    running(driver, port)
    port.reply(STOP_C5, STOP_ACK)
    driver.output_off()
    assert port.written == [STOP_C5]
    assert driver.device_mode is StimulationMode.START  # from its acknowledgement
    assert driver.stimulation_mode is StimulationMode.START
    port.reply(GET_MODE_C6, MODE_ACK_START)
    assert not driver.status().any_output_on


def test_output_on_after_a_stop_initialises_the_channel_list_again(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    running(driver, port)
    port.reply(STOP_C5, STOP_ACK)
    driver.output_off()
    port.written.clear()
    # InitChannelListMode counter 6 and StartChannelListMode counter 7 (300 us, 0 mA):
    # payloads 06 1E 00 01 00 01 00 26 00 (CRC 0x3B -> 6E) and 07 20 00 01 2C 00
    # (CRC 0x82 -> D7).
    init_c6 = frame("F0 81 6E 81 5C 06 1E 00 01 00 01 00 26 00 0F")
    start_c7 = frame("F0 81 D7 81 53 07 20 00 01 2C 00 0F")
    port.reply(init_c6, INIT_CLM_ACK)
    port.reply(start_c7, START_ACK)
    driver.output_on([1])
    assert port.written == [init_c6, start_c7]


# --- status, heartbeat, stop --------------------------------------------------------------


def test_status_asks_the_device_its_mode_and_reports_the_channel_list_it_acknowledged(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    running(driver, port)
    port.reply(START_C5_20MA, START_ACK)
    driver.set_amplitudes({1: 20_000})
    port.written.clear()
    port.reply(GET_MODE_C6, MODE_ACK_STIM)
    status = driver.status()
    assert port.written == [GET_MODE_C6]  # a question, answered (it feeds the watchdog too)
    assert len(status.channels) == 8
    one = status.channel(1)
    assert (one.commanded_ua, one.measured_ua, one.impedance_ohm, one.output_on) == (
        20_000,
        None,
        None,
        True,
    )
    assert not any(c.output_on for c in status.channels[1:])
    assert status.faults == FaultFlag.NONE


def test_a_status_nobody_answers_is_a_timeout(
    driver: ScienceMode2Stimulator, port: ScriptedPort, clock: VirtualClock
) -> None:
    running(driver, port)
    before = clock.now_ns()
    with pytest.raises(DeviceTimeout, match="no reply to GET_STIMULATION_MODE within 150 ms"):
        driver.status()
    assert port.written == [GET_MODE_C5]
    assert clock.now_ns() - before >= 150 * NS_PER_MS


@pytest.mark.parametrize(
    ("reply", "error", "match"),
    [
        (MODE_ACK_3, ProtocolError, "unknown mode 3"),
        (MODE_NACK, DeviceRejected, "transfer error"),
    ],
)
def test_a_status_answer_that_makes_no_sense_is_an_error(
    driver: ScienceMode2Stimulator,
    port: ScriptedPort,
    reply: bytes,
    error: type[Exception],
    match: str,
) -> None:
    running(driver, port)
    port.reply(GET_MODE_C5, reply)
    with pytest.raises(error, match=match):
        driver.status()


def test_status_after_stop_all_is_what_the_device_says_not_what_was_sent(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    # The stop's acknowledgement never comes, and the device says it is stimulating
    # (the stop was lost): the output is reported on, on channel 1 at 0 mA.
    running(driver, port)
    driver.stop_all()
    port.reply(GET_MODE_C6, MODE_ACK_STIM)
    status = driver.status()
    assert port.written == [STOP_C5, GET_MODE_C6]
    assert status.channel(1).output_on
    assert driver.stimulation_mode is StimulationMode.START  # what the driver commanded
    assert driver.device_mode is StimulationMode.STIMULATING  # what the device said
    # The device says it is in start mode: confirmed off, by the device.
    port.reply(GET_MODE_C7, MODE_ACK_START)
    status = driver.status()
    assert not status.any_output_on
    assert status.faults == FaultFlag.NONE  # a stop was sent: start mode is no surprise


def test_a_stop_acknowledged_by_the_device_is_known_before_any_status(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    running(driver, port)
    port.reply(STOP_C5, STOP_ACK)
    driver.stop_all()  # its acknowledgement waits in the port, unread
    assert driver.device_mode is StimulationMode.STIMULATING
    driver.poll_events()
    assert driver.device_mode is StimulationMode.START


def test_an_update_whose_acknowledgement_is_lost_counts_as_applied(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    # Output on (width 300 us) is written, no acknowledgement comes: it may have been
    # applied, so a device that says "stimulating" is taken to pulse on channel 1.
    configured(driver, port)
    with pytest.raises(DeviceTimeout):
        driver.output_on([1])
    port.reply(GET_MODE_C5, MODE_ACK_STIM)
    assert driver.status().channel(1).output_on


def test_a_device_stimulating_with_no_channel_list_estim_set_up_is_on_everywhere(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    opened(driver, port)  # start mode, nothing set up
    port.reply(GET_MODE_C1, MODE_ACK_STIM)
    status = driver.status()
    assert all(c.output_on for c in status.channels)
    assert all(c.commanded_ua == 0 for c in status.channels)


def test_a_device_that_stopped_by_itself_without_saying_so_latches_hardware(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    # The driver had it stimulating and sent no stop; the device says "start mode"
    # (its StimulationError, or its restart, was lost on the line).
    running(driver, port)
    events: list[DeviceEvent] = []
    driver.add_event_listener(events.append)
    port.reply(GET_MODE_C5, MODE_ACK_START)
    status = driver.status()
    assert not status.any_output_on
    assert status.faults == FaultFlag.HARDWARE
    assert [e.faults for e in events] == [FaultFlag.HARDWARE]
    assert "stopped stimulating by itself" in events[0].detail
    with pytest.raises(DeviceFaulted):
        driver.output_on([1])
    assert port.written == [GET_MODE_C5]


def test_a_lower_mode_after_a_stop_is_no_contradiction(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    running(driver, port)
    driver.stop_all()
    port.reply(GET_MODE_C6, MODE_ACK_START)
    assert driver.status().faults == FaultFlag.NONE


def test_heartbeat_is_a_watchdog_frame(driver: ScienceMode2Stimulator, port: ScriptedPort) -> None:
    running(driver, port)
    driver.heartbeat()
    assert port.written == [WATCHDOG_C5]  # payload 05 04, CRC 0x5D -> 08


def test_measure_impedance_is_none(driver: ScienceMode2Stimulator, port: ScriptedPort) -> None:
    running(driver, port)
    assert driver.measure_impedance(1) is None
    assert port.written == []


def test_stop_all_writes_stop_at_once_without_waiting(
    driver: ScienceMode2Stimulator, port: ScriptedPort, clock: VirtualClock
) -> None:
    running(driver, port)
    before = clock.now_ns()
    driver.stop_all()  # no reply is scripted: it must not wait for one
    assert port.written == [STOP_C5]
    assert clock.now_ns() == before
    port.reply(GET_MODE_C6, MODE_ACK_START)
    assert not driver.status().any_output_on


def test_stop_all_reply_is_not_taken_for_a_later_command(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    running(driver, port)
    port.reply(STOP_C5, STOP_ACK)
    driver.stop_all()  # its StopAck waits unread in the port
    # output_off's own Stop (counter 6) gets no reply: the queued StopAck belongs to
    # stop_all, so output_off must not take it as its own.
    with pytest.raises(DeviceTimeout):
        driver.output_off()
    assert port.written == [STOP_C5, STOP_C6]
    assert driver.stats.stale_replies == 0


def test_stop_all_supersedes_a_command_not_yet_written(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    configured(driver, port)
    driver.stop_all()  # counter 4: back to start mode
    port.written.clear()
    # output_on must now initialise again (counter 5), then start (counter 6). An
    # emergency stop (counter 6) lands while the InitChannelListMode reply is read:
    # the start must never reach the device after it.
    # InitChannelListMode, counter 5: payload 05 1E 00 01 00 01 00 26 00, CRC 0xB0 -> E5.
    init_c5 = frame("F0 81 E5 81 5C 05 1E 00 01 00 01 00 26 00 0F")
    port.reply(init_c5, INIT_CLM_ACK)
    port.on_read = driver.stop_all
    with pytest.raises(SupersededByStop, match="emergency stop came first") as raised:
        driver.output_on([1])
    assert isinstance(raised.value, CommandSuperseded)  # what the controller recognises
    assert port.written == [init_c5, STOP_C6]
    port.reply(GET_MODE_C7, MODE_ACK_START)
    assert not driver.status().any_output_on


def test_a_status_question_is_never_superseded_by_a_stop(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    # An emergency stop lands while the status answer is being read: the answer stands
    # for the moment it was asked (stimulating), and the next one for after the stop.
    running(driver, port)
    port.reply(GET_MODE_C5, MODE_ACK_STIM)
    port.on_read = driver.stop_all
    assert driver.status().channel(1).output_on
    assert port.written == [GET_MODE_C5, STOP_C6]
    port.reply(GET_MODE_C7, MODE_ACK_START)
    status = driver.status()
    assert not status.any_output_on
    assert status.faults == FaultFlag.NONE


# --- unsolicited frames -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "flag"),
    [(-1, FaultFlag.EMERGENCY_SWITCH), (-2, FaultFlag.ELECTRODE), (-3, FaultFlag.HARDWARE)],
)
def test_stimulation_error_latches_a_fault_and_reports_an_event(
    driver: ScienceMode2Stimulator, port: ScriptedPort, code: int, flag: FaultFlag
) -> None:
    running(driver, port)
    events: list[DeviceEvent] = []
    driver.add_event_listener(events.append)
    port.push(STIM_ERROR[code])
    driver.poll_events()
    assert [e.faults for e in events] == [flag]
    assert driver.device_mode is StimulationMode.START
    port.reply(GET_MODE_C5, MODE_ACK_START)
    status = driver.status()
    assert status.faults == flag
    assert not status.any_output_on
    assert driver.stimulation_mode is StimulationMode.START
    with pytest.raises(DeviceFaulted, match="clear the fault"):
        driver.output_on([1])
    with pytest.raises(DeviceFaulted, match="clear the fault"):
        driver.configure([channel()])  # InitChannelListMode would clear the device's latch
    driver.clear_fault()
    port.reply(GET_MODE_C6, MODE_ACK_START)
    assert driver.status().faults == FaultFlag.NONE


def test_an_update_crossing_a_stimulation_error_names_the_error(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    # The device stopped (electrode error) just before our update reached it: its
    # StimulationError is already on the line, then it refuses the update (wrong mode).
    running(driver, port)
    port.push(STIM_ERROR[-2])
    port.reply(START_C5_20MA, START_NACK_MODE)
    with pytest.raises(DeviceRejected, match="stopped stimulating by itself") as raised:
        driver.set_amplitudes({1: 20_000})
    assert raised.value.code == -3
    assert "electrode" in str(raised.value)


def test_a_second_init_while_talking_means_the_device_restarted(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    running(driver, port)
    events: list[DeviceEvent] = []
    driver.add_event_listener(events.append)
    port.push(INIT_D20)
    driver.poll_events()
    assert port.written == [INIT_ACK_C14]  # answered, so the link stays usable
    assert [e.faults for e in events] == [FaultFlag.RESET]
    assert "restarted" in events[0].detail
    port.reply(GET_MODE_C5, MODE_ACK_START)
    status = driver.status()
    assert status.faults == FaultFlag.RESET
    assert not status.any_output_on


def test_a_second_init_after_host_silence_is_the_device_watchdog(
    driver: ScienceMode2Stimulator, port: ScriptedPort, clock: VirtualClock
) -> None:
    running(driver, port)
    events: list[DeviceEvent] = []
    driver.add_event_listener(events.append)
    clock.advance(PROFILE.link.watchdog_timeout_ms * NS_PER_MS)  # the host said nothing
    port.push(INIT_D20)
    driver.poll_events()
    assert port.written == [INIT_ACK_C14]
    assert [e.faults for e in events] == [FaultFlag.WATCHDOG]
    assert "watchdog" in events[0].detail
    port.reply(GET_MODE_C5, MODE_ACK_START)
    assert driver.status().faults == FaultFlag.WATCHDOG


def test_garbage_and_foreign_frames_are_ignored(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    running(driver, port)
    # MOTOmed "ActualValues" (60 = 0x3C) with 3 data bytes 01 02 03, counter 8:
    # payload 08 3C 01 02 03, CRC by long division 0x10 -> 45.
    port.push(frame("00 FF 0F F0 81 45 81 50 08 3C 01 02 03 0F 55"))
    driver.poll_events()
    assert driver.stats.protocol_errors == 1
    port.reply(GET_MODE_C5, MODE_ACK_STIM)
    assert driver.status().faults == FaultFlag.NONE


# --- the port going away ------------------------------------------------------------------


def test_a_failed_write_is_a_clean_disconnect(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    running(driver, port)
    port.fail_writes = True
    with pytest.raises(DeviceDisconnected, match="went away"):
        driver.set_amplitudes({1: 1000})
    port.fail_writes = False
    with pytest.raises(DeviceDisconnected):
        driver.status()


def test_a_failed_read_is_a_clean_disconnect(
    driver: ScienceMode2Stimulator, port: ScriptedPort
) -> None:
    running(driver, port)
    port.fail_reads = True
    with pytest.raises(DeviceDisconnected, match="went away"):
        driver.poll_events()
    with pytest.raises(DeviceDisconnected):
        driver.heartbeat()


def test_a_port_that_cannot_be_opened_is_a_device_error(clock: VirtualClock) -> None:
    stimulator = ScienceMode2Stimulator(PROFILE, "/dev/does-not-exist-sm2", clock=clock)
    with pytest.raises(DeviceDisconnected, match="cannot open the port"):
        stimulator.open()


@pytest.mark.parametrize(
    ("reply", "simulator"),
    [
        (UNKNOWN, False),  # a RehaStim2: ScienceMode2 does not define command 200
        (frame("F0 81 B8 81 56 03 C9 00 0F"), True),  # estim's simulator: 201, result 0
        (b"", False),  # no answer at all: taken as a real device
    ],
)
def test_open_asks_once_whether_the_far_end_is_the_simulator(
    port: ScriptedPort, clock: VirtualClock, reply: bytes, simulator: bool
) -> None:
    probe = frame("F0 81 36 81 57 01 C8 0F")  # command 200, counter 1, no data
    port.reply(probe, reply)
    stimulator = ScienceMode2Stimulator(PROFILE, "script://rehastim2", clock=clock)
    try:
        identity = stimulator.open()
        assert port.written == [INIT_ACK_C0, GET_MODE_C0, probe]
        assert stimulator.is_simulator is simulator
        assert ("sim-fault-injection" in identity.capabilities) is simulator
    finally:
        stimulator._close()


def test_keepalive_needs_real_time(clock: VirtualClock) -> None:
    with pytest.raises(ValueError, match="real time"):
        ScienceMode2Stimulator(PROFILE, "unused", clock=clock, keepalive=True)


def test_registry_maps_the_profile_to_this_driver() -> None:
    from estim.device.registry import driver_class

    assert driver_class(PROFILE.link.wire_protocol) is ScienceMode2Stimulator


def test_profile_limits() -> None:
    profile: DeviceProfile = PROFILE
    out = profile.output
    assert out.channels == 8
    assert (out.phase_width_min_us, out.phase_width_max_us) == (20, 500)
    assert out.amplitude_max_ua == 126_000
    assert [s.value for s in out.supported_shapes] == ["symmetric_biphasic"]
    assert not out.long_pulse_capable
    assert not profile.measurement.measures_current
    assert not profile.measurement.measures_impedance
