"""The technician's side of ``estim profile bench`` on a terminal.

Prompts go to stderr (stdout carries the table or the JSON record) and answers come
from stdin. Whenever the bench holds the output on for a reading, a red
``OUTPUT ON`` badge says so, with the channel, the commanded current, the load and the
window the reading must fall in; a green ``output off`` line follows as soon as the
output is off again. The bench switches the output off itself after every reading and
stops it at once when the prompt ends in any other way (Ctrl-C, end of input).

:class:`BenchTerminal` implements
:class:`~estim.validation.current.TechnicianTerminal` and the bench's yes/no prompt.
"""

from __future__ import annotations

from decimal import Decimal

from rich.console import Console
from rich.prompt import Confirm, Prompt
from rich.text import Text

from estim.errors import InputError
from estim.units import ma_to_ua, ua_to_ma
from estim.validation.current import AccuracyPoint, CurrentReading, parse_measured_ma

OUTPUT_ON_BADGE = Text(" OUTPUT ON ", style="bold white on red")
OUTPUT_OFF_BADGE = Text(" output off ", style="bold black on green")
SKIP_ANSWERS = frozenset({"s", "skip"})


class BenchTerminal:
    """Asks the technician at the bench; remembers when the input has ended."""

    def __init__(self, console: Console | None = None, *, instrument: str | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self.instrument = instrument
        self.input_ended = False

    # --- yes/no (the open-circuit check) ----------------------------------------------

    def confirm(self, text: str) -> bool:
        """A yes/no question; False when the technician says no or the input ended."""
        if self.input_ended:
            return False
        if "Output is ON" in text:
            self.console.print(OUTPUT_ON_BADGE)
        try:
            return Confirm.ask(Text(text), console=self.console, default=True)
        except EOFError:
            self._ended()
            return False

    # --- external current measurement ----------------------------------------------------

    def ready(self, channel: int, load_ohm: int) -> bool:
        if self.input_ended:
            raise EOFError
        self.console.print()
        self.console.print(
            OUTPUT_OFF_BADGE,
            Text(
                f"Channel {channel}: connect the {load_ohm} ohm bench load to channel "
                f"{channel}, and your instrument across it: an oscilloscope across a shunt "
                "in series with the load, or a true-r.m.s. meter"
                + (f" ({self.instrument})" if self.instrument else "")
                + ". The bench switches the output on for each reading only."
            ),
        )
        try:
            return Confirm.ask(
                Text(f"Channel {channel} connected, start its readings?"),
                console=self.console,
                default=True,
            )
        except EOFError:
            self._ended()
            raise

    def measured_ma(self, point: AccuracyPoint) -> Decimal | None:
        self.console.print(
            OUTPUT_ON_BADGE,
            Text(
                f"channel {point.channel}: {point.commanded_ma} mA commanded into the "
                f"{point.load_ohm} ohm load; passes from {point.window()}",
                style="bold",
            ),
        )
        while True:
            try:
                answer = Prompt.ask(
                    Text(
                        f"Peak current you measure on channel {point.channel}, in mA "
                        "(s: cannot measure)"
                    ),
                    console=self.console,
                )
            except EOFError:
                self._ended()
                raise
            if answer.strip().lower() in SKIP_ANSWERS:
                return None
            try:
                value = parse_measured_ma(answer)
            except InputError as err:
                self.console.print(Text(f"  {err}; type the reading in mA, e.g. 11.2"))
                continue
            if point.accepts(ma_to_ua(value)) or self._keep_outlier(point, value):
                return value

    def _keep_outlier(self, point: AccuracyPoint, value: Decimal) -> bool:
        """A reading outside the window fails the bench: make sure it is not a typo."""
        try:
            return Confirm.ask(
                Text(
                    f"{value} mA is outside {point.window()}: record it as measured "
                    "(the check fails)? n: type it again",
                    style="bold red",
                ),
                console=self.console,
                default=False,
            )
        except EOFError:
            self._ended()
            raise

    def output_off(self, point: AccuracyPoint, reading: CurrentReading) -> None:
        verdict = (
            Text("within tolerance", style="green")
            if point.accepts(reading.measured_ua)
            else Text("OUT OF TOLERANCE", style="bold red")
        )
        self.console.print(
            OUTPUT_OFF_BADGE,
            Text(f"channel {point.channel}: {ua_to_ma(reading.measured_ua)} mA read,"),
            verdict,
        )

    def _ended(self) -> None:
        self.input_ended = True
        self.console.print()
        self.console.print(Text("input ended: no more questions", style="bold"))
