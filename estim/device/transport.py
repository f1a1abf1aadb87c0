"""Opening serial ports and translating pyserial's errors at the boundary.

Every driver reaches its device through :func:`open_link`, which opens any URL
:func:`serial.serial_for_url` understands (``/dev/ttyUSB0``, ``/dev/pts/5``,
``socket://host:port``, ``loop://``, and estim's in-process simulator ``sim://...``)
with the serial settings of the device profile, and returns a :class:`SerialLink`
whose methods raise only estim's :class:`~estim.errors.DeviceError` family:

- the port cannot be opened, vanishes, or reads/writes fail: :class:`DeviceDisconnected`;
- a write cannot complete in time: :class:`DeviceTimeout`;
- the URL or the settings are malformed: :class:`~estim.errors.InputError` (exit code 2).

The original pyserial exception is kept as ``__cause__``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
from typing import Any

import serial
from serial.serialutil import SerialException, SerialTimeoutException

from estim.device.profile import Link
from estim.errors import DeviceDisconnected, DeviceTimeout, InputError

try:
    import termios

    _TERMIOS_ERRORS: tuple[type[Exception], ...] = (termios.error,)
except ImportError:  # Windows: pyserial raises SerialException only
    _TERMIOS_ERRORS = ()

try:
    from serial.serialposix import Serial as _PosixSerial
except ImportError:  # Windows
    _PosixSerial = None

SIM_HANDLER_PACKAGE = "estim.device.simulator"

# How long a blocked reader waits before looking at its stop flag again.
DEFAULT_READ_TIMEOUT_S = 0.05
DEFAULT_WRITE_TIMEOUT_S = 1.0

# On a POSIX port a blocked reader is woken by cancel_read() through a pipe, so it need
# not wake on a timer to look at its stop flag: it waits this long at most.
POSIX_IDLE_WAIT_S = 1.0
_READ_CHUNK = 4096


def enable_sim_urls() -> None:
    """Let pyserial open ``sim://`` URLs (the simulator's handler is imported on use)."""
    if SIM_HANDLER_PACKAGE not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(SIM_HANDLER_PACKAGE)


def open_link(
    url: str,
    link: Link | None = None,
    *,
    read_timeout_s: float | None = DEFAULT_READ_TIMEOUT_S,
    write_timeout_s: float | None = DEFAULT_WRITE_TIMEOUT_S,
) -> SerialLink:
    """Open ``url`` with ``link``'s serial settings; raise estim errors only."""
    enable_sim_urls()
    if not isinstance(url, str) or not url.strip():
        raise InputError("no port given: pass a device path such as /dev/ttyUSB0 or a URL")
    options: dict[str, Any] = {"timeout": read_timeout_s, "write_timeout": write_timeout_s}
    if link is not None:
        options.update(
            baudrate=link.baudrate,
            bytesize=link.bytesize,
            parity=link.parity,
            stopbits=link.stopbits,
        )
    if "://" not in url:
        options["exclusive"] = True  # a second program on a stimulator port is a hazard
    try:
        try:
            port = serial.serial_for_url(url, **options)
        except _TERMIOS_ERRORS:
            if not (_is_pseudo_terminal(url) and options.get("parity", "N") != "N"):
                raise
            # A pseudo-terminal has no UART, so parity means nothing on it, and some
            # kernels refuse to set it: the first open succeeds because the other
            # settings change, a later open (only parity left to change) fails with
            # EINVAL. Open it as the line it really is.
            port = serial.serial_for_url(url, **{**options, "parity": "N"})
    except SerialTimeoutException as err:
        raise DeviceTimeout(f"{url}: timed out opening the port") from err
    except SerialException as err:
        raise DeviceDisconnected(
            f"{url}: cannot open the port ({err}); check that the device is plugged in, "
            "the path is right, and you may use it (on Linux: the 'dialout' group)"
        ) from err
    except ValueError as err:
        raise InputError(f"{url}: cannot use this port: {err}") from err
    except OSError as err:
        raise DeviceDisconnected(f"{url}: cannot open the port ({err.strerror})") from err
    except _TERMIOS_ERRORS as err:  # not an OSError: it would escape the boundary
        raise DeviceDisconnected(f"{url}: cannot set the port's line settings ({err})") from err
    return SerialLink(url, port)


def _is_pseudo_terminal(url: str) -> bool:
    path = os.path.realpath(url) if "://" not in url else ""
    return path.startswith(("/dev/pts/", "/dev/ttys"))


class SerialLink:
    """An open serial port whose errors are estim errors.

    ``read``/``write`` may be called from different threads at once (one reader, any
    number of writers serialised by the caller). After :meth:`close`, a blocked reader
    returns ``b""`` promptly instead of raising.
    """

    def __init__(self, url: str, port: Any) -> None:
        self.url = url
        self._port = port
        self._closing = threading.Event()
        # Held across each write and across close: a descriptor number read for a write
        # is never used after close() has released it, when the kernel may already
        # have given the same number to another file (the records database, say).
        self._io_lock = threading.Lock()
        # A port with a POSIX file descriptor (a tty, a pty, a USB serial adapter) is
        # read and written with one system call each, not through pyserial's loops
        # (see read_available and write); cancel_read() wakes a waiting reader through
        # this pipe.
        self._posix = _PosixSerial is not None and isinstance(port, _PosixSerial)
        self._wake_r = self._wake_w = -1
        self._wake_lock = threading.Lock()
        if self._posix:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)

    @property
    def port(self) -> Any:
        """The underlying pyserial object (for diagnostics only)."""
        return self._port

    @property
    def is_open(self) -> bool:
        return bool(self._port.is_open) and not self._closing.is_set()

    def write(self, data: bytes) -> None:
        with self._io_lock:
            self._write_locked(data)

    def _write_locked(self, data: bytes) -> None:
        if self._closing.is_set():
            raise DeviceDisconnected(f"{self.url}: the port is closed")
        if self._posix:
            data = self._write_posix(data)
            if not data:
                return
        try:
            written = self._port.write(data)
        except SerialTimeoutException as err:
            raise DeviceTimeout(f"{self.url}: write timed out (the line is blocked)") from err
        except (SerialException, OSError) as err:
            raise DeviceDisconnected(
                f"{self.url}: write failed, the port went away ({err})"
            ) from err
        except (TypeError, AttributeError) as err:  # pyserial after a concurrent close
            raise DeviceDisconnected(f"{self.url}: the port is closed") from err
        if written is not None and written != len(data):
            raise DeviceDisconnected(f"{self.url}: wrote {written} of {len(data)} bytes")

    def _write_posix(self, data: bytes) -> bytes:
        """One ``write(2)`` on the port's non-blocking descriptor; what it did not take.

        A frame is a few dozen bytes and the line is idle almost always, so this is all
        a write needs. pyserial's own write would follow it with a ``select`` for
        writability and its timeout bookkeeping. Whatever the descriptor does not take
        at once (a blocked line) goes through pyserial, which waits up to the write
        timeout.
        """
        fd = self._port.fd  # read each time: None once the port is closed
        if fd is None:
            raise DeviceDisconnected(f"{self.url}: the port is closed")
        try:
            written = os.write(fd, data)
        except (BlockingIOError, InterruptedError):
            return data
        except OSError as err:
            raise DeviceDisconnected(
                f"{self.url}: write failed, the port went away ({err})"
            ) from err
        return data[written:]

    def read_available(self) -> bytes:
        """Whatever has arrived, waiting at most the port's read timeout for one byte.

        On a POSIX port: one ``select`` on the port and the wake pipe, then one
        ``read`` of everything that has arrived (pyserial would ask how much is
        waiting, select and read one byte, then select and read the rest). The wait is
        at least :data:`POSIX_IDLE_WAIT_S` when the port's timeout is not zero, since
        :meth:`cancel_read` ends it at once: an idle reader does not wake on a timer.
        """
        if self._closing.is_set():
            return b""
        if self._posix:
            return self._read_posix()
        try:
            waiting = self._port.in_waiting
            return bytes(self._port.read(waiting if waiting > 0 else 1))
        except (SerialException, OSError) as err:
            if self._closing.is_set():
                return b""
            raise DeviceDisconnected(
                f"{self.url}: read failed, the port went away ({err})"
            ) from err
        except (TypeError, AttributeError) as err:  # pyserial after a concurrent close
            if self._closing.is_set():
                return b""
            raise DeviceDisconnected(f"{self.url}: the port is closed") from err

    def _read_posix(self) -> bytes:
        fd, wake = self._port.fd, self._wake_r
        timeout = self._port.timeout
        if timeout is not None and timeout > 0:
            timeout = max(timeout, POSIX_IDLE_WAIT_S)
        try:
            if fd is None or wake < 0:
                raise OSError(errno.EBADF, "the port is closed")
            ready, _, _ = select.select([fd, wake], [], [], timeout)
            if wake in ready:
                with contextlib.suppress(OSError):
                    os.read(wake, 1024)
                return b""
            if not ready:
                return b""
            data = os.read(fd, _READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return b""
        except (OSError, ValueError) as err:  # ValueError: select on a closed descriptor
            if self._closing.is_set():
                return b""
            raise DeviceDisconnected(
                f"{self.url}: read failed, the port went away ({err})"
            ) from err
        if not data:  # ready to read but nothing there: the device is gone (Linux)
            if self._closing.is_set():
                return b""
            raise DeviceDisconnected(
                f"{self.url}: read failed, the port went away (it reports readiness to "
                "read but returned no data)"
            )
        return data

    def discard_input(self) -> None:
        try:
            self._port.reset_input_buffer()
        except (SerialException, OSError) as err:
            raise DeviceDisconnected(f"{self.url}: the port went away ({err})") from err

    def cancel_read(self) -> None:
        """Wake a reader blocked in :meth:`read_available` (where pyserial supports it).

        A POSIX port's reader waits on this link's own wake pipe, not on pyserial's
        abort pipe: pyserial's is drained only by its own ``read`` (which this link
        does not use) and its write end blocks once full.
        """
        if self._posix:
            with self._wake_lock, contextlib.suppress(OSError):  # full: a wake is pending
                if self._wake_w >= 0:
                    os.write(self._wake_w, b"x")
            return
        cancel = getattr(self._port, "cancel_read", None)
        if cancel is not None:
            with contextlib.suppress(SerialException, OSError, TypeError, AttributeError):
                cancel()

    def close(self) -> None:
        """Close the port; never raises (the port may already be gone). Idempotent."""
        self._closing.set()
        self.cancel_read()
        with (
            self._io_lock,  # after any write in progress (at most the write timeout)
            contextlib.suppress(SerialException, OSError, TypeError, AttributeError),
        ):
            self._port.close()
        if self._posix:
            with self._wake_lock:
                wake_r, wake_w, self._wake_r, self._wake_w = self._wake_r, self._wake_w, -1, -1
            for fd in (wake_r, wake_w):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
