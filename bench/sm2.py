"""ScienceMode2 (RehaStim2) figures: the real driver against the RehaStim2 simulator on a pty.

Every time is :func:`time.monotonic_ns` in this process: the driver's calls on one side,
the simulator's trace (stamped in its pty-serving thread when the output changes) on the
other. The pty carries bytes instantly; a real RehaStim2 adds its own 10-24 ms from
command to execution (Hasomed's figure) and 460800 baud adds about 0.2 ms per frame.
"""

from __future__ import annotations

import gc
import threading
import time
from contextlib import AbstractContextManager

from bench import BenchContext, Figure, figure_from_ns, pty_device
from estim.device.base import ChannelConfig, FaultFlag
from estim.device.profile import builtin_profile
from estim.device.sciencemode2.codec import FrameDecoder
from estim.device.sciencemode2.driver import ScienceMode2Stimulator
from estim.device.sciencemode2.messages import ChannelPulse, StartChannelListMode
from estim.device.simulator import SimulatedDevice
from estim.device.simulator.trace import TraceRecord
from estim.errors import DeviceTimeout
from estim.protocols.models import ShapeKind

PROFILE = builtin_profile("hasomed-rehastim2")
CONFIG = ChannelConfig(1, ShapeKind.SYMMETRIC_BIPHASIC, (300, 300), 0, 20_000)
STOP_TARGET_MS = 2.0
WATCHDOG_TARGET_MS = PROFILE.link.watchdog_timeout_ms + 20


def rehastim2() -> AbstractContextManager[tuple[SimulatedDevice, ScienceMode2Stimulator]]:
    return pty_device(PROFILE, ScienceMode2Stimulator, CONFIG)


class OutputChange:
    """Catches the trace record of channel 1's output reaching ``amplitude_ua``."""

    def __init__(self) -> None:
        self.amplitude_ua = 0
        self.at_ns = 0
        self.seen = threading.Event()

    def arm(self, amplitude_ua: int) -> None:
        self.amplitude_ua = amplitude_ua
        self.at_ns = 0
        self.seen.clear()

    def __call__(self, record: TraceRecord) -> None:
        if (
            record["event"] == "output"
            and record["channel"] == 1
            and record["amplitude_ua"] == self.amplitude_ua
            and not self.seen.is_set()
        ):
            self.at_ns = record["t_ns"]
            self.seen.set()


def figure_sm2_update_round_trip(context: BenchContext) -> list[Figure]:
    """A ramp step: StartChannelListMode written, acknowledged, call returns."""
    n = context.trials(1000, 100)
    samples: list[int] = []
    with rehastim2() as (_device, driver):
        driver.output_on([1])
        gc.collect()
        for i in range(n):
            start = time.monotonic_ns()
            driver.set_amplitudes({1: 1000 * (1 + i % 20)})
            samples.append(time.monotonic_ns() - start)
        driver.output_off()
    return [figure_from_ns("sm2: amplitude update round trip, StartChannelListMode (pty)", samples)]


def figure_sm2_stop_to_output_zero(context: BenchContext) -> list[Figure]:
    """stop_all() called -> the RehaStim2 simulator's output is zero."""
    n = context.trials(500, 200)
    to_zero: list[int] = []
    change = OutputChange()
    with rehastim2() as (device, driver):
        unsubscribe = device.trace.subscribe(change)
        try:
            gc.collect()
            for _ in range(n):
                driver.set_amplitudes({1: 10_000})
                driver.output_on([1])  # InitChannelListMode (after the stop) + Start
                change.arm(0)
                called = time.monotonic_ns()
                driver.stop_all()
                if not change.seen.wait(1.0):
                    raise RuntimeError("the simulator never reported output zero")
                to_zero.append(change.at_ns - called)
        finally:
            unsubscribe()
    return [
        figure_from_ns(
            "sm2: STOP (StopChannelListMode) -> simulator output zero (pty)",
            to_zero,
            target_ms=STOP_TARGET_MS,
            note="from stop_all() being called to the simulator's output-zero trace stamp",
        )
    ]


def figure_sm2_watchdog_trip(context: BenchContext) -> list[Figure]:
    """Host falls silent while stimulating -> the device stops (2 s watchdog)."""
    n = context.trials(5, 2)
    to_zero: list[int] = []
    change = OutputChange()
    with rehastim2() as (device, driver):
        unsubscribe = device.trace.subscribe(change)
        try:
            for _ in range(n):
                driver.clear_fault()
                driver.configure([CONFIG])
                driver.set_amplitudes({1: 10_000})
                driver.output_on([1])
                change.arm(0)
                driver.heartbeat()  # the last frame
                silent_from = driver.last_write_ns
                if not change.seen.wait(PROFILE.link.watchdog_timeout_ms / 1000 + 2):
                    raise RuntimeError("the watchdog never tripped")
                to_zero.append(change.at_ns - silent_from)
                _wait_for_reannouncement(driver)
        finally:
            unsubscribe()
    return [
        figure_from_ns(
            f"sm2: watchdog trip, host silent ({PROFILE.link.watchdog_timeout_ms} ms timeout)",
            to_zero,
            target_ms=WATCHDOG_TARGET_MS,
            target_stat="max",
        )
    ]


def _wait_for_reannouncement(driver: ScienceMode2Stimulator) -> None:
    """The watchdog dropped the link; the device announces itself again and the driver
    answers and latches WATCHDOG. Until then the device answers nothing."""
    deadline = time.monotonic() + 5
    while True:
        try:
            if driver.status().faults & (FaultFlag.WATCHDOG | FaultFlag.RESET):
                return
        except DeviceTimeout:
            pass  # between the drop and the new handshake
        if time.monotonic() > deadline:
            raise RuntimeError("the device never announced itself again")
        time.sleep(0.01)


def figure_sm2_codec_throughput(context: BenchContext) -> list[Figure]:
    """Decode 1000 eight-channel StartChannelListMode frames (escapes included)."""
    n = context.trials(50, 10)
    message = StartChannelListMode(tuple(ChannelPulse(300 + c, 10 + c) for c in range(8)))
    stream = b"".join(message.encode(i % 256) for i in range(1000))
    samples: list[int] = []
    for _ in range(n):
        decoder = FrameDecoder()
        start = time.monotonic_ns()
        frames = decoder.feed(stream)
        samples.append(time.monotonic_ns() - start)
        assert len(frames) == 1000
    return [figure_from_ns("sm2: decode 1000 eight-channel frames", samples)]
