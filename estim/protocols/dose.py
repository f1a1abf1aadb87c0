"""Dose figures of a protocol at an amplitude ceiling: what the patient receives at most.

Pure and exact. Every figure is an integer or a :class:`~fractions.Fraction` computed
from integer microamps and microseconds; floats appear only in :meth:`Dose.to_dict`
and the display helpers, for people. The safety checks compare these figures (or
their squares, so that no square root is ever taken) against the named limits.

Units, so that the arithmetic stays in integers:

- charge: uA x us = picocoulombs (pC); 1 uC = 10**6 pC;
- square integral of current over time: uA^2 x us; into ``R`` ohm that is
  ``R x 10**-18`` J, i.e. ``R x 10**-12`` uJ;
- mean square current: uA^2 (the r.m.s. current is its square root, in uA).

Timing follows the schedule compiler: the pulse train restarts at the start of every
burst (ramp up + on + ramp down), with pulse onsets at ``burst_start + k x period``
for every ``k`` whose onset falls inside the burst, ramps included. So a burst of
length ``L`` holds exactly ``ceil(L / period)`` pulses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any

from estim.protocols.models import CycledDuty, Protocol
from estim.protocols.prescription import ResolvedPrescription
from estim.protocols.schedule import compile_protocol
from estim.units import US_PER_S

REFERENCE_LOAD_OHM = 500
"""IEC 60601-2-10 states output, energy and r.m.s. figures into a 500 ohm load."""

PC_PER_UC = 10**6
UJ_PER_UA2_US_OHM = Fraction(1, 10**12)  # 1 uA^2 x 1 us x 1 ohm = 1e-18 J = 1e-12 uJ
UJ_PER_J = 10**6


def pulses_in_burst(burst_us: int, period_us: Fraction) -> int:
    """Pulse onsets ``k x period`` (k = 0, 1, ...) strictly before ``burst_us``."""
    if burst_us <= 0:
        return 0
    return math.ceil(Fraction(burst_us) / period_us)


@dataclass(frozen=True, slots=True)
class Dose:
    """What one session of a protocol delivers at ``ceiling_ua``, at most.

    Amplitude-dependent figures are at the ceiling on the plateau (the envelope is
    never above it). ``contact_area_cm2`` is the smallest contact of the electrodes the
    protocol may use on the device, or None when no device was given.
    """

    protocol_id: str
    ceiling_ua: int
    period_us: Fraction
    pulse_duration_us: int
    continuous: bool
    session_us: int
    stimulating_us: int
    plateau_us: int
    bursts: int
    pulses_per_burst: int
    max_phase_charge_pc: Fraction
    net_charge_pc: Fraction
    pulse_square_integral: Fraction  # uA^2 x us, one pulse at the ceiling
    contact_area_cm2: Decimal | None = None

    # --- timing ------------------------------------------------------------------------

    @property
    def rate_hz(self) -> Fraction:
        return Fraction(US_PER_S) / self.period_us

    @property
    def contractions(self) -> int:
        """Contractions per session; a continuous programme has none (0)."""
        return 0 if self.continuous else self.bursts

    @property
    def pulses(self) -> int:
        """Pulses per session, ramps included."""
        return self.bursts * self.pulses_per_burst

    @property
    def duty(self) -> Fraction:
        """Share of time inside a pulse during the plateau (phases and gaps)."""
        return Fraction(self.pulse_duration_us) / self.period_us

    # --- current -----------------------------------------------------------------------

    @property
    def mean_square_ua2(self) -> Fraction:
        """Mean of i(t)^2 over one pulse period on the plateau, in uA^2 (exact)."""
        return self.pulse_square_integral / self.period_us

    @property
    def rms_ua(self) -> float:
        """For display only: compare :attr:`mean_square_ua2` against squared limits."""
        return math.sqrt(self.mean_square_ua2)

    @property
    def dc_component_ua(self) -> Fraction:
        """Mean current on the plateau (net charge per pulse x rate), in uA; signed."""
        return self.net_charge_pc / self.period_us

    # --- energy and power into the reference load --------------------------------------

    @property
    def energy_per_pulse_uj(self) -> Fraction:
        """Energy of one pulse at the ceiling into 500 ohm, in microjoules."""
        return self.pulse_square_integral * REFERENCE_LOAD_OHM * UJ_PER_UA2_US_OHM

    @property
    def pulses_per_second_max(self) -> int:
        """Most pulse onsets any 1 s window can hold at maximum duty (the plateau)."""
        return pulses_in_burst(US_PER_S, self.period_us)

    @property
    def average_power_w(self) -> Fraction:
        """Power into 500 ohm averaged over 1 s at maximum duty (FDA 1999).

        Counts every pulse whose onset can fall in a 1 s window; for a rate that does
        not divide 1 s this slightly over-counts, which errs on the safe side.
        """
        return self.energy_per_pulse_uj * self.pulses_per_second_max / UJ_PER_J

    # --- on the smallest contact -------------------------------------------------------

    @property
    def _area(self) -> Fraction | None:
        return None if self.contact_area_cm2 is None else Fraction(self.contact_area_cm2)

    @property
    def current_density_sq(self) -> Fraction | None:
        """(r.m.s. current density)^2 in (uA rms / cm2)^2 on the smallest contact."""
        area = self._area
        return None if area is None else self.mean_square_ua2 / (area * area)

    @property
    def current_density_ma_per_cm2(self) -> float | None:
        """For display only."""
        sq = self.current_density_sq
        return None if sq is None else math.sqrt(sq) / 1000

    @property
    def power_density_w_per_cm2(self) -> Fraction | None:
        area = self._area
        return None if area is None else self.average_power_w / area

    @property
    def charge_density_uc_per_cm2(self) -> Fraction | None:
        """Largest phase charge per area of the smallest contact, uC/cm2 per phase."""
        area = self._area
        return None if area is None else self.max_phase_charge_pc / PC_PER_UC / area

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures: exact values as strings, display values as floats."""
        density = self.current_density_sq
        power = self.power_density_w_per_cm2
        charge_density = self.charge_density_uc_per_cm2
        return {
            "protocol_id": self.protocol_id,
            "ceiling_ma": str(Fraction(self.ceiling_ua, 1000)),
            "ceiling_ua": self.ceiling_ua,
            "rate_hz": float(self.rate_hz),
            "period_us": str(self.period_us),
            "pulse_duration_us": self.pulse_duration_us,
            "continuous": self.continuous,
            "session_s": self.session_us / US_PER_S,
            "stimulating_s": self.stimulating_us / US_PER_S,
            "plateau_s": self.plateau_us / US_PER_S,
            "contractions": self.contractions,
            "pulses_per_burst": self.pulses_per_burst,
            "pulses": self.pulses,
            "max_phase_charge_uc": float(self.max_phase_charge_pc / PC_PER_UC),
            "net_charge_per_pulse_uc": float(self.net_charge_pc / PC_PER_UC),
            "dc_component_ma": float(self.dc_component_ua / 1000),
            "rms_ma": self.rms_ua / 1000,
            "mean_square_ua2": str(self.mean_square_ua2),
            "energy_per_pulse_mj": float(self.energy_per_pulse_uj / 1000),
            "energy_per_pulse_uj_exact": str(self.energy_per_pulse_uj),
            "average_power_mw": float(self.average_power_w * 1000),
            "smallest_contact_cm2": (
                None if self.contact_area_cm2 is None else str(self.contact_area_cm2)
            ),
            "current_density_ma_rms_per_cm2": (
                None if density is None else math.sqrt(density) / 1000
            ),
            "power_density_w_per_cm2": None if power is None else float(power),
            "charge_density_uc_per_cm2_per_phase": (
                None if charge_density is None else float(charge_density)
            ),
        }


def dose_at(protocol: Protocol, ceiling_ua: int, contact_areas_cm2: Iterable[Decimal] = ()) -> Dose:
    """Dose of ``protocol`` with the amplitude at ``ceiling_ua`` on the plateau.

    ``contact_areas_cm2``: the contact areas of the electrodes the protocol may use;
    the densities are computed on the smallest (FDA 1999). Empty: no densities.
    """
    if ceiling_ua < 0:
        raise ValueError(f"ceiling_ua must not be negative, got {ceiling_ua}")
    schedule = compile_protocol(protocol)
    train = protocol.pulse
    shape = train.shape
    period = train.period_us
    cycle = protocol.cycle
    burst_us = cycle.burst_us if isinstance(cycle, CycledDuty) else schedule.duration_us
    areas = tuple(contact_areas_cm2)
    return Dose(
        protocol_id=protocol.id,
        ceiling_ua=ceiling_ua,
        period_us=period,
        pulse_duration_us=shape.pulse_duration_us,
        continuous=schedule.continuous,
        session_us=schedule.duration_us,
        stimulating_us=schedule.stimulating_us,
        plateau_us=schedule.plateau_us,
        bursts=schedule.cycles,
        pulses_per_burst=pulses_in_burst(burst_us, period),
        max_phase_charge_pc=shape.max_phase_charge_pc(ceiling_ua),
        net_charge_pc=shape.net_charge_pc(ceiling_ua),
        pulse_square_integral=shape.square_integral(ceiling_ua),
        contact_area_cm2=min(areas) if areas else None,
    )


def dose_of(resolved: ResolvedPrescription, contact_areas_cm2: Iterable[Decimal] = ()) -> Dose:
    """Dose of a resolved prescription at the patient's ceiling (effective protocol)."""
    return dose_at(resolved.protocol, resolved.ceiling_ua, contact_areas_cm2)


# --- display helpers (never compare their results) ----------------------------------


def fixed(value: Fraction | Decimal | int | float, places: int = 2) -> str:
    """``value`` rounded half-even to ``places`` decimals, for people."""
    if isinstance(value, float):
        quantum = Decimal(1).scaleb(-places)
        return str(Decimal(repr(value)).quantize(quantum, rounding=ROUND_HALF_EVEN))
    frac = Fraction(value)
    scaled = frac * 10**places
    rounded = round(scaled)  # Fraction.__round__ is exact, half-even
    return str(Decimal(rounded).scaleb(-places))


def significant(value: Fraction | float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, no exponent, no trailing zeros."""
    number = float(value)
    if number == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(number)))
    places = max(0, digits - 1 - magnitude)
    text = f"{number:.{places}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
