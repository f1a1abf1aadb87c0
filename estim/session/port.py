"""The machine's device port over a real driver (see :class:`DriverPort`)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from estim.device.base import Stimulator
from estim.errors import CommandSuperseded
from estim.safety.interlocks import AmplitudeCommand, AmplitudeLimit


class DriverPort:
    """The machine's :class:`~estim.session.machine.DevicePort` over a real driver.

    Keeps the controller's own record of what it commanded (which the final output
    check and the interlocks compare with what the device reports). The record says
    *off* before an off command is sent, and *on* only after an on command succeeded:
    when a command fails half-way, the record errs towards what the controller
    intended, and the runtime interlocks judge what the device actually did.
    Every amplitude passes the amplitude interlock before it is sent.

    A command that an emergency stop overtook (the driver did not send it:
    :class:`~estim.errors.CommandSuperseded`) is not an error of the link: the output
    is off by that stop, the record says so, and the loop records the emergency stop
    when it next looks. Only the runner's own emergency stop explains it; without one
    the error goes on to the caller.
    """

    def __init__(
        self,
        stimulator: Stimulator,
        channels: tuple[int, ...],
        amplitude: AmplitudeLimit,
        emergency: threading.Event,
        on_reply: Callable[[], None],
    ) -> None:
        self._stim = stimulator
        self.channels = channels
        self._amplitude = amplitude
        self._emergency = emergency
        self._on_reply = on_reply
        self.link_up = False  # connected, identified and configured
        self.opened = False  # the driver's port is open (commands can be sent)
        self._enabled = False
        self._commanded = dict.fromkeys(channels, 0)
        # What the device's last status said, whatever we commanded: a fault is not
        # acknowledged while the device still reports output on (a stuck stage).
        self.device_reports_output = False

    @property
    def output_enabled(self) -> bool:
        return self._enabled

    @property
    def commanded_ua(self) -> int:
        return max(self._commanded.values(), default=0)

    def commanded(self, channel: int) -> int:
        return self._commanded.get(channel, 0) if self._enabled else 0

    def zero_all(self) -> None:
        self._forget_output()
        if self.opened:
            self._stim.stop_all()
            self._on_reply()

    def switch_off(self) -> None:
        self._forget_output()
        if self.opened and self.sent(self._stim.output_off):
            self._on_reply()

    def switch_on(self, amplitude_ua: int) -> None:
        def on() -> None:
            self._set(amplitude_ua, titration=True)
            self._stim.output_on(list(self.channels))

        if self.sent(on):
            self._enabled = True
            self._on_reply()
            self._stop_again_if_pressed()

    def set_amplitude(self, amplitude_ua: int) -> None:
        """A titration step (the step limit applies)."""
        if self.sent(lambda: self._set(amplitude_ua, titration=True)):
            self._stop_again_if_pressed()

    def apply_envelope(self, amplitude_ua: int) -> None:
        """An envelope update from the schedule (ceiling applies, not the step)."""
        if self.sent(lambda: self._set(amplitude_ua, titration=False)):
            self._stop_again_if_pressed()

    def sent(self, command: Callable[[], None]) -> bool:
        """Run ``command`` (driver calls); False if the runner's emergency stop overtook
        it (the output is off by that stop and the record says so). Without such a stop
        the driver's :class:`~estim.errors.CommandSuperseded` goes on to the caller."""
        try:
            command()
        except CommandSuperseded:
            if not self._emergency.is_set():
                raise
            self._forget_output()
            return False
        return True

    def link_lost(self) -> None:
        """The port is gone: nothing can be on *by our command* (the device's watchdog
        turns its output off by itself)."""
        self.link_up = False
        self.opened = False
        self.device_reports_output = False  # unknown now; the device's watchdog decides
        self._forget_output()

    def _set(self, amplitude_ua: int, *, titration: bool) -> None:
        for channel in self.channels:
            command = AmplitudeCommand(channel, self._commanded[channel], amplitude_ua, titration)
            trip = self._amplitude.should_trip(command)
            if trip is not None:
                raise trip.as_error()
        self._stim.set_amplitudes(dict.fromkeys(self.channels, amplitude_ua))
        self._commanded = dict.fromkeys(self.channels, amplitude_ua)
        self._on_reply()

    def _forget_output(self) -> None:
        self._enabled = False
        self._commanded = dict.fromkeys(self.channels, 0)

    def _stop_again_if_pressed(self) -> None:
        # An emergency stop pressed while this command was in flight may have reached
        # the device before it; stop again so nothing we sent outlives the stop.
        if self._emergency.is_set():
            self._stim.stop_all()
