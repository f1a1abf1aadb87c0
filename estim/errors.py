"""One exception hierarchy for estim, rooted at :class:`EstimError`.

Errors from libraries (pyserial, pydantic, tomllib, SQLAlchemy) are translated into
these classes at the boundary where they cross into estim, with ``raise ... from err``,
so callers catch estim's errors only. Every message says what was wrong, the limit, and
what to do about it.

The command line maps each family to an exit code (see :data:`EXIT_CODES`):
0 success, 1 a check found blocking problems, 2 bad usage or invalid input,
3 device or communication failure, 4 session ended by an interlock or emergency stop.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input: where, what, the limit, and how to fix it."""

    location: str
    message: str
    value: object = None
    limit: str | None = None
    fix: str | None = None
    source: str | None = None

    def __str__(self) -> str:
        parts = [f"{self.location}: {self.message}"]
        if self.value is not None:
            shown = repr(self.value) if isinstance(self.value, str) else str(self.value)
            parts.append(f"got {shown}")
        if self.limit:
            parts.append(f"limit {self.limit}")
        if self.fix:
            parts.append(f"fix: {self.fix}")
        return "; ".join(parts)


class EstimError(Exception):
    """Root of every error estim raises on purpose."""

    exit_code = 1


# --- input --------------------------------------------------------------------------


class InputError(EstimError, ValueError):
    """A file, argument or value is malformed or out of range. Nothing was changed.

    Carries one :class:`Problem` per thing wrong, so a user fixes them all in one go.
    """

    exit_code = 2

    def __init__(self, summary: str, problems: list[Problem] | None = None) -> None:
        self.summary = summary
        self.problems = list(problems or [])
        super().__init__(self._render())

    def _render(self) -> str:
        if not self.problems:
            return self.summary
        lines = [self.summary] + [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class SpecVersionError(InputError):
    """A file declares a newer ``spec_version`` than this estim understands."""


class NotFoundError(InputError):
    """A named thing (protocol, patient, session, file) does not exist."""


# --- safety -------------------------------------------------------------------------


class SafetyError(EstimError):
    """A safety rule refused an action. Output is (or stays) off."""

    exit_code = 1


class LimitExceeded(SafetyError, ValueError):
    """A value is beyond a limit. Refused, never clamped."""

    def __init__(self, message: str, *, value: object = None, limit: object = None) -> None:
        self.value = value
        self.limit = limit
        super().__init__(message)


class PreflightBlocked(SafetyError):
    """Static checks or preflight found blocking findings; the session may not start."""

    def __init__(self, message: str, findings: list[object] | None = None) -> None:
        self.findings = list(findings or [])
        super().__init__(message)


class InterlockTripped(SafetyError):
    """A runtime interlock tripped; output was zeroed and FAULT latched."""

    exit_code = 4

    def __init__(self, interlock_id: str, reason: str) -> None:
        self.interlock_id = interlock_id
        self.reason = reason
        super().__init__(f"{interlock_id}: {reason}")


# --- device -------------------------------------------------------------------------


class DeviceError(EstimError):
    """The stimulator or the link to it failed."""

    exit_code = 3


class DeviceTimeout(DeviceError, TimeoutError):
    """No valid reply arrived within the allowed time."""


class DeviceDisconnected(DeviceError, ConnectionError):
    """The port went away or could not be opened."""


class DeviceRejected(DeviceError):
    """The device refused a command (NACK) with an error code."""

    def __init__(self, message: str, *, code: int, code_name: str = "") -> None:
        self.code = code
        self.code_name = code_name
        super().__init__(message)


class DeviceFaulted(DeviceError):
    """The device reports a latched fault (over-current, open circuit, watchdog...)."""

    def __init__(self, message: str, *, flags: int = 0) -> None:
        self.flags = flags
        super().__init__(message)


class ProtocolError(DeviceError):
    """Bytes on the wire do not form a valid frame or reply."""


class IdentityMismatch(DeviceError):
    """The connected device is not the one the profile describes."""


class CommandSuperseded(DeviceError):
    """A command was not sent because an emergency stop (STOP ALL) reached the device
    first: the output is off by that stop, not because the link failed."""


# --- session ------------------------------------------------------------------------


class SessionError(EstimError):
    """The session controller refused or ended something."""

    exit_code = 4


class InvalidTransition(SessionError):
    """A trigger is not allowed in the current state (the table says no)."""

    exit_code = 2


class GuardRefused(InvalidTransition):
    """The table allows the trigger here, but one of its guards does not hold right now
    (for example amplitude up at the ceiling). Nothing was changed."""


class EmergencyStopped(SessionError):
    """The session was ended by an emergency stop."""


class ControllerError(SessionError):
    """Something failed inside the controller itself: a bug, not the device or the input.

    A person's command that ends this way is answered with this error only after the
    loop has stopped the output and latched FAULT; the original error is its
    ``__cause__``.
    """


# --- records ------------------------------------------------------------------------


class RecordsError(EstimError):
    """The records store refused or failed an operation."""

    exit_code = 2


class ChainBroken(RecordsError):
    """A session's hash-chained event log does not verify."""

    def __init__(self, message: str, *, sequence: int) -> None:
        self.sequence = sequence
        super().__init__(message)


EXIT_CODES = {
    "ok": 0,
    "blocked": 1,
    "invalid_input": 2,
    "device": 3,
    "session_stopped": 4,
}

EXIT_STOPPED = EXIT_CODES["session_stopped"]
"""A person stopped the command (Ctrl-C at the bench or at the unit confirmation)."""
