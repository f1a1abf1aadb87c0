"""The RehaStim2 personality: the device side of ScienceMode2, in virtual time.

A test host writes frames into a :class:`SimulatedDevice` and reads its replies; the
hardware model's outputs are the truth the assertions check.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from estim.clock import NS_PER_MS, VirtualClock
from estim.device.profile import builtin_profile
from estim.device.sciencemode2.codec import FrameDecoder, encode_frame, wrap_escaped_payload
from estim.device.sciencemode2.messages import (
    SIM_INJECT,
    SIM_INJECT_ACK,
    ChannelPulse,
    GetStimulationMode,
    GetStimulationModeAck,
    Init,
    InitAck,
    InitChannelListMode,
    InitChannelListModeAck,
    Message,
    Result,
    SinglePulse,
    SinglePulseAck,
    StartChannelListMode,
    StartChannelListModeAck,
    StimulationError,
    StimulationMode,
    StopChannelListMode,
    StopChannelListModeAck,
    UnknownCommand,
    Unrecognised,
    Watchdog,
    decode,
)
from estim.device.sciencemode2.personality import ScienceMode2Personality
from estim.device.simulator import SimulatedDevice

PROFILE = builtin_profile("hasomed-rehastim2")
SPECIALS = {0xF0, 0x0F, 0x81, 0x55, 0x0A}


class Host:
    """A minimal ScienceMode2 host talking to an in-process simulated device."""

    def __init__(self, device: SimulatedDevice, clock: VirtualClock) -> None:
        self.device = device
        self.clock = clock
        self.decoder = FrameDecoder()
        self.counter = 0
        self.counters_seen: list[int] = []

    def receive(self) -> list[Message]:
        self.device.tick()
        frames = self.decoder.feed(self.device.transmit())
        self.counters_seen += [f.counter for f in frames]
        return [decode(f) for f in frames]

    def send(self, message: Message) -> list[Message]:
        self.device.receive(message.encode(self.counter))
        self.counter = (self.counter + 1) % 256
        return self.receive()

    def send_raw(self, data: bytes) -> list[Message]:
        self.device.receive(data)
        return self.receive()

    def wait(self, ms: int) -> list[Message]:
        self.clock.advance(ms * NS_PER_MS)
        return self.receive()

    def connect(self) -> None:
        announced = self.receive()
        assert isinstance(announced[-1], Init)
        self.send_raw(InitAck(Result.OK).encode(self.counters_seen[-1]))

    def outputs(self) -> list[tuple[int, bool]]:
        return [(o.amplitude_ua, o.output_on) for o in self.device.hardware.outputs()[:2]]

    @property
    def personality(self) -> ScienceMode2Personality:
        personality = self.device.personality
        assert isinstance(personality, ScienceMode2Personality)
        return personality


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def host(clock: VirtualClock) -> Iterator[Host]:
    device = SimulatedDevice(PROFILE, clock=clock)
    try:
        yield Host(device, clock)
    finally:
        device.close()


def channel_list(*channels: int, interval_us: int = 20_000) -> InitChannelListMode:
    return InitChannelListMode.from_intervals(frozenset(channels), interval_us)


def start(*pulses: tuple[int, int]) -> StartChannelListMode:
    return StartChannelListMode(tuple(ChannelPulse(w, a) for w, a in pulses))


def stimulating(host: Host) -> Host:
    host.connect()
    assert host.send(channel_list(1, 2)) == [InitChannelListModeAck(Result.OK)]
    assert host.send(start((300, 20), (250, 15))) == [StartChannelListModeAck(Result.OK)]
    return host


# --- announcement and handshake ----------------------------------------------------------


def test_announces_init_until_acknowledged(host: Host) -> None:
    assert host.receive() == [Init(1)]
    assert host.wait(100) == []
    assert host.wait(150) == [Init(1)]  # every 250 ms
    assert host.wait(250) == [Init(1)]
    host.send_raw(InitAck(Result.OK).encode(host.counters_seen[-1]))
    assert host.wait(1000) == []
    assert host.personality.connected


def test_an_init_ack_with_a_counter_of_no_init_is_ignored(host: Host) -> None:
    host.receive()
    host.send_raw(InitAck(Result.OK).encode(0x77))
    assert not host.personality.connected
    assert host.wait(250) == [Init(1)]


def test_a_refusing_init_ack_leaves_the_device_announcing(host: Host) -> None:
    host.receive()
    host.send_raw(InitAck(-1).encode(host.counters_seen[-1]))
    assert not host.personality.connected


def test_commands_before_the_handshake_are_ignored(host: Host) -> None:
    host.receive()
    assert host.send(GetStimulationMode()) == []
    assert host.send(channel_list(1)) == []
    assert host.outputs() == [(0, False), (0, False)]


def test_the_device_counter_skips_the_special_values(host: Host) -> None:
    host.connect()
    for _ in range(300):
        host.send(GetStimulationMode())
    assert len(set(host.counters_seen)) == 256 - len(SPECIALS)
    assert not SPECIALS & set(host.counters_seen)


# --- modes and channel-list commands --------------------------------------------------------


def test_get_stimulation_mode_follows_the_mode(host: Host) -> None:
    host.connect()
    assert host.send(GetStimulationMode()) == [GetStimulationModeAck(0, StimulationMode.START)]
    host.send(channel_list(1))
    assert host.send(GetStimulationMode()) == [GetStimulationModeAck(0, 1)]
    host.send(start((300, 10)))
    assert host.send(GetStimulationMode()) == [GetStimulationModeAck(0, 2)]
    assert host.send(StopChannelListMode()) == [StopChannelListModeAck(Result.OK)]
    assert host.send(GetStimulationMode()) == [GetStimulationModeAck(0, 0)]


def test_start_delivers_and_updates_live(host: Host) -> None:
    stimulating(host)
    assert host.outputs() == [(20_000, True), (15_000, True)]
    assert host.send(start((400, 30), (250, 0))) == [StartChannelListModeAck(Result.OK)]
    assert host.outputs() == [(30_000, True), (0, True)]
    config = host.device.hardware.channel_config(1)
    assert config is not None
    assert config.phase_widths_us == (400, 400)


def test_width_zero_means_no_pulses(host: Host) -> None:
    host.connect()
    host.send(channel_list(1, 2))
    host.send(start((300, 20), (0, 50)))
    assert host.outputs() == [(20_000, True), (0, False)]


def test_stop_returns_to_start_mode_and_needs_a_new_init(host: Host) -> None:
    stimulating(host)
    assert host.send(StopChannelListMode()) == [StopChannelListModeAck(Result.OK)]
    assert host.outputs() == [(0, False), (0, False)]
    assert host.send(start((300, 20), (250, 15))) == [StartChannelListModeAck(Result.WRONG_MODE)]
    assert host.outputs() == [(0, False), (0, False)]


@pytest.mark.parametrize(
    "message",
    [
        InitChannelListMode(frozenset({1}), main_interval_code=0),  # external trigger
        InitChannelListMode(frozenset({1}), main_interval_code=13),  # 7.5 ms
        InitChannelListMode(frozenset({1}), main_interval_code=2049),  # 1025.5 ms
        InitChannelListMode(frozenset(), main_interval_code=38),  # no channel
        InitChannelListMode(frozenset({1}), main_interval_code=38, low_frequency_factor=8),
    ],
)
def test_init_channel_list_out_of_range_is_a_parameter_error(
    host: Host, message: InitChannelListMode
) -> None:
    host.connect()
    assert host.send(message) == [InitChannelListModeAck(Result.PARAMETER_ERROR)]
    assert host.personality.mode is StimulationMode.START


def test_init_channel_list_limits_are_inclusive(host: Host) -> None:
    host.connect()
    for code in (14, 2048):  # 8 ms and 1025 ms
        message = InitChannelListMode(frozenset({1}), main_interval_code=code)
        assert host.send(message) == [InitChannelListModeAck(Result.OK)]


def test_init_channel_list_while_stimulating_is_the_wrong_mode(host: Host) -> None:
    stimulating(host)
    assert host.send(channel_list(1)) == [InitChannelListModeAck(Result.WRONG_MODE)]
    assert host.outputs() == [(20_000, True), (15_000, True)]


@pytest.mark.parametrize(
    "pulses",
    [
        ((300, 127), (250, 15)),  # 127 mA: above the 126 mA maximum
        ((501, 20), (250, 15)),  # beyond 500 us
        ((19, 20), (250, 15)),  # below 20 us: refused, not lengthened
        ((300, 20),),  # one entry for two channels
    ],
)
def test_out_of_range_updates_are_refused_and_change_nothing(
    host: Host, pulses: tuple[tuple[int, int], ...]
) -> None:
    stimulating(host)
    assert host.send(start(*pulses)) == [StartChannelListModeAck(Result.PARAMETER_ERROR)]
    assert host.outputs() == [(20_000, True), (15_000, True)]


def test_the_maximum_amplitude_is_accepted(host: Host) -> None:
    stimulating(host)
    assert host.send(start((500, 126), (20, 0))) == [StartChannelListModeAck(Result.OK)]
    assert host.outputs()[0] == (126_000, True)


def test_pulse_modes(host: Host) -> None:
    host.connect()
    host.send(channel_list(1))
    bad_mode = StartChannelListMode((ChannelPulse(300, 10, mode=3),))
    assert host.send(bad_mode) == [StartChannelListModeAck(Result.PARAMETER_ERROR)]
    doublet = StartChannelListMode((ChannelPulse(300, 10, mode=1),))
    assert host.send(doublet) == [StartChannelListModeAck(Result.OK)]
    host.send(StopChannelListMode())
    # An 8 ms main interval with 6 ms between the pulses of a group (IPI code 9):
    # three pulses (18 ms) do not fit, so a triplet is a parameter error.
    tight = InitChannelListMode(frozenset({1}), main_interval_code=14, inter_pulse_interval_code=9)
    assert host.send(tight) == [InitChannelListModeAck(Result.OK)]
    triplet = StartChannelListMode((ChannelPulse(300, 10, mode=2),))
    assert host.send(triplet) == [StartChannelListModeAck(Result.PARAMETER_ERROR)]


def test_start_before_init_is_the_wrong_mode(host: Host) -> None:
    host.connect()
    assert host.send(start((300, 20))) == [StartChannelListModeAck(Result.WRONG_MODE)]


def test_malformed_data_is_a_transfer_error(host: Host) -> None:
    host.connect()
    host.send(channel_list(1))
    reply = host.send_raw(encode_frame(host.counter, 32, bytes(5)))  # not 4 per channel
    assert reply == [StartChannelListModeAck(Result.TRANSFER_ERROR)]


def test_unknown_and_device_commands_get_unknown_command(host: Host) -> None:
    host.connect()
    assert host.send_raw(encode_frame(1, 99)) == [UnknownCommand()]
    assert host.send(StimulationError(-2)) == [UnknownCommand()]


def test_single_pulse_only_in_start_mode(host: Host) -> None:
    host.connect()
    assert host.send(SinglePulse(0, 200, 10)) == [SinglePulseAck(Result.OK)]
    (pulse,) = host.device.trace.records("pulse")
    assert (pulse["channel"], pulse["amplitude_ua"], pulse["phase_width_us"]) == (1, 10_000, 200)
    assert host.send(SinglePulse(8, 200, 10)) == [SinglePulseAck(Result.PARAMETER_ERROR)]
    assert host.send(SinglePulse(0, 200, 127)) == [SinglePulseAck(Result.PARAMETER_ERROR)]
    host.send(channel_list(1))
    assert host.send(SinglePulse(0, 200, 10)) == [SinglePulseAck(Result.WRONG_MODE)]


# --- watchdog and faults ----------------------------------------------------------------------


def test_frames_every_1_6_s_keep_the_link(host: Host) -> None:
    # pyScienceMode's keep-alive can leave up to about 1.6 s between frames.
    stimulating(host)
    for _ in range(5):
        host.wait(1600)
        host.send(Watchdog())
    assert host.outputs() == [(20_000, True), (15_000, True)]


def test_silence_beyond_the_watchdog_stops_and_drops_the_link(host: Host) -> None:
    stimulating(host)
    assert host.wait(1999) == []
    assert host.outputs() == [(20_000, True), (15_000, True)]
    assert host.wait(1) == [Init(1)]  # announces itself again
    assert host.outputs() == [(0, False), (0, False)]
    assert not host.personality.connected
    assert host.send(start((300, 20), (250, 15))) == []  # ignored until a new handshake
    host.send_raw(InitAck(Result.OK).encode(host.counters_seen[-1]))
    assert host.send(GetStimulationMode()) == [GetStimulationModeAck(0, 0)]


def test_an_open_electrode_is_a_stimulation_error(host: Host) -> None:
    stimulating(host)
    host.device.inject("open:ch=2")
    assert host.receive() == [StimulationError(-2)]
    assert host.outputs() == [(0, False), (0, False)]
    assert host.personality.mode is StimulationMode.START
    # Re-initialising clears the latch; the electrode is still open, so it trips again.
    assert host.send(channel_list(1, 2)) == [InitChannelListModeAck(Result.OK)]
    replies = host.send(start((300, 20), (250, 15)))
    assert replies == [StartChannelListModeAck(Result.OK), StimulationError(-2)]
    assert host.outputs() == [(0, False), (0, False)]
    # Contact restored: stimulation works again.
    host.device.inject("close:ch=2")
    host.send(channel_list(1, 2))
    assert host.send(start((300, 20), (250, 15))) == [StartChannelListModeAck(Result.OK)]
    assert host.outputs() == [(20_000, True), (15_000, True)]


def test_a_device_reset_announces_from_counter_zero(host: Host) -> None:
    stimulating(host)
    host.device.reset()
    host.counters_seen.clear()
    assert host.receive() == [Init(1)]
    assert host.counters_seen == [0]
    assert host.outputs() == [(0, False), (0, False)]


def test_the_emergency_switch_is_a_stimulation_error(host: Host) -> None:
    stimulating(host)
    replies = host.send(Unrecognised(SIM_INJECT, b"emergency-switch"))
    assert replies == [Unrecognised(SIM_INJECT_ACK, b"\x00"), StimulationError(-1)]
    assert host.outputs() == [(0, False), (0, False)]
    assert host.send(start((300, 20), (250, 15))) == [StartChannelListModeAck(Result.WRONG_MODE)]


def test_simulator_fault_injection_command(host: Host) -> None:
    stimulating(host)
    replies = host.send(Unrecognised(SIM_INJECT, b"open:ch=1"))
    assert replies == [Unrecognised(SIM_INJECT_ACK, b"\x00"), StimulationError(-2)]
    bad = host.send(Unrecognised(SIM_INJECT, b"explode:now"))
    assert bad == [Unrecognised(SIM_INJECT_ACK, bytes([Result.PARAMETER_ERROR & 0xFF]))]


def test_get_stimulation_mode_reports_a_stuck_output_stage_as_stimulating(host: Host) -> None:
    # The stage delivers 1 mA with no pulse commanded (within the over-current
    # monitor's tolerance, so nothing trips): the device says what its stage does.
    stimulating(host)
    assert host.send(StopChannelListMode()) == [StopChannelListModeAck(Result.OK)]
    host.device.inject("stuck:ch=1,ma=1")
    assert host.outputs()[0] == (1000, True)
    assert host.send(GetStimulationMode()) == [GetStimulationModeAck(0, 2)]


def test_lie_output_makes_the_device_deny_that_it_stimulates(host: Host) -> None:
    stimulating(host)
    host.device.inject("lie-output")
    assert host.send(GetStimulationMode()) == [GetStimulationModeAck(0, 1)]
    assert host.outputs() == [(20_000, True), (15_000, True)]  # the truth
    # Armed with width 0 there is nothing to hide: the mode is told as it is.
    host.send(start((0, 20), (0, 15)))
    assert host.send(GetStimulationMode()) == [GetStimulationModeAck(0, 2)]


def reconnect(host: Host) -> list[Message]:
    """The host falls silent until the device drops the link, then connects again."""
    announced = host.wait(PROFILE.link.watchdog_timeout_ms)
    assert Init(1) in announced
    return host.send_raw(InitAck(Result.OK).encode(host.counters_seen[-1]))


@pytest.mark.parametrize(
    ("fault", "code"),
    [("open:ch=1", -2), ("emergency-switch", -1)],
)
def test_a_stimulation_error_is_reported_again_to_whoever_connects_next(
    host: Host, fault: str, code: int
) -> None:
    stimulating(host)
    if fault == "emergency-switch":
        host.send(Unrecognised(SIM_INJECT, fault.encode()))
    else:
        host.device.inject(fault)
        assert host.receive() == [StimulationError(code)]
        host.device.inject("close:ch=1")  # the cause is gone, the error is not
    assert host.personality.stimulation_error == code
    # A new connection (the old host gone): the device says it again, after the InitAck.
    assert reconnect(host) == [StimulationError(code)]
    assert host.send(GetStimulationMode()) == [GetStimulationModeAck(0, 0)]
    assert reconnect(host) == [StimulationError(code)]  # and again, until dealt with
    traced = host.device.trace.records("pending")
    assert len(traced) == 2
    # InitChannelListMode is the documented way back: it clears the error.
    assert host.send(channel_list(1, 2)) == [InitChannelListModeAck(Result.OK)]
    assert host.personality.stimulation_error is None
    assert reconnect(host) == []
    host.send(channel_list(1, 2))
    assert host.send(start((300, 20), (250, 15))) == [StartChannelListModeAck(Result.OK)]
    assert host.outputs() == [(20_000, True), (15_000, True)]


def test_a_power_cycle_forgets_the_stimulation_error(host: Host) -> None:
    stimulating(host)
    host.device.inject("open:ch=1")
    host.receive()
    host.device.inject("close:ch=1")
    host.device.reset("switched off and on")
    assert host.personality.stimulation_error is None
    host.connect()
    assert host.receive() == []
    host.send(channel_list(1, 2))
    assert host.send(start((300, 20), (250, 15))) == [StartChannelListModeAck(Result.OK)]
    assert host.outputs() == [(20_000, True), (15_000, True)]


# --- other clients' encodings ------------------------------------------------------------------


def test_pyscience_mode_quirk_frames_are_understood(host: Host) -> None:
    host.connect()
    # GetStimulationMode as pyScienceMode sends it with packet counter 0x0A: counter and
    # command both XOR-ed with 0x55 and no escape byte: payload 5F 5F.
    reply = host.send_raw(bytes.fromhex("F0 81 00 81 57 5F 5F 0F"))
    assert reply == [GetStimulationModeAck(0, StimulationMode.START)]


def test_a_client_escaping_only_three_values_is_understood(host: Host) -> None:
    host.connect()
    # InitChannelListMode with a main interval of 43.5 ms (code 85 = 0x55) and
    # StartChannelListMode with 10 mA (0x0A), both sent unescaped as a client that
    # escapes only F0, 0F and 81 would.
    init_payload = bytes([7, 30, 0, 1, 0, 1, 0, 0x55, 0])
    assert host.send_raw(wrap_escaped_payload(init_payload)) == [InitChannelListModeAck(0)]
    start_payload = bytes([8, 32, 0, 1, 0x2C, 0x0A])
    assert host.send_raw(wrap_escaped_payload(start_payload)) == [StartChannelListModeAck(0)]
    assert host.outputs()[0] == (10_000, True)
    config = host.device.hardware.channel_config(1)
    assert config is not None
    assert config.period_us == 43_500


def test_everything_ends_off_when_the_device_closes(host: Host) -> None:
    stimulating(host)
    host.device.close()
    assert all(not o.output_on and o.amplitude_ua == 0 for o in host.device.hardware.outputs())
