"""What a person types on ``estim session start`` and ``estim demo``, checked first.

Every option is checked before the records are opened or a port is touched, and each
refusal is one :class:`~estim.errors.InputError` (exit code 2) that names the option,
the value, the limit and the fix. Length limits come from the records models
themselves, so a value these helpers accept is never refused later by the store with
a validation traceback.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import TypeVar

import annotated_types
from pydantic import BaseModel, ValidationError

from estim.errors import InputError, Problem
from estim.records.models import EligibilityOverride, SessionStart
from estim.units import ma_to_ua, ua_to_ma

SHOWN_CHARS = 40
"""A long value is shown by its first characters and its length, not in full."""

FINDING_CODE = re.compile(r"^[A-Z][A-Z0-9_]*$")

M = TypeVar("M", bound=BaseModel)


def length_limits(model: type[BaseModel], field: str) -> tuple[int, int | None]:
    """(minimum, maximum) length of a text field, read from the model's constraints."""
    low, high = 0, None
    for constraint in model.model_fields[field].metadata:
        if isinstance(constraint, annotated_types.MinLen):
            low = constraint.min_length
        elif isinstance(constraint, annotated_types.MaxLen):
            high = constraint.max_length
    return low, high


def shown(text: str) -> str:
    """A value as an error message shows it: whole if short, else its start and length."""
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


def one_line(
    option: str, value: str, *, model: type[BaseModel], field: str, what: str, fix: str
) -> str:
    """Trimmed single-line text within the model field's length limits."""
    text = value.strip()
    control = next((c for c in text if unicodedata.category(c).startswith("C")), None)
    if control is not None:
        raise _refused(
            option,
            f"{what} contains a control character ({control!r})",
            text,
            "one line of printable text",
            fix,
        )
    low, high = length_limits(model, field)
    if len(text) < low:
        raise _refused(option, f"{what} is too short", text, f"at least {low} characters", fix)
    if high is not None and len(text) > high:
        raise _refused(option, f"{what} is too long", text, f"at most {high} characters", fix)
    return text


def clinician_name(value: str | None, default: str) -> str:
    """``--clinician`` (or the user name when not given), as the records will keep it."""
    return one_line(
        "--clinician" if value is not None else "--clinician (default: your user name)",
        default if value is None else value,
        model=SessionStart,
        field="clinician",
        what="the clinician's name",
        fix="--clinician 'NAME' with the name or initials of who runs the session",
    )


def eligibility_reason(value: str | None) -> str | None:
    """``--override-eligibility REASON``: why stimulate despite voluntary contraction."""
    if value is None:
        return None
    return one_line(
        "--override-eligibility",
        value,
        model=EligibilityOverride,
        field="reason",
        what="the reason",
        fix="write the clinical reason in a sentence, e.g. --override-eligibility "
        "'contraction too weak to train voluntarily (assessed today)'",
    )


def port_url(value: str, option: str = "--port") -> str:
    """A serial port path or pyserial URL: not empty, one line (pyserial judges the rest)."""
    text = value.strip()
    fix = (
        "give the stimulator's serial port (e.g. /dev/ttyUSB0) or a pyserial URL "
        "(e.g. socket://host:4000); `estim sim` prints the port of a simulator"
    )
    if not text:
        raise _refused(option, "no port given", value, "a port path or URL", fix)
    if any(unicodedata.category(c).startswith("C") or c.isspace() for c in text):
        raise _refused(option, "a port has no spaces or control characters", text, None, fix)
    return text


def titration_target_ua(text: str | None) -> int | None:
    """``--titrate-to MA`` in uA: a finite number above 0 with at most 3 decimals.

    Whether the prescription allows it (the ceiling, the step) is checked by
    :func:`check_titration_target` once the prescription is known.
    """
    if text is None:
        return None
    option = "--titrate-to"
    fix = "give the amplitude to titrate to in mA, e.g. --titrate-to 8"
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise _refused(option, "not a number", text, "a number of mA above 0", fix) from None
    if not value.is_finite():
        raise _refused(option, "not a finite number", text, "a number of mA above 0", fix)
    if value <= 0:
        raise _refused(option, "must be above 0 mA", text, "above 0 mA, at most the ceiling", fix)
    try:
        return ma_to_ua(value)
    except InputError:
        raise _refused(
            option, "finer than 1 uA", text, "at most 3 decimal places (whole uA)", fix
        ) from None


def check_titration_target(target_ua: int, text: str, ceiling_ua: int, step_ua: int) -> None:
    """The automatic titration must reach the target exactly: within the prescription's
    ceiling and a whole number of its steps (it would otherwise stop short silently)."""
    ceiling, step = _ma(ceiling_ua), _ma(step_ua)
    if target_ua > ceiling_ua:
        raise InputError(
            f"--titrate-to {shown(text.strip())} mA is above the ceiling {ceiling} mA",
            [
                Problem(
                    "--titrate-to",
                    "above the prescription's ceiling",
                    value=f"{shown(text.strip())} mA",
                    limit=f"at most {ceiling} mA",
                    fix=f"choose at most {ceiling} mA (in steps of {step} mA)",
                )
            ],
        )
    if target_ua % step_ua:
        below = target_ua - target_ua % step_ua
        choices = [_ma(v) for v in (below, below + step_ua) if 0 < v <= ceiling_ua]
        raise InputError(
            f"--titrate-to {text.strip()} mA is not a whole number of {step} mA steps",
            [
                Problem(
                    "--titrate-to",
                    "titration moves only by the prescription's step",
                    value=f"{text.strip()} mA",
                    limit=f"a multiple of {step} mA",
                    fix=f"choose {' or '.join(choices)} mA",
                )
            ],
        )


def acknowledged_codes(values: Iterable[str] | None) -> frozenset[str]:
    """``--acknowledge CODE`` values: finding codes, upper-cased (``profile_watchdog`` is
    ``PROFILE_WATCHDOG``). Whether each names a current warning is checked later."""
    codes: set[str] = set()
    for value in values or ():
        code = value.strip().upper()
        if not FINDING_CODE.match(code):
            raise _refused(
                "--acknowledge",
                "not a finding code",
                value,
                "a code such as PROFILE_WATCHDOG (letters, digits and _)",
                "copy the code of a warning printed by the static checks",
            )
        codes.add(code)
    return frozenset(codes)


def checked_model(model: type[M], options: dict[str, str], **values: object) -> M:
    """Build a records model from command-line values; a refusal names the option.

    The safety net behind the helpers above: a constraint they do not cover still gives
    a clear :class:`InputError`, never a validation traceback.
    """
    try:
        return model(**values)
    except ValidationError as err:
        problems = []
        for error in err.errors():
            field = str(error["loc"][0]) if error["loc"] else model.__name__
            value = error.get("input")
            problems.append(
                Problem(
                    options.get(field, field),
                    error["msg"],
                    value=shown(value) if isinstance(value, str) else None,
                    fix=f"correct {options.get(field, field)}",
                )
            )
        raise InputError(f"cannot record this session ({model.__name__})", problems) from err


def _ma(value_ua: int) -> str:
    return f"{ua_to_ma(value_ua).normalize():f}"


def _refused(option: str, message: str, value: str, limit: str | None, fix: str) -> InputError:
    return InputError(
        f"{option}: {message}",
        [Problem(option, message, value=shown(value), limit=limit, fix=fix)],
    )
