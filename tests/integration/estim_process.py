"""An ``estim`` command in its own process, for the tests where processes matter
(signals, a pty that another process serves, SIGKILL), or in this process with
:func:`invoke`. Shared by the integration tests.

Waits are bounded generously only so that a broken test cannot hang: never a timing
assertion.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from typer.testing import CliRunner

from estim.cli import app
from estim.errors import EstimError

ESTIM = str(Path(sys.executable).parent / "estim")
BOUND_S = 120  # only stops a broken test from hanging; never a timing assertion

ACKNOWLEDGE = (
    *("--acknowledge", "DEVICE_NO_CURRENT_MEASUREMENT"),
    *("--acknowledge", "DEVICE_NO_IMPEDANCE_MEASUREMENT"),
    # the profile's own warnings (estim profile check) are the session's too
    *("--acknowledge", "PROFILE_PROBE_AMPLITUDE"),
    *("--acknowledge", "PROFILE_WATCHDOG"),
    *("--acknowledge", "PROFILE_LEAKAGE"),
)
"""What ``estim session start`` on profiles/hasomed-rehastim2.toml must acknowledge."""


def invoke(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run a command in-process as ``estim`` would: estim errors become exit codes.

    Stdin is not a terminal: nobody is asked anything.
    """
    result = CliRunner().invoke(app, args, env=env)
    if isinstance(result.exception, EstimError):
        return result.exception.exit_code, result.output + str(result.exception)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


class Process:
    """An ``estim`` command whose output lines are collected as they come.

    ``columns`` sets the terminal width rich lays its tables out for; ``stdin`` may be
    a terminal (a pty) for the prompts that need one.
    """

    def __init__(self, *args: str, stdin: int | None = None, columns: int = 120) -> None:
        env = dict(os.environ, COLUMNS=str(columns))
        for name in ("ESTIM_DB", "ESTIM_LIMITS"):  # the machine's own settings stay out
            env.pop(name, None)
        self.proc = subprocess.Popen(
            [ESTIM, *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, text: str) -> str:
        """The first output line containing ``text``, once it has come."""
        deadline = time.monotonic() + BOUND_S
        with self._changed:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"{text!r} never came:\n{self.output}")
                if not self._changed.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise AssertionError(f"no {text!r} within {BOUND_S} s:\n{self.output}")

    def finish(self) -> int:
        """Wait for the process to end; its exit code."""
        code = self.proc.wait(timeout=BOUND_S)
        self._reader.join(timeout=BOUND_S)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def stop(self) -> None:
        """End it if it still runs (SIGTERM), and collect it."""
        if self.proc.poll() is None:
            self.proc.terminate()
        self.finish()

    def interrupt_after(self, *texts: str) -> int:
        """Wait for each of ``texts`` (:meth:`wait_for`), then Ctrl-C (SIGINT); the exit
        code. Whatever happens on the way, the process is stopped (:meth:`stop`)."""
        try:
            for text in texts:
                self.wait_for(text)
            self.proc.send_signal(signal.SIGINT)
            return self.finish()
        finally:
            self.stop()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)
