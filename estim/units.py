"""Exact unit conversions.

Anything a safety check compares is an integer in microamps (uA) or microseconds (us),
or an exact :class:`fractions.Fraction` derived from them. Human-facing values (mA,
seconds, Hz) are :class:`decimal.Decimal`, parsed from TOML with ``parse_float=Decimal``
so ``0.1`` means one tenth and not the nearest binary float.

Conversions refuse values that are not a whole number of the smaller unit: silently
rounding a clinician's 12.3456 mA to 12.345 mA would be a clamp in disguise.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from estim.errors import InputError

UA_PER_MA = 1000
US_PER_MS = 1000
US_PER_S = 1_000_000

Number = int | Decimal | Fraction


def _exact(value: Number, scale: int, unit_from: str, unit_to: str) -> int:
    scaled = Fraction(value) * scale
    if scaled.denominator != 1:
        raise InputError(
            f"{value} {unit_from} is not a whole number of {unit_to}; "
            f"give it to at most {len(str(scale)) - 1} decimal places"
        )
    return int(scaled)


def ma_to_ua(value_ma: Number) -> int:
    """Milliamps to integer microamps, exactly."""
    return _exact(value_ma, UA_PER_MA, "mA", "uA")


def ms_to_us(value_ms: Number) -> int:
    """Milliseconds to integer microseconds, exactly."""
    return _exact(value_ms, US_PER_MS, "ms", "us")


def s_to_us(value_s: Number) -> int:
    """Seconds to integer microseconds, exactly."""
    return _exact(value_s, US_PER_S, "s", "us")


def ua_to_ma(value_ua: int | Fraction) -> Decimal:
    """Integer microamps to milliamps, for display and records (exact)."""
    frac = Fraction(value_ua) / UA_PER_MA
    return Decimal(frac.numerator) / Decimal(frac.denominator)


def us_to_s(value_us: int | Fraction) -> Decimal:
    """Microseconds to seconds, for display and records (exact to 1 us)."""
    frac = Fraction(value_us) / US_PER_S
    return Decimal(frac.numerator) / Decimal(frac.denominator)


def fraction_to_float(value: Fraction) -> float:
    """For display only: never compare the result against a limit."""
    return float(value)
