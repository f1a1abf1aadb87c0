"""Test helpers for the session controller: a recording device port, ready-made plans,
and a simulator rig in virtual time. Shipped so users' own tests can reuse them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING

from estim.clock import VirtualClock
from estim.device.base import Stimulator
from estim.device.profile import DeviceProfile, builtin_profile
from estim.events import MemorySink
from estim.protocols.catalog import get_protocol
from estim.protocols.models import Protocol
from estim.protocols.prescription import Prescription, ProtocolRef, resolve
from estim.protocols.schedule import compile_schedule
from estim.safety.interlocks import DoseReading, FindingsReading, Trip
from estim.safety.limits import DEFAULT_LIMITS, Limits
from estim.session.plan import SessionPlan, truncate_schedule
from estim.session.runner import Director, RunnerSettings, SessionRunner
from estim.session.states import State, Trigger

if TYPE_CHECKING:
    from estim.device.simulator import SimulatedDevice


@dataclass
class RecordingPort:
    """A :class:`~estim.session.machine.DevicePort` that records every call.

    ``fail_on`` names a method that raises ``error`` instead of acting;
    ``ignore_off`` makes off commands do nothing (a stuck output, or a bug).
    """

    link_up: bool = True
    output_enabled: bool = False
    commanded_ua: int = 0
    device_reports_output: bool = False
    calls: list[tuple[str, int | None]] = field(default_factory=list)
    fail_on: str | None = None
    error: Exception | None = None
    ignore_off: bool = False

    def _maybe_fail(self, name: str) -> None:
        if self.fail_on == name:
            raise self.error or RuntimeError(f"{name} failed")

    def zero_all(self) -> None:
        self.calls.append(("zero_all", None))
        self._maybe_fail("zero_all")
        if not self.ignore_off:
            self.output_enabled = False
            self.commanded_ua = 0

    def switch_off(self) -> None:
        self.calls.append(("switch_off", None))
        self._maybe_fail("switch_off")
        if not self.ignore_off:
            self.output_enabled = False
            self.commanded_ua = 0

    def switch_on(self, amplitude_ua: int) -> None:
        self.calls.append(("switch_on", amplitude_ua))
        self._maybe_fail("switch_on")
        self.commanded_ua = amplitude_ua
        self.output_enabled = True

    def set_amplitude(self, amplitude_ua: int) -> None:
        self.calls.append(("set_amplitude", amplitude_ua))
        self._maybe_fail("set_amplitude")
        self.commanded_ua = amplitude_ua

    @property
    def output_raised(self) -> bool:
        """True if any call could have raised the output."""
        return any(name in ("switch_on", "set_amplitude") for name, _ in self.calls)


TRIGGER_DATA: dict[Trigger, dict[str, object]] = {
    Trigger.TRIP: {"trip": Trip("IL-TEST", ("H-BURN",), "a test trip")},
    Trigger.EMERGENCY_STOP: {"source": "test"},
    Trigger.ACKNOWLEDGE_FAULT: {"by": "Dr Test"},
    Trigger.STOP: {"by": "Dr Test"},
}
"""Keyword arguments that make each trigger well-formed."""


def demo_prescription(
    protocol: Protocol | None = None,
    *,
    max_ma: Decimal = Decimal(30),
    step_ma: Decimal | None = None,
    patient: str = "DEMO-01",
) -> Prescription:
    protocol = protocol or get_protocol("stress")
    return Prescription(
        patient_code=patient,
        protocol=ProtocolRef.of(protocol),
        max_amplitude_ma=max_ma,
        titration_step_ma=step_ma,
        prescriber="Dr Demo",
        start_date=date(2026, 1, 1),
    )


def make_plan(
    protocol_id: str = "stress",
    profile: DeviceProfile | None = None,
    *,
    cycles: int | None = 2,
    max_ma: Decimal = Decimal(30),
    step_ma: Decimal | None = Decimal("0.5"),
    findings: FindingsReading | None = None,
    dose: DoseReading | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> SessionPlan:
    """A plan for a library protocol on a built-in profile (default estim-pf2).

    The titration step defaults to 0.5 mA (a prescription choice within every library
    protocol's step), so tests do not depend on the library's own step; None uses it.
    """
    protocol = get_protocol(protocol_id)
    resolved = resolve(demo_prescription(protocol, max_ma=max_ma, step_ma=step_ma), protocol)
    schedule = compile_schedule(resolved)
    if cycles is not None and not schedule.continuous:
        schedule = truncate_schedule(schedule, min(cycles, schedule.cycles))
    return SessionPlan.build(
        resolved,
        profile or builtin_profile("estim-pf2"),
        findings=findings or FindingsReading(),
        dose=dose or DoseReading(0, 0),
        schedule=schedule,
        limits=limits,
    )


@dataclass
class VirtualRig:
    """A runner, its driver and an in-process simulator, all on one virtual clock."""

    runner: SessionRunner
    device: object  # a SimulatedDevice, typed loosely (see ``simulator``)
    driver: Stimulator
    clock: VirtualClock
    sink: MemorySink

    @property
    def simulator(self) -> SimulatedDevice:
        """The device, typed as the in-process simulator it is (TypeError if it is not)."""
        from estim.device.simulator import SimulatedDevice

        if not isinstance(self.device, SimulatedDevice):
            raise TypeError(f"the rig's device is a {type(self.device).__name__}, not a simulator")
        return self.device

    def step(self, periods: int = 1) -> None:
        """Run the loop for ``periods`` control periods (each at its own deadline)."""
        self.run_for(periods * self.runner.settings.control_period_ns)

    def run_for(self, duration_ns: int) -> None:
        """Run the loop for ``duration_ns`` of virtual time, each step at its deadline."""
        end = self.clock.now_ns() + duration_ns
        while True:
            self.runner.step()
            deadline = self.runner.next_deadline_ns()
            if deadline > end or self.runner.done:
                break
            self.clock.sleep_until(deadline)
        self.clock.sleep_until(end)

    def command(self, trigger: Trigger, **data: object) -> State:
        """Submit a command and run one loop step; return the state or raise its error."""
        future = self.runner.submit(trigger, **data)
        self.runner.step()
        return future.result(timeout=0)


@contextmanager
def virtual_rig(
    plan: SessionPlan | None = None,
    *,
    faults: tuple[str, ...] = (),
    seed: int = 0,
    director: Director | None = None,
    settings: RunnerSettings | None = None,
    sink_factory: Callable[[], MemorySink] = MemorySink,
) -> Iterator[VirtualRig]:
    """A :class:`VirtualRig`; on exit the runner closes and the device is closed."""
    from estim.device.registry import create_stimulator
    from estim.device.simulator import SimulatedDevice

    plan = plan or make_plan()
    clock = VirtualClock()
    device = SimulatedDevice(plan.profile, clock=clock, faults=faults, seed=seed)
    driver = create_stimulator(plan.profile, device.url, clock=clock)
    sink = sink_factory()
    runner = SessionRunner(
        driver, plan, clock=clock, sink=sink, settings=settings, director=director
    )
    try:
        yield VirtualRig(runner, device, driver, clock, sink)
    finally:
        try:
            runner.close()
        finally:
            device.close()
