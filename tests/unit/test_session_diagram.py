"""The state-machine page is generated from the table and committed up to date."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from estim.cli import app
from estim.session.diagram import render_markdown, render_mermaid
from estim.session.states import State, Trigger
from estim.session.table import TABLE

DOC = Path(__file__).resolve().parents[2] / "docs" / "state-machine.md"


def test_committed_page_equals_the_generated_one() -> None:
    assert DOC.read_text(encoding="utf-8") == render_markdown(), (
        "docs/state-machine.md is stale: run `make diagram`"
    )


def test_every_rule_appears_as_an_edge() -> None:
    mermaid = render_mermaid()
    for rule in TABLE:
        for source in rule.sources:
            dest = rule.dest or source
            edge = f"    {source.value} --> {dest.value}: "
            lines = [line for line in mermaid.splitlines() if line.startswith(edge)]
            assert lines, f"no edge {source.value} -> {dest.value}"
            assert rule.trigger.value in lines[0]


def test_every_state_and_trigger_is_on_the_page() -> None:
    page = render_markdown()
    for state in State:
        assert state.value in page
    for trigger in Trigger:
        assert f"`{trigger.value}`" in page


def test_cli_prints_and_writes_the_page(tmp_path: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["session", "diagram"])
    assert shown.exit_code == 0
    assert shown.output == render_markdown()
    out = tmp_path / "sub" / "sm.md"
    written = runner.invoke(app, ["session", "diagram", "--out", str(out)])
    assert written.exit_code == 0
    assert out.read_text(encoding="utf-8") == render_markdown()
