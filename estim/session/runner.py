"""The session runner: one control loop that owns the driver.

Each loop step, at an absolute deadline on the injected clock (never an accumulated
sleep, so a 30-minute session does not drift):

1. move the machine for an emergency stop, if one was pressed;
2. carry out the commands people queued (connect, titrate, start, pause ...);
3. compute the envelope amplitude from the schedule at this instant and command it if
   it changed (ramps are stepped every ``ramp_update_ns``; phase boundaries are hit at
   their own deadlines);
4. poll the device's status (which also keeps its watchdog fed) and evaluate every
   runtime interlock on the reading; any trip zeroes every channel, then latches FAULT;
5. publish a snapshot for displays, and write events to the sink.

The same code runs in real time (``MonotonicClock``, a pty or a serial port) and in
virtual time (``VirtualClock`` and the in-process simulator): nothing here sleeps
except through the clock.

Emergency stop (:meth:`SessionRunner.emergency_stop`) may be called from any thread: a
key, a signal handler, a patient button. It sends STOP ALL to the device *directly*
(the driver puts it ahead of anything queued) and only then asks the loop to move the
machine. An output-raising command already in flight when it is pressed is followed
by a second STOP ALL, so nothing the loop sends can outlive the stop.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from estim.clock import NS_PER_MS, NS_PER_S, NS_PER_US, Clock
from estim.device.base import (
    ChannelConfig,
    DeviceEvent,
    DeviceIdentity,
    DeviceStatus,
    FaultFlag,
    Stimulator,
)
from estim.errors import (
    CommandSuperseded,
    ControllerError,
    DeviceDisconnected,
    DeviceError,
    DeviceFaulted,
    DeviceRejected,
    DeviceTimeout,
    EmergencyStopped,
    EstimError,
    IdentityMismatch,
    InputError,
    InterlockTripped,
    InvalidTransition,
    ProtocolError,
)
from estim.events import DELIVERED_KEY, EventSink, JsonValue, SessionEvent
from estim.safety.interlocks import (
    INTERLOCKS,
    ChannelReading,
    CommunicationLoss,
    DeviceFault,
    DeviceIdentityCheck,
    DeviceValidation,
    DoseCap,
    IdentityReading,
    ImpedanceRange,
    OpenCircuit,
    PreflightFindings,
    RuntimeInterlocks,
    StatusReading,
    Trip,
)
from estim.session.machine import EXCEPTION_CAUSE, SessionMachine
from estim.session.plan import SessionPlan
from estim.session.port import DriverPort
from estim.session.states import Phase, State, Trigger
from estim.session.stimulation_time import StimulationTimer
from estim.session.summary import DeliveredCounter, Outcome, SessionSummary

log = logging.getLogger(__name__)

POLL_MERGE_NS = 5 * NS_PER_MS
"""A status poll due this close before a phase boundary is taken just after it."""

PUBLISH_INTERVAL_NS = 100 * NS_PER_MS
"""At most one display snapshot per this much clock time, unless the state changed."""

UNSAVED_RETRY_NS = 1_000 * NS_PER_MS
"""How often the sink is tried again with the events it refused."""

RECORDS_CAUSE = "CONTROLLER-RECORDS"
"""Recorded as the cause when the event log could not be written (fail safe: stop)."""

_COMMAND_TRIGGERS = frozenset(Trigger) - {Trigger.TRIP, Trigger.FINISH, Trigger.EMERGENCY_STOP}


class WakeSignal:
    """An auto-resetting wake-up: ``set()`` from any thread (or a signal handler) ends the
    loop's current ``wait()`` or the next one. One lock, no allocation per wait: the
    loop waits twenty times a second for hours."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()  # held: "no wake pending"

    def set(self) -> None:
        with contextlib.suppress(RuntimeError):  # already released: a wake is pending
            self._lock.release()

    def wait(self, timeout_s: float) -> bool:
        """True if woken (the wake is consumed), False at the timeout."""
        return self._lock.acquire(timeout=timeout_s)


# --- settings and snapshot ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    """Timing of the loop. Every value is refused if out of range, never adjusted."""

    control_period_ns: int  # status poll + interlocks (also the device's heartbeat)
    ramp_update_ns: int  # amplitude updates while ramping
    resume_ramp_us: int  # ramp from zero after a resume
    stop_ramp_us: int  # orderly stop: ramp down over this
    status_event_ns: int = NS_PER_S  # how often a status event goes to the log

    @classmethod
    def for_plan(
        cls,
        plan: SessionPlan,
        *,
        control_period_ms: int | None = None,
        ramp_update_ms: int = 20,
    ) -> RunnerSettings:
        link = plan.profile.link
        default_ms = min(link.heartbeat_period_ms, plan.profile.measurement.status_period_ms)
        period_ms = default_ms if control_period_ms is None else control_period_ms
        if not 1 <= period_ms <= link.heartbeat_period_ms:
            raise InputError(
                f"control period {period_ms} ms must be 1..{link.heartbeat_period_ms} ms "
                "(the profile's heartbeat period: the device's watchdog must be fed)"
            )
        if not 1 <= ramp_update_ms <= 1000:
            raise InputError(f"ramp update {ramp_update_ms} ms must be 1..1000 ms")
        one_second_us = 1_000_000
        return cls(
            control_period_ns=period_ms * NS_PER_MS,
            ramp_update_ns=ramp_update_ms * NS_PER_MS,
            resume_ramp_us=plan.ramp_up_us or one_second_us,
            stop_ramp_us=plan.ramp_down_us or one_second_us,
        )


@dataclass(frozen=True, slots=True)
class SessionView:
    """A snapshot for displays: safe to read from any thread."""

    state: State
    phase: Phase | None = None
    cycle: int | None = None  # 1-based
    cycles: int = 0
    schedule_elapsed_us: int = 0
    schedule_total_us: int = 0
    commanded_ua: int = 0
    measured_ua: int | None = None
    output_on: bool = False  # as the device last reported it
    link_lost: bool = False  # the link failed: measured and output_on are from before it
    output_enabled: bool = False  # as the controller commanded it
    titration_ua: int = 0
    confirmed_ua: int | None = None
    target_ua: int = 0
    ceiling_ua: int = 0
    step_ua: int = 0
    fault: Trip | None = None
    message: str = ""

    @property
    def time_left_us(self) -> int:
        return max(0, self.schedule_total_us - self.schedule_elapsed_us)


class Director(Protocol):
    """Something that issues commands from inside the loop (an automatic titration).

    Called at the start of every loop step, in the loop thread; it may call
    :meth:`SessionRunner.submit`. Returns the clock time at which it next wants to be
    called (None: no particular time).
    """

    def act(self, runner: SessionRunner, now_ns: int) -> int | None: ...


@dataclass
class _Command:
    trigger: Trigger
    data: dict[str, Any]
    future: Future[State] = field(default_factory=Future)


# --- the runner ------------------------------------------------------------------------------


class SessionRunner:
    """Runs one :class:`SessionPlan` on one driver. See the module docstring."""

    def __init__(
        self,
        stimulator: Stimulator,
        plan: SessionPlan,
        *,
        clock: Clock,
        sink: EventSink,
        settings: RunnerSettings | None = None,
        director: Director | None = None,
    ) -> None:
        self.stimulator = stimulator
        self.plan = plan
        self.clock = clock
        self.sink = sink
        self.settings = settings or RunnerSettings.for_plan(plan)
        self.director = director
        profile = plan.profile
        self._emergency = threading.Event()
        self._emergency_lock = threading.Lock()
        self._emergency_sources: list[str] = []
        self._emergency_errors: list[str] = []
        self._emergency_handled = 0
        self._wake = WakeSignal()
        self._commands: deque[_Command] = deque()
        self._commands_lock = threading.Lock()
        self._close_requested = threading.Event()
        self._device_event = threading.Event()
        self._device_events: deque[DeviceEvent] = deque()
        self.events_written = 0
        self._unsaved: list[SessionEvent] = []
        self._sink_error: str | None = None
        self.port = DriverPort(
            stimulator, plan.channels, plan.amplitude, self._emergency, self._note_reply
        )
        self.machine = SessionMachine(
            self.port,
            ceiling_ua=plan.ceiling_ua,
            step_ua=plan.step_ua,
            emit=self._emit_machine,
            classify_error=self._trip_from_error,
        )
        # The cap on stimulation time allows an orderly stop begun just before the end.
        self.interlocks = RuntimeInterlocks.for_profile(
            profile,
            plan.amplitude,
            plan.session_cap_us,
            titration_cap_us=plan.titration_cap_us,
            stop_allowance_us=self.settings.stop_ramp_us,
        )
        self.stimulation_timer = StimulationTimer(clock.now_ns())
        self._delivered = DeliveredCounter(plan.schedule)
        self.identity_check = DeviceIdentityCheck.for_profile(profile)
        self.device_validation = DeviceValidation()
        self.open_circuit = OpenCircuit.for_profile(profile)
        self.impedance = ImpedanceRange.for_profile(profile)
        protocol = plan.resolved.protocol
        self.dose_cap = DoseCap(protocol.sessions_per_day, protocol.sessions_per_week)
        self._resolution_ua = plan.resolution_ua  # (a Decimal conversion: once, not per step)
        self.preflight_findings = PreflightFindings()
        # time
        self._started_ns: int | None = None
        self._ended_ns: int | None = None
        self._poll_origin_ns = 0
        self._next_poll_ns = 0
        self._last_reply_ns = 0
        self._last_status_event_ns: int | None = None
        self._sched_offset_us = 0  # schedule time when output last (re)started
        self._resumed_at_ns = 0  # clock time of the last start or resume
        self._resume_ramp = False  # ramping up from zero after a resume
        self._sched_t_us = 0
        self._segment_index = -1
        self._stop_from_ua = 0
        self._stop_at_ns = 0
        self._trips: list[Trip] = []
        self._tripped_ids: set[str] = set()
        self._last_reading: StatusReading | None = None
        self._last_status: DeviceStatus | None = None
        self._link_lost = False  # the link failed (not closed by us)
        self._stopped_again_ns: int | None = None
        self._link_open = False
        self._identity: DeviceIdentity | None = None
        self._output_confirmed_off: bool | None = None
        self._message = ""
        self._view = SessionView(State.IDLE, ceiling_ua=plan.ceiling_ua, step_ua=plan.step_ua)
        self._published_ns = 0
        self._closed = False

    # --- thread-safe API ---------------------------------------------------------------

    def submit(self, trigger: Trigger, **data: Any) -> Future[State]:
        """Queue a person's command for the loop; the future holds the new state or the
        refusal (``InvalidTransition``, ``GuardRefused``) or failure. Every future is
        answered: one the loop will never run (the session has ended) fails with
        ``InvalidTransition``."""
        if trigger not in _COMMAND_TRIGGERS:
            raise InputError(f"{trigger.value} is not a command; use emergency_stop() for that")
        command = _Command(trigger, dict(data))
        with self._commands_lock:
            if not self._closed:
                self._commands.append(command)
                self._wake.set()
                return command.future
        self._refuse_after_end(command)
        return command.future

    def emergency_stop(self, source: str = "operator") -> None:
        """STOP ALL now, from any thread; the loop then moves the machine to ABORTED.

        Never raises: a failure to reach the device is recorded, and the loop latches
        FAULT when it cannot confirm the stop.
        """
        with self._emergency_lock:
            self._emergency_sources.append(source)
            self._emergency.set()
        try:
            self.stimulator.stop_all()
        except Exception as err:  # not connected yet, or the device is gone: the loop
            with self._emergency_lock:  # stops again and latches FAULT if it cannot
                self._emergency_errors.append(f"{type(err).__name__}: {err}")
        self._wake.set()

    def request_close(self) -> None:
        """End the loop once the session is over, or now if it is latched in FAULT."""
        self._close_requested.set()
        self._wake.set()

    def view(self) -> SessionView:
        return self._view

    @property
    def schedule_origin_ns(self) -> int:
        """The clock time at which schedule time 0 fell (shifted by any pauses), so that
        a boundary at ``t_us`` is due at ``schedule_origin_ns + t_us * 1000``."""
        return self._resumed_at_ns - self._sched_offset_us * NS_PER_US

    @property
    def skipped_interlocks(self) -> tuple[tuple[str, str], ...]:
        """Interlocks that cannot act in this session, each with the reason."""
        skipped = self.interlocks.skipped
        if self.plan.validation is None:
            skipped += ((DeviceValidation.ID, self.plan.validation_skip_reason),)
        return skipped

    @property
    def done(self) -> bool:
        state = self.machine.state
        if state.terminal:
            return True
        return self._close_requested.is_set() and state in (State.FAULT, State.IDLE)

    # --- the loop ----------------------------------------------------------------------

    def run(self) -> SessionSummary:
        """Run the loop until the session is over; close the device; return the summary."""
        try:
            while not self.done:
                self.step()
                if self.done:
                    break
                self._wait_until(self.next_deadline_ns())
        except KeyboardInterrupt:
            # Ctrl-C that no handler turned into an emergency stop (run() on the main
            # thread of a script): it is one all the same, logged as such by close().
            self.emergency_stop("KeyboardInterrupt")
            raise
        finally:
            self.close()
        return self.summary()

    def step(self) -> None:
        """One pass of the loop at the clock's current time (see the module docstring)."""
        now = self.clock.now_ns()
        if self._started_ns is None:
            self._begin(now)
        try:
            self._service_emergency()
            if self.director is not None and not self._closed:
                self._director_next_ns = self.director.act(self, now)
            self._run_commands()
            self._service_emergency()
            self._advance(self.clock.now_ns())
            self._service_emergency()
            now = self.clock.now_ns()
            poll_due = now >= self._next_poll_ns or self._device_event.is_set()
            if self._link_open and poll_due:
                self._poll(now)
            self._service_emergency()
            self._check_sink()
        except Exception as err:  # a bug in the loop itself: fail safe, keep control
            log.exception("control loop error")
            try:
                self._fail_safe(err)
            finally:
                self._answer_failed_command(err)
        self._publish(self.clock.now_ns())

    _director_next_ns: int | None = None

    def next_deadline_ns(self) -> int:
        """When the loop must next run: poll tick, phase boundary, ramp step, director."""
        now = self.clock.now_ns()
        period = self.settings.control_period_ns
        poll_ns = self._next_poll_ns if self._link_open else now + period
        candidates = [poll_ns]
        state = self.machine.state
        if state is State.RUNNING:
            boundary_ns, *others = self._running_deadlines(now)
            if poll_ns < boundary_ns <= poll_ns + POLL_MERGE_NS:
                # A poll due just before a phase boundary waits for it: the boundary's
                # command goes first, then the poll, in one step, so that a status
                # round trip never delays a boundary.
                candidates = [boundary_ns]
            else:
                candidates.append(boundary_ns)
            candidates.extend(others)
        elif state is State.STOPPING:
            candidates.append(now + self.settings.ramp_update_ns)
        if self._director_next_ns is not None:
            candidates.append(self._director_next_ns)
        if self._commands:  # deque truthiness is atomic; no lock needed to peek
            candidates.append(now)
        if self._emergency_pending():
            candidates.append(now)
        return max(now, min(candidates))

    def close(self) -> None:
        """Stop output, confirm it off from the device's status, release the port; then
        answer every queued command and log the summary. The release and the summary
        happen even if stopping failed (the device's watchdog is the last line)."""
        if self._closed:
            return
        self._closed = True
        try:
            # A press after the loop's last step (Ctrl-C stops, then closes; or the
            # loop was already done in FAULT) is logged and acted on like any other.
            self._service_emergency()
            if self._link_open:
                self._final_stop()
        except Exception as err:  # a bug here must not keep the port or the log open
            log.exception("final stop failed")
            self._emit("close_failed", {"error": f"{type(err).__name__}: {err}"})
        finally:
            self._release()

    def _final_stop(self) -> None:
        try:
            self.stimulator.stop_all()
            status = self.stimulator.status()
        except EstimError as err:
            self._emit("close_failed", {"error": f"{type(err).__name__}: {err}"})
            return
        self._output_confirmed_off = not status.any_output_on
        self._last_status = status
        if not self._output_confirmed_off:
            on = [c.channel for c in status.channels if c.output_on]
            self._trip(
                [
                    Trip(
                        "IL-OUTPUT-UNEXPECTED",
                        INTERLOCKS["IL-OUTPUT-UNEXPECTED"].HAZARDS,
                        f"channel {on}: output still reported on after the final stop",
                    )
                ]
            )

    def _release(self) -> None:
        try:
            self.stimulator.remove_event_listener(self._on_device_event)
            self.stimulator.close()
        except Exception as err:
            log.warning("closing the driver failed: %s", err)
        self.port.link_lost()
        self._link_open = False
        self._ended_ns = self.clock.now_ns()
        with self._commands_lock:  # submit() queues nothing once _closed is seen here
            left, self._commands = list(self._commands), deque()
        for command in left:
            self._refuse_after_end(command)
        summary = self.summary()
        self._emit("summary", summary.to_dict())
        self._unsaved_retry_ns = 0  # one last try, whenever the one before was
        self._write_unsaved()
        self._publish(self._ended_ns, force=True)

    def _refuse_after_end(self, command: _Command) -> None:
        """A command the loop will never run: answer it rather than leave it waiting."""
        if command.future.set_running_or_notify_cancel():
            command.future.set_exception(
                InvalidTransition(
                    f"{command.trigger.value} was not carried out: the session has ended "
                    f"(state {self.machine.state.value})"
                )
            )

    def summary(self) -> SessionSummary:
        m = self.machine
        on_time, plateaus = self._delivered.at(self._sched_t_us)
        planned_on, planned_plateaus = self._delivered.at(self.plan.schedule.duration_us)
        outcome, reason = self._outcome()
        start = self._started_ns or 0
        end = self._ended_ns if self._ended_ns is not None else self.clock.now_ns()
        return SessionSummary(
            outcome=outcome,
            final_state=m.state,
            reason=reason,
            confirmed_ua=m.confirmed_ua,
            final_target_ua=m.target_ua if m.confirmed_ua is not None else None,
            on_time_us=on_time,
            contractions=plateaus,
            planned_on_time_us=planned_on,
            planned_contractions=planned_plateaus,
            schedule_elapsed_us=self._sched_t_us,
            wall_ns=end - start,
            trips=tuple(self._trips),
            fault_acknowledged_by=m.acknowledged_by,
            output_confirmed_off=self._output_confirmed_off,
            events=self.events_written,
            skipped_interlocks=self.skipped_interlocks,
        )

    # --- steps -----------------------------------------------------------------------------

    def _begin(self, now: int) -> None:
        self._started_ns = now
        self._poll_origin_ns = now
        self._next_poll_ns = now
        plan = self.plan
        protocol = plan.resolved.protocol
        self._emit(
            "session",
            {
                "patient_code": plan.resolved.prescription.patient_code,
                "protocol_id": protocol.id,
                "protocol_version": protocol.version,
                "protocol_sha256": plan.resolved.library_protocol.content_hash,
                "profile_model": plan.profile.identity.model,
                "profile_sha256": plan.profile.sha256,
                "url": self.stimulator.url,
                "channels": list(plan.channels),
                "ceiling_ua": plan.ceiling_ua,
                "ceiling_source": plan.amplitude.binding.source,
                "step_ua": plan.step_ua,
                "schedule_us": plan.schedule.duration_us,
                "cycles": plan.schedule.cycles,
                "session_cap_us": plan.session_cap_us,
                "control_period_ns": self.settings.control_period_ns,
                "titration_cap_us": plan.titration_cap_us,
                "limits_overrides": {
                    str(limit.id): str(limit.figure) for limit in plan.limits.overrides()
                },
                "clock": "virtual" if self.clock.is_virtual else "monotonic",
                **{f"label_{k}": v for k, v in plan.labels.items()},
            },
        )
        for interlock_id, reason in self.skipped_interlocks:
            self._emit("interlock_skipped", {"interlock_id": interlock_id, "reason": reason})

    def _run_commands(self) -> None:
        while self._commands:
            with self._commands_lock:
                if not self._commands:
                    return
                command = self._commands.popleft()
            if command.future.set_running_or_notify_cancel():
                try:
                    command.future.set_result(self._execute(command))
                except EstimError as err:
                    command.future.set_exception(err)
                except Exception:
                    # A bug: the step's handler fails safe first, then answers the
                    # caller (see _answer_failed_command).
                    self._failed_command = command
                    raise
                except BaseException as err:  # KeyboardInterrupt: run() stops everything
                    command.future.set_exception(
                        EmergencyStopped(f"{command.trigger.value} interrupted ({err!r})")
                    )
                    raise
            self._service_emergency()

    _failed_command: _Command | None = None

    def _answer_failed_command(self, err: Exception) -> None:
        """Tell the person whose command hit a bug, in estim's terms, once the output is
        stopped and FAULT latched (never a bare RuntimeError from a UI button)."""
        command, self._failed_command = self._failed_command, None
        if command is None:
            return
        failure = ControllerError(
            f"{command.trigger.value} failed inside the controller "
            f"({type(err).__name__}: {err}); output stopped, session in "
            f"{self.machine.state.value}"
        )
        failure.__cause__ = err
        command.future.set_exception(failure)

    def _execute(self, command: _Command) -> State:
        trigger = command.trigger
        now = self.clock.now_ns()
        if trigger is Trigger.CONNECT:
            return self._connect()
        if trigger is Trigger.PREFLIGHT:
            return self._preflight()
        t_before_us = self._schedule_time_us(now)
        try:
            state = self.machine.fire(trigger, **command.data)
        except (DeviceError, InterlockTripped):
            # The machine already zeroed every channel and latched FAULT.
            self._record_machine_fault()
            raise
        if trigger is Trigger.START:
            self._sched_offset_us = 0
            self._resumed_at_ns = now
            self._resume_ramp = False
            self._segment_index = -1
            self._align_polls_with_schedule(now)
        elif trigger is Trigger.PAUSE:
            self._sched_offset_us = t_before_us
            self._sched_t_us = t_before_us
        elif trigger is Trigger.RESUME:
            self._resumed_at_ns = now
            self._resume_ramp = True
            self._segment_index = -1
            self._align_polls_with_schedule(now)
        elif trigger is Trigger.STOP and state is State.STOPPING:
            self._stop_from_ua = self.port.commanded_ua if self.port.output_enabled else 0
            self._stop_at_ns = now
            if self.machine.history[-1].source is State.RUNNING:
                self._sched_t_us = t_before_us
                self._sched_offset_us = t_before_us
        return state

    def _connect(self) -> State:
        self.machine.fire(Trigger.CONNECT)
        try:
            identity = self.stimulator.open()
        except IdentityMismatch as err:
            return self._trip_now(
                Trip(DeviceIdentityCheck.ID, DeviceIdentityCheck.HAZARDS, str(err))
            )
        except EstimError as err:
            return self._trip_now(self._link_trip(f"could not open {self.stimulator.url}: {err}"))
        self._link_open = True
        self.port.opened = True
        self._identity = identity
        self.stimulator.add_event_listener(self._on_device_event)
        self._note_reply()
        self._emit(
            "connected",
            {
                "model": identity.model,
                "serial_number": identity.serial_number,
                "firmware": identity.firmware,
                "protocol_version": identity.protocol_version,
            },
        )
        trip = self.identity_check.should_trip(
            IdentityReading(identity.model, identity.firmware, identity.serial_number)
        )
        if trip is None and self.plan.validation is not None:
            try:
                validation = self.plan.validation(identity)
            except EstimError as err:  # the record could not be read or checked: no vouching
                validation = None
                trip = Trip(
                    DeviceValidation.ID,
                    DeviceValidation.HAZARDS,
                    f"the unit's bench record could not be checked: {err}",
                )
            if validation is not None:
                if validation.unit_confirmation is not None:
                    self._emit("unit_confirmation", validation.unit_confirmation)
                trip = self.device_validation.should_trip(validation)
        if trip is not None:
            return self._trip_now(trip)
        try:
            status = self.stimulator.status()
            self._note_reply()
            if status.all_faults == FaultFlag.RESET:
                # A device that has just powered up says so; clearing that is part of
                # the handshake. Any other latched fault needs a person.
                self.stimulator.clear_fault()
                status = self.stimulator.status()
            if status.all_faults & ~FaultFlag.COMPLIANCE:
                return self._trip_now(
                    DeviceFault().should_trip(self._reading(status, self.clock.now_ns()))
                    or self._link_trip("the device reports a latched fault")
                )
            train = self.plan.resolved.protocol.pulse
            resolution = self.plan.profile.output.pulse_period_resolution_us or 1
            self.stimulator.configure(
                [ChannelConfig.from_train(ch, train, resolution) for ch in self.plan.channels]
            )
            self._note_reply()
        except DeviceRejected as err:
            return self._trip_now(
                Trip(DeviceFault.ID, DeviceFault.HAZARDS, f"the device refused a command: {err}")
            )
        except EstimError as err:
            if isinstance(err, CommandSuperseded) and self._emergency.is_set():
                return self.machine.state  # an emergency stop overtook the set-up: next step
            return self._trip_now(self._link_trip(str(err)))
        self.port.link_up = True
        return self.machine.state

    def _preflight(self) -> State:
        self.machine.fire(Trigger.PREFLIGHT)
        now = self.clock.now_ns()
        impedances: dict[int, int | None] = {}
        try:
            for channel in self.plan.channels:
                impedances[channel] = self.stimulator.measure_impedance(channel)
                self._note_reply()
        except EstimError as err:
            return self._trip_now(self._link_trip(f"impedance test failed: {err}"))
        reading = StatusReading(
            at_ns=now,
            last_reply_ns=now,
            output_expected=False,
            channels=tuple(ChannelReading(ch, 0, impedance_ohm=z) for ch, z in impedances.items()),
        )
        checks = (
            self.open_circuit.should_trip(reading),
            self.impedance.should_trip(reading),
            self.dose_cap.should_trip(self.plan.dose),
            self.preflight_findings.should_trip(self.plan.findings),
        )
        trips = tuple(t for t in checks if t is not None)
        self.machine.record_preflight(trips)
        findings = self.plan.findings
        self._emit(
            "preflight",
            {
                "impedance_ohm": {str(ch): z for ch, z in impedances.items()},
                "sessions_today": self.plan.dose.sessions_today,
                "sessions_this_week": self.plan.dose.sessions_this_week,
                "errors": [f.code for f in findings.errors],
                "warnings": [f.code for f in findings.warnings],
                "acknowledged": _json_list(sorted(findings.acknowledged)),
                "trips": [t.interlock_id for t in trips],
            },
        )
        if trips:
            return self._trip_now(*trips)
        return self.machine.state

    def _advance(self, now: int) -> None:
        state = self.machine.state
        if state is State.RUNNING:
            self._advance_running(now)
        elif state is State.STOPPING:
            self._advance_stopping(now)

    def _advance_running(self, now: int) -> None:
        schedule = self.plan.schedule
        t_us = self._schedule_time_us(now)
        if t_us >= schedule.duration_us:
            self._sched_t_us = schedule.duration_us
            self._command_envelope(0)
            if self.machine.state is State.RUNNING:
                self.machine.mark_schedule_done()
                self._finish()
            return
        self._sched_t_us = t_us
        segment = schedule.segment_at(t_us)
        assert segment is not None
        target = self.machine.target_ua
        # Every ramp is stepped here (profiles that say the device ramps are refused).
        amplitude = segment.amplitude_ua_at(t_us, target)
        if self._resume_ramp:
            since_us = (now - self._resumed_at_ns) // NS_PER_US
            ramp_us = self.settings.resume_ramp_us
            if since_us >= ramp_us:
                self._resume_ramp = False
            else:
                amplitude = min(amplitude, target * since_us // ramp_us)
        if segment.index != self._segment_index:
            self._segment_index = segment.index
            boundary_ns = self._resumed_at_ns + (segment.start_us - self._sched_offset_us) * 1000
            self._emit(
                "phase",
                {
                    "phase": segment.phase.value,
                    "cycle": segment.cycle + 1,
                    "segment": segment.index,
                    "t_us": t_us,
                    "late_ns": max(0, now - boundary_ns),
                },
            )
        self._command_envelope(self._quantize(amplitude))

    def _advance_stopping(self, now: int) -> None:
        amplitude = 0
        if self.port.output_enabled and self._stop_from_ua:
            ramp_us = self.settings.stop_ramp_us
            remaining_us = max(0, ramp_us - (now - self._stop_at_ns) // NS_PER_US)
            amplitude = self._quantize(self._stop_from_ua * remaining_us // ramp_us)
        if amplitude < self.port.commanded_ua:
            self._command_envelope(amplitude)
        # Finish only once the zero has landed: after a lost reply the ramp is still
        # "commanded" above zero and the next step sends the zero again.
        if amplitude == 0 and self.port.commanded_ua == 0 and self.machine.state is State.STOPPING:
            self._finish()

    def _finish(self) -> None:
        """The loop's own FINISH (schedule done, or the stop ramp at zero). Switching off
        can fail like any command: the machine has then latched FAULT."""
        try:
            self.machine.fire(Trigger.FINISH)
        except DeviceError as err:
            self._latched_by_device_error(err)

    def _command_envelope(self, amplitude_ua: int) -> None:
        if amplitude_ua == self.port.commanded_ua or not self.port.output_enabled:
            return
        try:
            self.port.apply_envelope(amplitude_ua)
        except InterlockTripped as err:
            self._trip([self._trip_from_error(err)])
        except DeviceRejected as err:
            self._trip([Trip(DeviceFault.ID, DeviceFault.HAZARDS, f"the device refused: {err}")])
        except DeviceError as err:
            self._device_error(err)

    def _poll(self, now: int) -> None:
        period = self.settings.control_period_ns
        self._device_event.clear()
        # Stay on the absolute grid; after a late wake-up, skip to the next tick ahead.
        ticks = (now - self._poll_origin_ns) // period + 1
        self._next_poll_ns = self._poll_origin_ns + ticks * period
        try:
            status = self.stimulator.status()
            self._note_reply()
            self._last_status = status
            self.port.device_reports_output = status.any_output_on
            reading = self._reading(status, self.clock.now_ns())
        # A failed poll is judged at the moment it failed (retries take time).
        except (DeviceTimeout, ProtocolError) as err:
            log.warning("status poll failed: %s", err)
            reading = self._blank_reading(self.clock.now_ns())
        except DeviceDisconnected as err:
            reading = self._blank_reading(self.clock.now_ns(), link_error=str(err))
        except DeviceRejected as err:
            reading = self._blank_reading(self.clock.now_ns(), rejected=str(err))
        except DeviceFaulted as err:
            names = _flag_names(FaultFlag(err.flags)) or frozenset({"hardware"})
            reading = self._blank_reading(self.clock.now_ns(), device_faults=names)
        except DeviceError as err:
            reading = self._blank_reading(self.clock.now_ns(), link_error=str(err))
        rejected = self._take_device_events()
        if rejected:
            reading = _with_device_faults(reading, rejected)
        self._last_reading = reading
        trips = self.interlocks.evaluate(reading)
        if trips:
            self._trip(trips)
        if isinstance(reading.link_error, str):
            self._close_link()
        self._maybe_status_event(now)

    # --- readings ------------------------------------------------------------------------

    def _reading(self, status: DeviceStatus, now: int) -> StatusReading:
        expected = self.port.output_enabled and self.machine.state.stimulating
        commanded = self.port.commanded
        # Positional arguments, in ChannelReading's field order (this runs on every
        # poll: keywords cost a third more): channel, commanded_ua, device_set_ua,
        # measured_ua, impedance_ohm, output_on, faults.
        channels = tuple(
            [
                ChannelReading(
                    c.channel,
                    commanded(c.channel),
                    c.commanded_ua,
                    c.measured_ua,
                    c.impedance_ohm,
                    c.output_on,
                    _flag_names(c.faults),
                )
                for c in status.channels
            ]
        )
        return StatusReading(
            at_ns=now,
            last_reply_ns=self._last_reply_ns,
            output_expected=expected,
            channels=channels,
            device_faults=_flag_names(status.faults),
            stimulation_elapsed_us=self.stimulation_timer.stimulation_us(now),
            titration_elapsed_us=self.stimulation_timer.titration_us(now),
        )

    def _blank_reading(self, now: int, **changes: Any) -> StatusReading:
        return StatusReading(
            at_ns=now,
            last_reply_ns=self._last_reply_ns,
            output_expected=self.port.output_enabled and self.machine.state.stimulating,
            stimulation_elapsed_us=self.stimulation_timer.stimulation_us(now),
            titration_elapsed_us=self.stimulation_timer.titration_us(now),
            **changes,
        )

    def _on_device_event(self, event: DeviceEvent) -> None:
        """From the driver's reader thread: poll at once rather than at the next tick."""
        self._device_events.append(event)
        self._device_event.set()
        self._wake.set()

    def _take_device_events(self) -> frozenset[str]:
        names: set[str] = set()
        while self._device_events:
            event = self._device_events.popleft()
            names |= _flag_names(event.faults)
        return frozenset(names)

    # --- trips and errors ------------------------------------------------------------------

    def _trip(self, trips: list[Trip]) -> None:
        """Zero every channel first, then latch FAULT; record every trip once."""
        new = [t for t in trips if t.interlock_id not in self._tripped_ids]
        if not new:
            self._stop_again(trips)
            return
        for trip in new:
            self._record_trip(trip)
        self._emit("trip", {"trips": [_trip_data(t) for t in new]})
        try:
            self.machine.fire(Trigger.TRIP, trip=new[0])
        except EstimError as err:
            # Zeroing failed (the link is gone); the machine is latched in FAULT anyway.
            log.error("trip: zeroing output failed: %s", err)
            if isinstance(err, DeviceDisconnected | DeviceTimeout):
                self._close_link()

    def _stop_again(self, trips: list[Trip]) -> None:
        """An interlock that already tripped still trips (the machine is latched) and the
        device still reports output on: STOP ALL goes out again, in case the first was
        lost or the device did not act on it; once a second at most, each time on the
        record. (A cause that persists with the output off, such as a time cap that
        stays exceeded, needs no more stops.)"""
        if not (self.port.opened and self.port.device_reports_output):
            return
        now = self.clock.now_ns()
        last = self._stopped_again_ns
        if last is not None and now - last < NS_PER_S:
            return
        self._stopped_again_ns = now
        try:
            self.stimulator.stop_all()
        except DeviceError as err:
            log.error("repeated trip: STOP ALL failed: %s", err)
        self._emit(
            "stop_again",
            {
                "interlocks": _json_list(sorted({t.interlock_id for t in trips})),
                "reason": trips[0].reason,
            },
        )

    def _trip_now(self, *trips: Trip) -> State:
        self._trip(list(trips))
        return self.machine.state

    def _latched_by_device_error(self, err: DeviceError) -> None:
        """A trigger the loop fired itself failed at the device: the machine has zeroed
        every channel and latched FAULT; record why, and stop using a vanished port."""
        self._record_machine_fault()
        if isinstance(err, DeviceDisconnected):
            self._close_link()

    def _record_machine_fault(self) -> None:
        if self.machine.fault is not None:
            self._record_trip(self.machine.fault)

    def _record_trip(self, trip: Trip) -> None:
        if trip.interlock_id not in self._tripped_ids:
            self._tripped_ids.add(trip.interlock_id)
            self._trips.append(trip)

    def _link_trip(self, reason: str) -> Trip:
        return Trip(CommunicationLoss.ID, CommunicationLoss.HAZARDS, reason)

    def _trip_from_error(self, err: BaseException) -> Trip:
        if isinstance(err, InterlockTripped):
            cls = INTERLOCKS.get(err.interlock_id)
            hazards = cls.HAZARDS if cls is not None else ("H-UNCONTROLLED",)
            return Trip(err.interlock_id, hazards, err.reason)
        if isinstance(err, DeviceRejected):
            return Trip(DeviceFault.ID, DeviceFault.HAZARDS, f"the device refused: {err}")
        if isinstance(err, DeviceFaulted):  # a latched device fault, not a lost link
            return Trip(DeviceFault.ID, DeviceFault.HAZARDS, f"the device reports a fault: {err}")
        if isinstance(err, DeviceError):
            return self._link_trip(str(err))
        return Trip(EXCEPTION_CAUSE, ("H-UNCONTROLLED",), f"{type(err).__name__}: {err}")

    def _device_error(self, err: DeviceError) -> None:
        if isinstance(err, DeviceDisconnected):
            self._trip([self._link_trip(str(err))])
            self._close_link()
        elif isinstance(err, DeviceTimeout | ProtocolError):
            # The comm-loss interlock judges silence by time; a lost reply alone is not
            # a trip, but the command may not have landed: poll at once.
            self._device_event.set()
        else:
            self._trip([self._trip_from_error(err)])

    def _fail_safe(self, err: Exception) -> None:
        try:
            self.stimulator.stop_all()
        except Exception as stop_err:
            log.error("fail-safe stop failed: %s", stop_err)
        trip = Trip(EXCEPTION_CAUSE, ("H-UNCONTROLLED",), f"{type(err).__name__}: {err}")
        self._record_trip(trip)
        if self.machine.state is not State.FAULT:
            try:
                self.machine.fire(Trigger.TRIP, trip=trip)
            except Exception:
                log.exception("latching FAULT after a loop error failed")

    def _close_link(self) -> None:
        """The port is gone: stop using it (the device's watchdog stops its output)."""
        if not self._link_open:
            return
        self._link_open = False
        self._link_lost = True
        self.port.link_lost()
        try:
            self.stimulator.close()
        except Exception as err:
            log.warning("closing a lost link: %s", err)

    # --- emergency stop --------------------------------------------------------------------

    def _emergency_pending(self) -> bool:
        with self._emergency_lock:
            return len(self._emergency_sources) > self._emergency_handled

    def _service_emergency(self) -> None:
        if len(self._emergency_sources) == self._emergency_handled:
            return  # the common case, checked without the lock several times a step
        with self._emergency_lock:
            pending = self._emergency_sources[self._emergency_handled :]
            self._emergency_handled = len(self._emergency_sources)
            errors, self._emergency_errors = self._emergency_errors, []
        if not pending:
            return
        source = pending[0]
        self._emit(
            "emergency_stop",
            {"sources": list(pending), "stop_all_errors": list(errors)},
        )
        try:
            self.machine.fire(Trigger.EMERGENCY_STOP, source=source)
        except DeviceError as err:  # the stop could not be confirmed
            self._latched_by_device_error(err)

    # --- time ------------------------------------------------------------------------------

    def _schedule_time_us(self, now: int) -> int:
        if self.machine.state is not State.RUNNING:
            return self._sched_offset_us
        return self._sched_offset_us + (now - self._resumed_at_ns) // NS_PER_US

    def _running_deadlines(self, now: int) -> list[int]:
        t_us = self._schedule_time_us(now)
        schedule = self.plan.schedule
        deadlines = []
        segment = schedule.segment_at(t_us)
        end_us = segment.end_us if segment is not None else schedule.duration_us
        deadlines.append(self._resumed_at_ns + (end_us - self._sched_offset_us) * NS_PER_US)
        ramping = segment is not None and segment.start_level != segment.end_level
        if ramping or self._resume_ramp:
            deadlines.append(now + self.settings.ramp_update_ns)
        return deadlines

    def _align_polls_with_schedule(self, now: int) -> None:
        """Put the poll grid on the schedule's own time (schedule time 0 on a tick).

        Phases last whole multiples of the control period (whole seconds in every
        library protocol), so each phase boundary then falls on a poll tick: one
        wake-up sends the boundary's command and then polls the status that confirms
        it. Aligning never delays the poll already due, it may only bring it sooner.
        (As everywhere, a poll due less than ``POLL_MERGE_NS`` before a phase boundary
        waits for it, so two polls are at most one period plus ``POLL_MERGE_NS``
        apart; once aligned, on-grid boundaries need no such wait.)
        """
        period = self.settings.control_period_ns
        origin = self._resumed_at_ns - (self._sched_offset_us * NS_PER_US) % period
        first_tick = origin + -((origin - now) // period) * period
        self._poll_origin_ns = origin
        self._next_poll_ns = min(self._next_poll_ns, first_tick)

    def _wait_until(self, deadline_ns: int) -> None:
        if self.clock.is_virtual:
            self.clock.sleep_until(deadline_ns)
            return
        # Wait on the wake signal (an emergency stop, a command or a device event cuts
        # it short). A timed lock wait overshoots by tens of microseconds, well inside
        # the 2 ms phase-boundary budget, without spinning a core; an early return (a
        # wake) runs the loop at once, and a rare early timeout is finished by the clock.
        remaining = deadline_ns - self.clock.now_ns()
        if remaining > 0 and self._wake.wait(remaining / NS_PER_S):
            return
        if not (self._emergency_pending() or self._commands):
            self.clock.sleep_until(deadline_ns)

    def _note_reply(self) -> None:
        self._last_reply_ns = self.clock.now_ns()

    def _quantize(self, amplitude_ua: int) -> int:
        """Down to the device's resolution: never above what the envelope asks."""
        return amplitude_ua - amplitude_ua % self._resolution_ua

    # --- events and the view ----------------------------------------------------------------

    def _emit_machine(self, kind: str, data: Mapping[str, JsonValue]) -> None:
        if kind == "state":
            self.stimulation_timer.enter(self.machine.state, self.clock.now_ns())
        self._emit(kind, data)

    def _emit(self, kind: str, data: Mapping[str, JsonValue]) -> None:
        event = SessionEvent(
            kind=kind,
            state=self.machine.state.value if hasattr(self, "machine") else State.IDLE.value,
            monotonic_ns=self.clock.now_ns(),
            data=dict(data),
        )
        if self._sink_error is not None:
            self._unsaved.append(event)
            return
        try:
            self.sink.append(event)
            self.events_written += 1
        except Exception as err:  # the log is part of the safety case: stop if it fails
            log.exception("event sink failed")
            self._sink_error = f"{type(err).__name__}: {err}"
            self._unsaved.append(event)

    def _write_unsaved(self) -> None:
        """Try the sink again with what it refused, oldest first, at most once a second
        (a locked database makes each try wait): a passing failure then loses nothing.
        Once all is written the log flows again; the trip it caused stays."""
        now = self.clock.now_ns()
        if not self._unsaved or now < self._unsaved_retry_ns:
            return
        self._unsaved_retry_ns = now + UNSAVED_RETRY_NS
        while self._unsaved:
            try:
                self.sink.append(self._unsaved[0])
            except Exception as err:
                log.warning("the session log still cannot be written: %s", err)
                return
            del self._unsaved[0]
            self.events_written += 1
        self._sink_error = None

    _unsaved_retry_ns = 0

    def _check_sink(self) -> None:
        if self._sink_error is None:
            return
        if RECORDS_CAUSE in self._tripped_ids:
            self._write_unsaved()
            return
        self._trip(
            [
                Trip(
                    RECORDS_CAUSE,
                    ("H-UNCONTROLLED",),
                    f"the session log could not be written ({self._sink_error}); "
                    "stimulation stops when it cannot be recorded",
                )
            ]
        )

    @property
    def unsaved_events(self) -> list[SessionEvent]:
        """Events the sink refused (kept so a caller can still show or save them)."""
        return list(self._unsaved)

    def _maybe_status_event(self, now: int) -> None:
        status = self._last_status
        if status is None:
            return
        last = self._last_status_event_ns
        if last is not None and now - last < self.settings.status_event_ns:
            return
        self._last_status_event_ns = now
        self._emit(
            "status",
            {
                "channels": [
                    {
                        "channel": c.channel,
                        "commanded_ua": self.port.commanded(c.channel),
                        "device_set_ua": c.commanded_ua,
                        "measured_ua": c.measured_ua,
                        "impedance_ohm": c.impedance_ohm,
                        "output_on": c.output_on,
                        "faults": _json_list(sorted(_flag_names(c.faults))),
                    }
                    for c in status.channels
                ],
                "device_faults": _json_list(sorted(_flag_names(status.faults))),
                "t_us": self._sched_t_us,
                DELIVERED_KEY: self._delivered_so_far(),  # kept if the process dies
            },
        )

    def _delivered_so_far(self) -> dict[str, JsonValue]:
        on_time_us, contractions = self._delivered.at(self._sched_t_us)
        return {
            "confirmed_ua": self.machine.confirmed_ua,
            "on_time_us": on_time_us,
            "contractions": contractions,
        }

    def _publish(self, now: int, *, force: bool = False) -> None:
        m = self.machine
        state = m.state
        # Displays redraw ten times a second: a snapshot per 100 ms of clock time (and
        # on every change of state) is plenty, and keeps virtual-time runs fast.
        if (
            not force
            and state is self._view.state
            and now - self._published_ns < PUBLISH_INTERVAL_NS
            and m.fault is self._view.fault
            and self._link_lost is self._view.link_lost
        ):
            return
        self._published_ns = now
        phase = cycle = None
        if state in (State.RUNNING, State.PAUSED, State.STOPPING):
            segment = self.plan.schedule.segment_at(self._sched_t_us)
            if segment is not None:
                phase, cycle = segment.phase, segment.cycle + 1
        status = self._last_status
        measured: int | None = None
        output_on = False
        if status is not None:
            session_channels = [c for c in status.channels if c.channel in self.plan.channels]
            values = [c.measured_ua for c in session_channels if c.measured_ua is not None]
            measured = max(values) if values else None
            output_on = status.any_output_on
        fault = m.fault if state is State.FAULT or m.fault is not None else None
        self._view = SessionView(
            state=state,
            phase=phase,
            cycle=cycle,
            cycles=self.plan.schedule.cycles,
            schedule_elapsed_us=self._sched_t_us,
            schedule_total_us=self.plan.schedule.duration_us,
            commanded_ua=self.port.commanded_ua if self.port.output_enabled else 0,
            measured_ua=measured,
            output_on=output_on,
            link_lost=self._link_lost,
            output_enabled=self.port.output_enabled,
            titration_ua=m.titration_ua,
            confirmed_ua=m.confirmed_ua,
            target_ua=m.target_ua,
            ceiling_ua=self.plan.ceiling_ua,
            step_ua=self.plan.step_ua,
            fault=fault,
            message=self._message,
        )

    def _outcome(self) -> tuple[Outcome, str]:
        m = self.machine
        state = m.state
        if m.fault is not None:
            return Outcome.FAULT, str(m.fault)
        if m.emergency_source is not None:
            return Outcome.EMERGENCY_STOP, f"emergency stop ({m.emergency_source})"
        if state is State.COMPLETED:
            if m.stop_requested_by is not None:
                return Outcome.STOPPED, f"stopped early by {m.stop_requested_by}"
            return Outcome.COMPLETED, "the whole schedule ran"
        if state is State.ABORTED:
            return Outcome.NOT_STARTED, "ended before stimulation"
        return Outcome.NOT_STARTED, f"ended in state {state.value}"


# --- helpers ------------------------------------------------------------------------------


def _flag_names(flags: FaultFlag) -> frozenset[str]:
    return _flag_names_of(int(flags))


@functools.lru_cache(maxsize=256)
def _flag_names_of(value: int) -> frozenset[str]:
    # Cached: every status reading names the flags of every channel.
    flags = FaultFlag(value)
    return frozenset((f.name or "").lower() for f in FaultFlag if f and f in flags)


def _with_device_faults(reading: StatusReading, names: frozenset[str]) -> StatusReading:
    from dataclasses import replace

    return replace(reading, device_faults=reading.device_faults | names)


def _json_list(items: list[str]) -> list[JsonValue]:
    return list(items)


def _trip_data(trip: Trip) -> dict[str, JsonValue]:
    return {"interlock_id": trip.interlock_id, "hazards": list(trip.hazards), "reason": trip.reason}


__all__ = [
    "Director",
    "RunnerSettings",
    "SessionRunner",
    "SessionView",
    "WakeSignal",
]
