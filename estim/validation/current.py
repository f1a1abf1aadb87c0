"""Output current at the bench: the accuracy test points, and who measures them.

The amplitude-accuracy check (:mod:`estim.validation.bench`) commands a series of test
points on each channel, into a known bench load, and holds the measured peak current
against the profile's tolerance. A device that measures its own current reads it back
(``profile.measurement.measures_current``). A device that cannot (the RehaStim2) is
measured from outside, the way a technician does it: a resistor as the load, an
oscilloscope across a shunt in series with it (or a true-r.m.s. meter), and the peak
current written down. This module holds everything that does not need the device:

- :func:`accuracy_plan`: the test points for a bench load (pure, so a technician can
  print them before measuring: ``estim profile bench PROFILE --test-points``);
- :class:`CurrentSource`: where a reading comes from, and its three kinds:
  :class:`TechnicianEntry` (typed at the bench prompt while the output is on),
  :class:`RecordedMeasurements` (a file of readings the technician took, loaded with
  :func:`load_measurements` and refused unless it matches the test points exactly),
  :class:`SimulatorInstrument` (estim's simulator: the current its load model
  delivers, which is what a scope on the simulated load would read).

Every reading says how it was measured and by whom, and the record keeps that per
measurement. The pass rule is the same for every source: ``|measured - commanded| <=
profile tolerance at the commanded current``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from math import floor
from pathlib import Path
from typing import Literal, Protocol, cast

from pydantic import Field, field_validator

from estim.device.profile import DeviceProfile
from estim.errors import EstimError, InputError, Problem
from estim.files import check_spec_version, load_mapping, read_text, validate
from estim.protocols.models import Frozen, NonNegativeDecimal
from estim.units import ma_to_ua, ua_to_ma
from estim.validation.record import SIMULATOR_CAPABILITY, MeasurementMethod

BENCH_LOAD_OHM = 1000
"""The bench load a technician uses unless they say otherwise (the RehaStim2's
figures are stated at 1 kOhm)."""

TEST_POINT_FRACTIONS = (Fraction(1, 10), Fraction(1, 4), Fraction(1, 2), Fraction(9, 10))
"""Test points as fractions of what the unit can drive into the bench load."""

MEASUREMENTS_SPEC_VERSION = 1
"""The newest measurements-file format this code understands."""

MEASUREMENTS_KIND = "estim-bench-measurements"


class NotMeasured(EstimError):
    """A reading could not be had (skipped, input ended, instrument missing): the
    accuracy check is then *not verified*, never passed."""


# --- the test points ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccuracyPoint:
    """One commanded current on one channel, and the window the reading must fall in."""

    channel: int
    commanded_ua: int
    load_ohm: int
    tolerance_ua: Fraction

    def accepts(self, measured_ua: int) -> bool:
        return abs(measured_ua - self.commanded_ua) <= self.tolerance_ua

    @property
    def lowest_ua(self) -> Fraction:
        return max(Fraction(0), self.commanded_ua - self.tolerance_ua)

    @property
    def highest_ua(self) -> Fraction:
        return self.commanded_ua + self.tolerance_ua

    @property
    def commanded_ma(self) -> Decimal:
        return ua_to_ma(self.commanded_ua)

    def window(self) -> str:
        """``9 to 13 mA (11 mA +/- 2 mA)``: what a technician checks the reading against."""
        return (
            f"{_ma(self.lowest_ua)} to {_ma(self.highest_ua)} mA "
            f"({_ma(self.commanded_ua)} mA +/- {_ma(self.tolerance_ua)} mA)"
        )

    def limit(self) -> str:
        """The limit as the record writes it (uA, like the device readback)."""
        return f"{self.commanded_ua} +/- {format_fraction(self.tolerance_ua)} uA"

    def __str__(self) -> str:
        return f"channel {self.channel} at {_ma(self.commanded_ua)} mA"


def accuracy_amplitudes_ua(profile: DeviceProfile, load_ohm: int | None) -> list[int]:
    """Amplitudes to test: fractions of what the hardware can drive into ``load_ohm``.

    The usable maximum is the amplitude maximum, or 90 % of compliance voltage / load
    where that is lower; each point is floored to the amplitude resolution (at least
    one step).
    """
    out = profile.output
    usable = Fraction(out.amplitude_max_ua)
    if load_ohm:
        compliance_ua = Fraction(out.compliance_voltage_v) * 1_000_000 / load_ohm
        usable = min(usable, compliance_ua * Fraction(9, 10))
    step = out.amplitude_resolution_ua
    return sorted({max(step, floor(usable * f / step) * step) for f in TEST_POINT_FRACTIONS})


def accuracy_plan(profile: DeviceProfile, load_ohm: int) -> tuple[AccuracyPoint, ...]:
    """Every test point of the external accuracy check: each channel, each amplitude."""
    if load_ohm <= 0:
        raise InputError(f"the bench load must be above 0 ohm, got {load_ohm}")
    amplitudes = accuracy_amplitudes_ua(profile, load_ohm)
    tolerance = profile.measurement.tolerance_ua
    return tuple(
        AccuracyPoint(channel, amplitude, load_ohm, tolerance(amplitude))
        for channel in range(1, profile.output.channels + 1)
        for amplitude in amplitudes
    )


def describe_plan(points: Sequence[AccuracyPoint]) -> str:
    """``channels 1-8 at 11, 28, 56, 102 mA on a 1000 ohm load`` (a compact summary)."""
    if not points:
        return "no test points"
    channels = sorted({p.channel for p in points})
    amplitudes = sorted({p.commanded_ua for p in points})
    if len(channels) == 1:
        span = f"channel {channels[0]}"
    elif channels == list(range(channels[0], channels[-1] + 1)):
        span = f"channels {channels[0]}-{channels[-1]}"
    else:
        span = "channels " + ", ".join(map(str, channels))
    shown = ", ".join(_ma(a) for a in amplitudes)
    return f"{span} at {shown} mA on a {points[0].load_ohm} ohm load"


# --- readings and where they come from ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class CurrentReading:
    """A measured peak current, how it was measured, and by whom (for the record)."""

    measured_ua: int
    method: MeasurementMethod
    source: str


class CurrentSource(Protocol):
    """Where the accuracy check's readings come from when the device cannot measure.

    The bench calls :meth:`connect_channel` with the output off before a channel's
    points, then for each point switches the output on at that current, calls
    :meth:`read`, switches the output off (also when :meth:`read` raises), and calls
    :meth:`finished`. :meth:`read` and :meth:`connect_channel` raise
    :class:`NotMeasured` when no reading can be had.
    """

    method: MeasurementMethod

    def describe(self) -> str:
        """How the readings are taken, in one line (goes into the record)."""
        ...

    def connect_channel(self, channel: int, load_ohm: int) -> None: ...

    def read(self, point: AccuracyPoint) -> CurrentReading: ...

    def finished(self, point: AccuracyPoint, reading: CurrentReading) -> None: ...


class TechnicianTerminal(Protocol):
    """The technician's side of :class:`TechnicianEntry` (the command line draws it)."""

    def ready(self, channel: int, load_ohm: int) -> bool:
        """Load and instrument are on ``channel`` (output off): go on? False: stop."""
        ...

    def measured_ma(self, point: AccuracyPoint) -> Decimal | None:
        """The peak current read with the output ON at ``point``; None: cannot measure.

        Raises ``EOFError`` when the input ended, ``KeyboardInterrupt`` on Ctrl-C.
        """
        ...

    def output_off(self, point: AccuracyPoint, reading: CurrentReading) -> None:
        """The output is off again after ``point`` was read."""
        ...


class TechnicianEntry:
    """Readings typed by the technician at the bench, with the output on at each point."""

    method = MeasurementMethod.EXTERNAL_INSTRUMENT

    def __init__(
        self, terminal: TechnicianTerminal, *, technician: str, instrument: str | None = None
    ) -> None:
        self.terminal = terminal
        self.technician = technician
        self.instrument = instrument

    def describe(self) -> str:
        return f"external instrument, read by {self.technician} at the bench prompt" + (
            f" ({self.instrument})" if self.instrument else ""
        )

    def connect_channel(self, channel: int, load_ohm: int) -> None:
        try:
            ready = self.terminal.ready(channel, load_ohm)
        except EOFError:
            raise NotMeasured("the input ended before every test point was measured") from None
        if not ready:
            raise NotMeasured(f"the technician did not connect channel {channel}")

    def read(self, point: AccuracyPoint) -> CurrentReading:
        try:
            value_ma = self.terminal.measured_ma(point)
        except EOFError:
            raise NotMeasured("the input ended before every test point was measured") from None
        if value_ma is None:
            raise NotMeasured(f"the technician could not measure {point}")
        source = f"entered by {self.technician} at the bench prompt"
        if self.instrument:
            source += f"; instrument: {self.instrument}"
        return CurrentReading(ma_to_ua(value_ma), self.method, source)

    def finished(self, point: AccuracyPoint, reading: CurrentReading) -> None:
        self.terminal.output_off(point, reading)


class SimulatorInstrument:
    """estim's simulator as the instrument: the current its load model delivers.

    ``place_load(channel, ohm)`` puts the bench load on a channel (a simulator fault
    spec ``load:ch=N,ohm=R``); ``peak_ua(channel)`` reads the delivered peak current.
    Both go through the simulator's own side channel (or straight to an in-process
    simulator), never through the device's reports.
    """

    method = MeasurementMethod.SIMULATOR_INSTRUMENT

    def __init__(
        self,
        place_load: Callable[[int, int], None],
        peak_ua: Callable[[int], int],
        *,
        where: str,
    ) -> None:
        self.place_load = place_load
        self.peak_ua = peak_ua
        self.where = where

    def describe(self) -> str:
        return f"simulator instrument: the current its load model delivers, {self.where}"

    def connect_channel(self, channel: int, load_ohm: int) -> None:
        self.place_load(channel, load_ohm)

    def read(self, point: AccuracyPoint) -> CurrentReading:
        return CurrentReading(
            self.peak_ua(point.channel),
            self.method,
            f"estim simulator load model, {self.where}",
        )

    def finished(self, point: AccuracyPoint, reading: CurrentReading) -> None:
        pass


class _SimulatorSideChannel(Protocol):
    def inject_fault(self, spec: str) -> None: ...

    def sim_measure_current(self, channel: int) -> int: ...


def simulator_instrument_for(stimulator: object) -> SimulatorInstrument | None:
    """The simulator instrument over ``stimulator``'s simulator-only command, if it has one.

    Only for a device that identified itself as estim's simulator and whose driver
    can ask it (ScienceMode2's ``measure-current`` query); None otherwise.
    """
    identity = getattr(stimulator, "identity", None)
    if identity is None or SIMULATOR_CAPABILITY not in identity.capabilities:
        return None
    if not (hasattr(stimulator, "sim_measure_current") and hasattr(stimulator, "inject_fault")):
        return None
    side = cast(_SimulatorSideChannel, stimulator)
    return SimulatorInstrument(
        lambda channel, ohm: side.inject_fault(f"load:ch={channel},ohm={ohm}"),
        side.sim_measure_current,
        where="read over the simulator-only command",
    )


# --- the measurements file ----------------------------------------------------------------


class MeasuredPoint(Frozen):
    """One reading: the channel, the current commanded, and the peak current measured."""

    channel: int = Field(ge=1, le=255)
    commanded_ma: NonNegativeDecimal
    measured_ma: NonNegativeDecimal

    @field_validator("commanded_ma", "measured_ma")
    @classmethod
    def _whole_microamps(cls, value: Decimal) -> Decimal:
        ma_to_ua(value)  # refuses more than 3 decimal places (InputError is a ValueError)
        return value


class MeasurementsFile(Frozen):
    """A technician's recorded readings (``--measurements FILE``, TOML or JSON)."""

    spec_version: int = Field(default=MEASUREMENTS_SPEC_VERSION, ge=1)
    kind: Literal["estim-bench-measurements"] = "estim-bench-measurements"
    technician: str | None = Field(default=None, min_length=2)
    instrument: str | None = Field(default=None, min_length=2)
    load_ohm: int = Field(default=BENCH_LOAD_OHM, gt=0, le=1_000_000)
    points: tuple[MeasuredPoint, ...] = Field(min_length=1)


class RecordedMeasurements:
    """Readings from a measurements file, matched one to one with the test points."""

    method = MeasurementMethod.EXTERNAL_INSTRUMENT

    def __init__(
        self, data: MeasurementsFile, *, origin: str, sha256: str, technician: str
    ) -> None:
        self.data = data
        self.origin = origin
        self.sha256 = sha256
        self.technician = data.technician or technician
        self._readings: dict[tuple[int, int], int] = {}

    @property
    def load_ohm(self) -> int:
        return self.data.load_ohm

    def describe(self) -> str:
        return f"external instrument, {self._recorded()}"

    def _recorded(self) -> str:
        text = f"recorded by {self.technician} in {self.origin} (sha256 {self.sha256[:12]})"
        if self.data.instrument:
            text += f"; instrument: {self.data.instrument}"
        return text

    def match(self, points: Sequence[AccuracyPoint]) -> None:
        """Refuse (``InputError``) unless the file has exactly one reading per test point.

        Every problem is listed at once: readings for points the bench does not test,
        readings given twice, and test points without a reading.
        """
        wanted = {(p.channel, p.commanded_ua): p for p in points}
        problems: list[Problem] = []
        readings: dict[tuple[int, int], int] = {}
        plan = describe_plan(points)
        for index, entry in enumerate(self.data.points):
            key = (entry.channel, ma_to_ua(entry.commanded_ma))
            where = f"{self.origin}: points[{index}]"
            if key not in wanted:
                problems.append(
                    Problem(
                        where,
                        f"channel {entry.channel} at {entry.commanded_ma} mA is not a test "
                        f"point of this bench",
                        fix=f"the test points are {plan}; print them with --test-points",
                    )
                )
            elif key in readings:
                problems.append(
                    Problem(
                        where,
                        f"a second reading for channel {entry.channel} at {entry.commanded_ma} mA",
                        fix="keep one reading per test point",
                    )
                )
            else:
                readings[key] = ma_to_ua(entry.measured_ma)
        missing = [p for key, p in wanted.items() if key not in readings]
        if missing:
            shown = ", ".join(str(p) for p in missing[:8])
            more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
            problems.append(
                Problem(
                    self.origin,
                    f"no reading for {shown}{more}",
                    fix=f"measure every test point ({plan}) and add it",
                )
            )
        if problems:
            noun = "problem" if len(problems) == 1 else "problems"
            raise InputError(
                f"{self.origin}: the measurements do not match the bench's test points "
                f"({len(problems)} {noun})",
                problems,
            )
        self._readings = readings

    def connect_channel(self, channel: int, load_ohm: int) -> None:
        if load_ohm != self.data.load_ohm:
            raise NotMeasured(
                f"{self.origin} was measured on a {self.data.load_ohm} ohm load, "
                f"the bench uses {load_ohm} ohm"
            )

    def read(self, point: AccuracyPoint) -> CurrentReading:
        try:
            value = self._readings[(point.channel, point.commanded_ua)]
        except KeyError:
            raise NotMeasured(f"{self.origin} has no reading for {point}") from None
        return CurrentReading(value, self.method, self._recorded())

    def finished(self, point: AccuracyPoint, reading: CurrentReading) -> None:
        pass


def load_measurements(path: Path, *, technician: str) -> RecordedMeasurements:
    """Read and validate a measurements file (not yet matched to the test points)."""
    data = load_mapping(path)
    check_spec_version(data, MEASUREMENTS_SPEC_VERSION, str(path), "bench measurements")
    parsed = validate(MeasurementsFile, data, str(path), "bench measurements file")
    digest = hashlib.sha256(read_text(path).encode("utf-8")).hexdigest()
    return RecordedMeasurements(parsed, origin=str(path), sha256=digest, technician=technician)


def measurements_template(profile: DeviceProfile, points: Iterable[AccuracyPoint]) -> str:
    """A measurements file to fill in: every test point, ``measured_ma`` left to write.

    An unfilled point has no ``measured_ma`` and is refused when loaded, so a template
    can never pass by accident.
    """
    listed = list(points)
    load = listed[0].load_ohm if listed else BENCH_LOAD_OHM
    ident = profile.identity
    lines = [
        f"# Bench measurements for {ident.manufacturer} {ident.model} "
        f"(profile sha256 {profile.sha256[:12]}).",
        f"# Put the {load} ohm bench load on one channel at a time, with an oscilloscope",
        "# across a shunt in series with it (or a true-r.m.s. meter). Have the unit deliver",
        "# each point below on that channel (200 us phases at 20 Hz, as the bench sends),",
        "# read the peak current, and write it as measured_ma. Then run",
        "# estim profile bench PROFILE --port PORT --measurements THIS_FILE",
        f"spec_version = {MEASUREMENTS_SPEC_VERSION}",
        f'kind = "{MEASUREMENTS_KIND}"',
        '# technician = "Your Name"        # who measured (default: the bench --technician)',
        '# instrument = "oscilloscope, 10 ohm shunt"',
        f"load_ohm = {load}",
    ]
    for point in listed:
        lines += [
            "",
            "[[points]]",
            f"channel = {point.channel}",
            f"commanded_ma = {point.commanded_ma}",
            f"# measured_ma =     # passes from {point.window()}",
        ]
    return "\n".join(lines) + "\n"


# --- the technician's typing --------------------------------------------------------------

_MA_TEXT = re.compile(r"^\s*([+-]?[0-9]*[.,]?[0-9]*)\s*(ma)?\s*$", re.IGNORECASE)


def parse_measured_ma(text: str) -> Decimal:
    """A current the technician typed (``11.2``, ``11.2 mA``, ``11,2``) as exact mA.

    Refused (``InputError``): not a number, negative, or finer than 1 uA.
    """
    match = _MA_TEXT.match(text)
    number = match.group(1).replace(",", ".") if match else ""
    try:
        value = Decimal(number)
    except InvalidOperation:
        raise InputError(f"{text.strip()!r} is not a current in mA (e.g. 11.2)") from None
    if not value.is_finite() or value < 0:
        raise InputError(f"{text.strip()!r}: a measured current is 0 mA or more")
    ma_to_ua(value)  # at most 3 decimal places
    return value


def _ma(value_ua: int | Fraction) -> str:
    """uA as mA for people, to 1 uA, trailing zeros dropped (``11``, ``2.8``, ``102``)."""
    exact = Fraction(value_ua) / 1000
    shown = (Decimal(exact.numerator) / Decimal(exact.denominator)).quantize(Decimal("0.001"))
    return f"{shown.normalize():f}"


def format_fraction(value: Fraction) -> str:
    """An exact figure for a message: whole as an integer, else to one decimal."""
    return str(int(value)) if value.denominator == 1 else f"{float(value):.1f}"
