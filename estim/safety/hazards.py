"""The hazards estim's runtime interlocks control, as data.

Each hazard names the harm, and the causes that lead to it; each interlock in
:mod:`estim.safety.interlocks` names the hazards it controls. ``docs/safety/hazards.md``
is generated from this table, the interlock registry and the tests that trip each
interlock (``python -m estim.safety.hazards``), and a test fails when the committed page
differs from what the code says, when an interlock controls no known hazard, or when an
interlock has no test that trips it.

Risk-control priority (ISO 14971, facts sheet [C2]): inherent safety by design first
(the device and the simulator enforce their own hardware limits; the controller starts
at zero and ramps), then protective measures (these interlocks), then information.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Hazard:
    id: str
    title: str
    harm: str
    causes: tuple[str, ...]
    by_design: tuple[str, ...] = ()  # inherent measures, ahead of any interlock


HAZARDS: tuple[Hazard, ...] = (
    Hazard(
        "H-BURN",
        "Excessive current or current density",
        "Burns or tissue damage at the electrode; worse where sensation is reduced after "
        "nerve damage, because the patient may not feel it.",
        (
            "amplitude commanded above the patient's ceiling, the profile's maximum or a "
            "standard limit",
            "poor electrode contact concentrating current on a small area",
            "device delivering more current than commanded",
        ),
        by_design=(
            "every amplitude passes the lowest ceiling before it is sent; values out of "
            "range are refused, never clamped",
            "the device (and the simulator) refuses amplitudes beyond its own hardware "
            "limits, independently of the controller",
        ),
    ),
    Hazard(
        "H-SURGE",
        "Sudden change in current",
        "Pain, startle or a reflex injury from a jump in intensity, for example when an "
        "open electrode regains contact or a titration step is too large.",
        (
            "open circuit at the electrode while current is set",
            "titration step larger than prescribed",
            "stimulation starting without a ramp from zero",
        ),
        by_design=(
            "titration starts at zero and moves only by the prescribed step",
            "the session starts at zero and ramps; after a pause it ramps from zero again",
            "an orderly stop ramps down",
        ),
    ),
    Hazard(
        "H-UNCONTROLLED",
        "Stimulation continuing without control",
        "Stimulation the clinician cannot stop or see: the host, the link or the "
        "software has failed while the device may still be stimulating.",
        (
            "serial link lost, cable pulled, device unplugged",
            "device stops answering (firmware hang, reset)",
            "controller error in the middle of a transition",
        ),
        by_design=(
            "the device's watchdog stops output when the controller falls silent (the "
            "driver sends no hidden keep-alive, so a hung controller trips it)",
            "a callback that fails mid-transition zeroes every channel and latches FAULT "
            "(CONTROLLER-EXCEPTION); an event log that cannot be written does the same "
            "(CONTROLLER-RECORDS)",
            "emergency stop reaches the device directly from any thread, ahead of anything queued",
        ),
    ),
    Hazard(
        "H-UNINTENDED",
        "Output on when it must be off",
        "Stimulation during set-up, pause or after the session, when the patient and "
        "clinician expect none.",
        (
            "device ignores or loses an output-off command (stuck output)",
            "controller state and device state disagree",
        ),
        by_design=(
            "after every event the state machine checks that output is off in every "
            "non-stimulating state, and zeroes and latches FAULT if not "
            "(CONTROLLER-OUTPUT-CHECK)",
            "output is switched off before a state change and on only after it",
            "at the end of every session the device's status must confirm zero",
        ),
    ),
    Hazard(
        "H-DEVICE",
        "Device malfunction",
        "The device delivers something other than what was commanded, or reports a fault "
        "it cannot recover from by itself.",
        (
            "hardware fault (over-current, compliance, internal error, reset)",
            "command refused by the device",
            "a different device or firmware than the profile describes",
        ),
        by_design=("the driver refuses a device whose identity does not match the profile",),
    ),
    Hazard(
        "H-OVERDOSE",
        "Too much stimulation",
        "Muscle fatigue, pain or skin irritation from sessions that run too long or too often.",
        (
            "session timer failure",
            "more sessions per day or week than prescribed",
        ),
        by_design=("the schedule holds only whole cycles within the prescribed session duration",),
    ),
    Hazard(
        "H-PRESCRIPTION",
        "Unsafe or unintended parameters",
        "Stimulation with parameters outside the protocol, the device's capability or "
        "the standards, or with warnings nobody read.",
        (
            "prescription or protocol error found by the static checks",
            "warning not acknowledged by the clinician",
        ),
        by_design=("a prescription never widens its protocol (ceiling, step, adjustable ranges)",),
    ),
)

HAZARD_IDS = frozenset(h.id for h in HAZARDS)


def hazard(hazard_id: str) -> Hazard:
    for h in HAZARDS:
        if h.id == hazard_id:
            return h
    raise KeyError(hazard_id)


# --- tests that trip each interlock --------------------------------------------------

TRIPS_MARKER = "trips"
"""Tests carry ``@pytest.mark.trips("IL-...")`` naming the interlock they make trip."""


@dataclass(frozen=True, slots=True)
class TripTest:
    interlock_id: str
    path: str  # relative to the repository root
    test: str  # Class::function or function


def find_trip_tests(tests_dir: Path, root: Path | None = None) -> list[TripTest]:
    """Every test function marked ``trips("IL-...")`` under ``tests_dir``, by reading source.

    Reading the source (not collecting) finds the markers of the whole suite even when
    only part of it runs.
    """
    root = root or tests_dir.parent
    found: list[TripTest] = []
    for path in sorted(tests_dir.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(root).as_posix()
        for owner, func in _test_functions(tree):
            name = f"{owner}::{func.name}" if owner else func.name
            for interlock_id in _marked_ids(func.decorator_list):
                found.append(TripTest(interlock_id, rel, name))
    return found


def _test_functions(
    tree: ast.Module,
) -> Iterable[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield "", node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    yield node.name, item


def _marked_ids(decorators: list[ast.expr]) -> list[str]:
    ids: list[str] = []
    for deco in decorators:
        if not isinstance(deco, ast.Call):
            continue
        func = deco.func
        if isinstance(func, ast.Attribute) and func.attr == TRIPS_MARKER:
            ids.extend(
                arg.value
                for arg in deco.args
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            )
    return ids


# --- the traceability page -----------------------------------------------------------


def render_hazards_doc(
    interlocks: Mapping[str, tuple[str, tuple[str, ...], str]], tests: list[TripTest]
) -> str:
    """Markdown for ``docs/safety/hazards.md``.

    ``interlocks`` maps an interlock ID to (title, hazard IDs, description).
    """
    by_interlock: dict[str, list[TripTest]] = {}
    for t in tests:
        by_interlock.setdefault(t.interlock_id, []).append(t)
    lines = [
        "# Hazards, causes, interlocks and the tests that trip them",
        "",
        "<!-- Generated by `python -m estim.safety.hazards --out docs/safety/hazards.md`",
        "     (also `make diagram`) from estim/safety/hazards.py, the interlock registry in",
        "     estim/safety/interlocks.py and the tests marked @pytest.mark.trips(...).",
        "     Do not edit by hand: tests/unit/test_interlocks_trace.py fails if it drifts. -->",
        "",
        "Every runtime and preflight interlock has an ID, the hazards it controls, a reason",
        "sentence when it trips, and at least one test that makes it trip. Any trip zeroes",
        "output on every channel first, then latches the controller in FAULT until a",
        "person acknowledges it. Risk-control priority (ISO 14971): inherent safety by",
        "design first (the device and the simulator enforce their own hardware limits;",
        "output starts at zero and ramps), then these protective measures, then",
        "information for safety.",
        "",
        "## Hazards",
        "",
    ]
    for h in HAZARDS:
        controlling = [i for i, (_, hz, _) in sorted(interlocks.items()) if h.id in hz]
        lines += [f"### {h.id}: {h.title}", "", h.harm, "", "Causes:"]
        lines += [f"- {cause}" for cause in h.causes]
        if h.by_design:
            lines += ["", "By design:"]
            lines += [f"- {measure}" for measure in h.by_design]
        lines += ["", "Controlled by: " + (", ".join(f"`{i}`" for i in controlling) or "-"), ""]
    lines += [
        "## Interlocks",
        "",
        "| interlock | hazards | what it watches | tests that trip it |",
        "|---|---|---|---|",
    ]
    for interlock_id, (title, hazard_ids, description) in sorted(interlocks.items()):
        trips = by_interlock.get(interlock_id, [])
        tests_text = "<br>".join(f"`{t.path}::{t.test}`" for t in trips) or "**none**"
        lines.append(
            f"| `{interlock_id}` {title} | {', '.join(hazard_ids)} | {description} | {tests_text} |"
        )
    lines.append("")
    return "\n".join(lines)


def generate(tests_dir: Path) -> str:
    from estim.safety.interlocks import INTERLOCKS

    table = {i.ID: (i.TITLE, i.HAZARDS, i.DESCRIPTION) for i in INTERLOCKS.values()}
    return render_hazards_doc(table, find_trip_tests(tests_dir))


def main(argv: list[str] | None = None) -> int:
    """``python -m estim.safety.hazards [--tests DIR] [--out FILE]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m estim.safety.hazards")
    parser.add_argument("--tests", type=Path, default=Path("tests"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    text = generate(args.tests)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
