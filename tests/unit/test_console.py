"""The clinician's console: the amplitude-key gate, key mapping, and the rule that a
failing display stops the session instead of leaving it running unattended."""

from __future__ import annotations

import io
import threading
from decimal import Decimal

import pytest
from rich.console import Console

from estim.cli.console import (
    STOP_SIGNALS,
    AmplitudeKeyGate,
    key_action,
    plain_line,
    run_console,
)
from estim.device.simulator import SimulatedDevice
from estim.session.director import AutoSession
from estim.session.runner import SessionRunner, SessionView
from estim.session.states import State, Trigger
from estim.testing.session import VirtualRig, make_plan, virtual_rig

HOLD_FOREVER_NS = 10**18  # a titration director that never takes its next step


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def simulator(rig: VirtualRig) -> SimulatedDevice:
    assert isinstance(rig.device, SimulatedDevice)
    return rig.device


def titrating(rig: VirtualRig) -> None:
    for trigger in (Trigger.CONNECT, Trigger.PREFLIGHT, Trigger.ARM, Trigger.AMPLITUDE_UP):
        rig.command(trigger)
    assert rig.runner.machine.state is State.TITRATING


def test_gate_drops_auto_repeat_and_admits_a_fresh_press() -> None:
    clock = FakeTime()
    gate = AmplitudeKeyGate(interval_s=0.4, now=clock)
    assert gate.admit()
    for _ in range(20):  # a held key: 30 characters a second
        clock.now += 1 / 30
        assert not gate.admit()
    clock.now += 0.4  # released, pressed again
    assert gate.admit()


def test_held_plus_key_raises_the_amplitude_one_step_only() -> None:
    with virtual_rig(make_plan(max_ma=Decimal(30))) as rig:
        titrating(rig)
        step = rig.runner.machine.step_ua
        before = rig.runner.machine.titration_ua
        clock = FakeTime()
        gate = AmplitudeKeyGate(now=clock)
        messages = []
        for _ in range(15):
            messages.append(key_action(rig.runner, "+", "Dr Test", gate))
            clock.now += 1 / 30
        rig.step(2)
        assert rig.runner.machine.titration_ua == before + step
        assert messages[0] == "amplitude_up requested"
        assert all("one step per press" in (m or "") for m in messages[1:])


def test_the_down_key_is_never_held_back() -> None:
    with virtual_rig(make_plan(max_ma=Decimal(30))) as rig:
        titrating(rig)
        step = rig.runner.machine.step_ua
        clock = FakeTime()
        gate = AmplitudeKeyGate(now=clock)
        assert key_action(rig.runner, "+", "Dr Test", gate) == "amplitude_up requested"
        rig.step()
        before = rig.runner.machine.titration_ua
        downs = []
        for _ in range(2):  # pressed at once after "+", then held: every one counts
            clock.now += 1 / 30
            downs.append(key_action(rig.runner, "-", "Dr Test", gate))
            rig.step()
        assert downs == ["amplitude_down requested"] * 2
        assert rig.runner.machine.titration_ua == before - 2 * step


def test_space_is_an_emergency_stop() -> None:
    with virtual_rig() as rig:
        titrating(rig)
        assert simulator(rig).hardware.any_output_on
        assert key_action(rig.runner, " ", "Dr Test") is not None
        rig.step()
        assert rig.runner.machine.state is State.ABORTED
        assert not simulator(rig).hardware.any_output_on


def test_unmapped_keys_do_nothing() -> None:
    with virtual_rig() as rig:
        titrating(rig)
        level = rig.runner.machine.titration_ua
        assert key_action(rig.runner, "x", "Dr Test") is None
        rig.step()
        assert rig.runner.machine.state is State.TITRATING
        assert rig.runner.machine.titration_ua == level


class TitrateThenWaitForTheScreen:
    """Titrates one step, then holds the loop (and so virtual time, which would race
    ahead of the display thread) until the screen has failed."""

    def __init__(self) -> None:
        self.screen_failed = threading.Event()
        self._titrate = AutoSession(target_ua=20_000, step_interval_ns=HOLD_FOREVER_NS)

    def act(self, runner: SessionRunner, now_ns: int) -> int | None:
        if runner.machine.state is State.TITRATING and not self.screen_failed.is_set():
            self.screen_failed.wait(timeout=60)
        return self._titrate.act(runner, now_ns)


def test_a_failing_display_stops_the_session_with_output_off() -> None:
    director = TitrateThenWaitForTheScreen()
    with virtual_rig(director=director) as rig:
        seen: list[State] = []

        def broken_screen(view: SessionView) -> None:
            seen.append(view.state)
            if view.state is State.TITRATING:  # stimulating now: the screen dies
                director.screen_failed.set()
                raise BrokenPipeError("stdout closed")

        with pytest.raises(BrokenPipeError):
            run_console(
                rig.runner,
                console=Console(file=io.StringIO()),
                plain=True,
                keys=False,
                on_view=broken_screen,
            )
        assert State.TITRATING in seen
        assert rig.runner.done
        assert rig.runner.machine.state is State.ABORTED, rig.runner.summary().reason
        assert not simulator(rig).hardware.any_output_on
        assert "console failure" in str(rig.runner.summary().reason)


def test_terminal_hangup_and_quit_are_emergency_stops() -> None:
    import signal

    assert {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT} <= set(STOP_SIGNALS)


def test_a_second_ctrl_c_during_a_stop_is_a_second_stop_not_a_deadlock() -> None:
    """People press Ctrl-C again and again in an emergency. The second signal arrives
    while the main thread is inside an emergency stop (here: the console's own), holding
    its lock; the handler must not need that lock."""
    import signal

    from estim.cli.console import signals_as_emergency_stop

    with virtual_rig() as rig:
        rig.command(Trigger.CONNECT)
        runner = rig.runner
        link = rig.driver._link
        assert link is not None
        real_write = link.write
        pressed = threading.Event()

        def write_interrupted_by_ctrl_c(data: bytes) -> None:
            if not pressed.is_set():  # the STOP ALL write, under the driver's write lock
                pressed.set()
                signal.raise_signal(signal.SIGINT)
            real_write(data)

        link.write = write_interrupted_by_ctrl_c  # type: ignore[method-assign]
        finished = threading.Event()
        with signals_as_emergency_stop(runner):
            runner.emergency_stop("console failure")
            finished.set()
            for _ in range(500):  # the signal's stop runs on its own thread
                if len(runner._emergency_sources) == 2:
                    break
                pressed.wait(0.01)
        assert finished.is_set()
        assert runner._emergency_sources == ["console failure", "SIGINT"]
        assert runner._close_requested.is_set()
        assert not simulator(rig).hardware.any_output_on


def test_plain_line_shows_the_output_indicator() -> None:
    view = SessionView(State.RUNNING, commanded_ua=12_000, output_on=True)
    assert "OUTPUT ON" in plain_line(view)
    assert "output off" in plain_line(SessionView(State.ARMED))


def test_after_the_link_fails_device_readings_are_shown_as_unknown() -> None:
    """The view's measured current and output flag are the last ones received: once the
    link has failed they are not the device's state now, whatever fault latched first."""
    from estim.cli.console import measured_text

    stale = SessionView(
        State.FAULT, measured_ua=12_000, output_on=True, link_lost=True, commanded_ua=0
    )
    assert "link lost" in measured_text(stale)
    assert "OUTPUT ON" not in plain_line(stale)
    fresh = SessionView(State.RUNNING, measured_ua=12_000, output_on=True)
    assert "link lost" not in measured_text(fresh)


def test_the_runner_marks_its_view_when_the_port_vanishes() -> None:
    with virtual_rig() as rig:
        titrating(rig)
        assert not rig.runner.view().link_lost
        simulator(rig).inject("disconnect")
        rig.step(periods=40)
        assert rig.runner.view().link_lost
        assert rig.runner.machine.state is State.FAULT
