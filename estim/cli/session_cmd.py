"""``estim session ...``: the state-machine diagram, and prescribed sessions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from estim.errors import InputError

session_app = typer.Typer(
    help="Run a prescribed session; show the session state machine.",
    no_args_is_help=True,
)


@session_app.command("diagram")
def diagram(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the page here instead of printing it."),
    ] = None,
) -> None:
    """The state machine as Markdown with a Mermaid diagram, generated from the table."""
    from estim.session.diagram import render_markdown

    text = render_markdown()
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as err:
        raise InputError(f"{out}: cannot write ({err.strerror})") from err
    typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(session_app, name="session")
