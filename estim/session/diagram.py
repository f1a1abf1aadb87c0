"""The state-machine page (Mermaid diagram and rule table), generated from the table.

``estim session diagram --out docs/state-machine.md`` (or ``make diagram``) writes it;
a test fails when the committed page differs from what :func:`render_markdown` returns,
so the picture cannot drift from the code.
"""

from __future__ import annotations

from collections import defaultdict

from estim.session.states import PHASE_ORDER, Phase, State, Trigger
from estim.session.table import GUARDS, TABLE, OutputEffect, Rule

_STIMULATING_CLASS = "stimulating"
_LATCHED_CLASS = "latched"


def _label(rules: list[Rule]) -> str:
    parts = []
    for rule in rules:
        text = rule.trigger.value
        if rule.guards:
            text += " [" + ", ".join(rule.guards) + "]"
        parts.append(text)
    return " / ".join(parts)


def render_mermaid() -> str:
    """A Mermaid ``stateDiagram-v2`` of every rule in the table, and the running phases."""
    edges: dict[tuple[State, State], list[Rule]] = defaultdict(list)
    for rule in TABLE:
        for src in rule.sources:
            edges[(src, rule.dest or src)].append(rule)
    lines = ["stateDiagram-v2", f"    [*] --> {State.IDLE.value}"]
    for state in State:
        for dest in State:
            rules = edges.get((state, dest))
            if rules:
                lines.append(f"    {state.value} --> {dest.value}: {_label(rules)}")
    lines.append(f"    {State.COMPLETED.value} --> [*]")
    lines.append(f"    {State.ABORTED.value} --> [*]")
    lines.append(f"    state {State.RUNNING.value} {{")
    lines.append(f"        [*] --> {Phase.RAMP_UP.value}")
    for phase, nxt in PHASE_ORDER.items():
        lines.append(f"        {phase.value} --> {nxt.value}: time")
    lines.append("    }")
    stimulating = ",".join(s.value for s in State if s.stimulating)
    latched = ",".join(s.value for s in State if s.latched)
    lines.append(f"    classDef {_STIMULATING_CLASS} fill:#fde2c8,stroke:#c05a00")
    lines.append(f"    classDef {_LATCHED_CLASS} fill:#f8c9c9,stroke:#a00000")
    lines.append(f"    class {stimulating} {_STIMULATING_CLASS}")
    lines.append(f"    class {latched} {_LATCHED_CLASS}")
    return "\n".join(lines) + "\n"


def render_rules_table() -> str:
    lines = [
        "| trigger | from | to | guards | output | note |",
        "|---|---|---|---|---|---|",
    ]
    for rule in TABLE:
        sources = ", ".join(s.value for s in rule.sources)
        dest = rule.dest.value if rule.dest else "(stays)"
        guards = ", ".join(rule.guards) or "-"
        output = rule.output.value if rule.output is not OutputEffect.NONE else "-"
        lines.append(
            f"| `{rule.trigger.value}` | {sources} | {dest} | {guards} | {output} | "
            f"{rule.note or '-'} |"
        )
    return "\n".join(lines) + "\n"


def render_markdown() -> str:
    """The whole ``docs/state-machine.md`` page."""
    stimulating = ", ".join(f"`{s.value}`" for s in State if s.stimulating)
    guard_lines = "\n".join(f"- `{name}`: {text}" for name, text in GUARDS.items())
    person = ", ".join(f"`{t.value}`" for t in Trigger if t.from_person)
    internal = ", ".join(f"`{t.value}`" for t in Trigger if not t.from_person)
    return f"""# The session state machine

<!-- Generated from estim/session/table.py by `estim session diagram --out
     docs/state-machine.md` (or `make diagram`). Do not edit by hand: a test fails when
     this page differs from the table. -->

Every session is driven by this table and nothing else. A trigger the table does not
list in the current state is refused (`InvalidTransition`) and changes nothing; a
trigger whose guard does not hold is refused the same way (`GuardRefused`). Output may
be on only in {stimulating}. After every event the machine checks that output is off in
every other state; if it is not, or if any step of a transition raises, it zeroes every
channel and latches `fault`, which only a named person can acknowledge.

- Triggers from people: {person}.
- Triggers from the controller itself: {internal}.
- `emergency_stop` is accepted in every state (immediate zero on all channels); the
  runner sends STOP ALL to the device directly, ahead of anything queued, before the
  machine moves.
- `trip` is accepted in every state: an interlock tripped, output is zeroed first, then
  `fault` latches.
- Within `running`, time (the schedule) moves the phase: ramp-up, on, ramp-down, off,
  and round again; phases of zero length are passed over. `pause` drops output to zero
  at once; `resume` ramps up from zero again.

```mermaid
{render_mermaid()}```

## Rules

Output effects marked *(before)* run before the state changes (off first); those
marked *(after)* run after it (on last).

{render_rules_table()}
## Guards

{guard_lines}
"""
