"""Dose figures equal a brute-force, pulse-by-pulse computation.

The brute force shares no arithmetic with :mod:`estim.protocols.dose`: it walks every
pulse onset of every burst of the compiled schedule, rebuilds each phase's current
from the shape's fields (the recovery amplitude of an asymmetric pulse from charge
balance), and integrates current and current squared over thin slices of each phase,
with the exact integral of each slice.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from estim.protocols.dose import dose_at
from estim.protocols.models import Protocol, ShapeKind
from estim.protocols.schedule import SegmentPhase, compile_protocol
from estim.testing import strategies as es

SLICES = 16


def brute_phases(protocol: Protocol, amplitude_ua: int) -> list[tuple[int, int, Fraction, bool]]:
    """(width_us, polarity, peak_ua, triangular) for each phase, from the shape's fields."""
    shape = protocol.pulse.shape
    a = Fraction(amplitude_ua)
    kind = shape.kind
    if kind is ShapeKind.ASYMMETRIC_BIPHASIC:
        lead = shape.lead_phase_width_us  # type: ignore[union-attr]
        recovery = shape.recovery_phase_width_us  # type: ignore[union-attr]
        return [(lead, 1, a, False), (recovery, -1, a * lead / recovery, False)]
    width = shape.phase_width_us  # type: ignore[union-attr]
    if kind is ShapeKind.MONOPHASIC_RECTANGULAR:
        return [(width, 1, a, False)]
    triangular = kind is ShapeKind.LONG_BIPHASIC_TRIANGULAR
    return [(width, 1, a, triangular), (width, -1, a, triangular)]


def slice_integrals(width: int, peak: Fraction, triangular: bool) -> tuple[Fraction, Fraction]:
    """(integral of i, integral of i^2) over one phase, summed over thin slices."""
    charge = Fraction(0)
    square = Fraction(0)
    edges = [Fraction(width * k, SLICES) for k in range(SLICES + 1)]
    for t0, t1 in itertools.pairwise(edges):
        if triangular:  # i(t) = peak * t / width on this slice
            slope = peak / width
            charge += slope * (t1**2 - t0**2) / 2
            square += slope**2 * (t1**3 - t0**3) / 3
        else:
            charge += peak * (t1 - t0)
            square += peak**2 * (t1 - t0)
    return charge, square


@given(st.data())
def test_dose_equals_pulse_by_pulse_brute_force(data: st.DataObject) -> None:
    protocol = data.draw(es.protocols(max_session_min=1, adjustable=False))
    ceiling = data.draw(st.integers(0, protocol.amplitude.ceiling_ua))
    dose = dose_at(protocol, ceiling)
    schedule = compile_protocol(protocol)
    period = protocol.pulse.period_us

    # every burst: from its first stimulating segment to the end of its last
    bursts: dict[int, list[int]] = {}
    plateau = stimulating = 0
    for seg in schedule.segments:
        if seg.phase.stimulating:
            span = bursts.setdefault(seg.cycle, [seg.start_us, seg.end_us])
            span[1] = seg.end_us
            stimulating += seg.duration_us
        if seg.phase is SegmentPhase.ON:
            plateau += seg.duration_us
    counts = []
    for start, end in bursts.values():
        onsets, t = 0, Fraction(start)
        while t < end:
            onsets, t = onsets + 1, t + period
        counts.append(onsets)
    assert dose.pulses == sum(counts)
    assert set(counts) == {dose.pulses_per_burst}
    assert dose.bursts == len(bursts)
    assert (dose.stimulating_us, dose.plateau_us) == (stimulating, plateau)

    charges, squares = [], Fraction(0)
    for width, polarity, peak, triangular in brute_phases(protocol, ceiling):
        charge, square = slice_integrals(width, peak, triangular)
        charges.append(polarity * charge)
        squares += square
    assert dose.net_charge_pc == sum(charges)
    assert dose.max_phase_charge_pc == max(abs(c) for c in charges)
    assert dose.pulse_square_integral == squares
    # r.m.s. over the plateau: n whole periods hold n pulses
    periods = 7
    assert dose.mean_square_ua2 == squares * periods / (period * periods)
    assert dose.energy_per_pulse_uj == squares * 500 / 10**12
    # the busiest 1 s window starts at an onset: count onsets in [0, 1 s)
    in_window, t = 0, Fraction(0)
    while t < 1_000_000:
        in_window, t = in_window + 1, t + period
    assert dose.pulses_per_second_max == in_window
