"""The session controller on the RehaStim2: virtual time in-process, and real time on a pty.

The controller talks to the device only through the driver base class; here that is
the ScienceMode2 driver, and the device is the RehaStim2 personality of the simulator.
The simulator's trace is the ground truth of what the output stage delivered.

The library's short-pulse protocols titrate in 0.5 mA steps, which the RehaStim2
cannot set (whole mA only): the static check refuses them on this device (see
tests/unit/test_sm2_profile_checks.py and docs/devices/rehastim2.md). These sessions
therefore use the library protocol with a 1 mA titration step.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal

import pytest

from estim.clock import NS_PER_MS, NS_PER_S, MonotonicClock
from estim.device.profile import DeviceProfile, builtin_profile
from estim.device.sciencemode2.driver import ScienceMode2Stimulator
from estim.device.simulator import PtyServer, SimulatedDevice
from estim.events import MemorySink
from estim.protocols.catalog import get_protocol
from estim.protocols.models import CycledDuty, Protocol
from estim.protocols.prescription import resolve
from estim.protocols.schedule import compile_schedule
from estim.safety.interlocks import DeviceFault, DoseReading, FindingsReading
from estim.session.director import AutoSession
from estim.session.plan import SessionPlan, truncate_schedule
from estim.session.runner import SessionRunner
from estim.session.states import State
from estim.session.story import check_story
from estim.session.summary import Outcome
from estim.testing.session import demo_prescription, virtual_rig

REHASTIM2 = builtin_profile("hasomed-rehastim2")
QUICK = REHASTIM2.model_copy(
    update={
        "link": REHASTIM2.link.model_copy(
            update={"watchdog_timeout_ms": 400, "heartbeat_period_ms": 100}
        )
    }
)


def whole_ma_steps(protocol_id: str, *, short_cycle: bool = False) -> Protocol:
    """A library protocol titrated in 1 mA steps (optionally with a 3 s cycle)."""
    protocol = get_protocol(protocol_id)
    update: dict[str, object] = {
        "amplitude": protocol.amplitude.model_copy(update={"titration_step_ma": Decimal(1)})
    }
    if short_cycle:
        update["cycle"] = CycledDuty(
            ramp_up_s=Decimal("0.5"),
            on_s=Decimal(1),
            ramp_down_s=Decimal("0.5"),
            off_s=Decimal(1),
        )
    return protocol.model_copy(update=update)


def plan_for(
    protocol: Protocol, profile: DeviceProfile = REHASTIM2, cycles: int | None = 1
) -> SessionPlan:
    resolved = resolve(demo_prescription(protocol, max_ma=Decimal(30)), protocol)
    schedule = compile_schedule(resolved)
    if cycles is not None and not schedule.continuous:
        schedule = truncate_schedule(schedule, cycles)
    return SessionPlan.build(
        resolved, profile, findings=FindingsReading(), dose=DoseReading(0, 0), schedule=schedule
    )


def assert_story(sink: MemorySink) -> None:
    problems = check_story(sink.events)
    assert not problems, "\n".join(map(str, problems))


# --- virtual time -------------------------------------------------------------------------


def test_a_stress_session_runs_to_completion_on_the_rehastim2() -> None:
    plan = plan_for(whole_ma_steps("stress"), cycles=2)
    with virtual_rig(plan, director=AutoSession(target_ua=12_000)) as rig:
        summary = rig.runner.run()
        assert summary.outcome is Outcome.COMPLETED
        assert summary.confirmed_ua == 12_000
        assert summary.contractions == 2
        assert summary.output_confirmed_off is True
        device = rig.simulator
        delivered = [r["amplitude_ua"] for r in device.trace.records("output")]
        assert max(delivered) == 12_000
        assert all(a % 1000 == 0 for a in delivered)  # whole mA: ramps are host steps
        assert not device.hardware.any_output_on
        skipped = [e.data["interlock_id"] for e in rig.sink.events if e.kind == "interlock_skipped"]
        # No readback: the measured-vs-commanded current and impedance interlocks are off.
        assert {"IL-CURRENT-DEVIATION", "IL-IMPEDANCE-RANGE"} <= set(skipped)
        assert_story(rig.sink)


def test_an_urge_session_at_10_hz_runs_its_full_20_minutes() -> None:
    plan = plan_for(whole_ma_steps("urge"), cycles=None)  # continuous
    with virtual_rig(plan, director=AutoSession(target_ua=8000)) as rig:
        summary = rig.runner.run()
        assert summary.outcome is Outcome.COMPLETED
        assert summary.on_time_us >= 19 * 60 * 1_000_000
        assert summary.output_confirmed_off is True
        config = rig.simulator.hardware.channel_config(1)
        assert config is not None
        assert config.period_us == 100_000
        assert_story(rig.sink)


def test_an_electrode_error_faults_the_session() -> None:
    plan = plan_for(whole_ma_steps("stress"), cycles=2)
    # Titration takes 12 x 250 ms; the first contraction's plateau is well after 5 s.
    with virtual_rig(
        plan, faults=("open:ch=1,at=6s",), director=AutoSession(target_ua=12_000)
    ) as rig:
        summary = rig.runner.run()
        assert summary.outcome is Outcome.FAULT
        assert summary.exit_code == 4
        assert rig.runner.machine.state is State.FAULT
        assert [t.interlock_id for t in summary.trips] == [DeviceFault.ID]
        assert "electrode" in summary.trips[0].reason
        assert any(e.kind == "trip" for e in rig.sink.events)
        assert not rig.simulator.hardware.any_output_on
        assert_story(rig.sink)


def test_a_hung_controller_is_stopped_by_the_device_watchdog() -> None:
    plan = plan_for(whole_ma_steps("stress"), cycles=2)
    with virtual_rig(plan, director=AutoSession(target_ua=12_000)) as rig:
        device = rig.simulator
        while not device.hardware.any_output_on:
            rig.step()
        rig.step(20)  # stimulating
        hung_at = rig.clock.now_ns()
        # The controller hangs: nothing is sent while 3 s pass (time flows in 10 ms
        # ticks, so the device's timers run at their own instants).
        for _ in range(300):
            rig.clock.advance(3 * NS_PER_S // 300)
        stops = [r for r in device.trace.records("output") if r["clock_ns"] > hung_at]
        assert stops
        assert all(r["amplitude_ua"] == 0 for r in stops)
        assert stops[0]["clock_ns"] - hung_at <= REHASTIM2.link.watchdog_timeout_ms * NS_PER_MS
        # It wakes up: the device has re-announced itself; the controller faults.
        summary = rig.runner.run()
        assert summary.outcome is Outcome.FAULT
        assert summary.trips
        reasons = " ".join(t.reason for t in summary.trips)
        assert "reset" in reasons or "announced itself again" in reasons
        assert not device.hardware.any_output_on


# --- real time, over a pty ----------------------------------------------------------------------


@dataclass
class HangOnce:
    """AutoSession, but the control loop hangs once for ``hang_s`` while stimulating."""

    inner: AutoSession
    hang_s: float
    device: SimulatedDevice
    hung: bool = False

    def act(self, runner: SessionRunner, now_ns: int) -> int | None:
        if not self.hung and self.device.hardware.any_output_on:
            self.hung = True
            time.sleep(self.hang_s)  # a controller stuck in a long call: nothing is sent
        return self.inner.act(runner, now_ns)


@contextmanager
def pty_session(
    plan: SessionPlan, faults: tuple[str, ...] = ()
) -> Iterator[tuple[SimulatedDevice, ScienceMode2Stimulator, MemorySink]]:
    device = SimulatedDevice(plan.profile, faults=faults)
    with PtyServer(device) as server:
        driver = ScienceMode2Stimulator(plan.profile, server.path)
        yield device, driver, MemorySink()


@pytest.mark.pty
def test_a_session_over_a_pty_completes() -> None:
    plan = plan_for(whole_ma_steps("stress", short_cycle=True), QUICK)
    with pty_session(plan) as (device, driver, sink):
        runner = SessionRunner(
            driver, plan, clock=MonotonicClock(), sink=sink, director=AutoSession(target_ua=5000)
        )
        summary = runner.run()
        assert summary.outcome is Outcome.COMPLETED
        assert summary.output_confirmed_off is True
        assert max(r["amplitude_ua"] for r in device.trace.records("output")) == 5000
        assert not device.hardware.any_output_on
        assert not device.trace.records("watchdog")
        problems = check_story(sink.events)
        assert not problems, problems


@pytest.mark.pty
def test_an_electrode_error_over_a_pty_faults_the_session() -> None:
    plan = plan_for(whole_ma_steps("stress", short_cycle=True), QUICK)
    with pty_session(plan) as (device, driver, sink):
        director = AutoSession(target_ua=5000)
        runner = SessionRunner(driver, plan, clock=MonotonicClock(), sink=sink, director=director)

        class OpenWhenStimulating:
            def act(self, runner: SessionRunner, now_ns: int) -> int | None:
                if device.hardware.any_output_on and not device.trace.records("inject"):
                    device.inject("open:ch=1")
                return director.act(runner, now_ns)

        runner.director = OpenWhenStimulating()
        summary = runner.run()
        assert summary.outcome is Outcome.FAULT
        assert [t.interlock_id for t in summary.trips] == [DeviceFault.ID]
        assert "electrode" in summary.trips[0].reason
        assert not device.hardware.any_output_on


@pytest.mark.pty
def test_watchdog_loss_over_a_pty_stops_the_device_and_faults_the_session() -> None:
    plan = plan_for(whole_ma_steps("stress", short_cycle=True), QUICK)
    with pty_session(plan) as (device, driver, sink):
        director = HangOnce(AutoSession(target_ua=5000), hang_s=1.0, device=device)
        runner = SessionRunner(driver, plan, clock=MonotonicClock(), sink=sink, director=director)
        summary = runner.run()
        assert director.hung
        lost = [r for r in device.trace.records("watchdog") if r.get("what") == "link lost"]
        assert lost  # the device stopped by itself while the controller was stuck
        assert summary.outcome is Outcome.FAULT
        assert not device.hardware.any_output_on
        assert summary.trips
        faults = device.trace.records("fault")
        assert any("no valid frame" in str(r.get("detail")) for r in faults)
