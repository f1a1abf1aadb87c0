"""Command-line options that several commands share, declared once.

Each is an ``Annotated`` type for a Typer parameter; :func:`limits_from` turns the
``--limits`` value into the limits a command checks against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from estim.safety.limits import DEFAULT_LIMITS, Limits, load_limits

LimitsOpt = Annotated[
    Path | None,
    typer.Option(
        "--limits",
        metavar="FILE",
        envvar="ESTIM_LIMITS",
        help="A TOML file of site overrides for configurable limits (default: the "
        "built-in limits).",
        show_default=False,
    ),
]

SessionProfileOpt = Annotated[
    Path | None,
    typer.Option(
        "--profile",
        metavar="FILE",
        help="Device profile (TOML/JSON) (default: built-in estim-pf2).",
    ),
]
"""The device profile of a session (``session start``, ``demo``)."""

PlainOpt = Annotated[bool, typer.Option("--plain", help="Line output instead of the live panel.")]


def limits_from(path: Path | None) -> Limits:
    """The site's limits from ``path``, or the built-in ones."""
    return DEFAULT_LIMITS if path is None else load_limits(path)
