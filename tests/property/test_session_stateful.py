"""Proof by Hypothesis: no sequence of actions, faults and timings makes the controller
unsafe.

A ``RuleBasedStateMachine`` drives the real controller (state machine, runner,
interlocks) through the real estim-wire driver against the in-process simulator, all
on one virtual clock. Rules are what can happen in a clinic: every command a person
can give (valid or not), emergency stops, amplitude changes, faults injected into the
device and the link, and time passing. The invariants are checked against the
simulator's *true* output stage, not against what the controller believes:

1. output on  =>  a stimulating state, and every runtime interlock clear on the
   device's true state (the only exception: a link that is already gone, where the
   device's own watchdog is the protection, within its timeout);
2. the delivered amplitude never exceeds the prescription's ceiling, the protocol's,
   the device profile's, or any standard limit the plan carries;
3. an emergency stop zeroes the output before the loop runs again; a fault the
   controller can see, and any error inside its world (an event log that cannot be
   written, a driver call raising what nobody planned for), is followed within one
   control period by FAULT (or ABORTED) with the output at zero;
4. the machine never had to correct itself (its final output check never fired);
5. the event log tells a consistent story (every transition legal from the one
   before; phases only forward; every event in the state it claims).

Examples and steps: the ``ci`` profile runs max(10, profile.max_examples // 2)
examples (150 with ci's 300) of up to 60 steps each; ``dev`` runs 15.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from estim.clock import NS_PER_MS, VirtualClock
from estim.device.base import FaultFlag
from estim.device.profile import DeviceProfile, builtin_profile
from estim.device.registry import create_stimulator
from estim.device.simulator import SimulatedDevice
from estim.errors import (
    ControllerError,
    DeviceError,
    EstimError,
    InterlockTripped,
    InvalidTransition,
)
from estim.events import MemorySink, SessionEvent
from estim.safety.interlocks import ChannelReading, StatusReading
from estim.session.runner import SessionRunner
from estim.session.states import State, Trigger
from estim.session.story import check_story
from estim.testing.session import TRIGGER_DATA, make_plan

PLANS: list[tuple[str, str]] = [
    ("stress", "estim-pf2"),
    ("mixed", "estim-pf2"),
    ("partial-denervation", "estim-pf2"),
    ("urge", "estim-pf2"),
    ("complete-denervation", "estim-lp1"),
    ("partial-denervation-triangular", "estim-lp1"),
]

PERSON_TRIGGERS = sorted(
    (t for t in Trigger if t.from_person and t is not Trigger.EMERGENCY_STOP),
    key=lambda t: t.value,
)

# Faults the controller sees on its next status reading when the link is up.
IMMEDIATE_FAULTS = ("open:ch=1", "load:ch=1,ohm=3000", "load:ch=1,ohm=20", "reset")
# Faults that act over time or only in some states.
OTHER_FAULTS = (
    "drift:ch=1,ohm_per_s=500",
    "stuck:ch=1",
    "lie-output",
    "disconnect",
    "drop:p=1,dir=out",
    "drop:p=0.3,dir=both",
    "corrupt:p=0.2,dir=both",
    "delay:ms=30,dir=out",
    "close:ch=1",
    "load:ch=1,ohm=800",
)

RARELY = st.sampled_from([False, False, False, True])
"""Session-ending disturbances get one draw in four, so that most examples spend their
steps in a session (rules are otherwise chosen with equal weight)."""

_profiles: dict[str, DeviceProfile] = {}


def profile_named(name: str) -> DeviceProfile:
    if name not in _profiles:
        _profiles[name] = builtin_profile(name)
    return _profiles[name]


class FlakySink(MemorySink):
    """A sink that can be told to fail, like a disk that fills up."""

    failing = False
    first_failure_ns: int | None = None
    clock: VirtualClock | None = None

    def append(self, event: SessionEvent) -> None:
        if self.failing:
            if self.first_failure_ns is None and self.clock is not None:
                self.first_failure_ns = self.clock.now_ns()
            raise OSError("disk full")
        super().append(event)


@dataclass
class Truth:
    """The simulator's output stage, right now."""

    max_ua: int
    any_on: bool


class ControllerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.runner: SessionRunner | None = None
        self.device: SimulatedDevice | None = None
        self.clock = VirtualClock()
        self.sink = FlakySink()
        self.errors_fired_at: list[int] = []
        self.trace_seen = 0
        self.max_delivered_ua = 0
        self.stuck: set[int] = set()

    # --- set-up ----------------------------------------------------------------------

    @initialize(
        plan_choice=st.sampled_from(PLANS),
        ceiling_fraction=st.integers(min_value=1, max_value=10),
        seed=st.integers(min_value=0, max_value=2**16),
        begin_in=st.sampled_from(["running", "running", "running", "titrating", "armed", "idle"]),
        titration_steps=st.integers(min_value=1, max_value=30),
    )
    def set_up(
        self,
        plan_choice: tuple[str, str],
        ceiling_fraction: int,
        seed: int,
        begin_in: str,
        titration_steps: int,
    ) -> None:
        protocol_id, profile_name = plan_choice
        profile = profile_named(profile_name)
        from estim.protocols.catalog import get_protocol

        protocol = get_protocol(protocol_id)
        step = protocol.amplitude.titration_step_ma
        ceiling = protocol.amplitude.ceiling_ma * ceiling_fraction / 10
        ceiling = max(step, ceiling - ceiling % step)
        self.plan = make_plan(protocol_id, profile, cycles=2, max_ma=Decimal(ceiling))
        self.device = SimulatedDevice(profile, clock=self.clock, seed=seed)
        driver = create_stimulator(profile, self.device.url, clock=self.clock)
        self.driver = driver
        self.runner = SessionRunner(driver, self.plan, clock=self.clock, sink=self.sink)
        self.period_ns = self.runner.settings.control_period_ns
        self.watchdog_ns = profile.link.watchdog_timeout_ms * NS_PER_MS
        # Start part-way along the clinician's path, so that most examples spend their
        # steps stimulating rather than finding their way there.
        goal = State(begin_in)
        while self.r.machine.state is not goal and self.proceed_once(titration_steps):
            pass

    def proceed_once(self, titration_steps: int = 10) -> bool:
        """Give the next command on the clinician's usual path; False when there is none."""
        m = self.r.machine
        match m.state:
            case State.IDLE:
                trigger = Trigger.CONNECT
            case State.CONNECTING:
                trigger = Trigger.PREFLIGHT
            case State.PREFLIGHT:
                trigger = Trigger.ARM
            case State.ARMED if m.confirmed_ua is not None:
                trigger = Trigger.START
            case State.ARMED:
                trigger = Trigger.AMPLITUDE_UP
            case State.TITRATING if m.titration_ua < titration_steps * m.step_ua and (
                m.titration_ua + m.step_ua <= m.ceiling_ua
            ):
                trigger = Trigger.AMPLITUDE_UP
            case State.TITRATING:
                trigger = Trigger.CONFIRM_AMPLITUDE
            case State.PAUSED:
                trigger = Trigger.RESUME
            case _:
                return False
        future = self.r.submit(trigger)
        self.r.step()
        self.check_delivered()
        error = future.exception(timeout=0)
        return error is None and not self.r.machine.state.latched

    def teardown(self) -> None:
        try:
            if self.runner is not None:
                visited = {t.dest for t in self.r.machine.history}
                event(f"reached running: {State.RUNNING in visited}")
                event(f"ended in {self.r.machine.state.value}")
                self.runner.close()
                story = check_story([*self.sink.events, *self.r.unsaved_events])
                assert not story, "\n".join(map(str, story))
            if self.device is not None:
                # A device cut off from the host stops by its own watchdog.
                self.clock.advance(self.watchdog_ns + self.period_ns)
                assert not self.device.hardware.any_output_on, "output left on at the end"
        finally:
            if self.device is not None:
                self.device.close()

    # --- helpers -----------------------------------------------------------------------

    @property
    def r(self) -> SessionRunner:
        assert self.runner is not None
        return self.runner

    @property
    def d(self) -> SimulatedDevice:
        assert self.device is not None
        return self.device

    def truth(self) -> Truth:
        """The output stage, leaving out channels whose stage is stuck.

        A stuck output stage delivers whatever it froze at, whatever anyone commands;
        no software can switch it off (the device's relay cuts it above its tolerance,
        the controller latches FAULT when the device reports it on). The invariants
        therefore judge only the channels software can control; stuck channels are
        judged by ``stuck_output_is_latched``.
        """
        outputs = [o for o in self.d.hardware.outputs() if o.channel not in self.stuck]
        return Truth(
            max_ua=max(o.amplitude_ua for o in outputs),
            any_on=any(o.output_on and o.amplitude_ua > 0 for o in outputs),
        )

    def step_loop(self, periods: int) -> None:
        """Run the loop at its own deadlines for ``periods`` control periods."""
        end = self.clock.now_ns() + periods * self.period_ns
        while True:
            self.r.step()
            self.check_delivered()
            deadline = self.r.next_deadline_ns()
            if deadline > end:
                break
            self.clock.sleep_until(deadline)
        self.clock.sleep_until(end)

    def check_delivered(self) -> None:
        records = self.d.trace.records("output")
        for record in records[self.trace_seen :]:
            self.max_delivered_ua = max(self.max_delivered_ua, int(record["amplitude_ua"]))
        self.trace_seen = len(records)

    def link_gone(self) -> bool:
        return self.d.disconnected

    def true_reading(self) -> StatusReading:
        """What the runtime interlocks would see if the device told the whole truth."""
        status = self.d.hardware.status()
        truths = {o.channel: o for o in self.d.hardware.outputs()}
        now = self.clock.now_ns()
        port = self.r.port
        return StatusReading(
            at_ns=now,
            last_reply_ns=now,
            output_expected=port.output_enabled and self.r.machine.state.stimulating,
            channels=tuple(
                ChannelReading(
                    channel=c.channel,
                    commanded_ua=port.commanded(c.channel),
                    device_set_ua=c.commanded_ua,
                    measured_ua=truths[c.channel].amplitude_ua,
                    impedance_ohm=c.impedance_ohm,
                    output_on=truths[c.channel].output_on,
                    faults=frozenset(
                        (f.name or "").lower() for f in FaultFlag if f and f in c.faults
                    ),
                )
                for c in status.channels
            ),
            device_faults=frozenset(
                (f.name or "").lower() for f in FaultFlag if f and f in status.faults
            ),
            stimulation_elapsed_us=self.r.stimulation_timer.stimulation_us(now),
            titration_elapsed_us=self.r.stimulation_timer.titration_us(now),
        )

    # --- rules -----------------------------------------------------------------------------

    @rule(titration_steps=st.integers(min_value=1, max_value=30))
    def proceed(self, titration_steps: int) -> None:
        self.proceed_once(titration_steps)

    @rule(trigger=st.sampled_from(PERSON_TRIGGERS), press=RARELY)
    def any_button(self, trigger: Trigger, press: bool) -> None:
        """Any command at any time, allowed here or not (a wrong button, a stale UI)."""
        if not press:
            self.step_loop(1)
            return
        before_state = self.r.machine.state
        before_truth = self.truth()
        future = self.r.submit(trigger, **TRIGGER_DATA.get(trigger, {}))
        self.r.step()
        self.check_delivered()
        error = future.exception(timeout=0)
        if error is None and before_state.stimulating:
            event(f"{trigger.value} from {before_state.value}")
        if isinstance(error, InvalidTransition):  # includes GuardRefused
            assert self.r.machine.state in (before_state, State.FAULT)
            if self.r.machine.state is before_state and not before_truth.any_on:
                # Refused, and nothing else happened this step: output untouched.
                assert not self.truth().any_on or self.r.machine.state.stimulating
        elif isinstance(error, DeviceError | InterlockTripped | ControllerError):
            assert self.r.machine.state is State.FAULT
        elif error is not None:
            raise error

    def give(self, trigger: Trigger, **data: object) -> BaseException | None:
        """A command that the current state's table allows; refusals by guards are fine."""
        future = self.r.submit(trigger, **data)
        self.r.step()
        self.check_delivered()
        error = future.exception(timeout=0)
        if error is not None and not isinstance(error, InvalidTransition):
            assert isinstance(error, EstimError), error
            assert self.r.machine.state is State.FAULT
        return error

    @precondition(lambda self: self.runner is not None and self.r.machine.state is State.TITRATING)
    @rule(up=st.booleans(), times=st.integers(min_value=1, max_value=8))
    def titrate(self, up: bool, times: int) -> None:
        for _ in range(times):
            self.give(Trigger.AMPLITUDE_UP if up else Trigger.AMPLITUDE_DOWN)

    @precondition(lambda self: self.runner is not None and self.r.machine.state is State.RUNNING)
    @rule(periods=st.integers(min_value=0, max_value=40), resume=st.booleans())
    def pause_then_resume(self, periods: int, resume: bool) -> None:
        had_output = self.truth().any_on
        if self.give(Trigger.PAUSE) is None:
            event(f"paused with output {'on' if had_output else 'off'}")
            assert not self.truth().any_on, "pause must drop output at once"
            self.step_loop(periods)
            if resume:
                self.give(Trigger.RESUME)

    @precondition(lambda self: self.runner is not None and self.r.machine.state is State.RUNNING)
    @rule(up=st.booleans())
    def change_target(self, up: bool) -> None:
        self.give(Trigger.AMPLITUDE_UP if up else Trigger.AMPLITUDE_DOWN)

    @precondition(
        lambda self: (
            self.runner is not None
            and self.r.machine.state in (State.RUNNING, State.PAUSED, State.TITRATING)
        )
    )
    @rule(periods=st.integers(min_value=0, max_value=30))
    def orderly_stop(self, periods: int) -> None:
        if self.give(Trigger.STOP, by="Dr Hypothesis") is None:
            self.step_loop(periods)

    @rule(
        source=st.sampled_from(["space key", "Esc key", "SIGINT", "patient button"]),
        press=RARELY,
    )
    def emergency_stop(self, source: str, press: bool) -> None:
        if not press:
            self.step_loop(1)
            return
        self.r.emergency_stop(source)
        if not self.link_gone():
            assert not self.truth().any_on, "STOP ALL must reach the device at once"
        self.r.step()
        assert self.r.machine.state in (State.ABORTED, State.FAULT, State.COMPLETED)

    @rule(periods=st.integers(min_value=1, max_value=60))
    def time_passes(self, periods: int) -> None:
        self.step_loop(periods)

    @precondition(lambda self: self.runner is not None and self.r.machine.state is State.RUNNING)
    @rule()
    def run_a_while(self) -> None:
        self.step_loop(200)

    @rule(fault=st.sampled_from(IMMEDIATE_FAULTS), inject=RARELY)
    def inject_immediate_fault(self, fault: str, inject: bool) -> None:
        if not inject:
            self.step_loop(1)
            return
        connected = self.r.machine.state.connected and not self.link_gone()
        if fault == "reset":
            self.stuck.clear()  # a restart releases the output stage
        self.d.inject(fault)
        self.step_loop(1)
        if connected and self.r.port.opened:
            state = self.r.machine.state
            assert state in (State.FAULT, State.ABORTED), (fault, state)
            assert not self.truth().any_on

    @rule(fault=st.sampled_from(OTHER_FAULTS), inject=RARELY)
    def inject_other_fault(self, fault: str, inject: bool) -> None:
        if not inject:
            self.step_loop(1)
            return
        if fault.startswith("stuck"):
            self.stuck.add(1)
        self.d.inject(fault)
        self.step_loop(1)

    @rule(kind=st.sampled_from(["sink", "command", "status"]), happen=RARELY)
    def controller_error(self, kind: str, happen: bool) -> None:
        """Something inside the controller's world raises: the event log cannot be
        written, or a driver call fails with an error nobody planned for (a bug)."""
        if not happen:
            self.step_loop(1)
            return
        if kind == "sink":
            self.sink.clock = self.clock
            self.sink.failing = True
        else:
            name = "_set_amplitudes" if kind == "command" else "_status"
            original = getattr(self.driver, name)

            def broken(*args: object) -> object:
                setattr(self.driver, name, original)  # once
                self.errors_fired_at.append(self.clock.now_ns())
                raise RuntimeError(f"injected bug in {name}")

            setattr(self.driver, name, broken)
        self.step_loop(2)

    @invariant()
    def errors_end_in_fault_with_output_zero_within_a_period(self) -> None:
        if self.runner is None or self.link_gone():
            return
        fired = [*self.errors_fired_at]
        if self.sink.first_failure_ns is not None:
            fired.append(self.sink.first_failure_ns)
        if not fired:
            return
        if self.clock.now_ns() - min(fired) >= self.period_ns:
            state = self.r.machine.state
            assert state in (State.FAULT, State.ABORTED), f"{state.value} after an error"
            assert not self.truth().any_on

    @precondition(lambda self: self.runner is not None and self.r.machine.state is State.FAULT)
    @rule()
    def acknowledge(self) -> None:
        future = self.r.submit(Trigger.ACKNOWLEDGE_FAULT, by="Dr Hypothesis")
        self.r.step()
        error = future.exception(timeout=0)
        assert error is None or isinstance(error, EstimError)

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def output_on_only_when_stimulating_and_all_clear(self) -> None:
        if self.runner is None:
            return
        truth = self.truth()
        if not truth.any_on:
            return
        if self.link_gone() or not self.r.port.opened:
            # Nothing the host can do; the device's watchdog must act in time.
            silent_ns = self.clock.now_ns() - self.d.hardware._last_frame_ns
            assert silent_ns < self.watchdog_ns + self.period_ns, "watchdog did not act"
            return
        state = self.r.machine.state
        assert state.stimulating, f"output on in state {state.value}"
        trips = self.r.interlocks.evaluate(self.true_reading())
        assert not trips, f"output on while {trips[0]}"

    @invariant()
    def delivered_never_above_any_limit(self) -> None:
        if self.runner is None:
            return
        self.check_delivered()
        assert self.max_delivered_ua <= self.plan.ceiling_ua
        assert self.max_delivered_ua <= self.plan.profile.output.amplitude_max_ua
        for ceiling in self.plan.amplitude.ceilings:
            assert self.max_delivered_ua <= ceiling.ua, ceiling

    @invariant()
    def not_stimulating_means_output_zero(self) -> None:
        if self.runner is None or self.link_gone() or not self.r.port.opened:
            return
        if not self.r.machine.state.stimulating:
            assert not self.truth().any_on, f"output on in {self.r.machine.state.value}"

    @invariant()
    def stuck_output_is_latched(self) -> None:
        """A stuck stage the device reports on, while the controller commands it off,
        is a FAULT by the controller's next status reading."""
        if self.runner is None or not self.stuck or self.link_gone() or not self.r.port.opened:
            return
        reading = self.r._last_reading
        if reading is None or reading.output_expected:
            return
        reported_on = any(c.output_on for c in reading.channels if c.channel in self.stuck)
        if reported_on:
            assert self.r.machine.state is State.FAULT

    @invariant()
    def the_machine_never_had_to_correct_itself(self) -> None:
        if self.runner is not None:
            assert not self.r.machine.violations

    @invariant()
    def faults_latch_with_a_reason(self) -> None:
        if self.runner is not None and self.r.machine.state is State.FAULT:
            assert self.r.machine.fault is not None
            assert self.r.machine.fault.reason


_profile = settings()
ControllerMachine.TestCase.settings = settings(
    _profile,
    max_examples=max(10, _profile.max_examples // 2),
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    # No "explain" phase: its line tracing (Python < 3.12) makes a failing example
    # take minutes to report instead of seconds.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
TestController = ControllerMachine.TestCase
