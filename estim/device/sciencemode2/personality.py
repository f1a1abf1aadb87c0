"""The RehaStim2 personality: the device side of ScienceMode2 for the simulator.

Plugs into :mod:`estim.device.simulator` like any personality (registered for
``link.wire_protocol = "sciencemode2"``), so ``estim sim --profile
profiles/hasomed-rehastim2.toml`` serves it on a pty and any ScienceMode2 client can
connect. What it models, and the choices where the public sources are silent, are in
docs/devices/rehastim2.md ("The simulator"). In short:

- After power-up (and after the link is lost) the device announces itself with
  ``Init`` every :attr:`INIT_PERIOD_NS` until a host answers ``InitAck`` with that
  Init's packet counter; the handshake clears the power-up and watchdog latches (the
  host learns of those from the Init itself). Commands other than ``InitAck`` are
  ignored until then.
- ``GetStimulationMode`` is answered with the truth: the channel-list mode, except
  that an output stage that delivers pulses whatever was commanded (a ``stuck``
  fault) makes the device say it is stimulating, and a ``lie-output`` fault makes it
  say "initialised" while it stimulates.
- Modes: START -> ``InitChannelListMode`` -> INITIALISED -> ``StartChannelListMode``
  -> STIMULATING (``StartChannelListMode`` again updates widths and amplitudes);
  ``StopChannelListMode`` returns to START from anywhere. A command in the wrong mode
  gets result -3, a value outside the device's limits -2 (refused, never clamped), a
  frame whose data do not fit its command -1. The device's limits are the profile's.
- Watchdog: no valid frame for ``link.watchdog_timeout_ms`` stops stimulation (the
  hardware model does that) and drops the link: back to START, announcing Init.
- A bad electrode (the hardware model's open-circuit monitor) is reported as
  ``StimulationError -2``; an over-current or output-stage fault as -3. Either stops
  stimulation and returns to START. The error stays latched until the host sends
  ``InitChannelListMode`` (the documented way back to stimulation; it trips again if
  the cause persists) or the device is power-cycled: link loss and a new handshake do
  not clear it, and the device reports it again right after every handshake, so a host
  that connects later learns of it (ScienceMode2 has no command to read or clear an
  error; see docs/devices/rehastim2.md).
- Simulator-only command 200 (not ScienceMode2): inject a fault spec, press the
  emergency switch, or (``measure-current:ch=N``) read the current delivered into a
  channel's load, as an instrument on the bench would.
- Client quirks tolerated: pyScienceMode's unescaped, XOR-ed counter and command
  bytes; clients that escape only 0xF0, 0x0F and 0x81. The device's own counter skips
  the five special values so that clients which index reply bytes by position parse
  every reply.
"""

from __future__ import annotations

from collections import deque
from fractions import Fraction
from math import ceil, floor
from typing import ClassVar

from estim.clock import NS_PER_MS
from estim.device.base import ChannelConfig, FaultFlag
from estim.device.sciencemode2.codec import SPECIAL_BYTES, Frame, FrameDecoder
from estim.device.sciencemode2.messages import (
    HOST_COMMANDS,
    LOW_FREQUENCY_FACTOR_MAX,
    MAIN_INTERVAL_FIRMWARE_MIN_US,
    MAIN_INTERVAL_WIRE_MAX_US,
    SIM_INJECT,
    SIM_INJECT_ACK,
    ChannelPulse,
    Command,
    GetStimulationMode,
    GetStimulationModeAck,
    Init,
    InitAck,
    InitChannelListMode,
    InitChannelListModeAck,
    Message,
    MessageError,
    PulseMode,
    Result,
    SinglePulse,
    SinglePulseAck,
    StartChannelListMode,
    StartChannelListModeAck,
    StimulationError,
    StimulationErrorCode,
    StimulationMode,
    StopChannelListMode,
    StopChannelListModeAck,
    UnknownCommand,
    Unrecognised,
    Watchdog,
    command_from_wire,
    counter_from_wire,
    decode,
    parse_measure_current,
)
from estim.device.simulator.hardware import Refusal, SimulatedStimulator
from estim.device.simulator.personality import Personality
from estim.protocols.models import ShapeKind
from estim.units import UA_PER_MA

# Hardware trips and how ScienceMode2 reports them.
_ERROR_FOR_FAULT: tuple[tuple[FaultFlag, StimulationErrorCode], ...] = (
    (FaultFlag.EMERGENCY_SWITCH, StimulationErrorCode.EMERGENCY_SWITCH),
    (FaultFlag.OPEN_CIRCUIT | FaultFlag.ELECTRODE, StimulationErrorCode.ELECTRODE),
    (FaultFlag.OVER_CURRENT | FaultFlag.HARDWARE, StimulationErrorCode.STIMULATION_MODULE),
)


def _command_name(command: int) -> str:
    try:
        return Command(command).name
    except ValueError:
        return str(command)


EMERGENCY_SWITCH_SPEC = b"emergency-switch"
"""Simulator-only fault for this personality (over command 200): press the switch."""


class _Rejected(Exception):
    """A command the device answers with a negative result."""

    def __init__(self, result: Result, detail: str) -> None:
        self.result = result
        super().__init__(detail)


class ScienceMode2Personality(Personality):
    """The firmware protocol layer of a Hasomed RehaStim2 in ScienceMode2."""

    wire_protocol: ClassVar[str] = "sciencemode2"
    PROTOCOL_VERSION: ClassVar[int] = 1
    INIT_PERIOD_NS: ClassVar[int] = 250 * NS_PER_MS
    """How often Init is repeated until acknowledged (not published; our choice)."""

    def __init__(self, hardware: SimulatedStimulator) -> None:
        super().__init__(hardware)
        self._timeout_ns = hardware.profile.link.watchdog_timeout_ms * NS_PER_MS
        self._decoder = FrameDecoder()
        self._counter = 0
        self._mode = StimulationMode.START
        self._connected = False
        self._next_init_ns: int | None = 0  # announce at the first poll
        self._init_counters: deque[int] = deque(maxlen=32)
        self._last_frame_ns = hardware.clock.now_ns()
        self._list: InitChannelListMode | None = None
        self._pulses: dict[int, ChannelPulse] = {}
        self._stimulation_error: StimulationErrorCode | None = None  # latched, see above

    # --- what a test or the bench may look at ------------------------------------------

    @property
    def mode(self) -> StimulationMode:
        return self._mode

    @property
    def connected(self) -> bool:
        """True once a host has acknowledged Init (until the link is lost)."""
        return self._connected

    @property
    def stimulation_error(self) -> StimulationErrorCode | None:
        """The error the device stopped on, latched until re-initialised or power-cycled."""
        return self._stimulation_error

    # --- Personality -----------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        for frame in self._decoder.feed(data):
            self._on_frame(frame)

    def poll(self, now_ns: int) -> None:
        for event in self.hardware.take_events():
            self._on_hardware_event(event.faults, event.detail, now_ns)
        if self._connected and now_ns - self._last_frame_ns >= self._timeout_ns:
            silent_ms = (now_ns - self._last_frame_ns) // NS_PER_MS
            self._lose_link(now_ns, f"no valid frame from the host for {silent_ms} ms")
        if self._next_init_ns is not None and now_ns >= self._next_init_ns:
            self._announce(now_ns)

    def next_deadline_ns(self) -> int | None:
        deadlines = []
        if self._next_init_ns is not None:
            deadlines.append(self._next_init_ns)
        if self._connected:
            deadlines.append(self._last_frame_ns + self._timeout_ns)
        return min(deadlines) if deadlines else None

    def on_power_cycle(self) -> None:
        super().on_power_cycle()
        self._decoder.reset()
        self._counter = 0
        self._connected = False
        self._mode = StimulationMode.START
        self._list = None
        self._pulses = {}
        self._stimulation_error = None  # a restart forgets why it stopped
        self._init_counters.clear()
        self._next_init_ns = self.hardware.clock.now_ns()

    # --- link ------------------------------------------------------------------------

    def _announce(self, now_ns: int) -> None:
        self._init_counters.append(self._counter)
        self._send(Init(self.PROTOCOL_VERSION))
        self._next_init_ns = now_ns + self.INIT_PERIOD_NS

    def _lose_link(self, now_ns: int, detail: str) -> None:
        if not self._connected and self._next_init_ns is not None:
            return
        self.hardware.stop_all(reason=f"sciencemode2: {detail}")
        self.hardware.trace.record("watchdog", what="link lost", detail=detail)
        self._connected = False
        self._mode = StimulationMode.START
        self._list = None
        self._pulses = {}
        self._init_counters.clear()
        self._next_init_ns = now_ns

    def _on_hardware_event(self, faults: FaultFlag, detail: str, now_ns: int) -> None:
        if faults & (FaultFlag.RESET | FaultFlag.WATCHDOG):
            self._lose_link(now_ns, detail)
            return
        for flags, code in _ERROR_FOR_FAULT:
            if faults & flags:
                self._mode = StimulationMode.START
                self._pulses = {}
                self._stimulation_error = code
                if self._connected:
                    self._send(StimulationError(code))
                return

    def _acknowledges_init(self, raw_counter: int) -> bool:
        # Quirk-aware: pyScienceMode XORs a special counter byte instead of escaping it.
        # (Our counters skip the special values, so that only matters for a counter
        # the client garbled some other way; the check costs nothing.)
        return bool(counter_from_wire(raw_counter) & set(self._init_counters))

    # --- frames ----------------------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        self.hardware.frame_received()
        self._last_frame_ns = self.hardware.clock.now_ns()
        command = command_from_wire(frame.command)
        name = _command_name(command)
        self.trace_frame("in", frame.raw, seq=frame.counter, command=name)
        if command == Command.INIT_ACK:
            try:
                init_ack = decode(frame, HOST_COMMANDS)
            except MessageError as err:
                self._trace("ignored", name, str(err))
                return
            assert isinstance(init_ack, InitAck)
            self._on_init_ack(frame.counter, init_ack)
            return
        if not self._connected:
            self._trace("ignored", name, "no InitAck yet: the device is still announcing Init")
            return
        try:
            message = decode(frame, HOST_COMMANDS)
            self._dispatch(command, message)
        except MessageError as err:
            self._reply_error(command, Result.TRANSFER_ERROR, str(err))
        except _Rejected as rejected:
            self._reply_error(command, rejected.result, str(rejected))

    def _trace(self, event: str, command: str, detail: str, **fields: object) -> None:
        self.hardware.trace.record(
            event, protocol=self.wire_protocol, command=command, detail=detail, **fields
        )

    def _dispatch(self, command: int, message: Message) -> None:
        match message:
            case Watchdog():
                pass
            case GetStimulationMode():
                self._send(GetStimulationModeAck(Result.OK, self._reported_mode()))
            case InitChannelListMode():
                self._init_channel_list(message)
                self._send(InitChannelListModeAck(Result.OK))
            case StartChannelListMode():
                self._start_channel_list(message)
                self._send(StartChannelListModeAck(Result.OK))
            case StopChannelListMode():
                self.hardware.stop_all(reason="StopChannelListMode")
                self._mode = StimulationMode.START
                self._list = None
                self._pulses = {}
                self._send(StopChannelListModeAck(Result.OK))
            case SinglePulse():
                self._single_pulse(message)
                self._send(SinglePulseAck(Result.OK))
            case Unrecognised(command=number, payload=payload) if number == SIM_INJECT:
                self._sim_inject(payload)
            case _:
                # Unknown numbers and the device's own messages sent back to it.
                self._trace("ignored", _command_name(command), "unknown command")
                self._send(UnknownCommand())

    def _sim_inject(self, payload: bytes) -> None:
        """Simulator-only command: inject a fault (a real device does not know it)."""
        inject = self.inject_fault if hasattr(self, "inject_fault") else None
        if inject is None:
            self._send(UnknownCommand())
            return
        result = Result.OK
        try:
            channel = parse_measure_current(payload)
        except ValueError as err:
            self._trace("refused", "SIM_INJECT", str(err))
            self._send(Unrecognised(SIM_INJECT_ACK, bytes((Result.PARAMETER_ERROR & 0xFF,))))
            return
        if channel is not None:
            self._measure_current(channel)
            return
        if payload == EMERGENCY_SWITCH_SPEC:
            self._send(Unrecognised(SIM_INJECT_ACK, bytes((result,))))
            self._press_emergency_switch()
            return
        try:
            if payload:  # empty: a host asking whether this is the simulator
                inject(payload.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as err:  # InputError is a ValueError
            self._trace("refused", "SIM_INJECT", str(err))
            result = Result.PARAMETER_ERROR
        self._send(Unrecognised(SIM_INJECT_ACK, bytes((result & 0xFF,))))

    def _measure_current(self, channel: int) -> None:
        """Simulator-only query: the peak current delivered into ``channel``'s load now.

        This is what an oscilloscope across the simulated load would read: the hardware
        model's delivered current (commanded, or less where the compliance voltage
        bites), 0 while the channel sends no pulses. A real device has no such command.
        """
        if channel not in self.hardware.channel_numbers:
            self._trace("refused", "SIM_INJECT", f"measure-current: no channel {channel}")
            self._send(Unrecognised(SIM_INJECT_ACK, bytes((Result.PARAMETER_ERROR & 0xFF,))))
            return
        state = self.hardware.outputs()[self.hardware.channel_numbers.index(channel)]
        peak_ua = state.amplitude_ua if state.output_on else 0
        self.hardware.trace.record("instrument", channel=channel, peak_ua=peak_ua)
        reply = bytes((Result.OK,)) + peak_ua.to_bytes(4, "little")
        self._send(Unrecognised(SIM_INJECT_ACK, reply))

    def _press_emergency_switch(self) -> None:
        """The patient's or operator's emergency switch: the device stops and says so."""
        self.hardware.stop_all(reason="emergency switch")
        self.hardware.trace.record(
            "fault", channel=None, flags="emergency switch", detail="emergency switch pressed"
        )
        self._mode = StimulationMode.START
        self._pulses = {}
        self._stimulation_error = StimulationErrorCode.EMERGENCY_SWITCH
        self._send(StimulationError(StimulationErrorCode.EMERGENCY_SWITCH))

    def _reported_mode(self) -> StimulationMode:
        """The mode GetStimulationMode reports: what the output stage really does.

        The channel-list mode, except that an output stage delivering pulses (a stuck
        stage keeps going after a stop) is "stimulating", and one that the hardware
        status hides (the ``lie-output`` fault) is "initialised" at most.
        """
        reported_on = any(c.output_on for c in self.hardware.status().channels)
        if reported_on:
            return StimulationMode.STIMULATING
        if any(o.output_on for o in self.hardware.outputs()):  # lie-output
            return min(self._mode, StimulationMode.INITIALISED)
        return self._mode

    def _on_init_ack(self, raw_counter: int, message: InitAck) -> None:
        if self._connected:
            return  # a repeated answer to an Init already acknowledged
        if not self._acknowledges_init(raw_counter):
            self._trace("ignored", "INIT_ACK", f"counter {raw_counter} answers no Init sent")
            return
        if not message.ok:
            self._trace("ignored", "INIT_ACK", f"host refused the version ({message.result})")
            return
        self._connected = True
        self._next_init_ns = None
        self._mode = StimulationMode.START
        # The Init told the host of a restart or a dropped link; a stimulation error
        # stays latched and is told again, now, to whoever connected.
        self.hardware.clear_faults(FaultFlag.RESET | FaultFlag.WATCHDOG)
        if self._stimulation_error is not None:
            code = self._stimulation_error
            self._trace(
                "pending",
                "STIMULATION_ERROR",
                f"reported again after the handshake: {StimulationErrorCode.describe(code)}",
            )
            self._send(StimulationError(code))

    def _reply_error(self, command: int, result: Result, detail: str) -> None:
        name = _command_name(command)
        self._trace("refused", name, detail, result=int(result))
        match command:
            case Command.GET_STIMULATION_MODE:
                self._send(GetStimulationModeAck(result, self._mode))
            case Command.INIT_CHANNEL_LIST_MODE:
                self._send(InitChannelListModeAck(result))
            case Command.START_CHANNEL_LIST_MODE:
                self._send(StartChannelListModeAck(result))
            case Command.STOP_CHANNEL_LIST_MODE:
                self._send(StopChannelListModeAck(result))
            case Command.SINGLE_PULSE:
                self._send(SinglePulseAck(result))
            case _ if command in HOST_COMMANDS:
                pass  # a malformed Watchdog has no reply
            case _:
                self._send(UnknownCommand())

    def _send(self, message: Message) -> None:
        raw = message.encode(self._counter)
        name = (
            _command_name(message.command)
            if isinstance(message, Unrecognised)
            else (message.COMMAND.name)
        )
        self.trace_frame("out", raw, seq=self._counter, command=name)
        self.send(raw)
        self._counter = (self._counter + 1) % 256
        while self._counter in SPECIAL_BYTES:  # see the module docstring
            self._counter = (self._counter + 1) % 256

    # --- channel-list mode -------------------------------------------------------------

    def _init_channel_list(self, message: InitChannelListMode) -> None:
        if self._mode is StimulationMode.STIMULATING:
            raise _Rejected(Result.WRONG_MODE, "stop stimulation before re-initialising")
        interval_us = message.main_interval_us
        shortest, longest = self._period_range_us()
        if not shortest <= interval_us <= longest or message.main_interval_code == 0:
            # Code 0 selects an external trigger on the real device; not modelled.
            raise _Rejected(
                Result.PARAMETER_ERROR,
                f"main stimulation interval {interval_us} us outside {shortest}-{longest} us",
            )
        resolution = self.hardware.profile.output.pulse_period_resolution_us
        if resolution and interval_us % resolution:
            raise _Rejected(Result.PARAMETER_ERROR, f"interval {interval_us} us off the grid")
        channels = self.hardware.channel_numbers
        if not message.active_channels:
            raise _Rejected(Result.PARAMETER_ERROR, "no active channel")
        if not message.active_channels <= set(channels):
            raise _Rejected(Result.PARAMETER_ERROR, "channel beyond the device's channels")
        if message.low_frequency_factor > LOW_FREQUENCY_FACTOR_MAX:
            raise _Rejected(
                Result.PARAMETER_ERROR,
                f"low-frequency factor {message.low_frequency_factor} above "
                f"{LOW_FREQUENCY_FACTOR_MAX}",
            )
        # Re-initialising is how a host recovers from a stimulation error: the
        # latched fault clears (if its cause persists, it trips again at start).
        self.hardware.output_off()
        self.hardware.clear_faults()
        self._stimulation_error = None
        self._list = message
        self._pulses = {}
        self._mode = StimulationMode.INITIALISED

    def _period_range_us(self) -> tuple[int, int]:
        out = self.hardware.profile.output
        per_second = Fraction(1_000_000)
        shortest = ceil(per_second / Fraction(out.frequency_max_hz))
        longest = floor(per_second / Fraction(out.frequency_min_hz))
        return (
            max(MAIN_INTERVAL_FIRMWARE_MIN_US, shortest),
            min(MAIN_INTERVAL_WIRE_MAX_US, longest),
        )

    def _start_channel_list(self, message: StartChannelListMode) -> None:
        if self._mode is StimulationMode.START or self._list is None:
            raise _Rejected(Result.WRONG_MODE, "InitChannelListMode first")
        active = sorted(self._list.active_channels)
        if len(message.pulses) != len(active):
            raise _Rejected(
                Result.PARAMETER_ERROR,
                f"{len(message.pulses)} channel entries for {len(active)} active channels",
            )
        pulses = dict(zip(active, message.pulses, strict=True))
        for channel, pulse in pulses.items():
            self._check_pulse(channel, pulse.pulse_width_us, pulse.amplitude_ma, pulse.mode)
        configs = {
            channel: self._config(channel, pulse.pulse_width_us)
            for channel, pulse in pulses.items()
            if pulse.pulse_width_us
        }
        amplitudes = {
            channel: pulse.amplitude_ma * UA_PER_MA if pulse.pulse_width_us else 0
            for channel, pulse in pulses.items()
        }
        starting = self._mode is StimulationMode.INITIALISED
        hardware = self.hardware

        def was_pulsing(channel: int) -> bool:
            previous = self._pulses.get(channel)
            return not starting and previous is not None and previous.pulse_width_us > 0

        try:
            # Width 0 means no pulses: that channel's output is off.
            newly_off = [c for c in pulses if c not in configs and was_pulsing(c)]
            if newly_off:
                hardware.output_off(newly_off)
            newly_on = []
            for channel, config in configs.items():
                if hardware.channel_config(channel) != config:
                    hardware.configure(config, live=was_pulsing(channel))
                if not was_pulsing(channel):
                    newly_on.append(channel)
            hardware.set_amplitudes(amplitudes)
            if newly_on:
                hardware.output_on(newly_on)
        except Refusal as refusal:
            # Checked above, so only a latched fault gets here: stop, be consistent.
            hardware.stop_all(reason=f"StartChannelListMode refused: {refusal}")
            self._mode = StimulationMode.START
            self._list = None
            self._pulses = {}
            raise _Rejected(Result.PARAMETER_ERROR, str(refusal)) from refusal
        self._pulses = pulses
        self._mode = StimulationMode.STIMULATING
        modes = {c: PulseMode(p.mode).name for c, p in pulses.items() if p.mode}
        if modes:
            hardware.trace.record("pulse_mode", protocol=self.wire_protocol, modes=modes)

    def _check_pulse(self, channel: int, width_us: int, amplitude_ma: int, mode: int) -> None:
        out = self.hardware.profile.output
        if mode not in {m.value for m in PulseMode}:
            raise _Rejected(Result.PARAMETER_ERROR, f"channel {channel}: pulse mode {mode}")
        if width_us and not out.phase_width_min_us <= width_us <= out.phase_width_max_us:
            # The real firmware is said to deliver 20 us for 1-19 us; refused here.
            raise _Rejected(
                Result.PARAMETER_ERROR,
                f"channel {channel}: pulse width {width_us} us outside 0 or "
                f"{out.phase_width_min_us}-{out.phase_width_max_us} us",
            )
        if width_us % out.phase_width_resolution_us:
            raise _Rejected(Result.PARAMETER_ERROR, f"channel {channel}: width off the grid")
        amplitude_ua = amplitude_ma * UA_PER_MA
        if amplitude_ua > out.amplitude_max_ua or amplitude_ua % out.amplitude_resolution_ua:
            raise _Rejected(
                Result.PARAMETER_ERROR,
                f"channel {channel}: amplitude {amplitude_ma} mA outside 0-"
                f"{out.amplitude_max_ma} mA",
            )
        if mode and self._list is not None:
            pulses = mode + 1  # doublet: 2, triplet: 3
            if pulses * self._list.inter_pulse_interval_us > self._list.main_interval_us:
                raise _Rejected(
                    Result.PARAMETER_ERROR,
                    f"channel {channel}: {pulses} pulses {self._list.inter_pulse_interval_us} "
                    f"us apart do not fit a {self._list.main_interval_us} us interval",
                )

    def _config(self, channel: int, width_us: int) -> ChannelConfig:
        assert self._list is not None
        # The hardware model is given the main interval for every channel: channels
        # flagged for the low-frequency factor skip periods, which the firmware's
        # limits do not concern (the model does not simulate single pulses).
        return ChannelConfig(
            channel=channel,
            shape=ShapeKind.SYMMETRIC_BIPHASIC,
            phase_widths_us=(width_us, width_us),
            interphase_gap_us=0,
            period_us=self._list.main_interval_us,
        )

    def _single_pulse(self, message: SinglePulse) -> None:
        if self._mode is not StimulationMode.START:
            raise _Rejected(Result.WRONG_MODE, "single pulses only in start mode")
        channel = message.channel_index + 1
        if channel not in self.hardware.channel_numbers:
            raise _Rejected(Result.PARAMETER_ERROR, f"channel index {message.channel_index}")
        if message.pulse_width_us == 0:
            raise _Rejected(Result.PARAMETER_ERROR, "a single pulse needs a width")
        self._check_pulse(channel, message.pulse_width_us, message.amplitude_ma, PulseMode.SINGLE)
        self.hardware.trace.record(
            "pulse",
            channel=channel,
            amplitude_ua=message.amplitude_ma * UA_PER_MA,
            phase_width_us=message.pulse_width_us,
        )
