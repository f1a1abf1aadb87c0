"""Findings: what a records check has to say about starting a session.

A finding is data, not an exception: the preflight collects every finding from the
checklist, the diary and the dose count, shows them all at once, and refuses to start
while any of them blocks. ``code`` is stable (tests, logs and overrides refer to it);
``message`` says what was found, ``fix`` what a person can do about it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    BLOCK = "block"  # the session may not start
    WARN = "warn"  # shown and logged; the session may start
    INFO = "info"  # recorded for the log (e.g. an override that was applied)


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    severity: Severity
    message: str
    fix: str | None = None
    overridable: bool = False

    @property
    def blocks(self) -> bool:
        return self.severity is Severity.BLOCK

    def __str__(self) -> str:
        text = f"[{self.code}] {self.message}"
        return f"{text} (fix: {self.fix})" if self.fix else text


def blocking(findings: Iterable[Finding]) -> list[Finding]:
    """The findings that stop a session from starting."""
    return [f for f in findings if f.blocks]
