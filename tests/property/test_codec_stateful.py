"""Stateful fuzzing: the real driver and codec against the simulator, in virtual time.

Hypothesis drives random sequences of host commands (valid and out of limit), time
passing (sometimes past the watchdog), and injected faults (open electrode, reset,
noisy line) through ``WireStimulator`` -> COBS/CRC frames -> ``sim://`` -> the device
model, and checks the device's safety invariants after every step.
"""

from __future__ import annotations

import contextlib

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from estim.clock import NS_PER_MS, VirtualClock
from estim.device.base import ChannelConfig, FaultFlag
from estim.device.profile import builtin_profile
from estim.device.simulator import SimulatedDevice
from estim.device.wire.driver import WireStimulator
from estim.errors import DeviceError, DeviceRejected
from estim.protocols.models import ShapeKind

PF2 = builtin_profile("estim-pf2")
MAX_UA = PF2.output.amplitude_max_ua
STEP_UA = PF2.output.amplitude_resolution_ua

amplitudes = st.one_of(
    st.integers(0, MAX_UA // STEP_UA).map(lambda n: n * STEP_UA),
    st.integers(0, MAX_UA + 10 * STEP_UA),  # off-step and over-limit values too
)
widths = st.integers(3, 50).map(lambda n: n * 10)  # 30..500 us: some beyond 50..450
periods = st.sampled_from([9_000, 10_000, 20_000, 28_572, 500_000, 600_000])


class DriverAgainstSimulator(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = VirtualClock()
        self.device = SimulatedDevice(PF2, clock=self.clock, seed=1)
        self.driver = WireStimulator(PF2, self.device.url, clock=self.clock)
        self.driver.open()
        self.lossy = False

    # --- host actions --------------------------------------------------------------

    @rule(channel=st.integers(1, 2), width=widths, period=periods)
    def configure(self, channel: int, width: int, period: int) -> None:
        config = ChannelConfig(channel, ShapeKind.SYMMETRIC_BIPHASIC, (width, width), 0, period)
        try:
            self.driver.configure([config])
        except DeviceRejected:
            pass
        except DeviceError:
            assert self.lossy

    @rule(channel=st.integers(1, 2), value=amplitudes)
    def set_amplitude(self, channel: int, value: int) -> None:
        before = self.device.hardware.status().channel(channel).commanded_ua
        try:
            self.driver.set_amplitudes({channel: value})
        except DeviceRejected:
            # Refused, never clamped: the commanded value did not move.
            assert value > MAX_UA or value % STEP_UA
            assert self.device.hardware.status().channel(channel).commanded_ua == before
        except DeviceError:
            assert self.lossy

    @rule(channels=st.sets(st.integers(1, 2), min_size=1))
    def output_on(self, channels: set[int]) -> None:
        with contextlib.suppress(DeviceError):
            self.driver.output_on(sorted(channels))

    @rule()
    def stop_all(self) -> None:
        try:
            self.driver.stop_all()
        except DeviceError:
            assert self.lossy
            return
        assert not self.device.hardware.any_output_on

    @rule()
    def output_off(self) -> None:
        try:
            self.driver.output_off()
        except DeviceError:
            assert self.lossy
            return
        assert not self.device.hardware.any_output_on

    @rule()
    def clear_fault(self) -> None:
        with contextlib.suppress(DeviceError):
            self.driver.clear_fault()

    @rule()
    def status_matches_the_truth(self) -> None:
        try:
            status = self.driver.status()
        except DeviceError:
            assert self.lossy
            return
        truth = {o.channel: o for o in self.device.hardware.outputs()}
        for channel in status.channels:
            assert channel.output_on == truth[channel.channel].output_on
            assert channel.commanded_ua <= MAX_UA

    @rule(ms=st.sampled_from([1, 20, 49, 120, 260]))
    def time_passes(self, ms: int) -> None:
        self.clock.advance(ms * NS_PER_MS)
        self.driver.poll_events()

    # --- faults ----------------------------------------------------------------------

    @rule(channel=st.integers(1, 2))
    def electrode_falls_off(self, channel: int) -> None:
        self.device.inject(f"open:ch={channel}")

    @rule(channel=st.integers(1, 2))
    def electrode_back(self, channel: int) -> None:
        self.device.inject(f"close:ch={channel}")

    @rule()
    def device_resets(self) -> None:
        self.device.inject("reset")

    @precondition(lambda self: not self.lossy)
    @rule()
    def line_gets_noisy(self) -> None:
        self.device.inject("corrupt:p=0.02")
        self.lossy = True

    # --- invariants ---------------------------------------------------------------

    @invariant()
    def never_beyond_the_hardware_limit(self) -> None:
        for output in self.device.hardware.outputs():
            assert output.amplitude_ua <= MAX_UA
            assert output.output_on or output.amplitude_ua == 0

    @invariant()
    def a_latched_fault_means_output_off(self) -> None:
        latched = self.device.hardware.latched_faults() & ~FaultFlag.COMPLIANCE
        if latched:
            assert not self.device.hardware.any_output_on

    @invariant()
    def output_needs_a_configured_channel(self) -> None:
        for output in self.device.hardware.outputs():
            if output.output_on:
                assert self.device.hardware.channel_config(output.channel) is not None

    def teardown(self) -> None:
        self.driver.close()
        # The close's STOP ALL may have been lost on a noisy line: the watchdog is the
        # device's own backstop, and it must leave the output off.
        self.clock.advance(PF2.link.watchdog_timeout_ms * NS_PER_MS)
        assert not self.device.hardware.any_output_on
        self.device.close()


TestDriverAgainstSimulator = DriverAgainstSimulator.TestCase
TestDriverAgainstSimulator.settings = settings(stateful_step_count=40)
