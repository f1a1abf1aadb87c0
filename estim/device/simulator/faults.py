"""Fault injection: a small spec language, shared by the command line, URLs and tests.

A fault spec is ``KIND`` or ``KIND:key=value,key=value``. Times take a unit
(``5s``, ``250ms``; a bare number is seconds) and count from the moment the
simulator started; without ``at=`` a fault applies at once. See :data:`FAULT_HELP`.

Hardware and load faults act on the firmware model; link faults (``drop``,
``corrupt``, ``delay``, ``disconnect``) act on the bytes between the host and the
personality, in the transport, as a real cable or UART would.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from fractions import Fraction

from estim.clock import NS_PER_MS, NS_PER_S
from estim.errors import InputError, Problem

FAULT_HELP = """\
Fault SPEC is KIND or KIND:key=value,...; times count from simulator start
(5s, 250ms; a bare number is seconds); without at= a fault applies at once.

  open:ch=1[,at=5s][,for=2s]  electrode contact lost (reads megaohms)
  close:ch=1[,at=7s]          electrode contact restored
  drift:ch=1,ohm_per_s=20     load impedance drifts (may be negative)
  load:ch=1,ohm=800           load impedance set
  stuck:ch=1[,ma=20][,at=3s]  output stage frozen (default: present level)
  lie-output[:at=1s]          status says outputs are off, whatever the truth
  reset[:at=8s]               device restarts: outputs off, RESET latched
  disconnect[:at=10s]         port vanishes; the device keeps running
  drop:p=0.01[,dir=in|out|both]  each byte lost with probability p
  corrupt:p=0.01[,dir=...]    a bit flipped in a byte with probability p
  delay:ms=20[,dir=...]       bytes arrive late (default dir=out)
"""


class FaultKind(StrEnum):
    OPEN = "open"
    CLOSE = "close"
    DRIFT = "drift"
    LOAD = "load"
    STUCK = "stuck"
    LIE_OUTPUT = "lie-output"
    RESET = "reset"
    DISCONNECT = "disconnect"
    DROP = "drop"
    CORRUPT = "corrupt"
    DELAY = "delay"


class Direction(StrEnum):
    IN = "in"  # host -> device
    OUT = "out"  # device -> host
    BOTH = "both"

    def covers(self, direction: Direction) -> bool:
        return self is Direction.BOTH or self is direction


LINK_KINDS = frozenset({FaultKind.DROP, FaultKind.CORRUPT, FaultKind.DELAY})

# key -> is it required, for each kind
_KEYS: dict[FaultKind, dict[str, bool]] = {
    FaultKind.OPEN: {"ch": True, "at": False, "for": False},
    FaultKind.CLOSE: {"ch": True, "at": False},
    FaultKind.DRIFT: {"ch": True, "ohm_per_s": True, "at": False},
    FaultKind.LOAD: {"ch": True, "ohm": True, "at": False},
    FaultKind.STUCK: {"ch": True, "ma": False, "at": False},
    FaultKind.LIE_OUTPUT: {"at": False},
    FaultKind.RESET: {"at": False},
    FaultKind.DISCONNECT: {"at": False},
    FaultKind.DROP: {"p": True, "dir": False, "at": False},
    FaultKind.CORRUPT: {"p": True, "dir": False, "at": False},
    FaultKind.DELAY: {"ms": True, "dir": False, "at": False},
}


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One parsed fault. Only the fields its ``kind`` uses are set."""

    kind: FaultKind
    text: str
    at_ns: int | None = None
    channel: int | None = None
    duration_ns: int | None = None  # open ... for=
    probability: Fraction | None = None  # drop, corrupt
    delay_ns: int | None = None  # delay
    ohm: Fraction | None = None  # load
    ohm_per_s: Fraction | None = None  # drift
    level_ua: int | None = None  # stuck ... ma=
    direction: Direction = Direction.BOTH

    @property
    def is_link_fault(self) -> bool:
        return self.kind in LINK_KINDS


def _problem(text: str, message: str, value: object = None, fix: str | None = None) -> InputError:
    return InputError(
        "invalid fault spec",
        [
            Problem(
                location=f"fault {text!r}",
                message=message,
                value=value,
                fix=fix or "see `estim sim --help` for the fault spec language",
            )
        ],
    )


def _decimal(text: str, key: str, raw: str) -> Decimal:
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise _problem(text, f"{key} must be a number", raw) from None
    if not value.is_finite():
        raise _problem(text, f"{key} must be a finite number", raw)
    return value


def parse_duration_ns(text: str, key: str, raw: str) -> int:
    """``5s``, ``250ms``, ``1.5`` (seconds) -> whole nanoseconds, >= 0."""
    lowered = raw.strip().lower()
    if lowered.endswith("ms"):
        number, scale = lowered[:-2], NS_PER_MS
    elif lowered.endswith("s"):
        number, scale = lowered[:-1], NS_PER_S
    else:
        number, scale = lowered, NS_PER_S
    value = _decimal(text, key, number) * scale
    if value < 0:
        raise _problem(text, f"{key} must not be negative", raw)
    if value != value.to_integral_value():
        raise _problem(text, f"{key} is finer than a nanosecond", raw)
    return int(value)


def parse_fault(text: str, *, channels: int | None = None) -> FaultSpec:
    """Parse one fault spec; ``channels`` (if given) bounds ``ch=``."""
    kind_text, _, rest = text.strip().partition(":")
    try:
        kind = FaultKind(kind_text.strip().lower())
    except ValueError:
        known = ", ".join(k.value for k in FaultKind)
        raise _problem(text, "unknown fault kind", kind_text, f"use one of {known}") from None
    allowed = _KEYS[kind]
    values: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or not value.strip():
            raise _problem(text, f"{item!r} is not key=value")
        if key not in allowed:
            raise _problem(
                text,
                f"{kind.value} takes no {key!r}",
                fix=f"{kind.value} takes: {', '.join(allowed)}",
            )
        if key in values:
            raise _problem(text, f"{key!r} given twice")
        values[key] = value.strip()
    for key, required in allowed.items():
        if required and key not in values:
            raise _problem(text, f"{kind.value} needs {key}=", fix=f"e.g. {_example(kind)}")

    fields: dict[str, object] = {}
    if "at" in values:
        fields["at_ns"] = parse_duration_ns(text, "at", values["at"])
    if "for" in values:
        fields["duration_ns"] = parse_duration_ns(text, "for", values["for"])
        if fields["duration_ns"] == 0:
            raise _problem(text, "for must be longer than zero", values["for"])
    if "ch" in values:
        try:
            channel = int(values["ch"])
        except ValueError:
            raise _problem(text, "ch must be a channel number", values["ch"]) from None
        upper = channels if channels is not None else 16
        if not 1 <= channel <= upper:
            raise _problem(text, f"channel must be 1..{upper}", channel)
        fields["channel"] = channel
    if "p" in values:
        probability = Fraction(_decimal(text, "p", values["p"]))
        if not 0 < probability <= 1:
            raise _problem(text, "p must be above 0 and at most 1", values["p"])
        fields["probability"] = probability
    if "ms" in values:
        fields["delay_ns"] = parse_duration_ns(text, "ms", values["ms"] + "ms")
    if "ohm" in values:
        ohm = Fraction(_decimal(text, "ohm", values["ohm"]))
        if ohm <= 0:
            raise _problem(text, "ohm must be positive", values["ohm"])
        fields["ohm"] = ohm
    if "ohm_per_s" in values:
        fields["ohm_per_s"] = Fraction(_decimal(text, "ohm_per_s", values["ohm_per_s"]))
    if "ma" in values:
        level = _decimal(text, "ma", values["ma"]) * 1000
        if level < 0 or level != level.to_integral_value():
            raise _problem(text, "ma must be >= 0 and a whole number of uA", values["ma"])
        fields["level_ua"] = int(level)
    if "dir" in values:
        try:
            fields["direction"] = Direction(values["dir"].lower())
        except ValueError:
            raise _problem(text, "dir must be in, out or both", values["dir"]) from None
    elif kind is FaultKind.DELAY:
        fields["direction"] = Direction.OUT
    return FaultSpec(kind=kind, text=text.strip(), **fields)  # type: ignore[arg-type]


def parse_faults(
    texts: list[str] | tuple[str, ...], *, channels: int | None = None
) -> list[FaultSpec]:
    """Parse several specs, reporting every bad one at once."""
    faults: list[FaultSpec] = []
    problems: list[Problem] = []
    for text in texts:
        try:
            faults.append(parse_fault(text, channels=channels))
        except InputError as err:
            problems.extend(err.problems)
    if problems:
        raise InputError("invalid fault spec", problems)
    return faults


def _example(kind: FaultKind) -> str:
    for line in FAULT_HELP.splitlines():
        stripped = line.strip()
        if stripped.startswith(kind.value):
            return stripped.split()[0]
    return kind.value
