"""The device side of one wire protocol, plugged onto the protocol-neutral hardware model.

A :class:`Personality` turns bytes from the host into calls on a
:class:`~estim.device.simulator.hardware.SimulatedStimulator` and the results (and the
firmware's unsolicited events) into bytes for the host. It does no I/O and never
sleeps: the transport (a pty server, the in-process ``sim://`` port) hands it bytes
with :meth:`Personality.feed`, lets time pass with :meth:`Personality.poll`, and
collects what it wants to send with :meth:`Personality.take_output`. Byte-level faults
(drop, corrupt, delay, disconnect) are applied by the transport around it, so a
personality only ever sees what a real UART would have delivered.

Personalities are found by the profile's ``link.wire_protocol`` in :data:`PERSONALITIES`
(import paths, loaded on first use), exactly like drivers in
:mod:`estim.device.registry`. See docs/simulator.md for how to add one.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from estim.device.simulator.hardware import SimulatedStimulator
from estim.errors import InputError


class Personality(ABC):
    """The firmware's protocol layer for one wire protocol.

    Contract for implementers:

    - :meth:`feed` may receive any chunking of the byte stream (one byte at a time,
      half a frame, three frames and some garbage) and must behave identically.
    - Every *valid* frame calls ``self.hardware.frame_received()`` (that re-arms the
      watchdog) and ``self.trace_frame(...)`` before it is acted on.
    - Firmware refusals (:class:`~estim.device.simulator.hardware.Refusal`) become the
      protocol's negative reply; they never propagate out of :meth:`feed`.
    - :meth:`poll` drains ``self.hardware.take_events()`` into the protocol's
      unsolicited messages (if it has any) and runs protocol timers (announcements).
    - :meth:`on_power_cycle` forgets protocol state (sequence numbers, reply cache,
      half-received frames) after the hardware restarted.
    """

    wire_protocol: ClassVar[str]
    """The ``link.wire_protocol`` name this personality speaks."""

    def __init__(self, hardware: SimulatedStimulator) -> None:
        self.hardware = hardware
        self._output = bytearray()
        self.inject_fault: Callable[[str], None] | None = None
        """Set by the simulator: inject a fault spec (for a simulator-only command)."""

    @abstractmethod
    def feed(self, data: bytes) -> None:
        """Bytes from the host, in whatever chunks the line delivered them."""

    @abstractmethod
    def poll(self, now_ns: int) -> None:
        """Time has reached ``now_ns``: send due unsolicited frames, run timers."""

    def next_deadline_ns(self) -> int | None:
        """When :meth:`poll` must next run for a protocol timer (None: none pending)."""
        return None

    def on_power_cycle(self) -> None:
        """The hardware restarted: drop protocol state (override to do more)."""
        self._output.clear()

    def take_output(self) -> bytes:
        """Bytes for the host produced since the last call."""
        data = bytes(self._output)
        self._output.clear()
        return data

    # --- helpers for implementations -------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue bytes for the host."""
        self._output += data

    def trace_frame(self, direction: str, raw: bytes, **fields: Any) -> None:
        """Trace one frame (``direction`` "in" from the host, "out" to it)."""
        self.hardware.trace.record(
            "frame", direction=direction, protocol=self.wire_protocol, hex=raw.hex(), **fields
        )


# wire_protocol name -> "module:ClassName"
PERSONALITIES: dict[str, str] = {
    "estim-wire/1": "estim.device.wire.personality:WirePersonality",
    "sciencemode2": "estim.device.sciencemode2.personality:ScienceMode2Personality",
}


def register_personality(wire_protocol: str, target: str) -> None:
    """Add or replace a personality: ``target`` is ``"package.module:ClassName"``."""
    PERSONALITIES[wire_protocol] = target


def personality_class(wire_protocol: str) -> type[Personality]:
    """The personality class for ``wire_protocol`` (imported on first use)."""
    try:
        target = PERSONALITIES[wire_protocol]
    except KeyError:
        known = ", ".join(sorted(PERSONALITIES))
        raise InputError(
            f"the simulator cannot speak wire protocol {wire_protocol!r}; known: {known}"
        ) from None
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and module_name.startswith(err.name):
            raise InputError(
                f"the simulator personality for {wire_protocol!r} ({target}) is not installed"
            ) from err
        raise
    cls = getattr(module, class_name)
    if not (isinstance(cls, type) and issubclass(cls, Personality)):
        raise TypeError(f"{target} is not a Personality")
    return cls
