"""estim-wire/1 figures: the real driver against the simulator over a real pty.

Every time is :func:`time.monotonic_ns` in this process: the driver's calls on one side,
the simulator's trace (stamped in its pty-serving thread at the moment the output
changes) on the other.
"""

from __future__ import annotations

import gc
import threading
import time
from contextlib import AbstractContextManager

from bench import BenchContext, Figure, figure_from_ns, pty_device
from estim.device.base import ChannelConfig, FaultFlag
from estim.device.profile import builtin_profile
from estim.device.simulator import SimulatedDevice
from estim.device.simulator.trace import TraceRecord
from estim.device.wire.codec import Frame, FrameDecoder
from estim.device.wire.driver import WireStimulator
from estim.device.wire.messages import Command, Reply, encode_ack, encode_status
from estim.protocols.models import ShapeKind

PROFILE = builtin_profile("estim-pf2")
CONFIG = ChannelConfig(1, ShapeKind.SYMMETRIC_BIPHASIC, (200, 200), 0, 20_000)
STOP_TARGET_MS = 2.0
WATCHDOG_TARGET_MS = PROFILE.link.watchdog_timeout_ms + 20


def pty_session() -> AbstractContextManager[tuple[SimulatedDevice, WireStimulator]]:
    return pty_device(PROFILE, WireStimulator, CONFIG)


class OutputZero:
    """Catches the trace record of channel 1's output going to zero."""

    def __init__(self) -> None:
        self.at_ns = 0
        self.seen = threading.Event()

    def arm(self) -> None:
        self.at_ns = 0
        self.seen.clear()

    def __call__(self, record: TraceRecord) -> None:
        if record["event"] == "output" and record["channel"] == 1 and not record["output_on"]:
            self.at_ns = record["t_ns"]
            self.seen.set()


def figure_command_round_trip(context: BenchContext) -> list[Figure]:
    """HEARTBEAT and STATUS: write, device answers, reply matched, call returns."""
    n = context.trials(1000, 100)
    heartbeat: list[int] = []
    status: list[int] = []
    with pty_session() as (_device, driver):
        gc.collect()
        for _ in range(n):
            start = time.monotonic_ns()
            driver.heartbeat()
            heartbeat.append(time.monotonic_ns() - start)
            start = time.monotonic_ns()
            driver.status()
            status.append(time.monotonic_ns() - start)
    return [
        figure_from_ns("wire: command round trip, HEARTBEAT (pty)", heartbeat),
        figure_from_ns("wire: command round trip, STATUS (pty)", status),
    ]


def figure_stop_all_to_output_zero(context: BenchContext) -> list[Figure]:
    """stop_all() called -> the simulator's output is zero, and -> stop_all() returns."""
    n = context.trials(500, 200)
    to_zero: list[int] = []
    to_ack: list[int] = []
    zero = OutputZero()
    with pty_session() as (device, driver):
        unsubscribe = device.trace.subscribe(zero)
        try:
            gc.collect()
            for _ in range(n):
                driver.set_amplitudes({1: 10_000})
                driver.output_on([1])
                zero.arm()
                called = time.monotonic_ns()
                driver.stop_all()
                returned = time.monotonic_ns()
                if not zero.seen.wait(1.0):
                    raise RuntimeError("the simulator never reported output zero")
                to_zero.append(zero.at_ns - called)
                to_ack.append(returned - called)
        finally:
            unsubscribe()
    return [
        figure_from_ns(
            "wire: STOP ALL -> simulator output zero (pty)",
            to_zero,
            target_ms=STOP_TARGET_MS,
            note="from stop_all() being called to the simulator's output-zero trace stamp",
        ),
        figure_from_ns("wire: STOP ALL acknowledged (stop_all() returns)", to_ack),
    ]


def figure_watchdog_trip(context: BenchContext) -> list[Figure]:
    """Host falls silent with output on -> the simulator's watchdog zeroes the output."""
    n = context.trials(20, 5)
    to_zero: list[int] = []
    to_event: list[int] = []
    zero = OutputZero()
    events: list[int] = []
    with pty_session() as (device, driver):
        driver.add_event_listener(
            lambda event: (
                events.append(time.monotonic_ns()) if FaultFlag.WATCHDOG in event.faults else None
            )
        )
        unsubscribe = device.trace.subscribe(zero)
        try:
            for _ in range(n):
                driver.clear_fault()
                driver.set_amplitudes({1: 10_000})
                driver.output_on([1])
                zero.arm()
                before = len(events)
                driver.status()  # the last frame
                silent_from = driver.last_write_ns
                if not zero.seen.wait(2.0):
                    raise RuntimeError("the watchdog never tripped")
                to_zero.append(zero.at_ns - silent_from)
                deadline = time.monotonic() + 2.0
                while len(events) == before and time.monotonic() < deadline:
                    threading.Event().wait(0.001)
                if len(events) > before:
                    to_event.append(events[before] - silent_from)
        finally:
            unsubscribe()
    return [
        figure_from_ns(
            f"wire: watchdog trip, last frame -> output zero (declared "
            f"{PROFILE.link.watchdog_timeout_ms} ms)",
            to_zero,
            target_ms=WATCHDOG_TARGET_MS,
            target_stat="max",
        ),
        figure_from_ns("wire: watchdog trip, last frame -> EVENT at the host", to_event),
    ]


def figure_codec_throughput(context: BenchContext) -> list[Figure]:
    """Encode and decode a STATUS reply (the largest routine frame), per frame."""
    from estim.device.simulator.hardware import SimulatedStimulator

    batches = context.trials(200, 20)
    per_batch = 1000
    hardware = SimulatedStimulator(PROFILE, _FrozenClock())
    payload = encode_ack(Command.STATUS, encode_status(hardware.status(), 12_345))
    frame = Frame(Reply.ACK, 7, payload)
    wire = frame.encode()
    stream = wire * per_batch
    encode_ns: list[int] = []
    decode_ns: list[int] = []
    for _ in range(batches):
        start = time.perf_counter_ns()
        for _ in range(per_batch):
            frame.encode()
        encode_ns.append((time.perf_counter_ns() - start) // per_batch)
        decoder = FrameDecoder()
        start = time.perf_counter_ns()
        decoded = decoder.feed(stream)
        decode_ns.append((time.perf_counter_ns() - start) // per_batch)
        assert len(decoded) == per_batch
    decode = figure_from_ns(
        f"codec: decode one STATUS reply ({len(wire)} bytes)",
        decode_ns,
        note="per frame, in batches of 1000",
    )
    encode = figure_from_ns(
        f"codec: encode one STATUS reply ({len(wire)} bytes)",
        encode_ns,
        note="per frame, in batches of 1000",
    )
    for fig in (decode, encode):
        fig.extra["frames_per_s_p50"] = round(1000 / fig.p50) if fig.p50 else None
        fig.extra["mbytes_per_s_p50"] = round(len(wire) * 1000 / fig.p50 / 1e6, 2)
    return [decode, encode]


class _FrozenClock:
    """A clock for a model built only to produce a status payload."""

    def now_ns(self) -> int:
        return 0

    def sleep_until(self, deadline_ns: int) -> None:
        return None

    @property
    def is_virtual(self) -> bool:
        return True
