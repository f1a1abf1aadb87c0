"""Who is still running a session: an OS file lock held for the session's lifetime.

A session row with no outcome is either running right now or was left behind by a
process that died (SIGKILL, power cut, crash). The recorder holds an exclusive
``flock`` on a small file named after the session while it is open; the kernel drops
the lock the instant the process dies, however it dies. Recovery tries the lock
without waiting: if it gets it, nobody is running the session and it is marked
interrupted; if not, the session is alive and left alone. So running ``estim report``
in a second terminal never cuts a live session short.

Locks are per machine: a session opened on another workstation (shared PostgreSQL
store) is never judged from here.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from estim.errors import RecordsError

_MODE = 0o600


class SessionLease:
    """An exclusive lock on ``<dir>/<uid>.lock``; released by :meth:`release` or death."""

    def __init__(self, directory: Path, uid: str) -> None:
        self.path = directory / f"{uid}.lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock without waiting; False if another process holds it."""
        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, _MODE)
        except OSError as err:
            raise RecordsError(
                f"{self.path}: cannot create the session lock ({err.strerror})"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as err:
            os.close(fd)
            raise RecordsError(f"{self.path}: cannot lock ({err.strerror})") from err
        self._fd = fd
        return True

    def release(self, *, remove: bool = True) -> None:
        """Drop the lock; by default remove the file (the session is over)."""
        if self._fd is None:
            return
        try:
            if remove:
                self.path.unlink(missing_ok=True)
        finally:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the flock
