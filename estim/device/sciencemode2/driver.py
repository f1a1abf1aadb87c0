"""The ScienceMode2 driver: a Hasomed RehaStim2 behind estim's :class:`Stimulator` base.

How estim's driver operations map onto ScienceMode2 (docs/devices/rehastim2.md has the
full story):

===================  ====================================================================
``open()``           460800 baud 8E1; wait for the device's ``Init``, answer ``InitAck``
                     with that Init's packet counter, confirm with ``GetStimulationMode``
``configure()``      ``InitChannelListMode``: the channel mask and one main stimulation
                     interval (the shortest period); a channel whose period is 2-8 times
                     that uses the low-frequency factor. Then ``StartChannelListMode``
                     at 0 mA (the device judges the widths), then again with width 0 on
                     every channel: armed, no pulses. ScienceMode2 has no output switch
                     but the pulses themselves, so "output off" is width 0
``set_amplitudes()`` ``StartChannelListMode``, also while output is off (width 0), so the
                     device judges every amplitude before any pulse could carry it
``output_on()``      ``StartChannelListMode`` with the channels' widths (after
                     ``InitChannelListMode`` again if a stop returned the device to
                     start mode)
``output_off()``     ``StopChannelListMode``, acknowledged
``stop_all()``       ``StopChannelListMode`` written at once from any thread, never waiting
                     for a reply; a command that had not yet been written is not written
``heartbeat()``      ``Watchdog``
``status()``         ``GetStimulationMode``, answered: no answer within the reply timeout
                     is ``DeviceTimeout``. A channel's output is on when the device says
                     it is stimulating (mode 2) and the channel's pulse width in the
                     channel list the device holds is above zero (at any amplitude, 0 mA
                     included); ``measured_ua`` and ``impedance_ohm`` are always None
===================  ====================================================================

What the driver refuses itself (``ValueError``, nothing sent) is what the wire cannot
carry or what the firmware would silently change: amplitudes that are not whole mA,
periods off the 0.5 ms grid or outside 1-1025 ms, phase widths under 20 us (delivered
as 20 us by the firmware), other shapes. Everything else within the wire's range goes
to the device, which refuses what is beyond its limits (parameter error): drivers carry
out, the device enforces its own limits, and the bench proves that it does.

Unsolicited frames: ``StimulationError`` latches EMERGENCY_SWITCH (-1), ELECTRODE (-2)
or HARDWARE (-3), and the device has stopped; an ``Init`` after the handshake means
its watchdog dropped the link (WATCHDOG latches, when the host had been silent that
long) or it restarted (RESET): the driver answers the handshake again so the link
stays usable, and stimulation must be set up again. Both reach event listeners as
:class:`DeviceEvent`. Latched faults stay until :meth:`clear_fault`; while one is
latched, :meth:`output_on` and :meth:`set_amplitudes` refuse (``DeviceFaulted``).

Replies carry the device's own packet counter, not the host's, so an acknowledgement
is matched to the oldest command of its kind still waiting for one. Only one ordinary
command is in flight at a time; ``stop_all`` adds a reply slot that nobody waits for.
Nothing is retried: without request ids a retry could pair the wrong reply with a
command.

What the device is doing (its mode, and the pulses of the channel list it holds) is
learnt from its replies only, in the order it sent them: an acknowledged
StartChannelListMode sets the pulses, an acknowledged stop or InitChannelListMode, a
StimulationError, an Init, or a mode answer other than "stimulating" clears them. A
StartChannelListMode whose acknowledgement has not (yet) arrived counts as possibly
applied, so a lost reply can only make ``status()`` report *more* output, never less.
What the driver *commanded* (used to build its next frames) is kept apart from that,
and ``stop_all`` changes only the commanded side: the output is confirmed off by the
device's answers, never by the driver's belief. When the device reports a lower mode
than the one the driver set up, with no stop sent since, it stopped by itself without
a StimulationError reaching the driver: HARDWARE latches.

Time: with a real clock a reader thread receives frames; with a
:class:`~estim.clock.VirtualClock` there is no thread and a waiting call reads what the
in-process device sent, advancing virtual time in 1 ms steps up to its deadline.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

from estim.clock import NS_PER_MS, NS_PER_S, Clock, MonotonicClock
from estim.device.base import (
    ChannelConfig,
    ChannelStatus,
    DeviceEvent,
    DeviceIdentity,
    DeviceStatus,
    FaultFlag,
    Stimulator,
)
from estim.device.profile import DeviceProfile
from estim.device.sciencemode2.codec import DecoderStats, Frame, FrameDecoder
from estim.device.sciencemode2.messages import (
    INTERVAL_STEP_US,
    LOW_FREQUENCY_FACTOR_MAX,
    MAIN_INTERVAL_FIRMWARE_MIN_US,
    MAIN_INTERVAL_WIRE_MAX_US,
    MAIN_INTERVAL_WIRE_MIN_US,
    PULSE_WIDTH_FIRMWARE_MIN_US,
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
    Result,
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
    decode,
    decode_measure_current_reply,
    encode_measure_current,
)
from estim.device.transport import DEFAULT_READ_TIMEOUT_S, SerialLink, open_link
from estim.errors import (
    CommandSuperseded,
    DeviceDisconnected,
    DeviceError,
    DeviceFaulted,
    DeviceRejected,
    DeviceTimeout,
    IdentityMismatch,
    ProtocolError,
)
from estim.protocols.models import ShapeKind
from estim.units import UA_PER_MA

log = logging.getLogger(__name__)

SIM_FAULT_INJECTION = "sim-fault-injection"
"""Capability of estim's simulator: faults can be injected over the wire."""

VIRTUAL_STEP_NS = NS_PER_MS
"""How far a waiting call advances a virtual clock between looks at the port."""

ACK_FOR: dict[Command, Command] = {
    Command.GET_STIMULATION_MODE: Command.GET_STIMULATION_MODE_ACK,
    Command.INIT_CHANNEL_LIST_MODE: Command.INIT_CHANNEL_LIST_MODE_ACK,
    Command.START_CHANNEL_LIST_MODE: Command.START_CHANNEL_LIST_MODE_ACK,
    Command.STOP_CHANNEL_LIST_MODE: Command.STOP_CHANNEL_LIST_MODE_ACK,
}

_ERROR_FLAGS = {
    StimulationErrorCode.EMERGENCY_SWITCH: FaultFlag.EMERGENCY_SWITCH,
    StimulationErrorCode.ELECTRODE: FaultFlag.ELECTRODE,
    StimulationErrorCode.STIMULATION_MODULE: FaultFlag.HARDWARE,
}


class SupersededByStop(CommandSuperseded):
    """A command was not sent because an emergency stop came first."""


@dataclass(slots=True)
class DriverStats:
    """Link health counters."""

    frames_sent: int = 0
    timeouts: int = 0
    stale_replies: int = 0
    events: int = 0
    protocol_errors: int = 0
    handshakes: int = 0
    decoder: DecoderStats = field(default_factory=DecoderStats)


class _Slot:
    """One sent command's place in the queue of replies it expects.

    ``seq`` orders it among every frame written; ``generation`` is the driver's stop
    generation when it was written; ``pulses`` are a StartChannelListMode's entries by
    channel number (the wire carries them without channel numbers).
    """

    __slots__ = ("done", "expires_ns", "generation", "pulses", "reply", "seq", "waited")

    def __init__(
        self,
        *,
        waited: bool,
        expires_ns: int,
        pulses: dict[int, ChannelPulse] | None = None,
    ) -> None:
        self.waited = waited
        self.expires_ns = expires_ns
        self.pulses = pulses
        self.seq = -1
        self.generation = -1
        self.done = threading.Event()
        self.reply: Message | None = None


@dataclass(frozen=True, slots=True)
class _ChannelList:
    """The channel list ``configure`` asked for, in wire terms."""

    configs: tuple[ChannelConfig, ...]
    message: InitChannelListMode

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(sorted(c.channel for c in self.configs))

    def width_us(self, channel: int) -> int:
        for config in self.configs:
            if config.channel == channel:
                return config.phase_widths_us[0]
        raise KeyError(channel)


class ScienceMode2Stimulator(Stimulator):
    """A Hasomed RehaStim2 (or its simulator) in ScienceMode2 channel-list mode.

    Options: ``clock`` (default real time), ``keepalive`` (send Watchdog whenever nothing
    was sent for a heartbeat period; off by default, the controller's loop polls
    status), ``check_identity`` (refuse a device announcing another protocol version
    than the profile accepts; on), ``probe_simulator`` (after the handshake, ask once
    with a command number ScienceMode2 does not define whether the far end is estim's
    simulator, which can inject faults; a RehaStim2 answers UnknownCommand; on),
    ``reply_timeout_ms`` (default: the profile's),
    ``init_timeout_ms`` (how long ``open`` waits for the device's Init; default: the
    profile's watchdog timeout plus 2 s, since a device still bound to a host that
    vanished announces itself only once its watchdog has dropped that link).
    """

    def __init__(
        self,
        profile: DeviceProfile,
        url: str,
        *,
        clock: Clock | None = None,
        keepalive: bool = False,
        check_identity: bool = True,
        reply_timeout_ms: int | None = None,
        init_timeout_ms: int | None = None,
        probe_simulator: bool = True,
    ) -> None:
        super().__init__(profile, url)
        self.probe_simulator = probe_simulator
        self.is_simulator = False
        self.clock: Clock = clock or MonotonicClock()
        if keepalive and self.clock.is_virtual:
            raise ValueError("keepalive needs real time; in virtual time the owner sends frames")
        self.keepalive = keepalive
        self.check_identity = check_identity
        self.reply_timeout_ns = (reply_timeout_ms or profile.link.reply_timeout_ms) * NS_PER_MS
        init_ms = init_timeout_ms or profile.link.watchdog_timeout_ms + 2000
        self.init_timeout_ns = init_ms * NS_PER_MS
        self.stats = DriverStats()
        self.protocol_version: int | None = None
        self._link: SerialLink | None = None
        self._decoder = FrameDecoder()
        self.stats.decoder = self._decoder.stats
        self._write_lock = threading.Lock()  # held for one write only
        self._command_lock = threading.Lock()  # one ordinary command in flight
        self._pump_lock = threading.Lock()
        self._state_lock = threading.RLock()
        self._slots: dict[Command, deque[_Slot]] = {ack: deque() for ack in ACK_FOR.values()}
        self._slots[Command.UNKNOWN_COMMAND] = deque()
        self._sim_slots: deque[_Slot] = deque()
        self._counter = 0
        self._generation = 0  # bumped by every stop_all
        self._stopping = threading.Event()
        self._failure: DeviceError | None = None
        self._reader: threading.Thread | None = None
        self._keeper: threading.Thread | None = None
        self._keepalive_suspended = threading.Event()
        self._last_write_ns = 0
        self._announced: Init | None = None
        self._announced_counter = 0
        self._announced_event = threading.Event()
        self._rehandshake_ns = -(1 << 62)
        self._writes = 0  # frames written, for ordering replies against commands
        # What the driver commanded (its next frames are built from these).
        self._mode = StimulationMode.START
        self._list: _ChannelList | None = None
        self._amplitudes_ua: dict[int, int] = {}
        self._on: frozenset[int] = frozenset()
        self._faults = FaultFlag.NONE
        # What the device said (status is made from these; see the module docstring).
        self._device_mode: StimulationMode | None = None  # None: not said yet
        self._device_pulses: dict[int, ChannelPulse] | None = None  # None: unknown
        self._unconfirmed: dict[int, dict[int, ChannelPulse]] = {}  # by write seq

    @property
    def is_open(self) -> bool:
        return self._link is not None and self._failure is None

    @property
    def stimulation_mode(self) -> StimulationMode:
        """The mode the driver has set the device up for (see :attr:`device_mode`)."""
        return self._mode

    @property
    def device_mode(self) -> StimulationMode | None:
        """The mode the device last reported or acknowledged (None: not yet)."""
        return self._device_mode

    @property
    def last_write_ns(self) -> int:
        """When the last byte was handed to the port, on the driver's clock."""
        return self._last_write_ns

    # --- life cycle -------------------------------------------------------------------

    def _open(self) -> DeviceIdentity:
        if self._link is not None:
            raise DeviceError(f"{self.url}: already open")
        self._stopping.clear()
        self._failure = None
        self._decoder.reset()
        self._announced_event.clear()
        self._link = open_link(
            self.url,
            self.profile.link,
            read_timeout_s=0 if self.clock.is_virtual else DEFAULT_READ_TIMEOUT_S,
        )
        try:
            self._link.discard_input()  # a backlog of old announcements, half frames
            with self._state_lock:
                # Before anything is read: whatever the device says from here on (a
                # StimulationError pending from before this connection) stays latched.
                self._reset_state(FaultFlag.NONE)
            if not self.clock.is_virtual:
                self._reader = threading.Thread(
                    target=self._read_loop, name=f"sciencemode2 reader {self.url}", daemon=True
                )
                self._reader.start()
            init, counter = self._await_init()
            self.protocol_version = init.version
            identity = self._identity_for(init.version)
            if self.check_identity and not self.profile.identity.accepts_firmware(
                identity.firmware
            ):
                raise IdentityMismatch(
                    f"{self.url}: the device announces ScienceMode2 protocol version "
                    f"{init.version}; the profile accepts {self.profile.identity.firmware_min}"
                    f"..{self.profile.identity.firmware_max}. Use the profile written for "
                    "this device, or validate a new one on the bench"
                )
            self._write_message(InitAck(Result.OK), counter=counter)
            self.stats.handshakes += 1
            mode = self.query_mode()  # proves the link works both ways
            if mode is not StimulationMode.START:
                log.warning(
                    "%s: the device was %s when estim connected: stopping it",
                    self.url,
                    mode.name.lower(),
                )
                self._transact(StopChannelListMode())
            if self._faults:
                # The device reported an error as soon as it was connected: one left
                # from before this connection. It stays latched (status reports it, and
                # nothing is set up) until a person clears it; see docs/devices/rehastim2.md.
                log.warning(
                    "%s: the device reports an error from before this connection: %s",
                    self.url,
                    self._faults.describe(),
                )
            if self.probe_simulator:
                self.is_simulator = self._probe_simulator()
                if self.is_simulator:
                    identity = self._identity_for(init.version)
            self.identity = identity
            if self.keepalive:
                self._keeper = threading.Thread(
                    target=self._keepalive_loop,
                    name=f"sciencemode2 keepalive {self.url}",
                    daemon=True,
                )
                self._keeper.start()
            return identity
        except BaseException:
            self._shutdown()
            raise

    def _close(self) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        self._stopping.set()
        link = self._link
        if link is not None:
            link.cancel_read()
        for thread in (self._keeper, self._reader):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5.0)
        self._keeper = self._reader = None
        if link is not None:
            link.close()
        self._link = None
        self._fail(DeviceDisconnected(f"{self.url}: the port is closed"))

    def _await_init(self) -> tuple[Init, int]:
        deadline = self.clock.now_ns() + self.init_timeout_ns
        while True:
            if self.clock.is_virtual:
                self._pump()
            if self._announced_event.is_set():
                with self._state_lock:
                    assert self._announced is not None
                    return self._announced, self._announced_counter
            self._raise_if_failed()
            now = self.clock.now_ns()
            if now >= deadline:
                waited_ms = self.init_timeout_ns // NS_PER_MS
                raise DeviceTimeout(
                    f"{self.url}: the device did not announce itself (ScienceMode2 Init) "
                    f"within {waited_ms} ms; check that the RehaStim2 is switched on and in "
                    "ScienceMode, and that this is its port"
                )
            if self.clock.is_virtual:
                self.clock.sleep_until(min(deadline, now + VIRTUAL_STEP_NS))
            else:
                self._announced_event.wait((deadline - now) / NS_PER_S)

    def _identity_for(self, version: int) -> DeviceIdentity:
        # ScienceMode2 reports neither model nor serial number nor firmware: only the
        # protocol version in Init. The model is the profile's statement.
        return DeviceIdentity(
            model=self.profile.identity.model,
            serial_number="not reported by ScienceMode2",
            firmware=str(version),
            protocol_version=version,
            manufacturer=self.profile.identity.manufacturer,
            capabilities=frozenset(
                {"sciencemode2", "channel-list-mode"}
                | ({SIM_FAULT_INJECTION} if self.is_simulator else set())
            ),
        )

    def _probe_simulator(self) -> bool:
        try:
            self.inject_fault("")  # empty: the simulator answers, injects nothing
        except DeviceRejected:
            return False  # UnknownCommand: a real device
        except DeviceTimeout:
            log.info("%s: no answer to the simulator probe; taking a real device", self.url)
            return False
        return True

    # --- backend methods ------------------------------------------------------------

    def _identify(self) -> DeviceIdentity:
        self._raise_if_failed()
        if self.protocol_version is None:
            raise DeviceError(f"{self.url}: not connected")
        return self._identity_for(self.protocol_version)

    def _configure(self, configs: tuple[ChannelConfig, ...]) -> None:
        channel_list = self.channel_list_for(configs)
        self._refuse_if_faulted()  # InitChannelListMode would clear the device's own latch
        with self._command_lock:
            generation = self._generation
            if self._mode is not StimulationMode.START:
                if self._on:
                    log.warning("%s: configure while stimulating: stopping first", self.url)
                self._exchange(StopChannelListMode(), generation)
                self._after_stop(generation)
            with self._state_lock:
                self._list = None
                self._amplitudes_ua = {}
                self._on = frozenset()
            # The device judges the interval (InitChannelListMode), then the widths (a
            # start at 0 mA), then waits armed with no pulses (width 0): ScienceMode2
            # has no output switch apart from the pulses themselves.
            self._exchange(channel_list.message, generation)
            self._set_mode(StimulationMode.INITIALISED, generation)
            widths = StartChannelListMode(
                tuple(ChannelPulse(channel_list.width_us(c), 0) for c in channel_list.channels)
            )
            self._exchange(widths, generation, channel_list.channels)
            self._set_mode(StimulationMode.STIMULATING, generation)
            with self._state_lock:
                if generation == self._generation:
                    self._list = channel_list
                    self._amplitudes_ua = dict.fromkeys(channel_list.channels, 0)
            armed = self._start_message(channel_list, frozenset())
            self._exchange(armed, generation, channel_list.channels)

    def _set_amplitudes(self, amplitudes_ua: dict[int, int]) -> None:
        channel_list = self._require_list()
        for channel, value in amplitudes_ua.items():
            if channel not in channel_list.channels:
                raise ValueError(f"channel {channel} is not configured; configure it first")
            _amplitude_ma(channel, value)
        self._refuse_if_faulted()
        with self._command_lock:
            generation = self._generation
            amplitudes = {**self._amplitudes_ua, **amplitudes_ua}
            # Sent even while output is off (width 0: no pulses), so the device itself
            # judges every amplitude before any pulse could carry it.
            self._ensure_channel_list(channel_list, generation)
            message = self._start_message(channel_list, self._on, amplitudes)
            self._exchange(message, generation, channel_list.channels)
            with self._state_lock:
                if generation == self._generation:
                    self._amplitudes_ua = amplitudes
                    self._mode = StimulationMode.STIMULATING

    def _output_on(self, channels: tuple[int, ...]) -> None:
        channel_list = self._require_list()
        for channel in channels:
            if channel not in channel_list.channels:
                raise ValueError(f"channel {channel} is not configured; configure it first")
        self._refuse_if_faulted()
        with self._command_lock:
            generation = self._generation
            self._ensure_channel_list(channel_list, generation)
            on = self._on | frozenset(channels)
            self._exchange(self._start_message(channel_list, on), generation, channel_list.channels)
            with self._state_lock:
                if generation == self._generation:
                    self._on = on
                    self._mode = StimulationMode.STIMULATING

    def _refuse_if_faulted(self) -> None:
        # Setting the channel list up again would clear the device's own latch; only a
        # person may do that (clear_fault), after removing the cause.
        faults = self._faults
        if faults:
            raise DeviceFaulted(
                f"{self.url}: fault latched ({faults.describe()}); remove its cause, "
                "clear the fault, then set the stimulation up again",
                flags=int(faults),
            )

    def _ensure_channel_list(self, channel_list: _ChannelList, generation: int) -> None:
        """After a stop the device is in start mode: initialise the channel list again."""
        if self._mode is StimulationMode.START:
            self._exchange(channel_list.message, generation)
            self._set_mode(StimulationMode.INITIALISED, generation)

    def _set_mode(self, mode: StimulationMode, generation: int) -> None:
        with self._state_lock:
            if generation == self._generation:
                self._mode = mode

    def _output_off(self) -> None:
        with self._command_lock:
            generation = self._generation
            with contextlib.suppress(SupersededByStop):  # an emergency stop did it already
                self._exchange(StopChannelListMode(), generation)
            self._after_stop(generation)

    def _stop_all(self) -> None:
        # Outside the command lock: never behind another command's reply. The write
        # lock is held by at most one frame's write. Only what the driver *commanded*
        # changes here; what the device does is known when it answers (its
        # StopChannelListModeAck, or the next status).
        self._raise_if_failed()
        expires = self.clock.now_ns() + self.reply_timeout_ns
        slot = _Slot(waited=False, expires_ns=expires)
        with self._write_lock:
            self._generation += 1
            generation = self._generation
            self._write_locked(StopChannelListMode(), counter=None, slot=slot)
            # Still under the write lock: no frame written after the stop (a status
            # question) can meet the driver's pre-stop plan.
            self._after_stop(generation)

    def _heartbeat(self) -> None:
        self._write_message(Watchdog())

    def _status(self) -> DeviceStatus:
        """Ask the device its mode (GetStimulationMode) and report what it said.

        Output on, per channel: the device stimulates (mode 2) and that channel's pulse
        width in the channel list the device holds is above zero, at whatever amplitude
        (0 mA included: the output stage is pulsing). ``commanded_ua`` is the amplitude
        that channel list carries for a channel whose output is on, else 0. A device
        that says it stimulates with no channel list estim set up is taken to stimulate
        on every channel. No answer within the reply timeout raises DeviceTimeout.
        """
        self._query_mode()
        with self._state_lock:
            on, amplitudes_ma = self._device_outputs()
            channels = tuple(
                ChannelStatus(
                    channel=number,
                    commanded_ua=amplitudes_ma.get(number, 0) * UA_PER_MA if number in on else 0,
                    measured_ua=None,
                    impedance_ohm=None,
                    output_on=number in on,
                )
                for number in range(1, self.profile.output.channels + 1)
            )
            return DeviceStatus(channels, faults=self._faults, taken_at_ns=self.clock.now_ns())

    def _device_outputs(self) -> tuple[frozenset[int], dict[int, int]]:
        """Channels whose output the device may be pulsing, and their amplitudes (mA).

        From the device's reported mode and the channel list it last acknowledged,
        widened by every StartChannelListMode whose acknowledgement has not arrived
        (it may have been applied). The caller holds the state lock.
        """
        if self._device_mode is not StimulationMode.STIMULATING:
            return frozenset(), {}
        widths: dict[int, int] = {}
        amplitudes: dict[int, int] = {}
        lists = [self._device_pulses or {}, *self._unconfirmed.values()]
        for pulses in lists:
            for channel, pulse in pulses.items():
                widths[channel] = max(widths.get(channel, 0), pulse.pulse_width_us)
                amplitudes[channel] = max(amplitudes.get(channel, 0), pulse.amplitude_ma)
        if not widths:
            # Stimulating with no channel list estim set up (or one it saw stopped):
            # nothing says which channels are quiet, so none is.
            return frozenset(range(1, self.profile.output.channels + 1)), {}
        return frozenset(c for c, width in widths.items() if width), amplitudes

    def _measure_impedance(self, channel: int) -> int:
        raise ProtocolError(
            f"{self.url}: ScienceMode2 cannot measure impedance; the profile must say "
            "measures_impedance = false"
        )

    def _clear_fault(self) -> None:
        # The device has no clear command: after a stimulation error it is in start
        # mode, and the next output_on initialises the channel list again. If the cause
        # persists (electrode, emergency switch), the device reports it again.
        with self._state_lock:
            self._faults = FaultFlag.NONE

    # --- extras beyond the base class -------------------------------------------------

    def query_mode(self) -> StimulationMode:
        """Ask the device its mode (GetStimulationMode) and wait for the answer."""
        return self._query_mode()

    def _query_mode(self) -> StimulationMode:
        # Never superseded by a stop: a question changes nothing on the device.
        with self._command_lock:
            reply = self._exchange(GetStimulationMode(), None)
        assert isinstance(reply, GetStimulationModeAck)
        try:
            return StimulationMode(reply.mode)
        except ValueError as err:
            self.stats.protocol_errors += 1
            raise ProtocolError(f"{self.url}: device reports unknown mode {reply.mode}") from err

    def inject_fault(self, spec: str) -> None:
        """Simulator only: inject a fault spec such as ``open:ch=1`` into estim's simulator.

        Uses a command number ScienceMode2 does not define; a real RehaStim2 answers
        UnknownCommand, which raises :class:`DeviceRejected`.
        """
        self._sim_command(spec.encode("ascii"), "simulator fault injection", f"fault {spec!r}")

    def sim_measure_current(self, channel: int) -> int:
        """Simulator only: the peak current (uA) delivered into ``channel``'s load now.

        What an oscilloscope across the simulated load would read (0 while the channel
        sends no pulses); the bench's instrument on the simulator of a device that
        cannot measure its own current. A real RehaStim2 answers UnknownCommand, which
        raises :class:`DeviceRejected`; so does a simulator too old to know the query.
        """
        what = "simulator current measurement"
        payload = self._sim_command(
            encode_measure_current(channel), what, f"to measure channel {channel}"
        )
        try:
            return decode_measure_current_reply(payload)
        except MessageError as err:
            self.stats.protocol_errors += 1
            raise ProtocolError(f"{self.url}: malformed reply to the {what}: {err}") from err

    def _sim_command(self, data: bytes, what: str, refused: str) -> bytes:
        """Send a simulator-only command (200) and return its reply's data (201)."""
        with self._command_lock:
            slot = _Slot(waited=True, expires_ns=self.clock.now_ns() + self.reply_timeout_ns)
            with self._write_lock:
                self._sim_slots.append(slot)
                self._write_locked(Unrecognised(SIM_INJECT, data), counter=None, slot=None)
            reply = self._wait_slot(slot, what)
        if isinstance(reply, UnknownCommand):
            raise DeviceRejected(
                f"{self.url}: this device does not accept {what}",
                code=Command.UNKNOWN_COMMAND,
                code_name="unknown command",
            )
        assert isinstance(reply, Unrecognised)
        result = reply.payload[0] - 256 if reply.payload and reply.payload[0] > 127 else 0
        if result:
            raise DeviceRejected(
                f"{self.url}: the simulator refused {refused}",
                code=result,
                code_name=Result.describe(result),
            )
        return reply.payload

    @contextlib.contextmanager
    def keepalive_suspended(self) -> Iterator[None]:
        """Stop the opt-in keep-alive for a while (e.g. to prove the device watchdog)."""
        self._keepalive_suspended.set()
        try:
            yield
        finally:
            self._keepalive_suspended.clear()

    def poll_events(self) -> None:
        """Virtual time: read what the device sent (events reach listeners). No-op when a
        reader thread does this already."""
        if self.clock.is_virtual and self._link is not None:
            self._pump()

    def channel_list_for(self, configs: tuple[ChannelConfig, ...]) -> _ChannelList:
        """The InitChannelListMode for ``configs``; refuses what the device cannot do.

        Refused (``ValueError``): shapes other than symmetric biphasic, an interphase
        gap, phase widths below the firmware's 20 us (it would silently lengthen them),
        periods off the 0.5 ms grid or outside the wire's 1-1025 ms, and channels whose
        periods are not one main interval or one common multiple (2-8) of it.
        """
        if not configs:
            raise ValueError("configure at least one channel")
        if len({c.channel for c in configs}) != len(configs):
            raise ValueError("a channel is configured twice")
        for config in configs:
            _check_pulse_shape(config)
        main_us = min(c.period_us for c in configs)
        _check_main_interval(main_us)
        slow = {
            c.channel: Fraction(c.period_us, main_us) for c in configs if c.period_us != main_us
        }
        factors = set(slow.values())
        if len(factors) > 1 or any(
            f.denominator != 1 or not 2 <= f <= LOW_FREQUENCY_FACTOR_MAX + 1 for f in factors
        ):
            periods = ", ".join(f"channel {c.channel}: {c.period_us} us" for c in configs)
            raise ValueError(
                f"ScienceMode2 runs every channel at one main interval ({main_us} us) or at "
                f"one common multiple of it (2-{LOW_FREQUENCY_FACTOR_MAX + 1} times); "
                f"cannot deliver {periods}"
            )
        factor = int(factors.pop()) - 1 if factors else 0
        message = InitChannelListMode.from_intervals(
            frozenset(c.channel for c in configs),
            main_us,
            low_frequency_channels=frozenset(slow),
            low_frequency_factor=factor,
        )
        return _ChannelList(tuple(sorted(configs, key=lambda c: c.channel)), message)

    # --- the exchange -----------------------------------------------------------------

    def _start_message(
        self,
        channel_list: _ChannelList,
        on: frozenset[int],
        amplitudes_ua: dict[int, int] | None = None,
    ) -> StartChannelListMode:
        """Every configured channel, ascending: its width if on, else width 0 (no pulses)."""
        amplitudes = self._amplitudes_ua if amplitudes_ua is None else amplitudes_ua
        pulses = []
        for channel in channel_list.channels:
            amplitude_ma = _amplitude_ma(channel, amplitudes.get(channel, 0))
            width_us = channel_list.width_us(channel) if channel in on else 0
            pulses.append(ChannelPulse(width_us, amplitude_ma))
        return StartChannelListMode(tuple(pulses))

    def _after_stop(self, generation: int) -> None:
        with self._state_lock:
            if generation >= self._generation:
                self._mode = StimulationMode.START
                self._on = frozenset()
                self._amplitudes_ua = dict.fromkeys(self._amplitudes_ua, 0)

    def _exchange(
        self,
        message: Message,
        generation: int | None,
        channels: tuple[int, ...] | None = None,
    ) -> Message:
        """Send an acknowledged command and wait for its reply (command lock held).

        ``generation``: the stop generation the caller planned under; a stop since then
        supersedes the command (None: a question, never superseded). ``channels``: the
        channel numbers of a StartChannelListMode's entries, in order.
        """
        ack = ACK_FOR[message.COMMAND]
        pulses = None
        if isinstance(message, StartChannelListMode):
            if channels is None:
                raise ValueError("a StartChannelListMode needs its entries' channel numbers")
            pulses = dict(zip(channels, message.pulses, strict=True))
        slot = _Slot(
            waited=True, expires_ns=self.clock.now_ns() + self.reply_timeout_ns, pulses=pulses
        )
        with self._write_lock:
            if generation is not None and generation != self._generation:
                raise SupersededByStop(
                    f"{self.url}: {message.COMMAND.name} not sent: an emergency stop came "
                    "first; set the stimulation up again"
                )
            self._write_locked(message, counter=None, slot=slot)
        reply = self._wait_slot(slot, message.COMMAND.name)
        if isinstance(reply, UnknownCommand):
            raise DeviceRejected(
                f"{self.url}: the device does not know {message.COMMAND.name}",
                code=Command.UNKNOWN_COMMAND,
                code_name="unknown command",
            )
        result = getattr(reply, "result", Result.OK)
        if reply.COMMAND is not ack:
            self.stats.protocol_errors += 1
            raise ProtocolError(f"{self.url}: {reply.COMMAND.name} in reply to {ack.name}")
        if result == Result.WRONG_MODE and self._faults:
            # The device stopped on its own (its StimulationError or Init came before
            # this reply): that, not the mode, is what the caller needs to hear.
            raise DeviceRejected(
                f"{self.url}: device refused {message.COMMAND.name} (wrong mode): it had "
                f"stopped stimulating by itself ({self._faults.describe()})",
                code=result,
                code_name=Result.describe(result),
            )
        if result != Result.OK:
            name = Result.describe(result)
            raise DeviceRejected(
                f"{self.url}: device refused {message.COMMAND.name}: {name} ({result})"
                + _REJECTION_ADVICE.get(result, ""),
                code=result,
                code_name=name,
            )
        return reply

    def _transact(self, message: Message) -> Message:
        with self._command_lock:
            return self._exchange(message, self._generation)

    def _wait_slot(self, slot: _Slot, what: str) -> Message:
        deadline = slot.expires_ns
        while True:
            if self.clock.is_virtual:
                self._pump()
            elif not slot.done.is_set():
                remaining = deadline - self.clock.now_ns()
                if remaining > 0:
                    slot.done.wait(remaining / NS_PER_S)
            if slot.done.is_set():
                if slot.reply is None:
                    self._raise_if_failed()
                    raise DeviceDisconnected(f"{self.url}: the link failed")
                return slot.reply
            self._raise_if_failed()
            now = self.clock.now_ns()
            if now >= deadline:
                self._abandon(slot)
                self.stats.timeouts += 1
                timeout_ms = self.reply_timeout_ns // NS_PER_MS
                raise DeviceTimeout(
                    f"{self.url}: no reply to {what} within {timeout_ms} ms; check the cable "
                    "and that the device is on and in ScienceMode"
                )
            if self.clock.is_virtual:
                self.clock.sleep_until(min(deadline, now + VIRTUAL_STEP_NS))

    def _abandon(self, slot: _Slot) -> None:
        with self._state_lock:
            for queue in (*self._slots.values(), self._sim_slots):
                if slot in queue:
                    queue.remove(slot)

    def _write_message(self, message: Message, *, counter: int | None = None) -> None:
        with self._write_lock:
            self._write_locked(message, counter=counter, slot=None)

    def _write_locked(self, message: Message, *, counter: int | None, slot: _Slot | None) -> None:
        """Encode and write one frame; the caller holds the write lock."""
        link = self._link
        if link is None:
            raise DeviceDisconnected(f"{self.url}: the port is not open")
        self._raise_if_failed()
        if counter is None:
            counter = self._counter
            self._counter = (self._counter + 1) % 256
        data = message.encode(counter)
        self._writes += 1
        if slot is not None:
            with self._state_lock:
                slot.seq = self._writes
                slot.generation = self._generation
                ack = ACK_FOR[message.COMMAND]
                self._slots[ack].append(slot)
                if slot.pulses is not None:  # possibly applied from now on
                    self._unconfirmed[slot.seq] = slot.pulses
        try:
            link.write(data)
        except DeviceError as err:
            if slot is not None:
                self._abandon(slot)
            self._fail(err)
            raise
        self.stats.frames_sent += 1
        self._last_write_ns = self.clock.now_ns()

    # --- receiving ----------------------------------------------------------------

    def _read_loop(self) -> None:
        link = self._link
        assert link is not None
        # "is link": a reader that outlived its close must not spin on the closed link.
        while not self._stopping.is_set() and self._link is link:
            try:
                data = link.read_available()
                if data:
                    self._receive(self._decoder.feed(data))
            except DeviceError as err:
                if not self._stopping.is_set():
                    log.error("%s: %s", self.url, err)
                    self._fail(err)
                return
            except Exception as err:  # a bug here must not leave callers waiting
                log.exception("%s: reader failed", self.url)
                self._fail(ProtocolError(f"{self.url}: the driver's reader failed: {err!r}"))
                return

    def _pump(self) -> None:
        link = self._link
        if link is None:
            return
        with self._pump_lock:
            try:
                data = link.read_available()
            except DeviceError as err:
                self._fail(err)
                raise
            if data:
                self._receive(self._decoder.feed(data))

    def _receive(self, frames: list[Frame]) -> None:
        for frame in frames:
            try:
                message = decode(frame)
            except MessageError as err:
                self.stats.protocol_errors += 1
                log.warning("%s: malformed frame from the device: %s", self.url, err)
                continue
            try:
                self._on_message(frame, message)
            except DeviceError as err:  # answering a re-announcement failed
                log.error("%s: %s", self.url, err)

    def _on_message(self, frame: Frame, message: Message) -> None:
        match message:
            case Init():
                self._on_init(frame.counter, message)
            case StimulationError():
                self._on_stimulation_error(message.code)
            case Unrecognised(command=command) if command == SIM_INJECT_ACK:
                self._complete(self._sim_slots, message)
            case UnknownCommand():
                # Says nothing about which command: it answers the one in flight.
                with self._state_lock:
                    queues = [q for q in self._slots.values() if q] + [self._sim_slots]
                waiting = [q for q in queues if q and q[0].waited]
                if waiting:
                    self._complete(waiting[0], message)
                else:
                    self.stats.stale_replies += 1
            case Unrecognised():
                self.stats.protocol_errors += 1  # e.g. MOTOmed traffic: not ours
            case _ if message.COMMAND in self._slots:
                self._complete(self._slots[message.COMMAND], message)
            case _:
                self.stats.protocol_errors += 1

    def _complete(self, queue: deque[_Slot], message: Message) -> None:
        now = self.clock.now_ns()
        with self._state_lock:
            # Slots nobody waits for (stop_all's) expire, so a lost reply does not
            # shift every later reply onto the wrong command.
            while queue and not queue[0].waited and queue[0].expires_ns < now:
                queue.popleft()
            slot = queue.popleft() if queue else None
            contradiction = self._learn(slot, message) if slot is not None else None
        if slot is None:
            self.stats.stale_replies += 1
            return
        if contradiction is not None:
            self._latch(FaultFlag.HARDWARE, contradiction)
        slot.reply = message
        slot.done.set()

    def _learn(self, slot: _Slot, message: Message) -> str | None:
        """What a reply says the device now does (state lock held).

        Returns the reason to latch a fault when the device's answer contradicts what
        the driver set it up for (it left stimulation by itself), else None.
        """
        if getattr(message, "result", None) != Result.OK:
            self._unconfirmed.pop(slot.seq, None)  # refused (or unknown): not applied
            return None
        match message:
            case StartChannelListModeAck():
                # A StartChannelListMode carries every channel: it replaces what came before.
                self._device_pulses = dict(slot.pulses or {})
                for seq in [s for s in self._unconfirmed if s <= slot.seq]:
                    del self._unconfirmed[seq]
                self._device_mode = StimulationMode.STIMULATING
            case InitChannelListModeAck():
                self._device_holds_no_pulses(before_seq=slot.seq)
                self._device_mode = StimulationMode.INITIALISED
            case StopChannelListModeAck():
                self._device_holds_no_pulses(before_seq=slot.seq)
                self._device_mode = StimulationMode.START
            case GetStimulationModeAck():
                try:
                    mode = StimulationMode(message.mode)
                except ValueError:
                    return None  # the waiting query raises ProtocolError
                self._device_mode = mode
                if mode is not StimulationMode.STIMULATING:
                    self._device_holds_no_pulses(before_seq=slot.seq)
                planned = self._mode
                if mode < planned and slot.generation == self._generation:
                    self._mode = mode
                    self._on = frozenset()
                    return (
                        f"the device reports mode {mode.value} ({mode.name.lower()}) although "
                        f"estim had set it {planned.name.lower()} and sent no stop since: it "
                        "stopped stimulating by itself, and no StimulationError reached estim"
                    )
        return None

    def _device_holds_no_pulses(self, before_seq: int | None = None) -> None:
        """The device has no channel list running: forget every Start written before
        ``before_seq`` (None: all). The caller holds the state lock."""
        self._device_pulses = {}
        for seq in [s for s in self._unconfirmed if before_seq is None or s < before_seq]:
            del self._unconfirmed[seq]

    def _on_init(self, counter: int, init: Init) -> None:
        if self.identity is None:  # still in open(): the handshake is open()'s job
            with self._state_lock:
                self._announced, self._announced_counter = init, counter
            self._announced_event.set()
            return
        # The device announced itself again: it restarted, or its watchdog dropped the
        # link. Its output is off and its channel list gone. Keep the link usable.
        with self._state_lock:
            self._device_mode = StimulationMode.START
            self._device_holds_no_pulses()
        now = self.clock.now_ns()
        repeated = now - self._rehandshake_ns < self.reply_timeout_ns
        self._rehandshake_ns = now
        if repeated:  # an announcement already in flight when we answered the first
            self._write_message(InitAck(Result.OK), counter=counter)
            return
        silent_ns = now - self._last_write_ns
        watchdog_ns = self.profile.link.watchdog_timeout_ms * NS_PER_MS
        if silent_ns >= watchdog_ns - self.reply_timeout_ns:
            # The host had been silent for the device's watchdog timeout: the watchdog
            # stopped stimulation and dropped the link (ScienceMode2 does not say so;
            # the silence does).
            flag = FaultFlag.WATCHDOG
            detail = (
                f"the device announced itself again after {silent_ns // NS_PER_MS} ms "
                "without a frame from the host: its watchdog stopped stimulation"
            )
        else:
            flag = FaultFlag.RESET
            detail = (
                "the device announced itself again (ScienceMode2 Init) while the host was "
                "talking to it: it restarted; stimulation stopped"
            )
        self._latch(flag, detail)
        self._write_message(InitAck(Result.OK), counter=counter)
        self.stats.handshakes += 1

    def _on_stimulation_error(self, code: int) -> None:
        try:
            flag = _ERROR_FLAGS[StimulationErrorCode(code)]
        except ValueError:
            flag = FaultFlag.HARDWARE
        detail = f"StimulationError {code}: {StimulationErrorCode.describe(code)}"
        with self._state_lock:
            self._device_mode = StimulationMode.START
            self._device_holds_no_pulses()
        self._latch(flag, detail + "; the device stopped stimulating")

    def _latch(self, flag: FaultFlag, detail: str) -> None:
        with self._state_lock:
            self._faults |= flag
            self._mode = StimulationMode.START
            self._on = frozenset()
            self._amplitudes_ua = dict.fromkeys(self._amplitudes_ua, 0)
        self.stats.events += 1
        log.warning("%s: device event: %s: %s", self.url, flag.describe(), detail)
        self._emit(DeviceEvent(faults=flag, channel=None, detail=detail, at_ns=self.clock.now_ns()))

    def _fail(self, err: DeviceError) -> None:
        """The link is gone: fail every waiting and every future call with ``err``."""
        if self._failure is None:
            self._failure = err
        with self._state_lock:
            slots = [s for q in (*self._slots.values(), self._sim_slots) for s in q]
        for slot in slots:
            slot.done.set()
        self._announced_event.set()

    def _raise_if_failed(self) -> None:
        failure = self._failure
        if failure is not None:
            raise type(failure)(str(failure)) from failure
        if self._link is None:
            raise DeviceDisconnected(f"{self.url}: the port is not open")

    def _require_list(self) -> _ChannelList:
        channel_list = self._list
        if channel_list is None:
            raise ValueError("no channel is configured; call configure() first")
        return channel_list

    def _reset_state(self, faults: FaultFlag) -> None:
        self._mode = StimulationMode.START
        self._list = None
        self._amplitudes_ua = {}
        self._on = frozenset()
        self._faults = faults
        self._device_mode = None
        self._device_pulses = None
        self._unconfirmed = {}

    # --- keep-alive ------------------------------------------------------------------

    def _keepalive_loop(self) -> None:
        period_ns = self.profile.link.heartbeat_period_ms * NS_PER_MS
        while True:
            due = self._last_write_ns + period_ns
            wait_ns = max(0, due - self.clock.now_ns())
            if self._stopping.wait(wait_ns / NS_PER_S):
                return
            if self._keepalive_suspended.is_set():
                self._stopping.wait(period_ns / NS_PER_S)
                continue
            if self.clock.now_ns() - self._last_write_ns < period_ns:
                continue
            try:
                self._heartbeat()
            except DeviceError as err:
                if not self._stopping.is_set():
                    log.error("%s: keep-alive failed: %s", self.url, err)
                return


_REJECTION_ADVICE = {
    Result.PARAMETER_ERROR: "; a value is outside the device's limits (see the profile)",
    Result.WRONG_MODE: "; the device is not in the mode this command needs",
    Result.BUSY: "; the device is busy, try again",
    Result.TRANSFER_ERROR: "; the device received a damaged frame",
}


def _amplitude_ma(channel: int, amplitude_ua: int) -> int:
    """Whole mA for the wire; refuses what ScienceMode2 cannot carry (never rounds)."""
    amplitude_ma, rest = divmod(amplitude_ua, UA_PER_MA)
    if rest:
        raise ValueError(
            f"channel {channel}: {amplitude_ua} uA is not a whole number of mA; "
            "ScienceMode2 sets amplitude in 1 mA steps"
        )
    if amplitude_ma > 0xFF:
        raise ValueError(f"channel {channel}: {amplitude_ma} mA does not fit ScienceMode2's byte")
    return amplitude_ma


def _check_pulse_shape(config: ChannelConfig) -> None:
    channel = config.channel
    if config.shape is not ShapeKind.SYMMETRIC_BIPHASIC:
        raise ValueError(
            f"channel {channel}: the RehaStim2 makes symmetric biphasic pulses only, "
            f"not {config.shape.value}"
        )
    first, second = config.phase_widths_us
    if first != second:
        raise ValueError(f"channel {channel}: the two phases must be equal ({first}, {second} us)")
    if config.interphase_gap_us:
        raise ValueError(
            f"channel {channel}: ScienceMode2 cannot set an interphase gap "
            f"({config.interphase_gap_us} us asked)"
        )
    if not PULSE_WIDTH_FIRMWARE_MIN_US <= first <= 0xFFFF:
        raise ValueError(
            f"channel {channel}: phase width {first} us is below the RehaStim2's "
            f"{PULSE_WIDTH_FIRMWARE_MIN_US} us (the firmware would deliver "
            f"{PULSE_WIDTH_FIRMWARE_MIN_US} us instead)"
        )


def _check_main_interval(period_us: int) -> None:
    # Only what the wire cannot carry is refused here. Periods of 1-7.5 ms can be sent,
    # and the device refuses them itself (its firmware's minimum is 8 ms): the bench
    # proves that it does. Normal sessions never get there: the static check and the
    # session plan hold rates to the profile's 125 Hz.
    if not MAIN_INTERVAL_WIRE_MIN_US <= period_us <= MAIN_INTERVAL_WIRE_MAX_US:
        raise ValueError(
            f"pulse period {period_us} us is outside what ScienceMode2 can carry "
            f"({MAIN_INTERVAL_WIRE_MIN_US}-{MAIN_INTERVAL_WIRE_MAX_US} us, about 1 Hz to "
            f"1 kHz; the RehaStim2 itself accepts {MAIN_INTERVAL_FIRMWARE_MIN_US} us and more)"
        )
    if period_us % INTERVAL_STEP_US:
        raise ValueError(
            f"pulse period {period_us} us is not a multiple of {INTERVAL_STEP_US} us; "
            "ScienceMode2 cannot represent it. Derive the channel configuration with "
            f"ChannelConfig.from_train(..., period_resolution_us={INTERVAL_STEP_US}), which "
            "rounds the period up (a rate never above the prescribed one)"
        )


__all__ = ["SIM_FAULT_INJECTION", "DriverStats", "ScienceMode2Stimulator", "SupersededByStop"]
