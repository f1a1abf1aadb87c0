"""The device side of estim-wire/1, for the simulator.

Decodes host frames, acts on the protocol-neutral hardware model, and answers each
command with exactly one ACK or NACK carrying the command's sequence number. Firmware
refusals become NACKs with the limit that was hit; latched faults and restarts go out
as unsolicited EVENT frames. A frame identical to the previous one (a host retry after
a lost reply) is answered from the reply cache without acting twice.
"""

from __future__ import annotations

from estim.device.base import FaultFlag
from estim.device.simulator.hardware import Refusal, RefusalReason, SimulatedStimulator
from estim.device.simulator.personality import Personality
from estim.device.wire.codec import PROTOCOL_VERSION, Frame, FrameDecoder, encode_frame
from estim.device.wire.messages import (
    Capability,
    Command,
    ErrorCode,
    Event,
    IdentifyReply,
    MessageError,
    Nack,
    Reply,
    command_name,
    decode_channel,
    decode_channel_mask,
    decode_configure,
    decode_fault_mask,
    decode_set_amplitude,
    encode_ack,
    encode_fault_mask,
    encode_impedance,
    encode_status,
)
from estim.errors import InputError

_REFUSAL_CODES = {
    RefusalReason.UNKNOWN_CHANNEL: ErrorCode.UNKNOWN_CHANNEL,
    RefusalReason.OUT_OF_RANGE: ErrorCode.OUT_OF_RANGE,
    RefusalReason.NOT_A_STEP: ErrorCode.NOT_A_STEP,
    RefusalReason.UNSUPPORTED_SHAPE: ErrorCode.UNSUPPORTED_SHAPE,
    RefusalReason.BAD_ARGUMENT: ErrorCode.BAD_ARGUMENT,
    RefusalReason.NOT_CONFIGURED: ErrorCode.NOT_CONFIGURED,
    RefusalReason.FAULT_LATCHED: ErrorCode.FAULT_LATCHED,
    RefusalReason.WRONG_STATE: ErrorCode.WRONG_STATE,
}

# Exact payload lengths; None: variable, checked by the parser.
_PAYLOAD_LEN: dict[Command, int | None] = {
    Command.IDENTIFY: 0,
    Command.CONFIGURE: 18,
    Command.SET_AMPLITUDE: None,
    Command.OUTPUT_ON: 2,
    Command.OUTPUT_OFF: 0,
    Command.STOP_ALL: 0,
    Command.HEARTBEAT: 0,
    Command.STATUS: 0,
    Command.MEASURE_IMPEDANCE: 1,
    Command.CLEAR_FAULT: 2,
    Command.SIM_INJECT: None,
}


_COMMANDS: dict[int, Command] = {int(c): c for c in Command}


class _Nacked(Exception):
    def __init__(self, nack: Nack) -> None:
        self.nack = nack
        super().__init__(nack.message)


class WirePersonality(Personality):
    """estim-wire/1 firmware protocol layer."""

    wire_protocol = "estim-wire/1"

    def __init__(self, hardware: SimulatedStimulator) -> None:
        super().__init__(hardware)
        self._decoder = FrameDecoder()
        self._last_raw: bytes | None = None
        self._last_reply = b""
        self._event_seq = 0

    @property
    def decoder_stats(self) -> object:
        return self._decoder.stats

    def feed(self, data: bytes) -> None:
        for frame in self._decoder.feed(data):
            self._handle(frame)

    def poll(self, now_ns: int) -> None:
        for event in self.hardware.take_events():
            payload = Event(
                event.faults, event.channel, self.hardware.uptime_ms(), event.detail
            ).encode()
            frame = Frame(Reply.EVENT, self._event_seq, payload)
            self._event_seq = (self._event_seq + 1) & 0xFF
            self.trace_frame(
                "out", frame.body(), seq=frame.seq, command="EVENT", faults=event.faults.describe()
            )
            self.send(frame.encode())

    def on_power_cycle(self) -> None:
        super().on_power_cycle()
        self._decoder.reset()
        self._last_raw = None
        self._last_reply = b""
        self._event_seq = 0

    # --- one frame -------------------------------------------------------------------

    def _handle(self, frame: Frame) -> None:
        name = command_name(frame.code)
        if frame.version != PROTOCOL_VERSION:
            # Not a frame of ours: no watchdog kick, but say which version we speak.
            self.trace_frame("in", frame.raw, seq=frame.seq, command=name, version=frame.version)
            nack = Nack(
                frame.code,
                ErrorCode.BAD_VERSION,
                detail=PROTOCOL_VERSION,
                message=f"this device speaks estim-wire/{PROTOCOL_VERSION}",
            )
            self.send(Frame(Reply.NACK, frame.seq, nack.encode()).encode())
            return
        self.hardware.frame_received()
        self.trace_frame("in", frame.raw, seq=frame.seq, command=name)
        if frame.raw == self._last_raw and frame.code != Command.STOP_ALL:
            self.send(self._last_reply)  # a retry: answer again, do not act twice
            return
        try:
            data = self._execute(frame)
            encoded = encode_frame(Reply.ACK, frame.seq, encode_ack(frame.code, data))
        except _Nacked as nacked:
            encoded = encode_frame(Reply.NACK, frame.seq, nacked.nack.encode())
        self._last_raw = frame.raw
        self._last_reply = encoded
        self.send(encoded)

    def _execute(self, frame: Frame) -> bytes:
        command = _COMMANDS.get(frame.code)
        if command is None:
            raise _Nacked(Nack(frame.code, ErrorCode.UNKNOWN_COMMAND, message="unknown command"))
        expected = _PAYLOAD_LEN[command]
        if expected is not None and len(frame.payload) != expected:
            raise _Nacked(
                Nack(
                    command,
                    ErrorCode.BAD_LENGTH,
                    detail=expected,
                    message=f"{command.name} takes {expected} payload bytes, "
                    f"got {len(frame.payload)}",
                )
            )
        try:
            return self._run(command, frame.payload)
        except Refusal as refusal:
            detail = refusal.limit
            if refusal.reason is RefusalReason.FAULT_LATCHED:
                detail = int(self.hardware.latched_faults())
            raise _Nacked(
                Nack(
                    command,
                    _REFUSAL_CODES[refusal.reason],
                    channel=refusal.channel,
                    detail=detail,
                    message=str(refusal),
                )
            ) from None
        except MessageError as err:
            code = (
                ErrorCode.BAD_LENGTH
                if "payload ends" in str(err) or "trailing" in str(err)
                else ErrorCode.BAD_ARGUMENT
            )
            raise _Nacked(Nack(command, code, message=str(err))) from None

    def _run(self, command: Command, payload: bytes) -> bytes:
        hw = self.hardware
        match command:
            case Command.IDENTIFY:
                return self._identify().encode()
            case Command.CONFIGURE:
                hw.configure(decode_configure(payload))
            case Command.SET_AMPLITUDE:
                hw.set_amplitudes(decode_set_amplitude(payload))
            case Command.OUTPUT_ON:
                hw.output_on(decode_channel_mask(payload))
            case Command.OUTPUT_OFF:
                hw.output_off()
            case Command.STOP_ALL:
                hw.stop_all("STOP_ALL")
            case Command.HEARTBEAT:
                pass
            case Command.STATUS:
                return encode_status(hw.status(), hw.uptime_ms())
            case Command.MEASURE_IMPEDANCE:
                if not hw.profile.measurement.measures_impedance:
                    raise _Nacked(
                        Nack(command, ErrorCode.UNKNOWN_COMMAND, message="no impedance test")
                    )
                channel = decode_channel(payload)
                return encode_impedance(channel, hw.measure_impedance(channel))
            case Command.CLEAR_FAULT:
                remaining = hw.clear_faults(FaultFlag(decode_fault_mask(payload) & 0xFF))
                return encode_fault_mask(int(remaining))
            case Command.SIM_INJECT:
                self._inject(payload)
        return b""

    def _identify(self) -> IdentifyReply:
        hw = self.hardware
        profile = hw.profile
        caps = Capability(0)
        names = hw.capabilities()
        if "measures-current" in names:
            caps |= Capability.MEASURES_CURRENT
        if "measures-impedance" in names:
            caps |= Capability.MEASURES_IMPEDANCE
        if "device-ramps" in names:
            caps |= Capability.DEVICE_RAMPS
        if "long-pulse" in names:
            caps |= Capability.LONG_PULSE
        if self.inject_fault is not None:
            caps |= Capability.SIM_FAULT_INJECTION
        return IdentifyReply(
            protocol_version=PROTOCOL_VERSION,
            channels=profile.output.channels,
            capabilities=caps,
            amplitude_max_ua=profile.output.amplitude_max_ua,
            amplitude_step_ua=profile.output.amplitude_resolution_ua,
            watchdog_ms=profile.link.watchdog_timeout_ms,
            manufacturer=profile.identity.manufacturer,
            model=profile.identity.model,
            serial_number=hw.serial_number,
            firmware=hw.firmware,
        )

    def _inject(self, payload: bytes) -> None:
        if self.inject_fault is None:
            raise _Nacked(
                Nack(Command.SIM_INJECT, ErrorCode.UNKNOWN_COMMAND, message="not a simulator")
            )
        try:
            spec = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise _Nacked(
                Nack(Command.SIM_INJECT, ErrorCode.BAD_ARGUMENT, message="spec is not UTF-8")
            ) from None
        try:
            self.inject_fault(spec)
        except InputError as err:
            raise _Nacked(
                Nack(Command.SIM_INJECT, ErrorCode.BAD_ARGUMENT, message=str(err))
            ) from None
