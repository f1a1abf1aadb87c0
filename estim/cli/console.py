"""The clinician's console: live session display, keys, and signals as emergency stops.

:func:`run_console` runs a :class:`~estim.session.runner.SessionRunner`'s control loop
in its own thread and, in the main thread, shows the session live and turns keys and
signals into commands. The control loop never waits for the screen: the display
only reads the runner's published snapshot (:meth:`SessionRunner.view`).

- On a terminal: a live panel (state, phase, cycle n of N, time left, commanded and
  measured current, an unmistakable output-on indicator) redrawn ten times a second,
  and single-key commands (see :data:`KEYS`).
- Piped or ``--plain``: one line per change of state or phase, and a progress line
  every few seconds, so logs and CI read as a story.
- Ctrl-C, SIGTERM, SIGHUP and SIGQUIT are emergency stops, never a silent exit. So are
  the space bar and Esc. A failing display stops the session too.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from types import FrameType

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from estim.errors import EstimError
from estim.safety.interlocks import CommunicationLoss
from estim.session.runner import SessionRunner, SessionView
from estim.session.states import State, Trigger
from estim.session.summary import SessionSummary

REFRESH_PER_S = 10
PLAIN_PROGRESS_EVERY_S = 5
AMPLITUDE_KEY_INTERVAL_S = 0.4
"""The amplitude-up key acts at most once in this interval: a held key's auto-repeat
(typically 25-30 characters a second) must not walk the amplitude up. Commercial units
step once per press, without auto-repeat (facts sheet: "Fixed small amplitude steps").
The down key is never held back: lowering moves towards safety."""


@dataclass(frozen=True, slots=True)
class Key:
    keys: tuple[str, ...]
    label: str
    action: str


KEYS: tuple[Key, ...] = (
    Key((" ", "\x1b"), "space/Esc", "EMERGENCY STOP"),
    Key(("+", "=", "u"), "+", "amplitude up one step"),
    Key(("-", "_", "d"), "-", "amplitude down one step"),
    Key(("c", "\r", "\n"), "c", "confirm amplitude"),
    Key(("s",), "s", "start"),
    Key(("p",), "p", "pause / resume"),
    Key(("q",), "q", "stop (ramp down)"),
    Key(("a",), "a", "acknowledge fault"),
)


# --- rendering -------------------------------------------------------------------------


def ma(value_ua: int | None) -> str:
    """Microamps as milliamps for a person: 12345 -> '12.35 mA'."""
    if value_ua is None:
        return "n/a"
    return f"{value_ua / 1000:.2f} mA"


def mm_ss(value_us: int) -> str:
    seconds = value_us // 1_000_000
    return f"{seconds // 60:d}:{seconds % 60:02d}"


LINK_LOST = "link lost"


def link_lost(view: SessionView) -> bool:
    """Whether the link to the device is gone (the runner closed a failed link, or the
    communication-loss interlock tripped).

    The view's device readings (measured current, output reported on) are then the
    last ones received before the loss, not the device's state now: they must not be
    shown as if they were.
    """
    if view.link_lost:
        return True
    return view.fault is not None and view.fault.interlock_id == CommunicationLoss.ID


def measured_text(view: SessionView) -> str:
    return f"unknown ({LINK_LOST})" if link_lost(view) else ma(view.measured_ua)


def output_indicator(view: SessionView) -> Text:
    """Shown whenever output is non-zero or enabled (IEC 60601-2-10 output indicator).

    With the link lost, the device's output is not known (its watchdog is what stops
    it): the indicator says so rather than repeat the last reading.
    """
    if link_lost(view):
        return Text(f" OUTPUT UNKNOWN: {LINK_LOST} ", style="bold black on yellow")
    live = view.output_on or view.commanded_ua > 0 or view.output_enabled
    if live:
        return Text(" OUTPUT ON ", style="bold white on red")
    return Text(" output off ", style="bold black on green")


def phase_text(view: SessionView) -> str:
    if view.state is State.RUNNING and view.phase is not None:
        return view.phase.value.replace("_", " ")
    return "-"


def cycle_text(view: SessionView) -> str:
    if view.cycle is None or not view.cycles:
        return "-"
    return f"{view.cycle} of {view.cycles}"


def render_view(view: SessionView, *, keys: bool) -> Panel:
    """The live panel for one snapshot."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_column(style="bold")
    grid.add_column()
    state_style = "bold red" if view.state is State.FAULT else "bold"
    grid.add_row(
        "state", Text(view.state.value, style=state_style), "output", output_indicator(view)
    )
    grid.add_row("phase", phase_text(view), "cycle", cycle_text(view))
    grid.add_row("time left", mm_ss(view.time_left_us), "elapsed", mm_ss(view.schedule_elapsed_us))
    grid.add_row("commanded", ma(view.commanded_ua), "measured", measured_text(view))
    level = view.confirmed_ua if view.confirmed_ua is not None else view.titration_ua
    grid.add_row(
        "amplitude", ma(level), "ceiling", f"{ma(view.ceiling_ua)} (step {ma(view.step_ua)})"
    )
    parts: list[Table | Text] = [grid]
    if view.fault is not None:
        parts.append(Text(f"FAULT {view.fault}", style="bold red"))
    if view.message:
        parts.append(Text(view.message, style="italic"))
    if keys:
        help_line = "  ".join(f"[{k.label}] {k.action}" for k in KEYS)
        parts.append(Text(help_line, style="dim"))
    return Panel(Group(*parts), title="estim session", border_style=_border(view))


def _border(view: SessionView) -> str:
    if view.state is State.FAULT:
        return "red"
    return "yellow" if view.output_on or view.commanded_ua else "green"


def plain_line(view: SessionView) -> str:
    """One line of progress for logs and pipes."""
    if link_lost(view):
        out = f"output UNKNOWN ({LINK_LOST})"
    elif view.output_on or view.commanded_ua or view.output_enabled:
        out = "OUTPUT ON"
    else:
        out = "output off"
    fault = f" | FAULT {view.fault}" if view.fault is not None else ""
    return (
        f"{view.state.value:<10} phase {phase_text(view):<9} cycle {cycle_text(view):<9} "
        f"left {mm_ss(view.time_left_us)} | commanded {ma(view.commanded_ua)} "
        f"measured {measured_text(view)} | {out}{fault}"
    )


# --- keys --------------------------------------------------------------------------------


class AmplitudeKeyGate:
    """Lets the amplitude-up key through once per :data:`AMPLITUDE_KEY_INTERVAL_S`.

    A terminal reports no key release, so a held key arrives as a stream of repeats;
    any amplitude key within the interval of the last one is dropped, and the stream
    must pause for the interval before the next step counts.
    """

    def __init__(
        self,
        interval_s: float = AMPLITUDE_KEY_INTERVAL_S,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self._now = now
        self._last: float | None = None

    def admit(self) -> bool:
        now = self._now()
        last, self._last = self._last, now
        return last is None or now - last >= self.interval_s


def key_action(
    runner: SessionRunner, key: str, clinician: str, gate: AmplitudeKeyGate | None = None
) -> str | None:
    """Carry out one key press; returns a message for the screen (or None)."""
    if key in KEYS[0].keys:
        runner.emergency_stop("key")
        return "emergency stop: all output zeroed"
    state = runner.view().state
    trigger: Trigger | None = None
    data: dict[str, str] = {}
    if key in ("+", "=", "u"):
        trigger = Trigger.AMPLITUDE_UP
    elif key in ("-", "_", "d"):
        trigger = Trigger.AMPLITUDE_DOWN
    elif key in ("c", "\r", "\n"):
        trigger = Trigger.CONFIRM_AMPLITUDE
    elif key == "s":
        trigger = Trigger.START
    elif key == "p":
        trigger = Trigger.RESUME if state is State.PAUSED else Trigger.PAUSE
    elif key == "q":
        trigger = Trigger.STOP
    elif key == "a":
        trigger = Trigger.ACKNOWLEDGE_FAULT
        data["by"] = clinician
    if trigger is None:
        return None
    # Only raising is held back: every press (or repeat) of the down key lowers at once.
    if trigger is Trigger.AMPLITUDE_UP and gate is not None and not gate.admit():
        return "one step per press: release the key and press again"
    try:
        runner.submit(trigger, **data)
    except EstimError as err:
        return str(err)
    return f"{trigger.value} requested"


@contextlib.contextmanager
def cbreak_keys(on_key: Callable[[str], None]) -> Iterator[None]:
    """Read single key presses from a terminal stdin in a thread, until the block ends."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    stop = threading.Event()

    def read_keys() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            data = os.read(fd, 32)
            if not data:
                return
            for char in data.decode(errors="ignore"):
                on_key(char)

    tty.setcbreak(fd)
    reader = threading.Thread(target=read_keys, name="estim-keys", daemon=True)
    reader.start()
    try:
        yield
    finally:
        stop.set()
        reader.join(timeout=1)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


@contextlib.contextmanager
def signals_as_emergency_stop(runner: SessionRunner) -> Iterator[None]:
    """Ctrl-C (SIGINT), SIGTERM, SIGHUP (the terminal closed) and SIGQUIT stop all output
    at once, then the session ends. None of them may leave the device to its watchdog.

    The handler itself only writes the signal's number into a pipe; a thread of its own
    makes the stop. A handler runs in the main thread between any two bytecodes, so one
    that stopped the output itself could interrupt a stop already under way (a second
    Ctrl-C, or the console's own emergency stop) and wait forever for a lock the
    interrupted code holds.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # the handler never blocks; a full pipe has enough

    def handler(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(write_fd, bytes((signum,)))

    def stop_on_signals() -> None:
        while True:
            data = os.read(read_fd, 64)
            for signum in data:
                if signum == 0:  # the context is over
                    return
                runner.emergency_stop(signal.Signals(signum).name)
                runner.request_close()
            if not data:
                return

    stopper = threading.Thread(target=stop_on_signals, name="estim-signal-stop", daemon=True)
    stopper.start()
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        os.set_blocking(write_fd, True)
        os.write(write_fd, b"\x00")  # after any signal already written: those go first
        stopper.join(timeout=5)
        os.close(write_fd)
        os.close(read_fd)


# --- the console -------------------------------------------------------------------------


def stop_for_display_failure(runner: SessionRunner) -> None:
    """The screen failed (a closed pipe, a display bug): nobody can see or steer the
    session any more, so it must not go on: emergency stop (zero first), end the loop."""
    runner.emergency_stop("console failure")
    runner.request_close()


def run_console(
    runner: SessionRunner,
    *,
    console: Console,
    plain: bool,
    keys: bool,
    clinician: str = "clinician",
    on_view: Callable[[SessionView], None] | None = None,
) -> SessionSummary:
    """Run the session with a live display; return its summary once the loop ends."""
    result: list[SessionSummary] = []
    failure: list[BaseException] = []

    def control_loop() -> None:
        try:
            result.append(runner.run())
        except BaseException as err:  # reported below, in the main thread
            failure.append(err)

    loop = threading.Thread(target=control_loop, name="estim-control-loop")
    use_keys = keys and not plain and sys.stdin.isatty()
    message: list[str] = []
    gate = AmplitudeKeyGate()

    def on_key(char: str) -> None:
        text = key_action(runner, char, clinician, gate)
        if text:
            message[:] = [text]

    with signals_as_emergency_stop(runner):
        loop.start()
        key_context = cbreak_keys(on_key) if use_keys else contextlib.nullcontext()
        try:
            with key_context:
                if plain:
                    _follow_plain(runner, loop, console, on_view)
                else:
                    _follow_live(runner, loop, console, use_keys, message, on_view)
        except BaseException:
            # Zero first and end the loop; only then let the caller close the records
            # and the device.
            stop_for_display_failure(runner)
            raise
        finally:
            loop.join()
    if failure:
        raise failure[0]
    return result[0]


def _follow_live(  # noqa: PLR0917 (private helper; the call site names them)
    runner: SessionRunner,
    loop: threading.Thread,
    console: Console,
    keys: bool,
    message: list[str],
    on_view: Callable[[SessionView], None] | None,
) -> None:
    def frame() -> Panel:
        view = runner.view()
        if on_view is not None:
            on_view(view)
        if message and not view.message:
            view = replace(view, message=message[0])
        return render_view(view, keys=keys)

    with Live(frame(), console=console, refresh_per_second=REFRESH_PER_S, transient=False) as live:
        while loop.is_alive():
            loop.join(timeout=1 / REFRESH_PER_S)
            live.update(frame())
        live.update(frame())


def _follow_plain(
    runner: SessionRunner,
    loop: threading.Thread,
    console: Console,
    on_view: Callable[[SessionView], None] | None,
) -> None:
    last_key: tuple[object, ...] = ()
    last_progress_us = -1
    every_us = PLAIN_PROGRESS_EVERY_S * 1_000_000
    while True:
        alive = loop.is_alive()
        view = runner.view()
        if on_view is not None:
            on_view(view)
        key = (view.state, view.phase, view.cycle, view.fault)
        progress_due = view.schedule_elapsed_us // every_us != last_progress_us
        if key != last_key or (view.state is State.RUNNING and progress_due):
            console.print(plain_line(view), highlight=False, soft_wrap=True)
            last_key = key
            last_progress_us = view.schedule_elapsed_us // every_us
        if not alive:
            return
        loop.join(timeout=1 / REFRESH_PER_S)
