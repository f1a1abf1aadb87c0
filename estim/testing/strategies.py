"""Hypothesis strategies for estim's data: protocols, prescriptions, device profiles.

Every strategy here yields objects that are **valid by construction** (the models
accept them; no ``filter`` on validation), so properties spend their examples on the
behaviour under test. They compose:

.. code-block:: python

    from hypothesis import given, strategies as st
    from estim.testing import strategies as es

    @given(st.data())
    def test_something(data):
        protocol = data.draw(es.protocols())                 # any shape, any cycle
        prescription = data.draw(es.prescriptions(protocol))  # fits that protocol
        profile = data.draw(es.profiles_for(protocol))        # can deliver it

Narrow them with keyword arguments: ``es.protocols(shapes=es.shapes(kinds=[...]))``,
``es.protocols(cycles=es.continuous_cycles())``, ``es.protocols(max_session_min=2)``
(fewer pulses, for brute-force checks). Numbers are :class:`~decimal.Decimal` with a
few decimal places, the way people type them, so TOML / JSON round trips are exact.

Requires Hypothesis (``pip install estim[test]``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from fractions import Fraction

from hypothesis import strategies as st

from estim.device.profile import (
    DeviceProfile,
    ElectrodeSet,
    Identity,
    Impedance,
    Leakage,
    Link,
    Measurement,
    Output,
)
from estim.protocols.models import (
    LONG_PHASE_MAX_US,
    SHORT_PHASE_MAX_US,
    Adjustable,
    AdjustableRange,
    AmplitudePolicy,
    AsymmetricBiphasic,
    Citation,
    Confidence,
    Continuous,
    CycledDuty,
    ElectrodeKind,
    ElectrodeRequirement,
    Indication,
    LongBiphasicRectangular,
    LongBiphasicTriangular,
    MonophasicRectangular,
    Protocol,
    PulseShape,
    PulseTrain,
    ShapeKind,
    SymmetricBiphasic,
)
from estim.protocols.prescription import Prescription, ProtocolRef
from estim.units import US_PER_S

__all__ = [
    "continuous_cycles",
    "cycled_duties",
    "cycles",
    "decimals",
    "device_profiles",
    "electrode_sets",
    "prescriptions",
    "profiles_for",
    "protocols",
    "pulse_trains",
    "shapes",
    "texts",
]

MAX_SESSION_MIN = 120


# --- building blocks -------------------------------------------------------------------


def decimals(
    min_value: Decimal | int | str, max_value: Decimal | int | str, places: int = 1
) -> st.SearchStrategy[Decimal]:
    """Decimals in ``[min_value, max_value]`` with exactly ``places`` decimal places."""
    scale = 10**places
    low = math.ceil(Fraction(Decimal(min_value)) * scale)
    high = math.floor(Fraction(Decimal(max_value)) * scale)
    return st.integers(low, high).map(lambda n: Decimal(n).scaleb(-places))


def texts(min_size: int = 1, max_size: int = 40) -> st.SearchStrategy[str]:
    """Printable text without surrounding whitespace (models strip it), any script."""
    alphabet = st.characters(
        codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp", "Zs"), exclude_characters="\x7f"
    )
    words = st.text(alphabet, min_size=1, max_size=8)
    return (
        st.lists(words, min_size=1, max_size=5)
        .map(" ".join)
        .filter(lambda s: min_size <= len(s) <= max_size)
    )


_TEXT = texts()
_OPTIONAL_TEXT = st.one_of(st.just(""), _TEXT)
_TITLE = texts(min_size=3)
_CITATION = texts(min_size=5)
_PRESCRIBER = texts(min_size=2)
_PROTOCOL_ID = st.from_regex(r"[a-z0-9][a-z0-9-]{1,20}", fullmatch=True)
_PATIENT_CODE = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{1,15}", fullmatch=True)
# Strategies are built once: building them per draw dominated generation time.


def _whole_us_decimal_s(low_us: int, high_us: int) -> st.SearchStrategy[Decimal]:
    """Seconds as a Decimal that is a whole number of microseconds (<= 6 places)."""
    return st.integers(low_us, high_us).map(lambda us: Decimal(us).scaleb(-6).normalize())


# --- shapes and trains -----------------------------------------------------------------

SHORT_KINDS = (ShapeKind.SYMMETRIC_BIPHASIC, ShapeKind.ASYMMETRIC_BIPHASIC)
LONG_KINDS = (ShapeKind.LONG_BIPHASIC_RECTANGULAR, ShapeKind.LONG_BIPHASIC_TRIANGULAR)


@st.composite
def shapes(draw: st.DrawFn, kinds: Sequence[ShapeKind] = tuple(ShapeKind)) -> PulseShape:
    """A pulse shape of one of ``kinds`` (all five by default), gap included."""
    kind = draw(st.sampled_from(list(kinds)))
    gap = draw(st.one_of(st.just(0), st.integers(0, 1000)))
    if kind is ShapeKind.SYMMETRIC_BIPHASIC:
        return SymmetricBiphasic(
            phase_width_us=draw(st.integers(1, SHORT_PHASE_MAX_US)), interphase_gap_us=gap
        )
    if kind is ShapeKind.ASYMMETRIC_BIPHASIC:
        lead = draw(st.integers(1, SHORT_PHASE_MAX_US))
        recovery = draw(st.integers(lead, 8 * lead))
        return AsymmetricBiphasic(
            lead_phase_width_us=lead, recovery_phase_width_us=recovery, interphase_gap_us=gap
        )
    if kind is ShapeKind.MONOPHASIC_RECTANGULAR:
        width = draw(
            st.one_of(st.integers(1, SHORT_PHASE_MAX_US), st.integers(1, LONG_PHASE_MAX_US))
        )
        return MonophasicRectangular(phase_width_us=width, interphase_gap_us=gap)
    width = draw(st.integers(1_000, LONG_PHASE_MAX_US))
    gap = draw(st.integers(0, min(width, 100_000)))
    if kind is ShapeKind.LONG_BIPHASIC_RECTANGULAR:
        return LongBiphasicRectangular(phase_width_us=width, interphase_gap_us=gap)
    return LongBiphasicTriangular(phase_width_us=width, interphase_gap_us=gap)


@st.composite
def pulse_trains(draw: st.DrawFn, shape: st.SearchStrategy[PulseShape] | None = None) -> PulseTrain:
    """A shape with a rate that leaves room for the whole pulse: a frequency (two
    decimal places) or, as for long pulses, an interval in whole microseconds."""
    chosen = draw(shape if shape is not None else shapes())
    duration_us = chosen.pulse_duration_us
    # frequency f (centi-Hz) must keep 1e6 / f >= duration: f <= 1e8 / duration.
    top_centi_hz = min(1_000_000, 10**8 // duration_us)
    use_frequency = top_centi_hz >= 10 and draw(st.booleans())
    if use_frequency:
        centi_hz = draw(st.integers(10, top_centi_hz))
        return PulseTrain(shape=chosen, frequency_hz=Decimal(centi_hz).scaleb(-2))
    interval_us = draw(st.integers(duration_us, max(duration_us, 3 * US_PER_S)))
    return PulseTrain(shape=chosen, pulse_interval_ms=Decimal(interval_us).scaleb(-3))


_ANY_TRAIN = pulse_trains()


# --- cycles ----------------------------------------------------------------------------


def cycled_duties() -> st.SearchStrategy[CycledDuty]:
    """Work/rest cycles: ramps 0-5 s, on 0.1-30 s, off 0-60 s (tenths, sometimes ms)."""
    return st.builds(
        CycledDuty,
        ramp_up_s=st.one_of(decimals(0, 5, 1), decimals(0, 5, 3)),
        on_s=st.one_of(decimals("0.1", 30, 1), decimals("0.001", 2, 3)),
        ramp_down_s=st.one_of(decimals(0, 5, 1), decimals(0, 5, 3)),
        off_s=st.one_of(decimals(0, 60, 1), decimals(0, 2, 3)),
    )


def continuous_cycles() -> st.SearchStrategy[Continuous]:
    """Continuous stimulation with ramps of 0-10 s in and out."""
    return st.builds(Continuous, ramp_up_s=decimals(0, 10, 1), ramp_down_s=decimals(0, 10, 1))


def cycles() -> st.SearchStrategy[CycledDuty | Continuous]:
    """Either kind of cycle."""
    return st.one_of(cycled_duties(), continuous_cycles())


_ANY_CYCLE = cycles()  # protocols() has a parameter of the same name


# --- protocols -------------------------------------------------------------------------


def electrode_requirements() -> st.SearchStrategy[ElectrodeRequirement]:
    return st.builds(
        ElectrodeRequirement,
        kinds=st.lists(
            st.sampled_from(list(ElectrodeKind)), min_size=1, max_size=3, unique=True
        ).map(tuple),
        min_contact_area_cm2=decimals("0.5", 200, 1),
        note=_OPTIONAL_TEXT,
    )


_ELECTRODE_REQUIREMENTS = electrode_requirements()


def _session_min(draw: st.DrawFn, cycle: CycledDuty | Continuous, max_session_min: int) -> Decimal:
    """A session (tenths of a minute) holding at least one cycle, at most the cap."""
    cap_tenths = 10 * max_session_min
    if isinstance(cycle, CycledDuty):
        period_us = cycle.period_us
        least = max(1, math.ceil(Fraction(period_us, 6 * US_PER_S)))
        most = min(cap_tenths, max(least, math.floor(Fraction(period_us * 200, 6 * US_PER_S))))
    else:
        ramps_s = cycle.ramp_up_s + cycle.ramp_down_s
        least = max(1, math.ceil(Fraction(ramps_s) / 6))  # 0.1 min = 6 s
        most = cap_tenths
    tenths = draw(st.integers(least, max(least, most)))
    return Decimal(tenths).scaleb(-1)


def _halved(value: Decimal, places: int = 2) -> Decimal:
    """``value / 2`` rounded *up* to ``places`` decimals (so it stays <= value)."""
    scale = 10**places
    return Decimal(math.ceil(Fraction(value) * scale / 2)).scaleb(-places)


def _adjustable(
    draw: st.DrawFn, train: PulseTrain, cycle: CycledDuty | Continuous, session_min: Decimal
) -> dict[Adjustable, AdjustableRange]:
    """Ranges that keep the protocol valid for any value inside them: rates, widths and
    cycle times may only go down (pulses still fit, cycles still fit the session), the
    session may only grow."""
    candidates: dict[Adjustable, AdjustableRange] = {}
    if train.frequency_hz is not None:
        f = train.frequency_hz
        candidates[Adjustable.FREQUENCY_HZ] = AdjustableRange(
            min=max(Decimal("0.01"), _halved(f)), max=f
        )
    width = getattr(train.shape, "phase_width_us", None)
    if width is not None:
        candidates[Adjustable.PHASE_WIDTH_US] = AdjustableRange(
            min=Decimal(math.ceil(width / 2)), max=Decimal(width)
        )
    names = [Adjustable.RAMP_UP_S, Adjustable.RAMP_DOWN_S]
    if isinstance(cycle, CycledDuty):
        names += [Adjustable.ON_S, Adjustable.OFF_S]
    for name in names:
        value: Decimal = getattr(cycle, name.value)
        candidates[name] = AdjustableRange(min=_halved(value, 6) if value else value, max=value)
    top = min(Decimal(MAX_SESSION_MIN), session_min * 2)
    candidates[Adjustable.SESSION_DURATION_MIN] = AdjustableRange(min=session_min, max=top)
    chosen = draw(
        st.lists(st.sampled_from(sorted(candidates)), unique=True, max_size=len(candidates))
    )
    return {name: candidates[name] for name in chosen}


@st.composite
def protocols(
    draw: st.DrawFn,
    *,
    trains: st.SearchStrategy[PulseTrain] | None = None,
    shapes: st.SearchStrategy[PulseShape] | None = None,
    cycles: st.SearchStrategy[CycledDuty | Continuous] | None = None,
    indications: Sequence[Indication] = tuple(Indication),
    max_session_min: int = MAX_SESSION_MIN,
    max_ceiling_ma: int = 250,
    adjustable: bool = True,
) -> Protocol:
    """A complete, valid protocol: any shape, rate, cycle, amplitude policy and ranges.

    ``trains`` / ``shapes`` / ``cycles`` narrow the pulse and the cycle;
    ``max_session_min`` keeps sessions (and pulse counts) small for brute force.
    """
    if trains is None:
        trains = _ANY_TRAIN if shapes is None else pulse_trains(shapes)
    train = draw(trains)
    cycle = draw(cycles if cycles is not None else _ANY_CYCLE)
    session_min = _session_min(draw, cycle, max_session_min)
    ceiling_ua = draw(st.integers(100, max_ceiling_ma * 1000).map(lambda ua: ua - ua % 100))
    step_ua = draw(st.integers(1, min(10_000, ceiling_ua)))
    per_day = draw(st.integers(1, 6))
    return Protocol(
        id=draw(_PROTOCOL_ID),
        version=draw(st.integers(1, 99)),
        title=draw(_TITLE),
        summary=draw(_OPTIONAL_TEXT),
        indication=draw(st.sampled_from(list(indications))),
        eligibility=tuple(draw(st.lists(_TEXT, min_size=1, max_size=3))),
        channels=draw(st.integers(1, 8)),
        pulse=train,
        cycle=cycle,
        session_duration_min=session_min,
        amplitude=AmplitudePolicy(
            ceiling_ma=Decimal(ceiling_ua).scaleb(-3), titration_step_ma=Decimal(step_ua).scaleb(-3)
        ),
        sessions_per_day=per_day,
        sessions_per_week=draw(st.integers(1, min(42, 7 * per_day))),
        programme_weeks=draw(st.integers(1, 104)),
        electrode=draw(_ELECTRODE_REQUIREMENTS),
        adjustable=_adjustable(draw, train, cycle, session_min) if adjustable else {},
        source=Citation(
            citation=draw(_CITATION),
            confidence=draw(st.sampled_from(list(Confidence))),
            note=draw(_OPTIONAL_TEXT),
        ),
    )


# --- prescriptions ---------------------------------------------------------------------


@st.composite
def prescriptions(draw: st.DrawFn, protocol: Protocol, *, adjust: bool = True) -> Prescription:
    """A prescription that resolves against ``protocol``: ceiling and step within the
    protocol's, adjustments (if ``adjust``) only of declared parameters, within range."""
    ceiling_ua = draw(st.integers(1, protocol.amplitude.ceiling_ua))
    step_ua = draw(
        st.one_of(
            st.none(),
            st.integers(1, min(protocol.amplitude.titration_step_ua, ceiling_ua)),
        )
    )
    adjustments: dict[Adjustable, Decimal] = {}
    if adjust and protocol.adjustable:
        names = draw(st.lists(st.sampled_from(sorted(protocol.adjustable)), unique=True))
        for name in names:
            allowed = protocol.adjustable[name]
            places = 0 if name is Adjustable.PHASE_WIDTH_US else 6
            adjustments[name] = draw(decimals(allowed.min, allowed.max, places))
    start = draw(st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31)))
    end = draw(st.one_of(st.none(), st.dates(min_value=start, max_value=date(2036, 12, 31))))
    return Prescription(
        patient_code=draw(_PATIENT_CODE),
        protocol=ProtocolRef.of(protocol),
        max_amplitude_ma=Decimal(ceiling_ua).scaleb(-3),
        titration_step_ma=None if step_ua is None else Decimal(step_ua).scaleb(-3),
        adjustments=adjustments,
        prescriber=draw(_PRESCRIBER),
        start_date=start,
        end_date=end,
        notes=draw(_OPTIONAL_TEXT),
    )


# --- device profiles -------------------------------------------------------------------


def electrode_sets(
    kinds: Sequence[ElectrodeKind] = tuple(ElectrodeKind),
    min_area_cm2: Decimal = Decimal("0.5"),
) -> st.SearchStrategy[ElectrodeSet]:
    """An electrode set of one of ``kinds`` whose contacts are all >= ``min_area_cm2``."""
    return st.builds(
        ElectrodeSet,
        name=_TEXT,
        kind=st.sampled_from(list(kinds)),
        contact_areas_cm2=st.lists(
            decimals(min_area_cm2, max(Decimal(400), min_area_cm2), 1), min_size=1, max_size=4
        ).map(tuple),
    )


@st.composite
def _identity(draw: st.DrawFn) -> Identity:
    low = draw(st.tuples(st.integers(0, 9), st.integers(0, 99)))
    high = draw(st.tuples(st.integers(low[0], 9), st.integers(0, 99)).filter(lambda v: v >= low))
    return Identity(
        manufacturer=draw(_TEXT),
        model=draw(_TEXT),
        firmware_min=f"{low[0]}.{low[1]}",
        firmware_max=f"{high[0]}.{high[1]}",
    )


@st.composite
def _link(draw: st.DrawFn) -> Link:
    heartbeat = draw(st.integers(1, 2_000))
    watchdog = draw(st.integers(2 * heartbeat, 10_000).filter(lambda w: w >= 2 * heartbeat))
    return Link(
        wire_protocol=draw(st.sampled_from(["estim-wire/1", "sciencemode2"])),
        baudrate=draw(st.sampled_from([9600, 115200, 460800])),
        parity=draw(st.sampled_from(["N", "E"])),
        heartbeat_period_ms=heartbeat,
        watchdog_timeout_ms=watchdog,
    )


def _measurement() -> st.SearchStrategy[Measurement]:
    return st.builds(
        Measurement,
        measures_current=st.booleans(),
        measures_impedance=st.booleans(),
        current_tolerance_ma=decimals(0, 5, 1),
        current_tolerance_percent=decimals(0, 20, 0),
        status_period_ms=st.integers(10, 1_000),
    )


@st.composite
def _impedance(draw: st.DrawFn) -> Impedance:
    good_min = draw(st.integers(10, 1_000))
    good_max = draw(st.integers(good_min + 1, 5_000))
    open_circuit = draw(st.integers(good_max + 1, 100_000))
    return Impedance(
        good_min_ohm=Decimal(good_min),
        good_max_ohm=Decimal(good_max),
        open_circuit_ohm=Decimal(open_circuit),
    )


def _leakage() -> st.SearchStrategy[Leakage | None]:
    return st.one_of(
        st.none(),
        st.builds(Leakage, normal_ua=decimals(0, 150, 0), single_fault_ua=decimals(0, 600, 0)),
    )


@st.composite
def _output(draw: st.DrawFn) -> Output:
    amplitude_max_ua = draw(st.integers(1, 500)) * 1000
    resolution_ua = draw(
        st.sampled_from([1, 10, 50, 100, 500, 1000]).filter(lambda r: r <= amplitude_max_ua)
    )
    width_min = draw(st.integers(1, 1_000))
    width_max = draw(st.integers(width_min, LONG_PHASE_MAX_US))
    f_min = draw(decimals("0.1", 100, 1))
    f_max = draw(decimals(f_min, 10_000, 1))
    return Output(
        channels=draw(st.integers(1, 16)),
        amplitude_max_ma=Decimal(amplitude_max_ua).scaleb(-3),
        amplitude_resolution_ma=Decimal(resolution_ua).scaleb(-3),
        phase_width_min_us=width_min,
        phase_width_max_us=width_max,
        phase_width_resolution_us=draw(st.sampled_from([1, 10, 100])),
        frequency_min_hz=f_min,
        frequency_max_hz=f_max,
        pulse_period_resolution_us=draw(st.one_of(st.none(), st.integers(1, 100))),
        supported_shapes=tuple(
            draw(st.lists(st.sampled_from(list(ShapeKind)), min_size=1, unique=True))
        ),
        compliance_voltage_v=draw(decimals(1, 500, 0)),
        device_ramps=False,  # refused by the profile check (PROFILE_DEVICE_RAMPS)
    )


@st.composite
def device_profiles(draw: st.DrawFn) -> DeviceProfile:
    """Any valid device profile (it may or may not deliver a given protocol)."""
    return DeviceProfile(
        identity=draw(_identity()),
        link=draw(_link()),
        output=draw(_output()),
        measurement=draw(_measurement()),
        impedance=draw(_impedance()),
        electrodes=tuple(draw(st.lists(electrode_sets(), min_size=1, max_size=3))),
        leakage=draw(_leakage()),
        notes=draw(_OPTIONAL_TEXT),
    )


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


@st.composite
def profiles_for(
    draw: st.DrawFn,
    protocol: Protocol,
    *,
    ceiling_ua: int | None = None,
    step_ua: int | None = None,
) -> DeviceProfile:
    """A profile that can deliver ``protocol`` (no device-capability error) at
    ``ceiling_ua`` / ``step_ua`` (the protocol's own by default): enough channels and
    output, its shape, its phase widths on the grid, its rate, suitable electrodes.

    Compliance voltage, measurement abilities, leakage and watchdog stay random: they
    give warnings (or profile findings), never a capability error.
    """
    ceiling = protocol.amplitude.ceiling_ua if ceiling_ua is None else ceiling_ua
    step = protocol.amplitude.titration_step_ua if step_ua is None else step_ua
    amplitude_max_ua = draw(st.integers(max(ceiling, 1), 500_000))
    resolution_ua = draw(st.sampled_from([d for d in _divisors(step) if d <= amplitude_max_ua]))

    widths = [p.width_us for p in protocol.pulse.shape.phases]
    width_grid = math.gcd(*widths)
    width_min = draw(st.integers(1, min(widths)))
    width_max = draw(st.integers(max(widths), LONG_PHASE_MAX_US))

    rate = protocol.pulse.rate_hz
    f_min_milli = draw(st.integers(1, max(1, math.floor(rate * 1000))))
    f_max_milli = draw(st.integers(math.ceil(rate * 1000), max(math.ceil(rate * 1000), 10**7)))
    others = draw(st.lists(st.sampled_from(list(ShapeKind)), unique=True))
    if protocol.pulse.shape.is_long_pulse:  # long (e.g. interrupted DC) pulses need a
        others.append(draw(st.sampled_from(LONG_KINDS)))  # device that declares them
    kinds = list(protocol.electrode.kinds)
    area = protocol.electrode.min_contact_area_cm2
    required = draw(electrode_sets(kinds, min_area_cm2=area))
    extra = draw(st.lists(electrode_sets(min_area_cm2=area), max_size=2))

    output = Output(
        channels=draw(st.integers(protocol.channels, 16)),
        amplitude_max_ma=Decimal(amplitude_max_ua).scaleb(-3),
        amplitude_resolution_ma=Decimal(resolution_ua).scaleb(-3),
        phase_width_min_us=width_min,
        phase_width_max_us=width_max,
        phase_width_resolution_us=draw(st.sampled_from(_divisors(width_grid))),
        frequency_min_hz=Decimal(f_min_milli).scaleb(-3),
        frequency_max_hz=Decimal(f_max_milli).scaleb(-3),
        pulse_period_resolution_us=draw(st.one_of(st.none(), st.integers(1, 100))),
        supported_shapes=tuple(dict.fromkeys([protocol.pulse.shape.kind, *others])),
        compliance_voltage_v=draw(decimals(1, 500, 0)),
        device_ramps=False,  # refused by the profile check (PROFILE_DEVICE_RAMPS)
    )
    return DeviceProfile(
        identity=draw(_identity()),
        link=draw(_link()),
        output=output,
        measurement=draw(_measurement()),
        impedance=draw(_impedance()),
        electrodes=(required, *extra),
        leakage=draw(_leakage()),
    )
