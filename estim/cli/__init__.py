"""The ``estim`` command line.

Each command group lives in its own module under :mod:`estim.cli` and attaches itself
with ``register(app)``. :func:`main` maps estim's exception families onto the exit
codes of the architecture (0 ok, 1 blocking findings, 2 invalid input, 3 device,
4 interlock / emergency stop) and never shows a traceback for an expected error.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from estim.errors import EstimError

# Command modules, in the order their commands appear in --help.
COMMAND_MODULES = [
    "estim.cli.demo_cmd",
    "estim.cli.protocol_cmd",
    "estim.cli.profile_cmd",
    "estim.cli.bench_cmd",
    "estim.cli.sim_cmd",
    "estim.cli.session_cmd",
    "estim.cli.patient_cmd",
    "estim.cli.prescribe_cmd",
    "estim.cli.diary_cmd",
    "estim.cli.report_cmd",
    "estim.cli.log_cmd",
    "estim.cli.records_cmd",
]

app = typer.Typer(
    name="estim",
    help=(
        "Electrostimulation protocol controller for pelvic-floor therapy.\n\n"
        "Research software: not a certified medical device."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

err_console = Console(stderr=True)


@app.callback()
def _root(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="Log to stderr (-v info, -vv debug).")
    ] = 0,
) -> None:
    """Electrostimulation protocol controller for pelvic-floor therapy."""
    if verbose:
        from rich.logging import RichHandler

        level = logging.DEBUG if verbose > 1 else logging.INFO
        handler = RichHandler(console=err_console, show_path=False)
        logging.basicConfig(level=level, handlers=[handler], format="%(name)s: %(message)s")


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # a real import error inside the module
                raise
            continue
        module.register(app)


@app.command("version")
def version() -> None:
    """Print estim's version."""
    from estim import __version__

    typer.echo(f"estim {__version__}")


_load_commands()


def report_error(err: EstimError) -> int:
    """Print an estim error for a person and return its exit code."""
    # The message is data, not markup: "[estim-pf2]" or "[C2]" must print as written.
    err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
    return err.exit_code


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: returns the process exit code."""
    command = typer.main.get_command(app)
    try:
        # standalone mode lets click print usage errors (exit 2) and --help itself.
        command.main(args=argv, prog_name="estim", standalone_mode=True)
    except EstimError as err:
        return report_error(err)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def run() -> None:
    sys.exit(main())
