"""Session-controller figures: the whole controller (state machine, control loop,
interlocks, estim-wire driver) against the simulator over a real pty.

- emergency stop: ``SessionRunner.emergency_stop()`` called from another thread while
  the loop is stimulating and polling -> the simulator's output stage at zero;
- interlock trip: a fault injected into the simulator -> output zero (an impedance out
  of range, which the device does not act on, so the controller's own interlock must)
  and -> FAULT latched (an open electrode, which the device also trips on itself);
- phase-boundary timing over a real-time run of more than two minutes with short
  cycles, from the simulator's output trace, and the drift at the end of the run;
- controller CPU while stimulating and polling status every 50 ms (20 Hz);
- a 30-minute session in virtual time (wall time to run it).

Where a simulator runs in its own process (``estim sim --trace``), its trace stamps
``time.monotonic_ns()``, the same clock this process reads, so the two compare
directly; and this process's CPU time is the controller's alone.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from bench import BenchContext, Figure, figure_from_ns, figure_from_values, percentile
from estim.clock import NS_PER_MS, MonotonicClock, VirtualClock
from estim.device.profile import DeviceProfile, builtin_profile
from estim.device.registry import create_stimulator
from estim.device.simulator import PtyServer, SimulatedDevice
from estim.events import MemorySink
from estim.protocols.catalog import get_protocol
from estim.protocols.models import Adjustable, Protocol
from estim.protocols.prescription import Prescription, ProtocolRef, resolve
from estim.safety.interlocks import DoseReading, FindingsReading
from estim.session.director import AutoSession
from estim.session.plan import SessionPlan
from estim.session.runner import RunnerSettings, SessionRunner
from estim.session.states import State

PROFILE = builtin_profile("estim-pf2")
TARGET_UA = 10_000
CONTROL_PERIOD_MS = PROFILE.link.heartbeat_period_ms
ESTOP_TARGET_MS = 2.0
TRIP_TARGET_MS = CONTROL_PERIOD_MS + 5.0
BOUNDARY_TARGET_MS = 2.0
CPU_TARGET_PERCENT = 0.5
VIRTUAL_TARGET_MS = 2000.0
ESTIM = str(Path(sys.executable).parent / "estim")


# --- plans ---------------------------------------------------------------------------------


def short_protocol(
    *, ramp_s: str, on_s: str, off_s: str, minutes: str, step_ma: str = "1"
) -> Protocol:
    """The library's stress protocol with a bench cycle (never used on a patient)."""
    data: dict[str, Any] = get_protocol("stress").model_dump(mode="python")
    data.update(
        id="bench-short-cycles",
        title="Bench: short cycles for timing figures",
        adjustable={},
        session_duration_min=Decimal(minutes),
        cycle={
            "mode": "cycled",
            "ramp_up_s": Decimal(ramp_s),
            "on_s": Decimal(on_s),
            "ramp_down_s": Decimal(ramp_s),
            "off_s": Decimal(off_s),
        },
    )
    data["amplitude"] = {"ceiling_ma": Decimal(50), "titration_step_ma": Decimal(step_ma)}
    return Protocol.model_validate(data)


def plan_for(
    protocol: Protocol,
    profile: DeviceProfile = PROFILE,
    *,
    adjustments: dict[Adjustable, Decimal] | None = None,
) -> SessionPlan:
    prescription = Prescription(
        patient_code="BENCH-01",
        protocol=ProtocolRef.of(protocol),
        max_amplitude_ma=Decimal(20),
        adjustments=adjustments or {},
        prescriber="estim bench",
        start_date=date(2026, 1, 1),
    )
    return SessionPlan.build(
        resolve(prescription, protocol),
        profile,
        findings=FindingsReading(),
        dose=DoseReading(0, 0),
    )


# --- running sessions ------------------------------------------------------------------------


@dataclass
class Running:
    runner: SessionRunner
    thread: threading.Thread
    sink: MemorySink

    def wait_until(self, predicate: Callable[[SessionRunner], bool], bound_s: float = 30) -> None:
        deadline = time.monotonic() + bound_s
        while not predicate(self.runner):
            if not self.thread.is_alive() or time.monotonic() > deadline:
                view = self.runner.view()
                raise RuntimeError(f"session never got there (state {view.state.value})")
            time.sleep(0.002)

    def finish(self) -> None:
        self.runner.request_close()
        self.thread.join(timeout=30)
        if self.thread.is_alive():
            raise RuntimeError("the control loop did not end")


def start_session(port: str, plan: SessionPlan) -> Running:
    """A session on ``port``, titrated automatically, its loop in its own thread."""
    clock = MonotonicClock()
    driver = create_stimulator(plan.profile, port, clock=clock)
    sink = MemorySink()
    runner = SessionRunner(
        driver,
        plan,
        clock=clock,
        sink=sink,
        director=AutoSession(target_ua=TARGET_UA, step_interval_ns=NS_PER_MS),
    )
    thread = threading.Thread(target=runner.run, name="bench-control-loop")
    thread.start()
    running = Running(runner, thread, sink)
    running.wait_until(lambda r: r.machine.state is State.RUNNING)
    return running


@contextmanager
def estim_sim(trace: Path, profile: DeviceProfile = PROFILE) -> Iterator[str]:
    """``estim sim --trace FILE`` in its own process; yields its port path.

    Its output goes to a file, not a pipe: a pipe nobody reads would fill up and stall
    the simulator in the middle of a long run.
    """
    env = dict(os.environ)
    env.pop("ESTIM_DB", None)
    profile_file = trace.with_name("profile.json")
    profile_file.write_text(profile.model_dump_json(), encoding="utf-8")
    log = trace.with_name("sim.out")
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            [ESTIM, "sim", "--profile", str(profile_file), "--trace", str(trace)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 30
        port = ""
        while not port.startswith("/dev/"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"estim sim did not print its port: {log.read_text()!r}")
            time.sleep(0.05)
            port = log.read_text(encoding="utf-8").partition("\n")[0].strip()
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def output_records(trace: Path, channel: int = 1) -> list[dict[str, Any]]:
    records = []
    for line in trace.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("event") == "output" and record.get("channel") == channel:
            records.append(record)
    return records


def first_zero_after(records: list[dict[str, Any]], after_ns: int) -> int | None:
    """The stamp of the first output-zero record at or after ``after_ns``, if the output
    was non-zero just before it (else None: nothing to stop)."""
    before = [r for r in records if r["t_ns"] < after_ns]
    if not before or before[-1]["amplitude_ua"] == 0:
        return None
    for record in records:
        if record["t_ns"] >= after_ns and record["amplitude_ua"] == 0:
            return int(record["t_ns"])
    return None


# --- figures --------------------------------------------------------------------------------


def figure_emergency_stop_while_running(context: BenchContext) -> list[Figure]:
    """emergency_stop() from the main thread while the loop stimulates and polls."""
    n = context.trials(200, 20)
    plan = plan_for(short_protocol(ramp_s="0.2", on_s="2", off_s="0.5", minutes="1"))
    rng = random.Random(4)
    triggers: list[int] = []
    to_aborted: list[int] = []
    with TemporaryDirectory() as tmp:
        trace = Path(tmp) / "sim.jsonl"
        with estim_sim(trace) as port:
            while len(triggers) < n:
                running = start_session(port, plan)
                time.sleep(rng.uniform(0.25, 0.8))  # into the ramp or the plateau
                pressed = time.monotonic_ns()
                running.runner.emergency_stop("bench")
                running.wait_until(lambda r: r.machine.state is State.ABORTED)
                to_aborted.append(time.monotonic_ns() - pressed)
                running.finish()
                triggers.append(pressed)
        records = output_records(trace)
    samples = [
        zero - pressed
        for pressed in triggers
        if (zero := first_zero_after(records, pressed)) is not None
    ]
    return [
        figure_from_ns(
            "session: emergency stop -> simulator output zero (pty, loop running)",
            samples,
            target_ms=ESTOP_TARGET_MS,
            note="SessionRunner.emergency_stop() from another thread while the control loop "
            "stimulates and polls; stamp of estim sim's output-zero trace record",
            extra={"trials": len(triggers)},
        ),
        figure_from_ns("session: emergency stop -> machine ABORTED (loop moved)", to_aborted),
    ]


def figure_interlock_trip_to_output_zero(context: BenchContext) -> list[Figure]:
    """A fault injected into the simulator -> output zero / FAULT latched."""
    n = context.trials(60, 10)
    plan = plan_for(short_protocol(ramp_s="0.2", on_s="2", off_s="0.5", minutes="1"))
    rng = random.Random(5)
    impedance_zero: list[int] = []
    impedance_fault: list[int] = []
    open_zero: list[int] = []
    open_fault: list[int] = []
    device = SimulatedDevice(PROFILE)
    with PtyServer(device) as server:
        for trial in range(2 * n):
            opening = trial % 2 == 1
            device.inject("load:ch=1,ohm=800")
            device.hardware.clear_faults()
            running = start_session(server.path, plan)
            time.sleep(rng.uniform(0.3, 0.8))
            device.inject("open:ch=1" if opening else "load:ch=1,ohm=5000")
            injected = int(device.trace.records("inject")[-1]["t_ns"])
            running.wait_until(lambda r: r.machine.state is State.FAULT)
            trip = next(e for e in running.sink.events if e.kind == "trip")
            zero = first_zero_after(
                [r for r in device.trace.records("output") if r["channel"] == 1], injected
            )
            running.finish()
            if opening:
                device.inject("close:ch=1")
            if zero is None:
                continue
            (open_zero if opening else impedance_zero).append(zero - injected)
            (open_fault if opening else impedance_fault).append(trip.monotonic_ns - injected)
    return [
        figure_from_ns(
            "session: interlock trip (impedance 5 kohm) -> output zero (pty)",
            impedance_zero,
            target_ms=TRIP_TARGET_MS,
            note=f"IL-IMPEDANCE-RANGE; the device does not act on 5 kohm, the controller "
            f"must; target one control period ({CONTROL_PERIOD_MS} ms) + 5 ms",
        ),
        figure_from_ns(
            "session: interlock trip (impedance 5 kohm) -> controller trip event",
            impedance_fault,
        ),
        figure_from_ns("session: open electrode -> output zero (the device's own trip)", open_zero),
        figure_from_ns(
            "session: open electrode -> controller FAULT (IL-OPEN-CIRCUIT)",
            open_fault,
            target_ms=TRIP_TARGET_MS,
        ),
    ]


def figure_phase_boundaries_and_cpu(context: BenchContext) -> list[Figure]:
    """A real-time run of short cycles (0.5 s on, 0.5 s off, no ramps) for over two
    minutes: each phase boundary's output change against the schedule; CPU meanwhile
    (status every 50 ms: the estim-pf2 heartbeat period)."""
    return _real_time_run(context, PROFILE, boundaries=True)


def figure_cpu_at_ten_hertz(context: BenchContext) -> list[Figure]:
    """CPU with status polled at 10 Hz: estim-pf2 with a 100 ms heartbeat period (still
    within its 250 ms watchdog, two heartbeats per window)."""
    link = PROFILE.link.model_copy(update={"heartbeat_period_ms": 100})
    measurement = PROFILE.measurement.model_copy(update={"status_period_ms": 100})
    profile = PROFILE.model_copy(update={"link": link, "measurement": measurement})
    return _real_time_run(
        context, profile, boundaries=False, minutes="0.5" if context.quick else "1"
    )


def figure_cpu_baseline_driver_alone(context: BenchContext) -> list[Figure]:
    """For scale, with no controller: the estim-wire driver alone making the exchanges
    the 20 Hz and the 10 Hz sessions make; and a thread that only sleeps and wakes."""
    seconds = 10 if context.quick else 30
    twenty_hz = 0.05
    ten_hz = 0.1
    figures: list[Figure] = []
    with TemporaryDirectory() as tmp, estim_sim(Path(tmp) / "sim.jsonl") as port:
        driver = create_stimulator(PROFILE, port)
        driver.open()
        try:
            figures.append(
                figure_from_values(
                    "baseline: estim-wire driver alone, status at 20 Hz, no controller (% CPU)",
                    _cpu_windows(seconds, twenty_hz, driver.status),
                    unit="%",
                    note="what the serial exchange itself costs; the controller's figures "
                    "include it",
                )
            )
            ticks = itertools.count()
            channels = PROFILE.output.channels

            def ten_hz_exchanges() -> None:
                # Like the 10 Hz session: a status poll every tick, and at each of the
                # two phase boundaries a second an amplitude command before it.
                if next(ticks) % 5 == 0:
                    driver.set_amplitudes(dict.fromkeys(range(1, channels + 1), 0))
                driver.status()

            figures.append(
                figure_from_values(
                    "baseline: estim-wire driver alone, the 10 Hz session's exchanges "
                    "(10 polls + 2 commands a second), no controller (% CPU)",
                    _cpu_windows(seconds, ten_hz, ten_hz_exchanges),
                    unit="%",
                    note="the floor under the 10 Hz controller figure: its exchanges, nothing else",
                )
            )
        finally:
            driver.close()
    figures.append(
        figure_from_values(
            "baseline: a thread that only sleeps, waking 20 times a second (% CPU)",
            _cpu_windows(seconds, twenty_hz, lambda: None),
            unit="%",
            note="wake-ups alone: the 10 Hz controller wakes at least this often "
            "(its deadline, then each reply)",
        )
    )
    return figures


def _cpu_windows(seconds: int, period_s: float, work: Callable[[], object]) -> list[float]:
    """Process CPU per wall second (%) in 5 s windows of ``work()`` on a ``period_s`` grid."""
    windows: list[float] = []
    for _ in range(seconds // 5):
        cpu0, wall0 = time.process_time(), time.monotonic()
        due = wall0
        while time.monotonic() - wall0 < 5:
            work()
            due += period_s
            time.sleep(max(0.0, due - time.monotonic()))
        windows.append(100 * (time.process_time() - cpu0) / (time.monotonic() - wall0))
    return sorted(windows)


def _real_time_run(
    context: BenchContext, profile: DeviceProfile, *, boundaries: bool, minutes: str = ""
) -> list[Figure]:
    minutes = minutes or ("0.5" if context.quick else "2.5")
    protocol = short_protocol(ramp_s="0", on_s="0.5", off_s="0.5", minutes=minutes)
    plan = plan_for(protocol, profile)
    period_ms = RunnerSettings.for_plan(plan).control_period_ns // NS_PER_MS
    window_s = 5 if context.quick else 10
    cpu_windows: list[float] = []
    with TemporaryDirectory() as tmp:
        trace = Path(tmp) / "sim.jsonl"
        with estim_sim(trace, profile) as port:
            running = start_session(port, plan)
            origin = running.runner.schedule_origin_ns
            while running.runner.machine.state is State.RUNNING:
                cpu0, wall0 = time.process_time(), time.monotonic()
                _sleep_while_running(running.runner, window_s)
                wall = time.monotonic() - wall0
                if running.runner.machine.state is State.RUNNING and wall > window_s / 2:
                    cpu_windows.append(100 * (time.process_time() - cpu0) / wall)
            running.wait_until(lambda r: r.machine.state is State.COMPLETED, bound_s=10)
            running.finish()
            summary = running.runner.summary()
        records = output_records(trace)
    errors_ns: list[int] = []
    schedule = plan.schedule
    for segment in schedule.segments:
        if segment.duration_us == 0:
            continue
        due = origin + segment.start_us * 1000
        amplitude = TARGET_UA if segment.phase.stimulating else 0
        change = next(
            (
                r
                for r in records
                if r["t_ns"] >= due - 20 * NS_PER_MS and r["amplitude_ua"] == amplitude
            ),
            None,
        )
        if change is not None and segment.index > 0:
            errors_ns.append(int(change["t_ns"]) - due)
    end_due = origin + schedule.duration_us * 1000
    end_errors = [errors_ns[-1]] if errors_ns else []
    minutes_run = schedule.duration_us / 60e6
    cpu = sorted(cpu_windows)
    cpu_figure = Figure(
        name=f"session: controller CPU, stimulating, status at {1000 // period_ms} Hz "
        f"(% of one core, {window_s} s windows)",
        p50=percentile(cpu, 0.5) if cpu else 0.0,
        p99=percentile(cpu, 0.99) if cpu else 0.0,
        max=cpu[-1] if cpu else 0.0,
        n=len(cpu),
        unit="%",
        target=CPU_TARGET_PERCENT,
        note="process CPU time (control loop, driver reader thread, this harness idling) "
        f"per wall second; heartbeat {profile.link.heartbeat_period_ms} ms; the simulator "
        "runs in its own process",
    )
    if not boundaries:
        return [cpu_figure]
    return [
        figure_from_ns(
            f"session: phase boundary error, real time ({minutes_run:g} min, 1 s cycles)",
            errors_ns,
            target_ms=BOUNDARY_TARGET_MS,
            note="the simulator's output-change stamp minus the schedule's boundary time "
            "(from the runner's schedule origin); includes the wire and the pty",
            extra={"boundaries": len(errors_ns), "outcome": summary.outcome.value},
        ),
        figure_from_ns(
            "session: end-of-run drift (last boundary error)",
            end_errors,
            target_ms=BOUNDARY_TARGET_MS,
            target_stat="max",
            extra={"session_end_due_ns": end_due},
        ),
        cpu_figure,
    ]


def _sleep_while_running(runner: SessionRunner, seconds: float) -> None:
    # Looks once a second: this process's CPU is the figure, and the harness waking
    # to look costs CPU too (about 0.1 ms a wake-up on this class of machine).
    deadline = time.monotonic() + seconds
    while runner.machine.state is State.RUNNING:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(1.0, remaining))


def figure_virtual_thirty_minutes(context: BenchContext) -> list[Figure]:
    """A full 30-minute stress session (adjusted to 30 min) in virtual time; and, for
    scale, the device calls of one such session replayed with no controller."""
    runs = context.trials(3, 1)
    plan = plan_for(
        get_protocol("stress"), adjustments={Adjustable.SESSION_DURATION_MIN: Decimal(30)}
    )
    walls: list[int] = []
    steps: list[int] = []
    for seed in range(runs):
        wall_ns, events = _virtual_session(plan, seed)
        walls.append(wall_ns)
        steps.append(events)
    calls: list[DeviceCall] = []
    _virtual_session(plan, 0, record=calls)  # untimed: recording costs a little
    replays = [replay_device_calls(calls, seed) for seed in range(runs)]
    polls = sum(1 for call in calls if call.method == "status")
    return [
        figure_from_ns(
            "session: 30-minute session in virtual time (wall)",
            walls,
            target_ms=VIRTUAL_TARGET_MS,
            note="controller + estim-wire driver + in-process simulator (sim://), "
            "status every 50 ms of virtual time: 36,000 polls",
            extra={"virtual_s": plan.schedule.duration_us / 1e6, "events": steps[-1]},
        ),
        figure_from_ns(
            "baseline: the same session's device calls replayed, no controller (wall)",
            replays,
            note="driver + simulator only, each call at its virtual instant: the floor "
            "under the figure above",
            extra={"calls": len(calls), "status_polls": polls},
        ),
    ]


def _virtual_session(
    plan: SessionPlan, seed: int, *, record: list[DeviceCall] | None = None
) -> tuple[int, int]:
    """Run ``plan`` in virtual time; its wall time (ns) and how many events it logged."""
    clock = VirtualClock()
    device = SimulatedDevice(PROFILE, clock=clock, seed=seed)
    try:
        driver = create_stimulator(PROFILE, device.url, clock=clock)
        if record is not None:
            record_device_calls(driver, clock, record)
        runner = SessionRunner(
            driver,
            plan,
            clock=clock,
            sink=MemorySink(),
            director=AutoSession(target_ua=TARGET_UA),
        )
        started = time.monotonic_ns()
        summary = runner.run()
        wall_ns = time.monotonic_ns() - started
        if summary.outcome.value != "completed":
            raise RuntimeError(f"the virtual session ended {summary.outcome.value}")
        return wall_ns, summary.events
    finally:
        device.close()


@dataclass(frozen=True)
class DeviceCall:
    """One call a session made on its stimulator, at a virtual instant."""

    at_ns: int
    method: str
    args: tuple[Any, ...]


REPLAYED_METHODS = (
    "configure",
    "set_amplitudes",
    "output_on",
    "output_off",
    "stop_all",
    "status",
    "measure_impedance",
    "clear_fault",
)


def record_device_calls(driver: Any, clock: VirtualClock, calls: list[DeviceCall]) -> None:
    """Append to ``calls`` every call of :data:`REPLAYED_METHODS` made on ``driver``."""
    for name in REPLAYED_METHODS:
        method = getattr(driver, name)

        def recording(*args: Any, _name: str = name, _method: Any = method) -> Any:
            calls.append(DeviceCall(clock.now_ns(), _name, args))
            return _method(*args)

        setattr(driver, name, recording)


def replay_device_calls(
    calls: list[DeviceCall], seed: int, device: SimulatedDevice | None = None
) -> int:
    """Make the recorded calls, each at its instant, on a fresh device (or on ``device``,
    left open, on a virtual clock at zero); the wall time it took (ns)."""
    owned = device is None
    if device is None:
        device = SimulatedDevice(PROFILE, clock=VirtualClock(), seed=seed)
    clock = device.clock
    assert isinstance(clock, VirtualClock)
    try:
        driver = create_stimulator(PROFILE, device.url, clock=clock)
        started = time.monotonic_ns()
        driver.open()
        for call in calls:
            if call.at_ns > clock.now_ns():
                clock.advance_to(call.at_ns)
            getattr(driver, call.method)(*call.args)
        driver.close()
        return time.monotonic_ns() - started
    finally:
        if owned:
            device.close()
