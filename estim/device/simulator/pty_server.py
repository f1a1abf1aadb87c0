"""Serve a simulated device on a pseudo-terminal, in real time.

:class:`PtyServer` opens a pty pair in raw mode and runs one thread that waits (with
``select``) for bytes from the host or the device's next timer, whichever comes first.
Any serial client opens the slave path (``/dev/pts/N``) exactly as it would open
``/dev/ttyUSB0``; estim's driver does so through :func:`serial.serial_for_url`.

The server keeps its own handle on the slave side so a client may close and reopen
the port. A ``disconnect`` fault closes both ends: the client's next read or write
fails as if a USB adapter had been pulled, while the device model keeps running (its
watchdog then stops the output). Stopping the server closes the device, which turns
every output off.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import termios
import threading
import tty
from types import TracebackType

from estim.clock import NS_PER_S
from estim.device.simulator.device import SimulatedDevice
from estim.errors import DeviceError

log = logging.getLogger(__name__)

# Even with no timer due, look at the device this often (drift, monitors).
_MAX_WAIT_NS = 5_000_000
# Bytes the client has not read pile up in the pty; beyond this the device drops them
# (a real UART's transmit buffer would overflow too).
_MAX_PENDING_OUT = 64 * 1024


class PtyServer:
    """Serve ``device`` on a fresh pseudo-terminal until :meth:`stop`."""

    def __init__(self, device: SimulatedDevice, *, close_device: bool = True) -> None:
        if device.clock.is_virtual:
            raise ValueError("a pty is real time: give the device a MonotonicClock")
        self.device = device
        self._close_device = close_device
        self._master: int | None = None
        self._slave: int | None = None
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._pending_out = bytearray()
        self._path: str | None = None
        self.error: BaseException | None = None

    @property
    def path(self) -> str:
        """The slave device path clients open (e.g. ``/dev/pts/5``)."""
        if self._path is None:
            raise RuntimeError("the server is not started")
        return self._path

    def start(self) -> str:
        """Open the pty, start serving, and return the slave path."""
        if self._thread is not None:
            raise RuntimeError("the server is already started")
        try:
            master, slave = os.openpty()
        except OSError as err:
            raise DeviceError(f"cannot open a pseudo-terminal: {err.strerror}") from err
        tty.setraw(slave)
        _park_line_speed(slave)
        flags = fcntl.fcntl(master, fcntl.F_GETFL)
        fcntl.fcntl(master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        self._master, self._slave = master, slave
        self._path = os.ttyname(slave)
        self._wake_r, self._wake_w = os.pipe()
        self.device.on_disconnect(self._wake)
        self._thread = threading.Thread(
            target=self._serve, name=f"estim-sim-pty {self._path}", daemon=True
        )
        self._thread.start()
        log.info("simulator %s serving on %s", self.device.name, self._path)
        return self._path

    def stop(self) -> None:
        """Stop serving, close the pty and (by default) the device. Idempotent."""
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._close_pty()
        for fd in (self._wake_r, self._wake_w):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = None
        if self._close_device:
            self.device.close()

    def __enter__(self) -> PtyServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def serving(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- the serving thread ----------------------------------------------------------

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"\0")

    def _serve(self) -> None:
        try:
            self._loop()
        except BaseException as err:  # a bug must not leave the output on
            self.error = err
            log.exception("simulator pty server failed; powering the device off")
            self.device.hardware.shut_down()
            self._close_pty()

    def _loop(self) -> None:
        device = self.device
        assert self._wake_r is not None
        while not self._stopping.is_set():
            now = device.clock.now_ns()
            deadline = device.next_deadline_ns()
            wait_ns = _MAX_WAIT_NS if deadline is None else min(_MAX_WAIT_NS, deadline - now)
            readers = [self._wake_r] + ([self._master] if self._master is not None else [])
            ready, _, _ = select.select(readers, [], [], max(0, wait_ns) / NS_PER_S)
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            if self._master is not None and self._master in ready:
                data = self._read_master()
                if data:
                    device.receive(data)
            device.tick()
            if self._slave is not None:
                _park_line_speed(self._slave)
            if device.disconnected:
                self._close_pty()
                continue
            self._write_master(device.transmit())

    def _read_master(self) -> bytes:
        assert self._master is not None
        try:
            return os.read(self._master, 4096)
        except BlockingIOError:
            return b""
        except OSError as err:
            if err.errno == errno.EIO:  # no slave open: cannot happen while we hold one
                return b""
            raise

    def _write_master(self, data: bytes) -> None:
        if self._master is None:
            return
        self._pending_out += data
        if not self._pending_out:
            return
        try:
            written = os.write(self._master, self._pending_out)
        except BlockingIOError:
            written = 0
        del self._pending_out[:written]
        if len(self._pending_out) > _MAX_PENDING_OUT:
            self.device.trace.record("link", what="overflow", dropped=len(self._pending_out))
            self._pending_out.clear()

    def _close_pty(self) -> None:
        for name in ("_master", "_slave"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)
                with contextlib.suppress(OSError):
                    os.close(fd)


# A pty has no UART, and some kernels refuse parity on one: a client's tcsetattr then
# succeeds only because other settings change with it. Once a client left the line at
# its own speed, the next client opening at the same settings (8E1 for ScienceMode2)
# changes nothing but parity and gets EINVAL. Keeping the slave's speed parked at an
# unused value makes every client's settings a change again. Only the speed is touched
# (a pty ignores it); a client's read settings (VMIN, VTIME, flags) are left alone.
_PARKED_SPEED = termios.B50


def _park_line_speed(fd: int) -> None:
    try:
        attrs = termios.tcgetattr(fd)
        if attrs[4] != _PARKED_SPEED or attrs[5] != _PARKED_SPEED:
            attrs[4] = attrs[5] = _PARKED_SPEED
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except (termios.error, OSError):
        pass  # the pty is closing
