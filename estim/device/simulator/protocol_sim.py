"""pyserial URL handler ``sim://``: a simulated device as an in-process serial port.

pyserial finds this module through ``serial.protocol_handler_packages`` (estim adds
``"estim.device.simulator"`` to it; see :func:`enable_sim_urls`), so
``serial.serial_for_url("sim://dev1")`` returns a port object wired straight to a
:class:`~estim.device.simulator.device.SimulatedDevice`: the real driver and codec run
against the simulator with no pty and no thread of the simulator's own.

URLs:

- ``sim://NAME``: an open device created in this process (``device.url``). This is
  how tests and the virtual-time controller attach a driver to a device they hold.
- ``sim://new?profile=estim-pf2&fault=SPEC&fault=SPEC&seed=1&trace=FILE``: a fresh
  real-time device owned by the port (closed, output off, when the port closes).
  ``profile`` is a built-in profile name or a file path (default ``estim-pf2``).

Time: with a real clock, ``read`` waits up to the port timeout, ticking the device so
its watchdog fires on time. With a :class:`~estim.clock.VirtualClock`, ``read`` never
waits (virtual time only moves when its owner advances it) and returns what the
device has sent so far.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

from estim.device.simulator.device import SimulatedDevice, find_device
from estim.device.transport import enable_sim_urls
from estim.errors import EstimError

# Longest a real-time read waits before ticking the device again.
_TICK_S = 0.001


class Serial(SerialBase):  # type: ignore[misc]  # pyserial is untyped
    """A pyserial port whose far end is a simulated device in this process."""

    is_open: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._device: SimulatedDevice | None = None
        self._owns_device = False
        self._buffer = bytearray()
        self._cond = threading.Condition()
        self._cancelled = False
        super().__init__(*args, **kwargs)

    # --- SerialBase obligations ------------------------------------------------------

    def open(self) -> None:
        if self.is_open:
            raise SerialException("port is already open")
        if self._port is None:
            raise SerialException("port must be configured before it can be used")
        self._device, self._owns_device = self._attach(self.portstr)
        self._device.on_disconnect(self._notify)
        self._buffer.clear()
        self.is_open = True

    def close(self) -> None:
        if self.is_open:
            self.is_open = False
            self._notify()
            if self._owns_device and self._device is not None:
                self._device.close()
        self._device = None

    def _reconfigure_port(self, *args: Any, **kwargs: Any) -> None:
        """Serial settings mean nothing in-process."""

    @property
    def in_waiting(self) -> int:
        device = self._live_device()
        self._pull(device)
        return len(self._buffer)

    def read(self, size: int = 1) -> bytes:
        device = self._live_device()
        self._cancelled = False
        if size <= 0:
            return b""
        virtual = device.clock.is_virtual
        timeout = self._timeout
        if len(self._buffer) >= size:
            # Already here (``in_waiting`` has just pulled it): nothing to wait for. The
            # device was ticked by that pull (in virtual time at this very instant), and
            # the next read ticks it again.
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
            return data
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._pull(device)
            if len(self._buffer) >= size or (virtual and self._buffer):
                break
            if device.disconnected:
                if self._buffer:
                    break
                raise SerialException("simulated device disconnected (port vanished)")
            if virtual or timeout == 0 or self._cancelled or not self.is_open:
                break
            remaining = _TICK_S if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                break
            with self._cond:
                self._cond.wait(min(_TICK_S, remaining))
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def write(self, data: bytes | bytearray | memoryview) -> int:
        device = self._live_device()
        if device.disconnected:
            raise SerialException("write failed: simulated device disconnected (port vanished)")
        payload = bytes(data)
        device.receive(payload)
        if not device.clock.is_virtual:  # in virtual time no read ever waits
            self._notify()
        return len(payload)

    def flush(self) -> None:
        self._live_device()

    def reset_input_buffer(self) -> None:
        device = self._live_device()
        self._pull(device)
        self._buffer.clear()

    def reset_output_buffer(self) -> None:
        self._live_device()

    def cancel_read(self) -> None:
        self._cancelled = True
        self._notify()

    @property
    def out_waiting(self) -> int:
        return 0

    def _update_break_state(self) -> None:
        pass

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass

    @property
    def cts(self) -> bool:
        return True

    @property
    def dsr(self) -> bool:
        return True

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return True

    # --- internals -----------------------------------------------------------------

    def _live_device(self) -> SimulatedDevice:
        if not self.is_open or self._device is None:
            raise PortNotOpenError()
        if self._device.closed:
            raise SerialException("simulated device was shut down")
        return self._device

    def _pull(self, device: SimulatedDevice) -> None:
        device.tick()
        self._buffer += device.transmit()

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    @staticmethod
    def _attach(url: str) -> tuple[SimulatedDevice, bool]:
        parts = urlsplit(url)
        if parts.scheme.lower() != "sim":
            raise SerialException(f"expected a sim:// URL, got {url!r}")
        name = unquote(parts.netloc or parts.path.lstrip("/"))
        options = parse_qs(parts.query, keep_blank_values=True)
        if name != "new":
            if parts.query:
                raise SerialException(
                    f"{url!r}: options are only accepted with sim://new?... "
                    "(an existing device already has its faults)"
                )
            device = find_device(name)
            if device is None:
                raise SerialException(
                    f"no simulated device {name!r} in this process; "
                    "use sim://new?profile=estim-pf2 for a fresh one"
                )
            return device, False
        return _spawn(url, options), True


def _spawn(url: str, options: dict[str, list[str]]) -> SimulatedDevice:
    from pathlib import Path

    from estim.device.profile import builtin_profile, load_profile

    unknown = set(options) - {"profile", "fault", "seed", "trace"}
    if unknown:
        raise SerialException(f"{url!r}: unknown option(s) {', '.join(sorted(unknown))}")
    profile_ref = options.get("profile", ["estim-pf2"])[-1]
    try:
        path = Path(profile_ref)
        profile = load_profile(path) if path.suffix else builtin_profile(profile_ref)
        seed = int(options.get("seed", ["0"])[-1])
        trace = options.get("trace", [None])[-1]
        return SimulatedDevice(profile, faults=options.get("fault", []), seed=seed, trace=trace)
    except (EstimError, ValueError) as err:
        raise SerialException(f"{url!r}: {err}") from err


# pyserial's serial_for_url looks this module up by name and instantiates ``Serial``.
__all__ = ["Serial", "enable_sim_urls"]
