"""``python -m bench [--quick] [--only TEXT] [--out PATH]``: run every figure, print, save."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import os
import pkgutil
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

import bench
from bench import BenchContext, Figure, FigureFunction


def figure_functions() -> list[tuple[str, FigureFunction]]:
    """``figure_*`` functions of every bench module, modules by name, functions in order."""
    found: list[tuple[str, FigureFunction]] = []
    for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        functions = [
            (name, obj)
            for name, obj in vars(module).items()
            if name.startswith("figure_")
            and inspect.isfunction(obj)
            and obj.__module__ == module.__name__
        ]
        functions.sort(key=lambda item: item[1].__code__.co_firstlineno)
        found += [(f"{info.name}.{name}", fn) for name, fn in functions]
    return found


def table(figures: list[Figure]) -> Table:
    out = Table(title="estim bench (milliseconds)")
    for column in ("figure", "n", "p50", "p99", "max", "target", "result"):
        out.add_column(column, justify="left" if column == "figure" else "right")
    for f in figures:
        verdict = {True: Text("pass", "green"), False: Text("FAIL", "bold red"), None: Text("")}
        target = "" if f.target is None else f"{f.target_stat} <= {f.target:g}"
        out.add_row(
            Text(f.name),
            str(f.n),
            f"{f.p50:.3f}",
            f"{f.p99:.3f}",
            f"{f.max:.3f}",
            target,
            verdict[f.passed],
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer trials (smoke run)")
    parser.add_argument("--only", help="run only figure functions whose name contains this")
    parser.add_argument("--out", type=Path, default=Path("build/bench.json"))
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="run at SCHED_FIFO priority, as a stimulator host should (needs CAP_SYS_NICE)",
    )
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    scheduling = "normal"
    if args.realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
            scheduling = "SCHED_FIFO 10"
        except (OSError, AttributeError) as err:
            console.print(f"[yellow]cannot run at real-time priority ({err}); measuring as is[/]")
    logging.getLogger("estim").addHandler(logging.NullHandler())  # quiet driver warnings
    context = BenchContext(quick=args.quick)
    figures: list[Figure] = []
    errors: list[str] = []
    for name, function in figure_functions():
        if args.only and args.only not in name:
            continue
        console.print(f"[dim]measuring {name} ...[/]")
        started = time.monotonic()
        load_before = os.getloadavg()[0]
        try:
            measured = function(context)
        except Exception as err:  # one broken measurement must not lose the others
            console.print(f"[bold red]  {name} failed: {type(err).__name__}: {err}[/]")
            errors.append(name)
            continue
        for figure in measured:
            figure.extra.setdefault("load_average_1min", round(load_before, 2))
            figure.extra.setdefault("scheduling", scheduling)
            figures.append(figure)
        console.print(f"[dim]  done in {time.monotonic() - started:.1f} s[/]")
    wide = None if sys.stdout.isatty() else 130  # keep figure names on one line in logs
    Console(width=wide).print(table(figures))
    console.print(
        f"scheduling: {scheduling}; load average now {os.getloadavg()[0]:.2f} on "
        f"{os.cpu_count()} CPUs (tails grow when other processes compete for the CPU)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([f.to_json() for f in figures], indent=2) + "\n")
    console.print(f"wrote {args.out}")
    failed = [f.name for f in figures if f.passed is False]
    if failed:
        console.print(f"[bold red]missed target:[/] {', '.join(failed)}")
    if errors:
        console.print(f"[bold red]could not measure:[/] {', '.join(errors)}")
    return 1 if failed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
